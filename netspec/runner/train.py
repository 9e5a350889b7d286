"""The training loop: seeded, resumable, and stopped at the first non-finite step.

Randomness is derived from (seed, epoch): the data order, the augmentation
and dropout of epoch e depend on nothing else, so resuming after epoch e
replays epochs e+1.. exactly as an uninterrupted run would (on the same
machine). Batches are slices of tensors already on the device.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from netspec.data.augment import Augment
from netspec.data.splits import Data, Split
from netspec.runner.distributed import SINGLE, Ranks, least, summed, wrap
from netspec.runner.observer import Observer  # noqa: F401 (re-exported)
from netspec.errors import CheckpointError, during_interrupt, first_line, RunError
from netspec.runner.graphstep import DeviceLoop
from netspec.runner.processes import interrupts_between_steps, Pending
from netspec.runner.speed import COMPILE_MODES, Speed, arrange, autocast, resolve, standard_state
from netspec.spec.config import OptimizerSpec, ScheduleSpec, Spec


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    lr: float  # at the end of the epoch


class NonFinite(RunError):
    def __init__(self, epoch: int, step: int, what: str):
        self.epoch, self.step = epoch, step
        super().__init__(f"non-finite {what} at epoch {epoch}, step {step}; stopped")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunError(f"device '{name}' asked for, but torch sees no CUDA GPU here; use device: cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise RunError(f"device '{name}' asked for, but there are {torch.cuda.device_count()} GPU(s)")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise RunError("device 'mps' asked for, but it is not available here")
    return torch.device(name)


FUSED_DEVICES = ("cuda", "cpu")  # where torch has fused Adam, AdamW and SGD


def make_optimizer(params, spec: OptimizerSpec, fused: bool = False) -> torch.optim.Optimizer:
    """`fused` (torch's fused kernels, on a GPU and on the CPU): one kernel per parameter tensor for
    the whole update instead of a dozen element-wise ops each; on this project's 2-core Xeon the
    MLP's Adam step took 200 us fused against 470 us (README, "Speed")."""
    kw = {"fused": True} if fused else {}
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay, **kw)
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay, **kw)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
                           weight_decay=spec.weight_decay, **kw)


def make_schedule(optimizer, spec: ScheduleSpec, lr: float, total_steps: int):
    if spec.name == "onecycle":
        if spec.pct_start * total_steps <= 1 or (1 - spec.pct_start) * total_steps <= 1:
            # torch divides by (pct_start * total_steps - 1) and fails with a ZeroDivisionError
            raise RunError(f"the one-cycle schedule needs more than {math.ceil(1 / min(spec.pct_start, 1 - spec.pct_start))} "
                           f"steps with pct_start {spec.pct_start}; this run has {total_steps} (epochs x batches per "
                           f"epoch): use more data (--limit), a smaller batch size, or schedule: none")
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total_steps, pct_start=spec.pct_start,
            cycle_momentum=spec.cycle_momentum, base_momentum=spec.base_momentum, max_momentum=spec.max_momentum)
    if spec.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=spec.min_lr)
    return None


def logits_model(model: nn.Module, softmax_head: bool) -> nn.Module:
    """The part of the model that outputs logits.

    A spec may end in Softmax (the problem set's networks do). Cross-entropy
    takes logits, so training and loss use the model without that last layer;
    predictions are the same either way (softmax keeps the argmax).
    """
    return model[:-1] if softmax_head else model


@torch.no_grad()
def evaluate(net: nn.Module, split: Split, batch_size: int, speed: Speed | None = None,
             keep: list | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `net` (logits) on a split, in `speed`'s precision
    (fp32 when not given). `keep`, when given, receives (labels, predicted labels) per batch on
    the CPU: the same pass gives the report its confusion matrix."""
    if len(split) == 0:
        return float("nan"), float("nan")
    was_training = net.training
    net.eval()
    device = split.y.device
    loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in split.batches(batch_size):
        with autocast(speed, device) if speed else nullcontext():
            logits = net(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum")
        guess = logits.argmax(1)
        correct += (guess == y).sum()
        if keep is not None:
            keep.append((y.cpu(), guess.cpu()))
    net.train(was_training)
    return loss.item() / len(split), correct.item() / len(split)


def non_finite_check(params, found: torch.Tensor, one: torch.Tensor) -> None:
    """`found` set to 1 if any gradient holds inf or NaN: one fused pass over all of them (the
    kernel GradScaler uses, its scale 1), where a total norm took five; torch's norm if absent."""
    grads = [p.grad for p in params if p.grad is not None]
    check = getattr(torch, "_amp_foreach_non_finite_check_and_unscale_", None)
    if check is not None:
        check(grads, found, one)
    else:
        found.copy_(torch.maximum(found, (~torch.isfinite(torch.nn.utils.get_total_norm(grads))).float()))


class _Tally:
    """An epoch's counters, kept on the device so that a step never waits for the host: the loss
    sum and right answers, and the finite check's state. `found` turns 1 at the first non-finite
    gradient and stays; counting the steps before anything went wrong gives the first bad step
    at the next look. The device-driven step (graphstep.py) updates them at every step, inside
    its CUDA graph; the usual loop keeps a `_Window` instead."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.found = torch.zeros(1, device=device)
        self.found_now = self.found.view(())  # the same flag, as a scalar
        self.one = torch.ones(1, device=device)
        self.steps_ok = torch.zeros((), device=device, dtype=torch.long)  # before the first bad loss or gradient
        self.loss_steps_ok = torch.zeros((), device=device, dtype=torch.long)  # before the first bad loss
        self.seen = 0
        self.shown_sum, self.shown_seen = 0.0, 0.0  # at the last look

    def reset(self) -> None:
        """Zeroed in place (a CUDA graph keeps these very tensors) for the next epoch."""
        for counter in (self.loss_sum, self.correct, self.found, self.steps_ok, self.loss_steps_ok):
            counter.zero_()
        self.seen, self.shown_sum, self.shown_seen = 0, 0.0, 0.0

    def flag(self) -> torch.Tensor:
        """Where this step's finite check of the gradients writes (1 if any is inf or NaN)."""
        return self.found

    def step(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * len(y)
        finite = torch.isfinite(self.loss_sum)  # a sum stays non-finite once one loss was
        self.loss_steps_ok += finite
        self.steps_ok += finite & (self.found_now == 0)
        self.correct += (logits.argmax(1) == y).sum()
        self.seen += len(y)

    def fold(self) -> None:
        """Bring the counters up to date before the host reads them (they always are here)."""


class _Window(_Tally):
    """The usual loop's counters: a step keeps its loss, guesses and labels, and its finite check
    writes its own flag; a look folds the steps since the last one into the counters in about a
    dozen whole-window operations. Counting at every step took fourteen small operations a step;
    the window takes one, the argmax (on a GPU, one kernel launch instead of fourteen; on this
    project's 2-core Xeon the MLP recipe's step went from 1.198 to 1.165 ms, docs/speed.md). The
    counters come out as `_Tally`'s, bit for bit: the loss sum, the right answers, the first bad
    step, and whether its loss or only its gradient was non-finite."""

    def __init__(self, device: torch.device, size: int):
        super().__init__(device)
        self.flags = torch.zeros(size, device=device)
        self.slots = [self.flags[i: i + 1] for i in range(size)]  # views made once: no op per step
        self.kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def flag(self) -> torch.Tensor:
        return self.slots[len(self.kept)]

    def step(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        # the guesses, not the logits: under `compile: cudagraphs` the logits are the graph's own
        # output, which its next replay overwrites (torch then refuses to read them)
        self.kept.append((loss.detach(), logits.argmax(1), y))
        self.seen += len(y)

    def fold(self) -> None:
        if not self.kept:
            return
        k = len(self.kept)
        losses, guesses, labels = zip(*self.kept)
        sizes = torch.tensor([len(y) for y in labels], dtype=torch.float32, device=self.loss_sum.device)
        # the running sum after each step, as the steps added it, and its flags so far
        sums = torch.cumsum(torch.cat([self.loss_sum.view(1), torch.stack(losses).float() * sizes]), 0)[1:]
        finite = torch.isfinite(sums)
        clean = (torch.cumsum(self.flags[:k], 0) + self.found) == 0
        self.loss_steps_ok += finite.sum()
        self.steps_ok += (finite & clean).sum()
        self.loss_sum.copy_(sums[-1])
        self.found.copy_(torch.maximum(self.found, self.flags[:k].max().view(1)))
        self.correct += (torch.cat(guesses) == torch.cat(labels)).sum()
        self.flags.zero_()
        self.kept.clear()


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63)


class Trainer:
    def __init__(self, spec: Spec, model: nn.Module, data: Data, device: torch.device, *,
                 softmax_head: bool, observer: Observer | None = None, detect_anomaly: bool = False,
                 ranks: Ranks = SINGLE):
        self.spec, self.model, self.data, self.device, self.ranks = spec, model, data, device, ranks
        self.speed = resolve(spec, device)
        self.net = logits_model(arrange(model, self.speed), softmax_head)  # evaluated as it is, on one process
        self.eager = wrap(self.net, ranks, device, spec.train.sync_batchnorm)  # DDP when there are several
        self.params = [p for p in self.net.parameters() if p.requires_grad]  # those the finite check reads
        self.observer = observer or Observer()
        self.detect_anomaly = detect_anomaly
        # fp16 needs loss scaling against underflowing gradients; bf16 has fp32's range and does not
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.speed.precision == "fp16")
        self.forward = self.eager
        t = spec.train
        self.augment = Augment(t.augment, data.image_shape, device) if t.augment.enabled else None
        if self.speed.compile not in ("off", "graph"):
            try:
                self.forward = torch.compile(self.eager, mode=COMPILE_MODES[self.speed.compile], dynamic=False)
            except Exception as e:  # noqa: BLE001 - any failure to compile means: train eagerly
                self._compile_failed(e)
        n = len(data.train)
        # a last batch that leaves some process a share of one sample (BatchNorm cannot train on one)
        # is dropped, as a plain run drops a last batch of one
        last = n % t.batch_size
        self.steps_per_epoch = math.ceil(n / t.batch_size) - (1 if 0 < last and last // ranks.size <= 1 else 0)
        self.loop = None
        if self.speed.compile == "graph":  # the schedule is a table on the device, read by the step itself
            self.loop = DeviceLoop(self)
            self.optimizer, self.schedule = self.loop.optimizer, None
        else:
            self.optimizer = make_optimizer(self.net.parameters(), t.optimizer, fused=device.type in FUSED_DEVICES)
            self.schedule = make_schedule(self.optimizer, t.schedule, t.optimizer.lr, t.epochs * self.steps_per_epoch)
        self.history: list[EpochStats] = []
        self.pending = Pending()  # Ctrl-C or SIGTERM, noted while `fit` runs and taken between steps
        # how often to look at the loss on the host (the progress line, the finite check, the curve
        # within epochs): each look is a sync on a GPU and Python work everywhere
        # (on a CPU every 10th step, or more often in a short epoch, whose curve needs the points)
        self.sync_every = max(1, min(10, self.steps_per_epoch // 50)) if device.type == "cpu" else 50
        # (position in epochs, mean training loss since the last sync): the curve within epochs,
        # which a short run needs (one point per epoch says little about 1 or 2 epochs)
        self.step_losses: list[tuple[float, float]] = []

    # --- state for checkpoints ------------------------------------------------
    def state(self) -> dict:
        return {
            "epoch": len(self.history),
            "model": standard_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule else None,
            "history": [asdict(h) for h in self.history],
        }

    def load_state(self, state, source="checkpoint") -> None:
        """Continue from `state()`; anything else (another run's keys, a foreign file) is one clear error."""
        try:
            if not isinstance(state, dict) or not {"model", "optimizer", "history"} <= state.keys():
                raise ValueError("it lacks model, optimizer or history")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.schedule and state.get("schedule"):
                self.schedule.load_state_dict(state["schedule"])
            self.history = [EpochStats(**h) for h in state["history"]]
            if self.loop is not None:
                self.loop.resume_at(len(self.history) * self.steps_per_epoch)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as e:
            first = first_line(e, type(e).__name__)
            raise CheckpointError(f"{source} is not a checkpoint of this run: {first}") from None

    def _compile_failed(self, e: BaseException) -> None:
        if during_interrupt(e):  # Ctrl-C (the second, which does not wait) made into a compiler error
            raise KeyboardInterrupt from e
        first = first_line(e)[:200]
        self.observer.note(f"torch.compile failed ({type(e).__name__}: {first}); training continues eagerly")
        self.forward = self.eager
        self.speed = replace(self.speed, compile="off")

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.forward is self.eager:
            return self.eager(x)
        try:  # compilation happens at the first calls (and once more for the last, smaller batch)
            return self.forward(x)
        except Exception as e:  # noqa: BLE001 - a compiler error is never the user's training failing
            self._compile_failed(e)
            return self.eager(x)

    # --- the loop -------------------------------------------------------------
    def fit(self, on_epoch_end=None) -> list[EpochStats]:
        """Train the remaining epochs; `on_epoch_end(trainer)` runs after each (checkpointing)."""
        t = self.spec.train
        first = len(self.history) + 1
        self.observer.start(epochs=t.epochs, first_epoch=first, steps=self.steps_per_epoch)
        anomaly = torch.autograd.detect_anomaly() if self.detect_anomaly else nullcontext()
        try:
            with anomaly, interrupts_between_steps() as self.pending:
                for epoch in range(first, t.epochs + 1):
                    self.history.append(self._epoch(epoch))
                    self.observer.epoch(self.history[-1])
                    if on_epoch_end:
                        on_epoch_end(self)
                    self.pending.take()
        finally:
            self.pending = Pending()
            getattr(self.observer, "end", lambda: None)()  # an observer written before this hook lacks it
        return self.history

    def _shuffle(self, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
        """The epoch's order (the same in every process) and its augmentation generator; dropout and
        augmentation are each process's own, all derived from (seed, epoch)."""
        seed = epoch_seed(self.spec.train.seed, epoch)
        mine = seed if self.ranks.size == 1 else (seed + 104_729 * self.ranks.rank) % 2**63
        torch.manual_seed(mine)  # dropout (and any other global randomness) of this epoch
        order = torch.randperm(len(self.data.train), generator=torch.Generator().manual_seed(seed)).to(self.device)
        return order, torch.Generator(device=self.device).manual_seed(mine + 1)

    def _look(self, tally: "_Tally", epoch: int, step: int) -> tuple[float, float, float]:
        """A look at the device counters from the host (a sync on a GPU): stop at the first
        non-finite step, extend the curve within the epoch, and tell the observer. Returns the
        epoch's (loss sum, right, seen) so far, over every process."""
        tally.fold()
        good = int(least(self.ranks, tally.steps_ok).item())  # every process takes the same branch
        if good <= step:
            what = "loss" if int(least(self.ranks, tally.loss_steps_ok).item()) == good else "gradient (the loss was finite)"
            raise NonFinite(epoch, good + 1, what)
        total, right, count = (float(v) for v in summed(self.ranks, tally.loss_sum, tally.correct,
                                                        torch.tensor(float(tally.seen))))
        window = count - tally.shown_seen
        if window:
            self.step_losses.append((epoch - 1 + (step + 1) / self.steps_per_epoch, (total - tally.shown_sum) / window))
        tally.shown_sum, tally.shown_seen = total, count
        self.observer.step(epoch=epoch, step=step + 1, loss=total / count)
        return total, right, count

    def _epoch(self, epoch: int) -> EpochStats:
        t = self.spec.train
        start = time.perf_counter()
        total, right, count = self.loop.epoch(epoch) if self.loop is not None else self._steps(epoch)
        val_loss, val_acc = evaluate(self.net, self.data.val, t.eval_batch_size, self.speed)
        return EpochStats(
            epoch=epoch, train_loss=total / count, train_acc=right / count,
            val_loss=val_loss, val_acc=val_acc, seconds=time.perf_counter() - start,
            lr=self.loop.lr(epoch) if self.loop is not None else self.optimizer.param_groups[0]["lr"],
        )

    def backward(self, x: torch.Tensor, y: torch.Tensor, aug_gen: torch.Generator, tally: "_Tally",
                 set_to_none: bool = True) -> None:
        """A step up to the optimizer, shared by both loops: augmentation, forward, loss, fresh
        gradients, the finite check and the counters."""
        if self.augment is not None:
            x = self.augment(x, aug_gen)
        with autocast(self.speed, self.device):
            logits = self._logits(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.spec.train.label_smoothing)
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self.scaler.scale(loss).backward()
        if not self.scaler.is_enabled():  # fp16 overflows are expected: the scaler skips that step and rescales
            non_finite_check(self.params, tally.flag(), tally.one)
        tally.step(loss, logits, y)

    def _steps(self, epoch: int) -> tuple[float, float, float]:
        """One epoch of steps, the host looking at the counters every `sync_every`; returns the
        epoch's (loss sum, right, seen) of the last look (the last step is always looked at)."""
        t = self.spec.train
        order, aug_gen = self._shuffle(epoch)
        self.eager.train()
        tally = _Window(self.device, self.sync_every)
        for step, (x, y) in enumerate(self.data.train.batches(t.batch_size, order, self.steps_per_epoch,
                                                              part=self.ranks.part)):
            self.backward(x, y, aug_gen, tally)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.schedule:
                self.schedule.step()
            if (step + 1) % self.sync_every == 0 or step + 1 == self.steps_per_epoch:
                total, right, count = self._look(tally, epoch, step)
            self.pending.take()
        return total, right, count
