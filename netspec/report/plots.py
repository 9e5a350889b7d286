"""Figures: loss curves, sample grids and attention heatmaps (matplotlib, no screen)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def loss_figure(history, title: str = ""):
    """Training and validation loss per epoch (and validation accuracy on a second axis)."""
    epochs = [h.epoch for h in history]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(epochs, [h.train_loss for h in history], "o-", label="training loss")
    ax.plot(epochs, [h.val_loss for h in history], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    acc = ax.twinx()
    acc.plot(epochs, [h.val_acc for h in history], "--", color="tab:green", alpha=0.6, label="validation accuracy")
    acc.set_ylabel("validation accuracy")
    lines = ax.get_lines() + acc.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], loc="center right")
    if len(epochs) < 20:
        ax.set_xticks(epochs)
    fig.tight_layout()
    return fig


def overlay_figure(runs: dict[str, list]):
    """Loss curves of several runs in one figure (netspec compare)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, history) in enumerate(runs.items()):
        color = f"C{i % 10}"
        ax.plot([h.epoch for h in history], [h.train_loss for h in history], "-", color=color, label=f"{name} train")
        ax.plot([h.epoch for h in history], [h.val_loss for h in history], "--", color=color, label=f"{name} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("training (solid) and validation (dashed) loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def samples_figure(images, labels, classes, n: int = 32):
    """A grid of the first n images (uint8, H x W) with their labels."""
    cols = 8
    rows = (min(n, len(images)) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < min(n, len(images)):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            ax.set_title(classes[int(labels[i])], fontsize=8)
    fig.tight_layout()
    return fig


def attention_figure(image, attention, title: str = ""):
    """The input image beside one square heatmap per head.

    image: (H, W); attention: (heads, T, T) post-softmax weights of one example.
    """
    heads = attention.shape[0]
    cols = min(heads, 4) + 1
    rows = (heads + cols - 2) // (cols - 1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0][0].imshow(image, cmap="gray")
    axes[0][0].set_title("input")
    vmax = float(attention.max())
    for h in range(heads):
        ax = axes[h // (cols - 1)][1 + h % (cols - 1)]
        im = ax.imshow(attention[h], cmap="viridis", vmin=0, vmax=vmax, aspect="equal")
        ax.set_title(f"head {h}", fontsize=9)
        ax.axis("on")
        ax.set_xticks([0])
        ax.set_xticklabels(["cls"], fontsize=7)
        ax.set_yticks([0])
        ax.set_yticklabels(["cls"], fontsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="attention weight")
    if title:
        fig.suptitle(title)
    return fig


def close(fig) -> None:
    plt.close(fig)
