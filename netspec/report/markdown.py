"""report.md: one page a student can paste into a write-up."""
from __future__ import annotations

from typing import TYPE_CHECKING

from netspec.spec.config import flatten
from netspec.check.analysis import module_names
from netspec.check.checker import Checked
from netspec.runner.metrics import Metrics

if TYPE_CHECKING:
    from netspec.report.compare import Comparison


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _num(v) -> str:
    return "-" if v is None or v != v else f"{v:.4f}"  # v != v: NaN (no validation set)


def data_line(metrics: Metrics) -> str:
    """Which images the numbers come from; says so plainly when --limit cut the training set."""
    train, avail, limit = metrics.train_size or 0, metrics.train_available, metrics.limit
    used = f"{train:,} of {avail:,} training images (--limit {limit})" if limit is not None and avail else f"{train:,} training images"
    val = metrics.val_size or 0
    how = {"memory": "in memory", "stream": "streamed by a DataLoader"}.get(metrics.loading)
    source = ", ".join(x for x in (metrics.dataset, how) if x)
    return (f"- Data: {source + '; ' if source else ''}{used}; {val:,} validation" + (" (none held out)" if not val else "")
            + f"; tested on {metrics.test_size or 0:,} test images")


def optimizer_line(spec) -> str:
    """What the optimizer really used: one-cycle momentum cycling replaces beta1 / momentum."""
    opt, sch = spec.train.optimizer, spec.train.schedule
    if not sch.cycles_momentum:
        return ""
    name, own = ("beta1", opt.betas[0]) if opt.name in ("adam", "adamw") else ("momentum", opt.momentum)
    return (f"- Optimizer: {opt.name}; its {name} was cycled by the one-cycle schedule between "
            f"{sch.max_momentum} and {sch.base_momentum} (schedule.cycle_momentum), so the spec's {name} "
            f"{own} was not used")


def speed_line(speed: dict | None) -> str | None:
    if not speed:
        return None
    precision = speed["precision"]
    return (f"- Arithmetic: {precision}" + (" mixed precision (autocast; fp32 weights)" if precision != "fp32" else "")
            + f", {'channels-last' if speed['channels_last'] else 'standard'} layout, "
            + {"off": "eager", "graph": "the whole step as one graph (train.compile: graph)"}.get(
                speed["compile"], f"torch.compile ({speed['compile']})")
            + (", fused attention" if speed["fused_attention"] else "")
            + (", deterministic" if speed["deterministic"] else "")
            + f"; the test accuracy above was measured in {precision}")


def processes_line(m: Metrics) -> str | None:
    """Data-parallel training: how many processes shared each batch, and how BatchNorm took its statistics."""
    if m.processes <= 1:
        return None
    bn = {"per process": "; BatchNorm statistics per process (each over its own share of the batch; "
                         "train.sync_batchnorm: true takes them over the whole batch, on GPUs)",
          "synchronised": "; BatchNorm statistics over the whole batch (SyncBatchNorm)"}.get(m.batchnorm or "", "")
    return f"- Processes: {m.processes} ({m.backend}, DDP), the batch size in the spec split among them{bn}"


def evaluation_lines(evaluation: dict) -> list[str]:
    """Per-class accuracy, the confusion matrix (counts, for up to 10 classes) and the mistakes."""
    classes, matrix = evaluation["classes"], evaluation["matrix"]
    rows = []
    for i, name in enumerate(classes):
        total, right = sum(matrix[i]), matrix[i][i]
        confused = max(((matrix[i][j], classes[j]) for j in range(len(classes)) if j != i), default=(0, ""))
        rows.append([name, total, right, _num(right / total) if total else "-",
                     f"{confused[1]} ({confused[0]})" if confused[0] else "-"])
    lines = ["", "## Test set", "",
             f"{evaluation['wrong']:,} of {sum(map(sum, matrix)):,} test images misclassified.", "",
             f"![test confusion matrix]({evaluation['confusion_png']})", "",
             _table(["class", "test images", "correct", "accuracy", "most often taken for"], rows)]
    if len(classes) <= 10:
        lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
                  _table(["true \\ predicted", *classes], [[name, *matrix[i]] for i, name in enumerate(classes)])]
    if evaluation.get("mistakes_png"):
        lines += ["", f"![misclassified test images]({evaluation['mistakes_png']})"]
    return lines


def relevant_settings(spec, resolved: dict, processes: int = 1) -> dict:
    """The data and training settings that mean something for this spec (not SGD's momentum under
    Adam, not the one-cycle schedule's fields under cosine, not fused attention without attention)."""
    flat = flatten({"data": resolved["data"], "train": resolved["train"]})
    opt, sch = spec.train.optimizer.name, spec.train.schedule.name
    drop = set()
    if opt != "sgd":
        drop |= {"train.optimizer.momentum", "train.optimizer.nesterov"}
    if opt not in ("adam", "adamw"):
        drop.add("train.optimizer.betas")
    if sch != "onecycle":
        drop |= {f"train.schedule.{k}" for k in ("pct_start", "cycle_momentum", "base_momentum", "max_momentum")}
    elif not spec.train.schedule.cycle_momentum:
        drop |= {"train.schedule.base_momentum", "train.schedule.max_momentum"}
    if sch != "cosine":
        drop.add("train.schedule.min_lr")
    if not spec.family.attention:
        drop.add("train.fused_attention")
    if not spec.family.has_conv(spec.model):
        drop.add("train.channels_last")
    if processes == 1:
        drop.add("train.sync_batchnorm")
    return {k: v for k, v in flat.items() if k not in drop}


def reproduce_line(checked: Checked, metrics: Metrics, run_name: str) -> str:
    """The exact command that trains this run again, from the folder above it, into a new folder."""
    parts = ["netspec", "run", f"{run_name}/spec.yaml", "--out", f"{run_name}-again"]
    if metrics.limit is not None:
        parts += ["--limit", str(metrics.limit)]
    if checked.draft:
        parts.append("--draft")
    return (f"Reproduce, from the folder that holds this one: `{' '.join(parts)}` (spec.yaml is the resolved "
            f"spec: every setting written out, seed {checked.spec.train.seed}; add `--data-dir` where the data is "
            f"not in the default place).")


def report_markdown(checked: Checked, metrics: Metrics, history, *, attention_png: str | None = None,
                    loss_png: str | None = "loss.png", evaluation: dict | None = None, run_name: str = "RUN") -> str:
    spec = checked.spec
    lines = [f"# {spec.name}", "", spec.description or "", "", "## Result", "", *_result_lines(checked, metrics)]
    extra = optimizer_line(spec)
    if extra:
        lines.append(extra)
    lines += ["", "## Architecture", "", *_architecture_lines(checked)]
    if checked.results:
        lines += ["", "## Rules", "", _rules_table(checked, metrics)]
    lines += ["", "## Hyperparameters", "",
              _table(["setting", "value"], [[f"`{k}`", v] for k, v in relevant_settings(spec, spec.to_dict(), metrics.processes).items()]),
              "", "(The settings that apply to this model and optimizer; spec.yaml holds every one.)"]
    lines += ["", "## Training", ""]
    if loss_png:
        lines += [f"![training and validation loss]({loss_png})", ""]
    lines += [_table(["epoch", "train loss", "val loss", "train acc", "val acc", "seconds"],
                     [[h.epoch, _num(h.train_loss), _num(h.val_loss), _num(h.train_acc),
                       _num(h.val_acc), f"{h.seconds:.1f}"] for h in history]) if history else "No epoch finished."]
    if evaluation:
        lines += evaluation_lines(evaluation)
    if attention_png:
        lines += ["", "## Attention", "",
                  "Post-softmax attention weights of every head in the last encoder layer, for the first "
                  + ("validation" if metrics.val_size else "test (no validation set was held out)") + " example (token 0 is the class token; tokens 1.. are patches row by row). "
                  "The lower panels draw the class token's row over the image: the patches each head "
                  "looks at when the class is decided.",
                  "", f"![attention heatmaps]({attention_png})"]
    lines += ["", reproduce_line(checked, metrics, run_name), ""]
    return "\n".join(lines)


def _result_lines(checked: Checked, m: Metrics) -> list[str]:
    a, target = checked.analysis, m.target_accuracy
    verdict = "" if target is None else " — **meets the target**" if m.passed else " — **below the target**"
    lines = [
        f"- Status: {m.status_text}",
        ("- **Draft: not gradable.** Overridden under `--draft`: " + "; ".join(checked.waived)) if checked.draft else None,
        f"- Test accuracy: **{_num(m.test_accuracy)}**" + (f" (target ≥ {target}){verdict}" if target is not None else ""),
        f"- Test loss: {_num(m.test_loss)}",
        f"- The saved model (model.pt) is from epoch {m.model_epoch}"
        + (f"; its validation accuracy {_num(m.final_val_accuracy)}" if m.final_val_accuracy is not None else "")
        + (f"; best validation accuracy {_num(m.best_val_accuracy)} at epoch {m.best_epoch}" if m.best_epoch else "")
        if m.has_model else "- No model was saved (no epoch finished)",
        data_line(m),
        f"- Trainable parameters: {a.params:,}" + (f"; hidden units: {a.hidden_units}" if a.hidden_units is not None else ""),
        f"- Trained {m.epochs_completed} epoch{'' if m.epochs_completed == 1 else 's'} in {m.train_seconds:.1f} s on "
        f"{m.device} (torch {m.versions.get('torch')}, seed {checked.spec.train.seed})",
        speed_line(m.speed),
        processes_line(m),
    ]
    return [line for line in lines if line is not None]


def _architecture_lines(checked: Checked) -> list[str]:
    a = checked.analysis
    names = module_names(a)  # a block's layers read residual_1.layers.conv2d_0
    lines = [_table(["#", "name", "layer", "output shape", "params"],
                    [[r.index if r.kind != "shortcut" else "", f"`{names[id(r)]}`", r.layer,
                      "(" + ", ".join(map(str, r.shape)) + ")",
                      f"({r.params + r.frozen:,})" if r.block else f"{r.params + r.frozen:,}"] for r in a.rows]),
             "", f"Input shape ({', '.join(map(str, a.input_shape))}); total parameters {a.params + a.frozen:,}."]
    if a.softmax_head:
        lines += ["", "The final Softmax is folded into the loss: cross-entropy is computed on the logits before it."]
    return lines


def _rules_table(checked: Checked, m: Metrics) -> str:
    """Every rule's verdict; the accuracy target's, known only after training, from the result."""
    def value(r):
        return _num(m.test_accuracy) if r.ok is None and m.test_accuracy is not None else r.value

    def mark(r):
        if r.waived:
            return "✗ waived (draft)"
        return {True: "✓", False: "✗", None: "see result"}[r.ok if r.ok is not None or m.passed is None else m.passed]

    return _table(["rule set", "rule", "value", "limit", "ok"],
                  [[r.rules, r.rule, value(r), r.limit, mark(r)] for r in checked.results])


def compare_markdown(result: Comparison) -> str:
    """`netspec compare --format markdown`: the runs, their architecture changes and the settings
    that differ, as a write-up's tables."""
    def f(v, digits=4):
        return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["## Runs compared", "",
             _table(["run", "status", "params", "train images", "epochs", "best val acc", "test acc", "train s"],
                    [[r.label, r.status_text, f(r.params), f(r.train_size) + (" (--limit)" if r.limit else ""),
                      f(r.epochs), f(r.best_val_accuracy), f(r.test_accuracy), f(r.train_seconds, 1)]
                     for r in result.runs])]
    for label, changes in result.architecture.items():
        lines += ["", f"Architecture, {result.baseline} vs {label}: "
                  + ("the same layers." if not changes else ""), *[f"- {c}" for c in changes]]
    if result.settings:
        lines += ["", "Settings that differ:", "",
                  _table(["setting", *[r.label for r in result.runs]],
                         [[f"`{k}`", *values] for k, values in result.settings.items()])]
    else:
        lines += ["", "All settings are the same."]
    if any(r.draft for r in result.runs):
        lines += ["", "Runs marked [draft] overrode fixed settings of their rules (`--draft`): not gradable."]
    return "\n".join(lines) + "\n"
