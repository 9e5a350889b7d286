"""netspec in the tools around it, each the real client: pre-commit runs the shipped hook in a
git repository, sarif-tools reads `--format sarif`, jsonschema holds `--format json` to the
shipped results schema, GitHub's annotation syntax, and shell completion offers values."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from netspec.cli import app
from netspec.report.findings import RESULTS_SCHEMA, RESULTS_SCHEMA_FILE

from conftest import ROOT, SPECS

cli = CliRunner()
BIN = Path(sys.executable).parent
GOOD = (SPECS / "mlp.yaml").read_text().split("\nsweep:")[0].replace("../netspec", str(ROOT / "netspec"))
BAD = GOOD.replace("out_features: 200", "out_features: 2000")  # over the rules' 200 hidden units


def _git(cwd: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(not (BIN / "pre-commit").exists() or not shutil.which("git"), reason="pre-commit or git missing")
def test_pre_commit_runs_the_shipped_hook_and_stops_a_broken_spec(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PRE_COMMIT_HOME": str(tmp_path / "cache"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "GIT_CONFIG_GLOBAL": str(tmp_path / "gitconfig"), "GIT_CONFIG_NOSYSTEM": "1"}
    hooks = tmp_path / "hooks"  # a repository holding this project's hook manifest, as pre-commit clones one
    hooks.mkdir()
    shutil.copy(ROOT / ".pre-commit-hooks.yaml", hooks)
    for args in (("init", "-q"), ("add", "."), ("commit", "-qm", "hooks")):
        assert _git(hooks, *args, env=env).returncode == 0
    rev = _git(hooks, "rev-parse", "HEAD", env=env).stdout.strip()
    work = tmp_path / "work"
    (work / "specs").mkdir(parents=True)
    (work / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hooks}\n    rev: {rev}\n    hooks:\n      - id: netspec-validate\n        files: ^specs/\n")
    assert _git(work, "init", "-q", env=env).returncode == 0
    install = subprocess.run([str(BIN / "pre-commit"), "install"], cwd=work, env=env, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    (work / "specs" / "mlp.yaml").write_text(GOOD)
    _git(work, "add", ".", env=env)
    good = _git(work, "commit", "-m", "a good spec", env=env)
    assert good.returncode == 0 and "netspec validate" in good.stdout + good.stderr, good.stdout + good.stderr
    (work / "specs" / "mlp.yaml").write_text(BAD)
    _git(work, "add", ".", env=env)
    bad = _git(work, "commit", "-m", "a broken spec", env=env)
    shown = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "Failed" in shown
    assert "specs/mlp.yaml:" in shown and "hidden units is 2,000" in shown, shown


def _bad_spec(tmp_path) -> Path:
    path = tmp_path / "specs" / "bad.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(GOOD.replace("- ReLU\n", "- Relu\n", 1))  # one mistake (BAD has a second, found in the same round)
    return path


def test_json_results_follow_the_shipped_schema(tmp_path):
    assert RESULTS_SCHEMA_FILE.read_text() == json.dumps(RESULTS_SCHEMA, indent=2) + "\n"
    bad, good = _bad_spec(tmp_path), SPECS / "cnn.yaml"
    r = cli.invoke(app, ["validate", str(good), str(bad), "--format", "json"])
    assert r.exit_code == 1
    results = json.loads(r.stdout)
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert [x["valid"] for x in results] == [True, False] and results[0]["params"] == 49_274
    [error] = results[1]["errors"]
    assert error["code"] == "schema/unknown-layer" and error["line"] > 0
    one = json.loads(cli.invoke(app, ["validate", str(good), "--format", "json"]).stdout)
    assert isinstance(one, list) and len(one) == 1  # a list, however many files
    # an invalid spec whose model builds still has its parameter count
    over = json.loads(cli.invoke(app, ["validate", str(SPECS / "cnn.yaml"), "--format", "json",
                                       "--set", "model.layers.0.Conv2d.out_channels=64"]).stdout)
    assert over[0]["params"] == 63_674 and over[0]["errors"][0]["code"] == "rule/params"
    summary = json.loads(cli.invoke(app, ["summary", str(good), "--format", "json"]).stdout)
    jsonschema.validate(summary, RESULTS_SCHEMA)
    assert summary[0]["layers"][0]["name"] == "conv2d_0"


def test_codes_are_stable_names_for_each_kind_of_finding(tmp_path, write_spec):
    cases = {
        "schema/unknown-key": "name: t\nmodel: {layers: [Flatten]}\ntrian: {}\n",
        "schema/type": "name: t\ndata: {input_shape: [784]}\nmodel: {layers: [{Linear: {out_features: ten}}]}\n",
        "shape": "name: t\ndata: {input_shape: [784]}\nmodel: {layers: [{Conv2d: {out_channels: 2, kernel_size: 3}}]}\n",
        "output-size": "name: t\ndata: {input_shape: [784]}\nmodel: {layers: [{Linear: {out_features: 7}}]}\n",
        "yaml": "name: [t\n",
        "rules": "name: t\nrules: nowhere\nmodel: {layers: [Flatten]}\n",
    }
    for code, text in cases.items():
        r = cli.invoke(app, ["validate", str(write_spec(text, f"{code.replace('/', '-')}.yaml")), "--format", "json"])
        assert code in [e["code"] for e in json.loads(r.stdout)[0]["errors"]], (code, r.stdout)
    warned = write_spec("name: w\ndata: {input_shape: [784]}\nmodel: {layers: [{Linear: {out_features: 10}}, ReLU]}\n", "w.yaml")
    result = json.loads(cli.invoke(app, ["validate", str(warned), "--format", "json"]).stdout)[0]
    assert result["valid"] and [w["code"] for w in result["warnings"]] == ["lint/activation-after-output"]


def test_github_annotations_name_file_line_and_code(tmp_path):
    bad = _bad_spec(tmp_path)
    r = cli.invoke(app, ["validate", str(bad), "--format", "github"])
    assert r.exit_code == 1
    [line] = r.stdout.splitlines()
    assert line.startswith(f"::error file={bad},line=") and ",title=netspec schema/unknown-layer::" in line
    assert "%0A" not in line.split("::", 2)[1]


def test_sarif_is_read_by_sarif_tools(tmp_path):
    from sarif import loader

    bad = _bad_spec(tmp_path)
    r = cli.invoke(app, ["validate", str(bad), str(SPECS / "mlp.yaml"), "--format", "sarif"])
    assert r.exit_code == 1
    path = tmp_path / "netspec.sarif"
    path.write_text(r.stdout)
    sarif = loader.load_sarif_file(str(path))
    records = sarif.get_records()
    assert len(records) == 1 and records[0]["Severity"] == "error"
    assert records[0]["Code"].startswith("schema/unknown-layer") and records[0]["Location"] == bad.as_posix()
    assert records[0]["Line"] == json.loads(cli.invoke(app, ["validate", str(bad), "--format", "json"]).stdout)[0]["errors"][0]["line"]
    tool = shutil.which("sarif", path=str(BIN))
    if tool:  # the command-line consumer too
        summary = subprocess.run([tool, "summary", str(path)], capture_output=True, text=True, timeout=120)
        assert summary.returncode == 0 and "error: 1" in summary.stdout and "schema/unknown-layer" in summary.stdout, summary.stdout


def _complete(words: str) -> list[str]:
    env = {**os.environ, "_NETSPEC_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split(" ")) - 1)}
    done = subprocess.run([sys.executable, "-m", "netspec"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    return done.stdout.split()


def test_completion_offers_rule_sets_formats_devices_samplers_and_spec_files():
    assert {"mnist-mlp", "mnist-cnn", "mnist-vit"} <= set(_complete("netspec validate --rules "))
    assert {"text", "json", "github", "sarif"} <= set(_complete("netspec validate --format "))
    assert {"tpe", "grid", "random"} <= set(_complete("netspec sweep specs/cnn.yaml --sampler "))
    assert "specs/cnn.yaml" in _complete("netspec validate specs/c")


def test_usage_errors_exit_2_and_piped_tables_keep_whole_rows(tmp_path):
    """Exit 2 for a usage error (as Click's own), 1 for findings; a table read by a pipe is not
    wrapped at 80 columns (a script greps whole rows)."""
    env = {**os.environ}
    env.pop("COLUMNS", None)
    no_spec = subprocess.run([sys.executable, "-m", "netspec", "run"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert no_spec.returncode == 2 and "give a spec to run" in no_spec.stderr and not no_spec.stdout
    both = subprocess.run([sys.executable, "-m", "netspec", "run", "--resume", str(tmp_path), "--set", "train.epochs=1"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert both.returncode == 2 and "do not apply to a run being resumed" in both.stderr
    unknown = subprocess.run([sys.executable, "-m", "netspec", "validate", "--bogus", "x.yaml"], capture_output=True,
                             text=True, env=env, cwd=ROOT)
    assert unknown.returncode == 2
    piped = subprocess.run([sys.executable, "-m", "netspec", "summary", "specs/cnn.yaml"], capture_output=True, text=True,
                           env=env, cwd=ROOT)
    assert piped.returncode == 0
    row = next(line for line in piped.stdout.splitlines() if "conv2d_0 " in line)
    assert "Conv2d(out_channels=16, kernel_size=3, padding=1)" in row and len(row) > 80
