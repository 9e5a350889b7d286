"""Many runs of one spec: an Optuna study over its settings (sweep.py), kept in a storage (study.py),
over a search space (space.py). Built on the runner, as grading is."""
