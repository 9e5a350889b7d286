"""netspec: describe, check and train small neural networks from one YAML file.

    import netspec
    spec = netspec.load("specs/cnn.yaml")     # check: schema, shapes, budgets, rules
    spec.summary()                             # layer, output shape, params
    model = spec.build()                       # the torch module (spec.build(logits=True): no final Softmax)
    run = netspec.train(spec)                  # train, evaluate, write the run folder -> netspec.Run
    run = netspec.open_run("runs/cnn-...")     # later: run.model, run.history, run.metrics, run.predict(x)
    sweep = netspec.sweep("specs/mlp.yaml", grid=["train.optimizer.lr=1e-3,3e-3"])  # sweep.rows, sweep.best()
    netspec.compare("runs/a", "runs/b"); netspec.data_facts("cifar10")
    book = netspec.grade("submissions/", "rubric.yaml", out="grades/")  # a class graded: book.rows

Importing netspec changes nothing global (torch's random state, matplotlib's backend, the umask).
"""

from netspec._version import __version__  # noqa: E402,F401

from netspec.api import (Prediction, Run, Spec, Sweep, compare, data_facts, grade, load, open_run,  # noqa: E402
                         resume, sweep, train)
from netspec.runner.metrics import Metrics  # noqa: E402
from netspec.errors import CheckpointError, DataError, Interrupted, NetspecError, Problem, RunError, SpecError  # noqa: E402

__all__ = ["load", "train", "resume", "open_run", "sweep", "compare", "data_facts", "grade", "Spec", "Run", "Sweep",
           "Metrics", "Prediction",
           "NetspecError", "SpecError", "Problem", "DataError", "RunError", "CheckpointError", "Interrupted",
           "__version__"]
