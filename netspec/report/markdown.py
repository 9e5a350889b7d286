"""report.md: one page a student can paste into a write-up."""
from __future__ import annotations

from netspec.spec.config import flatten
from netspec.spec.validate import Checked


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def report_markdown(checked: Checked, metrics: dict, history, *, attention_png: str | None = None) -> str:
    spec, a = checked.spec, checked.analysis
    resolved = spec.to_dict()
    target = metrics.get("target_accuracy")
    verdict = ""
    if target is not None:
        verdict = " — **meets the target**" if metrics.get("passed") else " — **below the target**"
    lines = [
        f"# {spec.name}",
        "",
        spec.description or "",
        "",
        "## Result",
        "",
        f"- Status: {metrics['status']}",
        f"- Test accuracy: **{_num(metrics.get('test_accuracy'))}**"
        + (f" (target ≥ {target}){verdict}" if target is not None else ""),
        f"- Test loss: {_num(metrics.get('test_loss'))}",
        f"- Best validation accuracy: {_num(metrics.get('best_val_accuracy'))} (epoch {metrics.get('best_epoch') or '-'})",
        f"- Trainable parameters: {a.params:,}"
        + (f"; hidden units: {a.hidden_units}" if a.hidden_units is not None else ""),
        f"- Trained {metrics['epochs_completed']} epochs in {metrics['train_seconds']:.1f} s on {metrics['device']}"
        f" (torch {metrics['versions']['torch']}, seed {spec.train.seed})",
        "",
        "## Architecture",
        "",
        _table(["#", "name", "layer", "output shape", "params"],
               [[r.index, f"`{r.name}`", r.layer, "(" + ", ".join(map(str, r.shape)) + ")", f"{r.params + r.frozen:,}"]
                for r in a.rows]),
        "",
        f"Input shape ({', '.join(map(str, a.input_shape))}); total parameters {a.params + a.frozen:,}.",
    ]
    if a.softmax_head:
        lines += ["", "The final Softmax is folded into the loss: cross-entropy is computed on the logits before it."]
    if checked.results:
        lines += ["", "## Rules", "",
                  _table(["rule set", "rule", "value", "limit", "ok"],
                         [[r.rules, r.rule, r.value, r.limit,
                           {True: "✓", False: "✗", None: "see result"}[r.ok]] for r in checked.results])]
    lines += ["", "## Hyperparameters", "",
              _table(["setting", "value"], [[f"`{k}`", v] for k, v in flatten({"data": resolved["data"], "train": resolved["train"]}).items()])]
    lines += ["", "## Training", "", "![training and validation loss](loss.png)", "",
              _table(["epoch", "train loss", "val loss", "train acc", "val acc", "seconds"],
                     [[h.epoch, f"{h.train_loss:.4f}", f"{h.val_loss:.4f}", f"{h.train_acc:.4f}",
                       f"{h.val_acc:.4f}", f"{h.seconds:.1f}"] for h in history])]
    if attention_png:
        lines += ["", "## Attention", "",
                  "Post-softmax attention weights of every head in the last encoder layer, for the first "
                  "validation example (token 0 is the class token; tokens 1.. are patches row by row). "
                  "The lower panels draw the class token's row over the image: the patches each head "
                  "looks at when the class is decided.",
                  "", f"![attention heatmaps]({attention_png})"]
    lines += ["", f"Reproduce: `netspec run spec.yaml` in this folder (the resolved spec, seed {spec.train.seed}).", ""]
    return "\n".join(lines)
