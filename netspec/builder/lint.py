"""Warnings for the classic architecture mistakes (never errors: the spec still trains).

Each model family finds its own (the layer list's are in netspec/families/chain.py); each
warning has a name, and a spec silences one with `lint: {ignore: [name, ...]}`. Two Softmax
layers are not here: a Softmax anywhere but last is already an error.
"""
from __future__ import annotations

from netspec.builder.analysis import Analysis
from netspec.families.base import LintWarning  # noqa: F401
from netspec.spec.config import Spec
from netspec.spec.schema import LINT_WARNINGS as WARNINGS  # noqa: F401 (names and one-line reasons)


def lint(spec: Spec, analysis: Analysis) -> list[LintWarning]:
    if not analysis.rows:
        return []
    return [w for w in spec.family.lint(spec, analysis) if w.name not in spec.lint_ignore]
