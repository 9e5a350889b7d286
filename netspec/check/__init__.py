"""Checking a spec without torch: its shapes and parameters (analysis), the linter, and the
two-stage check against the schema and the rules (checker)."""
