"""The Python API: the few names `import netspec` offers. The CLI is a thin layer over them.

    import netspec
    spec = netspec.load("specs/cnn.yaml", overrides={"train.epochs": 2})   # or YAML text, or a dict
    spec.summary()                      # a table (text in a terminal, HTML in Jupyter)
    model = spec.build()                # the nn.Module the spec describes (its Softmax head included)
    net = spec.build(logits=True)       # the same layers without a final Softmax: logits, for CrossEntropyLoss
    run = netspec.train(spec, limit=5000)                   # -> Run: history, metrics, model, folder
    run = netspec.open_run(run.path)                        # any run folder, later
    labels, probabilities = run.predict(images)             # images: (N, 28, 28) uint8 or floats in [0, 1]

Every failure a user can cause raises a `NetspecError`; a spec's mistakes raise one
`SpecError` whose `problems` hold every mistake with its file, line and column.
"""
from __future__ import annotations

import functools
import html
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from typing import TYPE_CHECKING

import yaml

from netspec.check.checker import Checked, check_document
from netspec.errors import NetspecError, SpecError
from netspec.report.tables import epoch_line, summary_json, summary_text
from netspec.runner.metrics import Metrics
from netspec.runner.observer import Observer, Observers
from netspec.spec.loader import load_file, load_text
from netspec.spec.overrides import apply_overrides

if TYPE_CHECKING:  # loading and checking a spec needs no torch; building, training and runs import it there
    import torch
    from torch import nn

    from netspec.report.compare import Comparison
    from netspec.runner.export import FilePrediction
    from netspec.runner.records import DataRecord
    from netspec.runner.reopen import Evaluation
    from netspec.runner.trainer import EpochStats

__all__ = ["Spec", "Run", "Prediction", "load", "train", "resume", "open_run"]


# --- specs ------------------------------------------------------------------------

class Summary:
    """The Keras-style table of a spec: text in a terminal (`print`, `str`), HTML in Jupyter."""

    def __init__(self, checked: Checked):
        self._checked = checked

    def __str__(self) -> str:
        return summary_text(self._checked)

    __repr__ = __str__

    def to_dict(self) -> dict:
        return summary_json(self._checked)

    def _repr_html_(self) -> str:
        s = self.to_dict()
        rows = "".join(
            f"<tr><td>{r['index']}</td><td><code>{html.escape(r['name'])}</code></td><td>{html.escape(r['layer'])}</td>"
            f"<td>{tuple(r['output_shape'])}</td><td style='text-align:right'>{r['params']:,}</td></tr>"
            for r in s["layers"])
        rules = "".join(
            f"<li>{html.escape(r['rules'])}: {html.escape(r['rule'])} {html.escape(r['value'])} "
            f"({html.escape(r['limit'])}) {'✓' if r['ok'] else '✗' if r['ok'] is False else '(after the run)'}</li>"
            for r in s["rules"])
        return (f"<b>{html.escape(s['name'])}</b> (input {tuple(s['input_shape'])})"
                "<table><tr><th>#</th><th>name</th><th>layer</th><th>output shape</th><th>params</th></tr>"
                f"{rows}</table><p>Trainable params: {s['trainable_params']:,}</p>" + (f"<ul>{rules}</ul>" if rules else ""))


@dataclass(frozen=True)
class Spec:
    """A spec that passed every check (schema, shapes, budgets, rules)."""

    checked: Checked

    @property
    def name(self) -> str:
        return self.checked.spec.name

    @property
    def config(self):
        """The frozen, typed settings (netspec.spec.config.Spec), every default filled in."""
        return self.checked.spec

    @property
    def params(self) -> int:
        """Trainable parameters, counted exactly on the meta device."""
        return self.checked.analysis.params

    @property
    def softmax_head(self) -> bool:
        """True when the spec ends in Softmax (the model then outputs probabilities)."""
        return self.checked.analysis.softmax_head

    def summary(self) -> Summary:
        return Summary(self.checked)

    def to_dict(self) -> dict:
        """The resolved spec: every default written out; `load` takes it back."""
        return self.checked.spec.to_dict()

    def build(self, *, logits: bool = False, seed: int | None = None, device: str | torch.device = "cpu") -> nn.Module:
        """The model, with weights initialised from `seed` (default: the spec's train.seed).

        A spec may end in Softmax (the problem set's do): `build()` keeps it, so the model
        outputs probabilities, as the spec says. For training with `nn.CrossEntropyLoss`
        (which applies log-softmax itself) use `build(logits=True)`: the same layers
        without the final Softmax. netspec's own training does exactly that.
        Torch's global random state is left as it was.
        """
        import torch

        from netspec.builder.model import build_model
        from netspec.runner.trainer import logits_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed if seed is None else seed)
            model = build_model(self.config, device)
        return logits_model(model, self.softmax_head) if logits else model

    def forward(self, inputs: str | Path, seed: int = 0) -> list:
        """The spec's untrained layers applied to the inputs in a YAML file (a list, each of the
        input shape): one output tensor per input, as `netspec forward` prints them."""
        from netspec.builder.forward import forward_file

        return forward_file(self.checked, inputs, seed)

    def __repr__(self) -> str:
        return f"<netspec.Spec {self.name}: {self.params:,} parameters>"


def _document(source, where: str):
    if isinstance(source, Mapping):
        return load_text(yaml.safe_dump(dict(source), sort_keys=False), where), Path.cwd()
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and not source.lstrip().startswith("{")
                                    and (source.endswith((".yaml", ".yml")) or Path(source).exists())):
        return load_file(source), Path(source).parent
    if isinstance(source, str):
        return load_text(source, where), Path.cwd()
    raise TypeError(f"a spec is a path, YAML text or a dict, not {type(source).__name__}")


def _assignments(overrides) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in overrides.items()]
    return list(overrides)


def load(source: str | Path | Mapping, *, rules: str | Path | list = (), overrides: Mapping | list | None = None,
         draft: bool = False) -> Spec:
    """Load and check a spec from a file path, YAML text or a dict.

    `rules`: rule sets imposed on top of the spec's own (shipped names or files);
    `overrides`: {"train.epochs": 3} or ["train.epochs=3"]; `draft=True`: the rules' fixed
    settings may be overridden (every other rule still applies) and the run is marked
    "draft: not gradable". Raises `SpecError` with every problem (file, line, column, path,
    message, hint).
    """
    doc, base = _document(source, "<dict>" if isinstance(source, Mapping) else "<string>")
    assignments = _assignments(overrides)
    if assignments:
        if not isinstance(doc.data, dict):
            raise SpecError([doc.problem((), "a spec is a mapping of keys")])
        apply_overrides(doc, assignments)
    imposed = (rules,) if isinstance(rules, (str, Path)) else tuple(rules)
    return Spec(check_document(doc, imposed=tuple(str(r) for r in imposed), base_dir=base, draft=draft))


# --- runs -------------------------------------------------------------------------

@dataclass(frozen=True)
class Prediction:
    labels: list[int]  # class index per input
    probabilities: torch.Tensor  # (N, classes)
    classes: tuple[str, ...]  # class names (MNIST: "0".."9")

    @property
    def names(self) -> list[str]:
        return [self.classes[i] for i in self.labels]

    def __iter__(self):  # labels, probabilities = run.predict(x)
        return iter((self.labels, self.probabilities))


@dataclass
class Run:
    """A run folder opened: its spec, trained model, history and metrics."""

    path: Path
    spec: Spec
    model: nn.Module  # the trained model in eval mode, Softmax head as in the spec
    history: list[EpochStats]
    metrics: Metrics
    notes: list[str] = field(default_factory=list)  # e.g. today's rules would refuse this old run

    @property
    def logits_model(self) -> nn.Module:
        from netspec.runner.trainer import logits_model

        return logits_model(self.model, self.spec.softmax_head)

    @functools.cached_property
    def preprocessing(self) -> DataRecord:
        """How the run's images were read and normalised (data.json): classes, image_shape, mean, std;
        checked against the run's spec (a record that disagrees with it is refused)."""
        from netspec.runner.records import preprocessing
        from netspec.runner.rundir import RunDir

        return preprocessing(RunDir(self.path), self.spec.config)

    def predict(self, images: torch.Tensor, batch_size: int = 1000) -> Prediction:
        """Classes and probabilities for raw images: uint8 (0..255) or floats in [0, 1], one image
        per row in any shape holding the stored image's values: (N, H, W), (N, C, H, W) or flat
        (N, C*H*W). They are normalised per channel and shaped as in training, computed in fp32."""
        import torch

        from netspec.data.splits import normalise

        images = torch.as_tensor(images)
        pre, cfg = self.preprocessing, self.spec.config
        c, h, w = pre.image_shape
        if images.numel() % (c * h * w) or images.numel() == 0:
            raise NetspecError(f"predict takes images of {c}x{h}x{w} = {c * h * w} values each (the run's images); "
                               f"got a tensor of shape {tuple(images.shape)}")
        mean = torch.tensor(pre.mean).view(c, 1, 1)
        std = torch.tensor(pre.std).view(c, 1, 1)
        x = normalise(images.reshape(-1, c, h, w), mean, std).reshape(-1, *cfg.data.input_shape)  # as in training
        net = self.logits_model.eval()
        with torch.no_grad():
            logits = torch.cat([net(x[i: i + batch_size]) for i in range(0, len(x), batch_size)])
        probs = torch.softmax(logits.float(), dim=1)
        return Prediction(probs.argmax(1).tolist(), probs, tuple(pre.classes))

    def predict_files(self, paths, invert: bool = False) -> list[FilePrediction]:
        """Classify image files (and the images in folders): each read as in training (grayscale
        or RGB, resized to the run's image size), scaled to 0..1, then normalised as in training.
        `invert=True` reads 1 - pixel (a dark digit on light paper, for a model of light-on-dark
        MNIST). Each row says `looks_inverted` where the image's brightness is far from the
        training images' and its inverse is close: the prediction is then likely wrong. A file that
        cannot be read is a row of its own, in its place, with `error` saying why (and no class);
        every other file is still predicted. One FilePrediction per file, in order."""
        from netspec.data.images import image_files, looks_inverted, read_readable
        from netspec.runner.export import FilePrediction

        files = image_files(paths)
        images, unread = read_readable(files, tuple(self.preprocessing.image_shape))
        if invert:
            images = 1 - images
        readable = [f for f in files if f not in unread]
        predicted = {}
        if readable:
            suspect = looks_inverted(images, self.preprocessing.mean)
            pred = self.predict(images)
            predicted = {f: FilePrediction(str(f), pred.classes[i], i, float(pred.probabilities[k, i]), bool(suspect[k]))
                         for k, (f, i) in enumerate(zip(readable, pred.labels))}
        return [predicted[f] if f in predicted else FilePrediction(str(f), error=unread[f]) for f in files]

    def export(self, path: str | Path | None = None, format: str = "onnx", force: bool = False) -> Path:
        """The model as an ONNX file (default RUN_DIR/model.onnx) with model.onnx.json beside it;
        a given `path` that exists is replaced only with `force`."""
        if format != "onnx":
            raise NetspecError(f"export format {format!r}: only onnx is supported")
        from netspec.runner.export import export_onnx

        return export_onnx(self.path, path, force)

    def attention(self, *, index: int = 0, layer: int = -1, data_dir=None) -> Path:
        """Draw the post-softmax attention of every head of one encoder layer for one validation
        example (a model with attention, such as a ViT); returns the PNG's path in the run folder."""
        import torch

        from netspec.report.run_report import write_attention
        from netspec.runner.run import load_data
        from netspec.runner.rundir import RunDir

        family = self.spec.config.family
        if not family.attention:
            raise NetspecError(f"{self.path} has no attention layers ({family.key}); attention maps need a model "
                               f"with attention, such as model: vit")
        data = load_data(self.spec.checked, torch.device("cpu"), data_dir)
        return write_attention(RunDir(self.path), family, self.model, data, index=index, layer=layer)

    def evaluate(self, data_dir=None) -> Evaluation:
        """Test accuracy of the saved model, recomputed (in the run's own precision)."""
        from netspec.runner.reopen import evaluate_run

        return evaluate_run(self.path, data_dir)

    def __repr__(self) -> str:
        acc = self.metrics.test_accuracy
        return (f"<netspec.Run {self.path}: {self.metrics.status_text}, "
                f"test accuracy {acc if acc is None else round(acc, 4)}>")


class PrintProgress(Observer):
    """One line per epoch with print(): readable in a notebook, a log file or a terminal."""

    def __init__(self, stream=None):
        self.stream = stream

    def start(self, *, epochs, first_epoch, steps):
        self.started = time.monotonic()
        print(f"training epochs {first_epoch}..{epochs}, {steps} batches each", file=self.stream or sys.stdout)

    def epoch(self, stats: EpochStats):
        print(epoch_line(stats), file=self.stream or sys.stdout)

    def note(self, text: str):
        print(f"note: {text}", file=self.stream or sys.stdout)


def open_run(path: str | Path) -> Run:
    """A run folder (finished, interrupted or failed): spec, model with its weights, history, metrics."""
    from netspec.runner.records import read_history
    from netspec.runner.reopen import load_run

    run_dir, checked, model, notes = load_run(path)
    metrics = run_dir.metrics()
    history = read_history(run_dir) if (run_dir / "history.csv").is_file() else []
    return Run(run_dir.path, Spec(checked), model.eval(), history, metrics, notes)


def _as_spec(spec, rules, overrides) -> Spec:
    if isinstance(spec, Spec):
        if rules or overrides:
            raise TypeError("rules and overrides apply when loading: pass them to netspec.load")
        return spec
    return load(spec, rules=rules, overrides=overrides)


def train(spec: Spec | str | Path | Mapping, *, out: str | Path | None = None, data_dir: str | Path | None = None,
          limit: int | None = None, force: bool = False, progress: bool | Observer = True, rules=(),
          overrides=None, runs_root: str | Path = "runs", detect_anomaly: bool = False, log=()) -> Run:
    """Train a spec and write its run folder (runs/<name>-<time>, or `out`); returns the opened Run.
    The keywords are `netspec run`'s options, one each.

    `limit`: train on the first N training images only (validation and test stay whole).
    `progress`: True prints a line per epoch; an `Observer` gets every hook; False is silent.
    `force`: empty `out` first when it holds an earlier run (otherwise that is refused).
    `log`: trackers that record the run too, by name: ["tensorboard", "mlflow"] (netspec.trackers).
    """
    spec = _as_spec(spec, rules, overrides)
    from netspec.report.run_report import RunReporter
    from netspec.runner import stop
    from netspec.runner.run import run as _run

    observer = _observers(progress, log)  # a tracker that cannot record says so now, before any folder is made
    with stop.library():  # Ctrl-C in a notebook: recorded, and the run ends at its next step
        result = _run(spec.checked, out=out, data_dir=data_dir, observer=observer, limit=limit, force=force,
                      runs_root=runs_root, detect_anomaly=detect_anomaly, reporter=RunReporter())
    return _trained(result)


def resume(path: str | Path, *, data_dir: str | Path | None = None, progress: bool | Observer = True, log=()) -> Run:
    """Continue an interrupted run from its last finished epoch, on the data it used. `log`: as in
    `train`; by default the trackers the run was logged to (an MLflow run goes on)."""
    from netspec.report.run_report import RunReporter
    from netspec.runner.rundir import RunDir
    from netspec.runner.reopen import check_run_spec
    from netspec.runner import stop
    from netspec.runner.run import run as _run

    checked, _ = check_run_spec(RunDir.open(path))
    if not log:
        from netspec.trackers import used_by

        log = used_by(path)
    with stop.library():
        result = _run(checked, out=path, data_dir=data_dir, observer=_observers(progress, log), resume=True,
                      reporter=RunReporter())
    return _trained(result)


def _trained(result) -> Run:
    """The Run of a run just trained, from what the runner returns: its model is already in memory
    and its spec already checked, so the folder is not read again. (A resumed run that had nothing
    left to train holds no model in memory: its folder is opened.)"""
    if result.model is None or result.checked is None:
        return open_run(result.run_dir.path)
    checked = result.checked
    notes = [f"a draft run (`--draft`: not gradable); it waived {'; '.join(checked.waived)}"] if checked.draft else []
    return Run(result.run_dir.path, Spec(checked), result.model.eval(), result.history, result.metrics, notes)


def _observer(progress) -> Observer | None:
    if isinstance(progress, Observer) or (progress and not isinstance(progress, bool)):
        return progress
    return PrintProgress() if progress else None


def _observers(progress, log) -> Observer | None:
    """The progress display and the trackers named in `log`, on one run."""
    if isinstance(log, str):
        log = [log]
    if not log:
        return _observer(progress)
    from netspec.trackers import make_trackers

    return Observers([_observer(progress), *make_trackers(log)])


@dataclass
class Sweep:
    """A sweep folder: its leaderboard (one dict per trial, the best first by validation accuracy;
    test accuracy is shown, never used to choose) and its outputs (sweep.md, leaderboard.csv, plots)."""

    folder: Path
    name: str
    rows: list[dict]
    draft: bool

    def best(self) -> Run | None:
        """The best finished trial's run, opened; None while no trial finished."""
        done = [r for r in self.rows if r["state"] == "complete" and r.get("run_dir")]
        return open_run(self.folder / done[0]["run_dir"]) if done else None

    def __repr__(self) -> str:
        return f"<netspec.Sweep {self.folder}: {len(self.rows)} trials>"


class PrintTrials:
    """Sweep progress with print(): each trial's settings, its epochs (in this process), and a line
    when it ends. Picklable, for worker processes (which print the end lines only)."""

    def observer(self, trial, values) -> Observer:
        print(f"trial {trial.number}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        return PrintProgress()

    def on_trial(self, study, frozen) -> None:
        from netspec.report.tables import trial_line

        line = trial_line(frozen)
        if line:
            print(line, flush=True)


def sweep(spec: str | Path, *, workers: int = 1, progress=True, **settings) -> Sweep:
    """Run (or continue) a sweep, as `netspec sweep` does, and write its outputs into the sweep folder.

    `settings` are the command's options: grid=["key=v1,v2"], ranges=["key=low:high:log"],
    sampler, trials, prune, storage, out, overrides (--set), imposed (--rules), data_dir, limit,
    draft, log (trackers every trial reports to, e.g. ["mlflow"]). `progress`: True prints trials and epochs; an object with `observer(trial, values)` and
    `on_trial(study, trial)` methods gets them; False is silent."""
    from netspec.report.run_report import RunReporter
    from netspec.report.sweep_report import write_sweep_outputs
    from netspec.sweeps.sweep import sweep as run_sweep

    hooks = PrintTrials() if progress is True else progress or None
    result = run_sweep(spec, workers=workers, reporter=RunReporter(),
                       observer=getattr(hooks, "observer", None), on_trial=getattr(hooks, "on_trial", None), **settings)
    name = result.study.study_name
    rows = write_sweep_outputs(result.folder, name, result.study, result.space)
    return Sweep(result.folder, name, rows, bool(result.study.user_attrs.get("draft")))


def compare(*runs: str | Path, figure: str | Path | None = None) -> Comparison:
    """Runs side by side (the first is the baseline): each run's numbers, its architecture changes
    against the baseline, and the settings that differ; `figure` also writes the loss curves (PNG)."""
    import dataclasses

    from netspec.report.compare import compare as compare_runs, read_runs

    infos = read_runs(list(runs))
    result = compare_runs(infos)
    if figure is not None:
        from netspec.report import plots

        fig = plots.overlay_figure({r.label: r.history for r in infos if r.history})
        fig.savefig(figure, dpi=110, bbox_inches="tight")
        result = dataclasses.replace(result, figure=str(figure))
    return result


def data_facts(dataset: str | Path = "mnist", *, data_dir=None, validation: int | float | None = None,
               image_shape: tuple[int, int, int] | None = None, samples: str | Path | None = None) -> dict:
    """A dataset's facts, as `netspec data` shows them: its title, facts (image size, pixel range,
    split sizes) and images per class. `dataset` is a name, a folder of class folders, an .npz
    file or a spec (its data section); `samples` also writes a PNG grid of training images."""
    import dataclasses

    from netspec.data.facts import data_spec_for, dataset_facts_table

    if Path(dataset).suffix in (".yaml", ".yml") and Path(dataset).is_file():
        data = load(dataset).config.data
        data = data if validation is None else dataclasses.replace(data, validation=validation)
    else:
        data = data_spec_for(str(dataset), image_shape, validation)
    facts, source, first = dataset_facts_table(data, data_dir)
    if samples is not None:
        from netspec.report import plots

        fig = plots.samples_figure(first.images.numpy(), first.labels, source.classes)
        fig.savefig(samples, dpi=100, bbox_inches="tight")
    return facts


def grade(submissions: str | Path, rubric: str | Path, *, out: str | Path | None = None, workers: int = 1,
          storage: str | None = None, data_dir: str | Path | None = None, only=(), roster: str | Path | None = None):
    """Grade a folder of submissions by a rubric (as `netspec grade`): writes gradebook.csv,
    grades.md and feedback/ into `out`, and returns the gradebook (its `rows`, one GradeRow per student:
    `.status`, `.total`, `.items`, `.test_accuracy`, `.reason`, ...; `.to_dict()` is the row's JSON).
    `only`: names of students to grade again, and nobody else; `roster`: a CSV (folder, name, id,
    email) whose students join the gradebook, which is then also written as gradebook-canvas.csv."""
    from netspec.grading.classroom import grade as grade_class

    return grade_class(submissions, rubric, out=out, workers=workers, storage=storage, data_dir=data_dir,
                       only=only, roster=roster)
