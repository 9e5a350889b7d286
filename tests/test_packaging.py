"""A non-editable install ships everything netspec reads at run time."""
from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys
import zipfile

from conftest import ROOT

pytestmark = pytest.mark.slow  # real processes or servers (README: the quick suite)


def test_wheel_ships_schema_and_rule_sets(tmp_path):
    # --no-build-isolation: build with the pinned setuptools already installed (no network)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("netspec-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"netspec/spec/schema.json", "netspec/report/results.schema.json"} <= names
    assert {"netspec/spec/rulesets/mnist-mlp.yaml", "netspec/spec/rulesets/mnist-cnn.yaml",
            "netspec/spec/rulesets/mnist-vit.yaml"} <= names

    # installed from the wheel into a plain folder (not the source tree), it validates a shipped spec
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import json, netspec, netspec.spec.rules as r, netspec.spec.schema as s;"
            "assert r.__file__.startswith(%r), r.__file__;"
            "c = netspec.load(%r).checked;"
            "print(json.dumps([r.shipped_rule_sets(), c.analysis.params, len(s.schema_text())]))"
            ) % (str(target), str(ROOT / "specs" / "cnn.yaml"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rule_sets, params, schema_len = json.loads(done.stdout)
    assert rule_sets == ["mnist-cnn", "mnist-mlp", "mnist-vit"]
    assert params == 49_274
    assert schema_len == len((ROOT / "netspec" / "spec" / "schema.json").read_text())
