"""Warnings for the classic architecture mistakes (never errors: the spec still trains).

Each model family finds its own (the layer list's are in netspec/families/chain.py); each
warning has a name, and a spec silences one with `lint: {ignore: [name, ...]}`. Two Softmax
layers are not here: a Softmax anywhere but last is already an error.
"""
from __future__ import annotations

from netspec.check.analysis import Analysis
from netspec.spec.family import LintWarning
from netspec.spec.config import Spec


def lint(spec: Spec, analysis: Analysis) -> list[LintWarning]:
    if not analysis.rows:
        return []
    return [w for w in spec.family.lint(spec, analysis) if w.name not in spec.lint_ignore]
