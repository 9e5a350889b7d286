"""What a run writes for people: summary.txt, loss.png after every epoch, and at the
end report.md (with attention.png for a ViT). The runner calls these through its
`Reporter` hooks, so training never depends on figures."""
from __future__ import annotations

from pathlib import Path

import torch

from netspec.check.checker import Checked
from netspec.data.splits import Data
from netspec.errors import RunError
from netspec.report import plots
from netspec.report.markdown import report_markdown
from netspec.report.tables import summary_text
from netspec.runner.rundir import RunDir
from netspec.runner.metrics import Metrics
from netspec.runner.run import Reporter
from netspec.runner.trainer import EpochStats

ATTENTION_PNG = "attention.png"
LOSS_PNG = "loss.png"
CONFUSION_PNG = "confusion.png"
MISTAKES_PNG = "mistakes.png"
MISTAKES_SHOWN = 24


class RunReporter(Reporter):
    def started(self, run_dir: RunDir, checked: Checked) -> None:
        run_dir.write_text("summary.txt", summary_text(checked))

    def progress(self, run_dir: RunDir, checked: Checked, history: list[EpochStats],
                 steps: list[tuple[float, float]] | None = None) -> None:
        if history:
            fig = plots.loss_figure(history, f"{checked.spec.name}: loss per epoch", steps=steps)
            run_dir.save_figure(LOSS_PNG, fig)

    def finished(self, run_dir: RunDir, checked: Checked, metrics: Metrics, history: list[EpochStats],
                 model, data: Data, predictions: tuple | None = None) -> None:
        attention = None
        if checked.spec.family.attention and metrics.has_model:
            write_attention(run_dir, checked.spec.family, model, data)
            attention = ATTENTION_PNG
        loss = LOSS_PNG if (run_dir / LOSS_PNG).is_file() else None  # never link a plot that was not written
        evaluation = None
        if predictions is not None and len(predictions[0]):
            evaluation = write_evaluation(run_dir, checked, data, *predictions)
        run_dir.write_text("report.md", report_markdown(checked, metrics, history, attention_png=attention,
                                                        loss_png=loss, evaluation=evaluation,
                                                        run_name=run_dir.path.name))


def write_evaluation(run_dir: RunDir, checked: Checked, data: Data, truth: torch.Tensor, guess: torch.Tensor) -> dict:
    """The test set as a write-up shows it: confusion matrix (confusion.png and counts), accuracy
    per class, and a grid of misclassified images (mistakes.png), from the test pass's labels."""
    classes = list(data.classes)
    n = len(classes)
    matrix = torch.zeros(n, n, dtype=torch.long)
    matrix.index_put_((truth, guess), torch.ones_like(truth), accumulate=True)
    fig = plots.confusion_figure(matrix.numpy(), classes, f"{checked.spec.name}: test confusion matrix")
    run_dir.save_figure(CONFUSION_PNG, fig)
    wrong = (truth != guess).nonzero().flatten()[:MISTAKES_SHOWN].tolist()
    mistakes = None
    if wrong:
        images = [data.unnormalise(data.test.example(i)[0][0].cpu()).numpy() for i in wrong]
        fig = plots.mistakes_figure(images, truth[wrong].tolist(), guess[wrong].tolist(), classes,
                                    f"the first {len(wrong)} misclassified test images (true → predicted)")
        run_dir.save_figure(MISTAKES_PNG, fig)
        mistakes = MISTAKES_PNG
    return {"classes": classes, "matrix": matrix.tolist(), "confusion_png": CONFUSION_PNG, "mistakes_png": mistakes,
            "wrong": int((truth != guess).sum())}


def write_attention(run_dir: RunDir, family, model, data: Data, *, index: int = 0, layer: int = -1) -> Path:
    """Heatmaps of every head of one attention layer for validation example `index` (a model
    family with `attention` says how its layers are counted and its maps recorded)."""
    which = "validation" if len(data.val) else "test"  # data.validation: 0 leaves only the test set
    split = data.val if len(data.val) else data.test
    if not 0 <= index < len(split):
        raise RunError(f"--index {index} is out of range: the {which} set has {len(split)} examples")
    depth = family.attention_depth(model)
    if not -depth <= layer < depth:
        raise RunError(f"--layer {layer} is out of range: the model has {depth} encoder layers")
    model.eval()
    x, label = split.example(index)
    with torch.no_grad():
        attn, grid = family.attention_maps(model, x, layer)
    attn = attn[0].float().cpu()  # (heads, T, T)
    image = data.unnormalise(x[0])  # (C, H, W), 0..1
    shown = layer % depth
    fig = plots.attention_figure(image.numpy(), attn.numpy(),
                                 f"layer {shown} attention, {which} example {index} (label {label})", grid=grid)
    path = run_dir.save_figure(ATTENTION_PNG if (index, layer) == (0, -1) else f"attention-{index}-layer{shown}.png", fig)
    return path
