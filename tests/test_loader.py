"""Safe YAML loading: tags, duplicate keys, aliases, depth, size, YAML 1.1 surprises."""
import time
import tracemalloc

import pytest

from netspec.errors import SpecError
from netspec.spec.loader import MAX_BYTES, load_file, load_text


def problems(text: str):
    with pytest.raises(SpecError) as e:
        load_text(text, "t.yaml")
    return e.value.problems


def test_positions_of_values_and_keys():
    doc = load_text("a:\n  b: [1, 2]\n  c: x\n", "t.yaml")
    assert doc.data == {"a": {"b": [1, 2], "c": "x"}}
    assert doc.positions[("a", "b", 1)] == (2, 10)
    assert doc.key_positions[("a", "c")] == (3, 3)


def test_python_tag_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    text = f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    [p] = problems(text)
    assert "tag" in p.message and p.line == 1
    assert not marker.exists()


def test_custom_tag_refused():
    [p] = problems("a: 1\nb: !foo bar\n")
    assert p.line == 2 and "!foo" in p.message


def test_duplicate_key_names_both_lines():
    [p] = problems("name: a\ntrain:\n  epochs: 1\n  epochs: 2\n")
    assert p.line == 4 and "line 3" in p.message and "line 4" in p.message


def test_billion_laughs_rejected_fast_with_bounded_memory():
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(SpecError) as e:
        load_text("\n".join(lines), "laughs.yaml")
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "alias" in str(e.value)
    assert elapsed < 1.0
    assert peak < 20 * 2**20


def test_alias_expansion_capped_even_with_few_aliases():
    # 8 levels of 8 references stay under the alias cap but would expand to 8^8 values
    lines = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 8) + "]")
    with pytest.raises(SpecError) as e:
        load_text("\n".join(lines))
    assert "values" in str(e.value) or "alias" in str(e.value)


def test_deep_nesting_is_an_error_not_recursion():
    [p] = problems("[" * 5000 + "]" * 5000)
    assert "nested" in p.message


def test_size_cap_before_parsing(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * (MAX_BYTES + 10))
    with pytest.raises(SpecError) as e:
        load_file(big)
    assert "bytes" in str(e.value)


def test_second_document_refused():
    [p] = problems("a: 1\n---\nb: 2\n")
    assert "one YAML document" in p.message and p.line == 2


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+999"])
def test_non_finite_numbers(value):
    [p] = problems(f"lr: {value}\n")
    assert "non-finite" in p.message and p.line == 1


def test_invalid_yaml_has_its_line():
    [p] = problems("a: 1\nb: [1, 2\nc: 3\n")
    assert p.line >= 2 and "invalid YAML" in p.message


def test_empty_file(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("")
    with pytest.raises(SpecError) as e:
        load_file(f)
    assert "empty" in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_file(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="directory"):
        load_file(tmp_path)


def test_not_utf8(tmp_path):
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(SpecError, match="UTF-8"):
        load_file(f)


def test_yes_key_stays_text():
    assert load_text("yes: 1\n").data == {"yes": 1}


@pytest.mark.parametrize("text", ["=", "name: =\n", "name: <<\n", "- =\n- <<\n"])
def test_yaml_11_value_and_merge_scalars_are_text_not_a_crash(text, tmp_path):
    # found by test_random_bytes_never_traceback: a lone '=' resolves to tag:yaml.org,2002:value
    from typer.testing import CliRunner

    from netspec.cli import app

    path = tmp_path / "s.yaml"
    path.write_text(text)
    r = CliRunner().invoke(app, ["validate", str(path)])
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    assert "Traceback" not in r.output and "✗" in r.output
