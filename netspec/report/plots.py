"""Figures: loss curves, sample grids and attention heatmaps (matplotlib, no screen)."""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Figures are made with matplotlib's object API (Figure, not pyplot): no backend is chosen,
# no global figure list is kept, and importing netspec leaves matplotlib as it was.


def _subplots(*args, figsize, layout=None, **kw):
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*args, **kw)


STEP_CURVE_EPOCHS = 3  # runs this short also get the training loss within epochs
STEP_POINTS = 200  # the within-epoch curve, averaged into at most this many points


def _binned(steps: list[tuple[float, float]], n: int) -> tuple[list[float], list[float]]:
    size = max(1, -(-len(steps) // n))
    chunks = [steps[i:i + size] for i in range(0, len(steps), size)]
    return [c[-1][0] for c in chunks], [sum(v for _, v in c) / len(c) for c in chunks]


def loss_figure(history, title: str = "", steps: list[tuple[float, float]] | None = None):
    """Training and validation loss per epoch (and validation accuracy on a second axis); for a
    short run also the training loss within its epochs, from `steps` ((epoch position, loss))."""
    epochs = [h.epoch for h in history]
    fig, ax = _subplots(figsize=(6.4, 4.4), layout="constrained")
    shown = [s for s in (steps or []) if s[0] > epochs[0] - 1] if epochs else []  # this run's epochs only
    if shown and len(history) <= STEP_CURVE_EPOCHS:
        xs, ys = _binned(shown, STEP_POINTS)
        ax.plot(xs, ys, "-", color="tab:blue", alpha=0.35, linewidth=1, label="training loss within epochs")
    ax.plot(epochs, [h.train_loss for h in history], "o-", label="training loss")
    ax.plot(epochs, [h.val_loss for h in history], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    acc = ax.twinx()
    # markers on every series: a one-epoch run is one point per series, and a line needs two
    acc.plot(epochs, [h.val_acc for h in history], "^--", color="tab:green", alpha=0.7, label="validation accuracy")
    acc.set_ylabel("validation accuracy")
    lines = ax.get_lines() + acc.get_lines()
    # below the axes, never over the curves
    fig.legend(lines, [l.get_label() for l in lines], loc="outside lower center", ncols=3, frameon=False)
    if not epochs:
        return fig
    within = bool(shown) and len(history) <= STEP_CURVE_EPOCHS
    first = epochs[0] - 1 if within else epochs[0]  # the within-epoch curve starts at the run's start
    if len(epochs) < 20:
        ax.set_xticks(range(first, epochs[-1] + 1) if within else epochs)
    # the axis ends at the last epoch there is (a one-epoch run has no epoch 2 to leave room for)
    pad = 0.5 if first == epochs[-1] else 0.04 * (epochs[-1] - first)
    ax.set_xlim(first - pad, epochs[-1] + pad)
    return fig


def overlay_figure(runs: dict[str, list]):
    """Loss curves of several runs in one figure (netspec compare)."""
    fig, ax = _subplots(figsize=(7, 4.2))
    for i, (name, history) in enumerate(runs.items()):
        color = f"C{i % 10}"
        # markers: a one-epoch run is a point, and a line needs two
        ax.plot([h.epoch for h in history], [h.train_loss for h in history], "o-", color=color, label=f"{name} train")
        ax.plot([h.epoch for h in history], [h.val_loss for h in history], "s--", color=color, label=f"{name} val")
    epochs = sorted({h.epoch for history in runs.values() for h in history})
    ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs, never 0.5
    if 0 < len(epochs) < 20:
        ax.set_xticks(epochs)
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(_overlay_title([len(h) for h in runs.values()]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _overlay_title(lengths: list[int]) -> str:
    """What the overlay draws: a one-epoch run is one circle and one square, not a line."""
    if all(n <= 1 for n in lengths):
        return "training (circles) and validation (squares) loss: one epoch, one marker per run"
    if any(n <= 1 for n in lengths):
        return "training (solid, circles) and validation (dashed, squares) loss; one-epoch runs are markers alone"
    return "training (solid) and validation (dashed) loss"


def _pixels(image):
    """imshow arguments for one image: grayscale (H, W) or (1, H, W), or RGB (3, H, W), uint8 or 0..1."""
    if image.ndim == 3 and image.shape[0] == 3:
        image = image.transpose(1, 2, 0)
        return image, {} if image.dtype.kind in "ui" else {"vmin": 0, "vmax": 1}
    image = image.reshape(image.shape[-2:])
    return image, {"cmap": "gray", "vmin": 0, "vmax": 255 if image.dtype.kind in "ui" else 1}


def samples_figure(images, labels, classes, n: int = 32):
    """A grid of the first n images (uint8: H x W, or C x H x W with 1 or 3 channels) with their labels."""
    cols = 8
    rows = (min(n, len(images)) + cols - 1) // cols
    fig, axes = _subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < min(n, len(images)):
            pixels, style = _pixels(images[i])
            ax.imshow(pixels, **style)
            ax.set_title(classes[int(labels[i])], fontsize=8)
    fig.tight_layout()
    return fig


def attention_figure(image, attention, title: str = "", grid: tuple[int, int] | None = None):
    """The input image beside one square heatmap per head, and, when the patches
    form a `grid` (rows, cols), what the class token attends to drawn over the image.

    image: (H, W) or (C, H, W), pixels in 0..1; attention: (heads, T, T) post-softmax weights
    of one example, token 0 being the class token and tokens 1.. the patches row by row.
    """
    pixels, style = _pixels(image)
    heads = attention.shape[0]
    per_row = min(heads, 4)
    head_rows = (heads + per_row - 1) // per_row
    overlay = grid is not None and grid[0] * grid[1] == attention.shape[-1] - 1
    rows = head_rows * (2 if overlay else 1)
    fig, axes = _subplots(rows, per_row + 1, figsize=((per_row + 1) * 2.6, rows * 2.7), squeeze=False,
                          layout="constrained")  # no blank band under the title, room for the axis labels
    tokens = attention.shape[-1]
    if overlay:  # CLS, then each row of patches (r0, r1, ...) at the middle of its tokens
        ticks = [0] + [1 + r * grid[1] + (grid[1] - 1) / 2 for r in range(grid[0])]
        labels = ["CLS"] + [f"r{r}" for r in range(grid[0])]
    else:
        ticks, labels = [0], ["CLS"]
    for ax in axes.flat:
        ax.axis("off")
    axes[0][0].imshow(pixels, **style)
    axes[0][0].set_title("input")
    vmax = float(attention.max())
    im = None
    for h in range(heads):
        ax = axes[h // per_row][1 + h % per_row]
        im = ax.imshow(attention[h], cmap="viridis", vmin=0, vmax=vmax, aspect="equal")
        ax.set_title(f"head {h}", fontsize=9)
        ax.axis("on")
        ax.set_xticks(ticks, labels, fontsize=6)
        ax.set_yticks(ticks, labels, fontsize=6)
        if h % per_row == 0:
            ax.set_ylabel("query token", fontsize=8)
        if h // per_row == head_rows - 1:
            ax.set_xlabel(f"key token (of {tokens})", fontsize=8)
    if overlay:
        side = pixels.shape[0] // grid[0]
        axes[head_rows][0].text(0.5, 0.5, f"class token's\nattention to\neach patch\n(r0, r1.. on the axes:\nrows of {side}x{side}\npatches; each panel\non its own scale)", ha="center", va="center",
                                fontsize=9, transform=axes[head_rows][0].transAxes)
        h_img, w_img = pixels.shape[:2]
        for h in range(heads):
            ax = axes[head_rows + h // per_row][1 + h % per_row]
            cls_row = attention[h, 0, 1:].reshape(grid)
            ax.imshow(pixels, **style, extent=(0, w_img, h_img, 0))
            ax.imshow(cls_row, cmap="magma", alpha=0.55, extent=(0, w_img, h_img, 0), interpolation="nearest")
            ax.set_title(f"head {h}: cls -> patches", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes[:head_rows].ravel().tolist(), shrink=0.6, label="attention weight")
    if title:
        fig.suptitle(title)
    return fig


def trials_figure(rows):
    """Validation (and test) accuracy of every finished trial, in trial order."""
    rows = sorted((r for r in rows if r["val_accuracy"] is not None), key=lambda r: r["trial"])
    fig, ax = _subplots(figsize=(7, 4.2), layout="constrained")
    if rows:
        best = max(rows, key=lambda r: r["val_accuracy"] if r["state"] == "complete" else -1)
        colors = ["tab:green" if r is best else ("tab:gray" if r["state"] != "complete" else "tab:blue") for r in rows]
        ax.bar([str(r["trial"]) for r in rows], [r["val_accuracy"] for r in rows], color=colors, label="val acc")
        tests = [(str(r["trial"]), r["test_accuracy"]) for r in rows if r["test_accuracy"] is not None]
        if tests:
            ax.plot(*zip(*tests), "k_", markersize=14, label="test acc")
        values = [r["val_accuracy"] for r in rows] + [t for _, t in tests]
        lo, hi = min(values), max(values)
        pad = max((hi - lo) * 0.15, 0.002)
        ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))  # every bar's top is inside the axes
    ax.set_title(f"sweep: accuracy per trial ({len(rows)} with a validation figure)")
    ax.set_xlabel("trial (green: best on validation; gray: pruned or failed)")
    ax.set_ylabel("accuracy")
    if rows:  # beside the bars, never over them
        fig.legend(loc="outside right upper", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def settings_figure(rows, keys, log_keys=frozenset()):
    """Best validation accuracy against each swept setting, one panel per setting."""
    done = [r for r in rows if r["state"] == "complete" and r["val_accuracy"] is not None]
    n = max(len(keys), 1)
    fig, axes = _subplots(1, n, figsize=(4 * n, 3.8), squeeze=False, layout="constrained")
    fig.suptitle(f"sweep: validation accuracy against each setting ({len(done)} finished trials)")
    for ax, key in zip(axes[0], keys):
        pts = [(r["settings"].get(key), r["val_accuracy"]) for r in done if key in r["settings"]]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v, _ in pts)
        xs = [v if numeric else str(v) for v, _ in pts]
        caption = ""
        if not numeric:  # long labels (whole layer lists) become letters, explained under the axis
            labels = list(dict.fromkeys(xs))
            if max((len(l) for l in labels), default=0) > 12:
                letters = {l: chr(65 + i) for i, l in enumerate(labels)}
                caption = "\n".join(f"{letters[l]}: {l}" for l in labels)
                xs = [letters[x] for x in xs]
        ax.plot(xs, [a for _, a in pts], "o", alpha=0.8)
        if numeric and key in log_keys:
            ax.set_xscale("log")
        ax.set_xlabel(key + ("\n" + caption if caption else ""), fontsize=8 if caption else None)
        ax.set_ylabel("val accuracy (saved model)")
        ax.grid(alpha=0.3)
    return fig


def confusion_figure(matrix, classes, title: str = ""):
    """Test confusion matrix: rows true class, columns predicted, counts written in the cells."""
    n = len(classes)
    side = min(1.6 + 0.55 * n, 12)
    fig, ax = _subplots(figsize=(side, side * 0.9), layout="constrained")
    shown = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)  # colour: share of each true class
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if shown[i, j] > 0.5 else "black")
        ax.set_xticks(range(n), [str(c) for c in classes], rotation=90 if max(len(str(c)) for c in classes) > 3 else 0)
        ax.set_yticks(range(n), [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "test confusion matrix")
    return fig


def mistakes_figure(images, truths, guesses, classes, title: str = ""):
    """Misclassified test images (0..1, C x H x W) with 'true -> predicted' under each."""
    cols = min(8, max(1, len(images)))
    rows = max(1, (len(images) + cols - 1) // cols)
    fig, axes = _subplots(rows, cols, figsize=(cols * 1.25, rows * 1.45 + 0.4), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            pixels, style = _pixels(images[i])
            ax.imshow(pixels, **style)
            ax.set_title(f"{classes[truths[i]]} → {classes[guesses[i]]}", fontsize=8)
    fig.suptitle(title or "misclassified test images (true → predicted)", fontsize=9)
    return fig


def accuracy_histogram(accuracies: list[float], title: str = ""):
    """How a class's test accuracies spread (netspec grade)."""
    fig, ax = _subplots(figsize=(6.4, 3.6), layout="constrained")
    low = min(accuracies, default=0.0)
    ax.hist(accuracies, bins=min(20, max(5, len(accuracies))), range=(min(low, 0.9), 1.0), color="tab:blue",
            edgecolor="white")
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("submissions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # a count of students, never 1.5
    ax.set_title(title or "test accuracy")
    ax.grid(alpha=0.3, axis="y")
    return fig
