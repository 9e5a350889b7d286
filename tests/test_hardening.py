"""Hostile specs, broken files and interrupted runs: each protection has a test
that fails if the protection is removed."""
import os
import json
import signal
import time
import copy
import tracemalloc

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from typer.testing import CliRunner

from netspec.builder.model import build_model
from netspec.cli import app
from netspec.errors import CheckpointError, RunError, SpecError
from netspec.runner import run as run_mod
from netspec.runner.rundir import atomic_write, load_checkpoint
from conftest import run
from netspec.spec.loader import load_text
from netspec.spec.schema import spec_schema
from netspec.check.checker import check_document
from conftest import check_file

from conftest import SPECS, netspec_process

runner = CliRunner()
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


# --- property and fuzz tests -------------------------------------------------

def unrolled(schema: dict, depth: int = 1) -> dict:
    """The spec schema with its recursive layer lists written out `depth` blocks deep (and no blocks
    below), for hypothesis-jsonschema, which cannot follow a recursive $ref."""
    from netspec.families.blocks import BLOCKS

    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs")

    def resolve(node, level):
        if isinstance(node, list):
            return [resolve(v, level) for v in node]
        if not isinstance(node, dict):
            return node
        if node.get("$ref") == "#/$defs/layers":
            return resolve(defs["layers"], level + 1)
        if node.get("$ref") == "#/$defs/layer":
            item = copy.deepcopy(defs["layer"])
            if level > depth:  # no blocks this deep
                names = item["else"]["propertyNames"]["enum"]
                item["else"]["propertyNames"]["enum"] = [n for n in names if n not in BLOCKS]
                item["else"]["properties"] = {k: v for k, v in item["else"]["properties"].items() if k not in BLOCKS}
            return resolve(item, level)
        out = {k: resolve(v, level) for k, v in node.items()}
        if "times" in out.get("properties", {}):  # a few copies: 100 copies of 1000 layers only build slowly
            out["properties"]["times"] = out["properties"]["times"] | {"maximum": 3}
        return out

    return resolve(schema, 0)


@pytest.mark.slow
@FUZZ
@given(from_schema(unrolled(spec_schema())))
def test_schema_generated_specs_build_or_fail_with_our_error(data):
    try:
        checked = check_document(load_text(yaml.safe_dump(data), "gen.yaml"))
    except SpecError:
        return
    model = build_model(checked.spec, "meta")  # exact shapes, no memory
    # the analysis (plain Python, through blocks) counts what torch allocates, for any valid spec
    assert sum(p.numel() for p in model.parameters()) == checked.analysis.params + checked.analysis.frozen


def _validates_cleanly(path) -> None:
    """`netspec validate` answers 0 or 1 with a message, never a traceback."""
    r = runner.invoke(app, ["validate", str(path)])
    assert r.exit_code in (0, 1), r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_never_traceback(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_bytes(blob)
    _validates_cleanly(path)


SHIPPED_TEXT = [(SPECS / n).read_text() for n in ("mlp.yaml", "cnn.yaml", "vit.yaml")]


@st.composite
def mutated_spec(draw):
    text = draw(st.sampled_from(SHIPPED_TEXT))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 20)))
        how = draw(st.sampled_from(["delete", "insert", "duplicate", "replace"]))
        junk = draw(st.text(alphabet=" :-[]{}&*!|>#'\"\n\t0123456789.abcxyzeE_", max_size=12))
        if how == "delete":
            text = text[:i] + text[j:]
        elif how == "insert":
            text = text[:i] + junk + text[i:]
        elif how == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + junk + text[j:]
    return text


@FUZZ
@given(mutated_spec())
def test_mutated_shipped_specs_never_traceback(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("mut") / "spec.yaml"
    path.write_text(text)
    _validates_cleanly(path)


# --- resource bounds ---------------------------------------------------------

def test_size_of_2_to_63_is_rejected_by_the_schema(write_spec):
    path = write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers:\n    - Linear: {out_features: 9223372036854775808}\n")
    with pytest.raises(SpecError) as e:
        check_file(path)
    assert "9223372036854775808 is greater than the maximum of 2147483647" in e.value.problems[0].message


def test_vit_with_millions_of_tokens_rejected_before_building(write_spec):
    path = write_spec("name: t\ndata: {dataset: none, input_shape: [1, 2048, 2048]}\nmodel:\n  vit: {patch_size: 1, dim: 64, "
                      "depth: 6, heads: 8, dim_head: 64, mlp_dim: 128}\n")
    tracemalloc.start()
    with pytest.raises(SpecError) as e:
        check_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    msg = e.value.problems[0].message
    # 4,194,305 tokens: the 8 attention maps alone are 8 x 4,194,305^2 values per layer
    assert "bytes of activations" in msg and "per sample x batch_size 32" in msg
    assert int(msg.split(" bytes")[0].split()[-1].replace(",", "")) > 32 * 6 * 8 * 4_194_305**2
    assert peak < 50 * 2**20


# --- checkpoints -------------------------------------------------------------

class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_is_refused(fake_data, tmp_path):
    result = run(check_file(SPECS / "mlp.yaml", overrides=("train.epochs=1", "data.validation=100")),
                 out=tmp_path / "r", data_dir=fake_data)
    marker = tmp_path / "pwned"
    (result.run_dir / "model.safetensors").unlink()  # read in preference (test_safetensors.py): model.pt alone here
    torch.save({"state_dict": Exploit(marker)}, result.run_dir / "model.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(result.run_dir / "model.pt")
    r = runner.invoke(app, ["eval", str(result.run_dir.path), "--data-dir", str(fake_data)])
    assert r.exit_code == 1 and "refused" in r.output and "Traceback" not in r.output
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    good = tmp_path / "c.pt"
    torch.save({"w": torch.ones(1000)}, good)
    good.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(good)


def test_atomic_write_keeps_the_old_file_when_writing_dies(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def dies(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temporary left behind


# --- interrupted runs --------------------------------------------------------

def _spec(tmp_path, epochs=4):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\ndata: {{validation: 100, input_shape: [784]}}\nmodel:\n  layers:\n"
                    f"    - Linear: {{out_features: 64}}\n    - ReLU\n    - Dropout: {{p: 0.2}}\n"
                    f"    - Linear: {{out_features: 10}}\ntrain: {{epochs: {epochs}, batch_size: 16, "
                    f"schedule: {{name: cosine}}, augment: {{shift: 1}}}}\n")
    return path




def _wait_for(path, proc, timeout=120):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - start < timeout
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["kill", "ctrl-c", "term"])
def test_killed_run_resumes_to_the_same_weights(fake_data, tmp_path, sig):
    spec = _spec(tmp_path, epochs=6)  # enough epochs left to be cut short after the first checkpoint
    full = run(check_file(spec), out=tmp_path / "full", data_dir=fake_data)
    cut = tmp_path / "cut"
    proc = netspec_process("run", str(spec), "--out", str(cut), "--data-dir", str(fake_data))
    _wait_for(cut / "checkpoint.pt", proc)
    proc.send_signal(sig)
    output = proc.communicate(timeout=60)[0]
    if sig != signal.SIGKILL:  # SIGTERM (`kill`, a scheduler's stop) as Ctrl-C: the run written, one line
        assert proc.returncode == 130 and "--resume" in output and "Traceback" not in output, output
        assert json.loads((cut / "metrics.json").read_text())["status"] == "interrupted"
    state = load_checkpoint(cut / "checkpoint.pt")
    assert 1 <= state["epoch"] < 6
    r = netspec_process("run", "--resume", str(cut), "--data-dir", str(fake_data))
    assert r.wait(timeout=120) == 0, r.stdout.read()
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(cut / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h.epoch for h in full.history] == [1, 2, 3, 4, 5, 6]


# --- numerical faults --------------------------------------------------------

def test_non_finite_gradient_stops_the_run(fake_data, tmp_path, monkeypatch):
    real_build = run_mod.build_model
    calls = {"n": 0}

    def build_with_bad_grad(spec, device="cpu"):
        model = real_build(spec, device)
        first = next(model.parameters())

        def poison(grad):
            calls["n"] += 1
            return grad * float("inf") if calls["n"] == 5 else grad

        first.register_hook(poison)
        return model

    monkeypatch.setattr(run_mod, "build_model", build_with_bad_grad)
    with pytest.raises(RunError, match=r"non-finite gradient \(the loss was finite\) at epoch 1, step 5"):
        run(check_file(_spec(tmp_path)), out=tmp_path / "r", data_dir=fake_data)


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
def test_detect_anomaly_option(fake_data, tmp_path):
    r = runner.invoke(app, ["run", str(_spec(tmp_path, epochs=1)), "--detect-anomaly", "--out", str(tmp_path / "r"),
                            "--data-dir", str(fake_data)])
    assert r.exit_code == 0, r.output


