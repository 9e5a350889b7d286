"""--log tensorboard: the run's event files in RUN_DIR/tensorboard/, written by torch's SummaryWriter.

Scalars: the training loss as the progress line shows it (step/train_loss, at each look at the
loss), each epoch's numbers (epoch/train_loss, epoch/val_acc, epoch/lr, ...) and the test accuracy
(test/accuracy). The run's settings go to the hparams plugin, so the trials of a sweep
(`tensorboard --logdir SWEEP_DIR`) line up in its table; the run's figures (confusion matrix,
attention maps, ...) are images at the end.
"""
from __future__ import annotations

import struct
from pathlib import Path

import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it; imported first so its absence is named
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from netspec.runner.metrics import Status
from netspec.trackers.base import Tracker, epoch_scalars, figures, flat_settings

FOLDER = "tensorboard"  # in the run folder
TEST_ACCURACY = "test/accuracy"


class TensorBoardTracker(Tracker):
    title = "TensorBoard"

    writer = None
    steps = 1  # per epoch
    epochs_done = 0
    session_end = None

    def run_start(self, run):
        self.writer = SummaryWriter(log_dir=str(run.run_dir / FOLDER))
        settings = {k: ("None" if v is None else v) for k, v in flat_settings(run.spec).items()}
        settings.update({"rules": ",".join(run.rules), "draft": run.draft, "device": run.device})
        # the metric values are the scalars of those names, read by the plugin from this run
        experiment, start, self.session_end = hparams(settings, {TEST_ACCURACY: 0.0, "epoch/val_acc": 0.0})
        if not run.resumed:  # a resumed run's settings were written when it started
            for summary in (experiment, start):
                self.writer.file_writer.add_summary(summary)

    def start(self, *, epochs, first_epoch, steps):
        self.steps, self.epochs_done = steps, first_epoch - 1

    def step(self, *, epoch, step, loss):
        self.writer.add_scalar("step/train_loss", loss, (epoch - 1) * self.steps + step)

    def epoch(self, stats):
        for tag, value in epoch_scalars(stats).items():
            self.writer.add_scalar(tag, value, stats.epoch)
        self.epochs_done = stats.epoch
        self.writer.flush()

    def run_end(self, run, *, test_accuracy, status):
        if test_accuracy is not None:
            self.writer.add_scalar(TEST_ACCURACY, test_accuracy, self.epochs_done)
        for png in figures(run.run_dir):
            self.writer.file_writer.add_summary(_image(f"figures/{png.stem}", png), self.epochs_done)
        if self.session_end is not None and status == Status.FINISHED:
            self.writer.file_writer.add_summary(self.session_end)
        self.writer.close()


def _image(tag: str, png: Path) -> Summary:
    """A PNG as a TensorBoard image, its bytes as written (no decoding and encoding again)."""
    data = png.read_bytes()
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk, first in every PNG
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(data[25], 4)  # by colour type: grey, RGB, grey+alpha, RGBA
    return Summary(value=[Summary.Value(tag=tag, image=Summary.Image(height=height, width=width, colorspace=channels,
                                                                    encoded_image_string=data))])
