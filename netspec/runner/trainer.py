"""The Trainer: the one training loop. It owns the step (a strategy, steps.py) and the stop (stop.py),
and tells its events to its observers. Randomness is derived from (seed, epoch) alone, so resuming
after epoch e replays epochs e+1.. exactly as an uninterrupted run would (on the same machine)."""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from netspec.data.augment import Augment
from netspec.data.splits import Data, Split
from netspec.errors import CheckpointError, first_line, RunError
from netspec.runner import stop
from netspec.runner.distributed import SINGLE, Ranks, least, peer_left, summed, wrap
from netspec.runner.metrics import Status
from netspec.runner.observer import Observer, Observers
from netspec.runner.speed import Speed, arrange, autocast, resolve, standard_state
from netspec.runner.steps import STRATEGIES
from netspec.spec.config import Spec


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    lr: float  # at the end of the epoch


@dataclass(frozen=True)
class Outcome:
    """How `fit` ended: finished, or why not."""

    status: Status = Status.FINISHED
    reason: str | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device '{name}' asked for, but torch sees no CUDA GPU here; use device: cpu or auto")
    if name.startswith("cuda") and int(name.partition(":")[2] or 0) >= torch.cuda.device_count():
        raise RunError(f"device '{name}' asked for, but there are {torch.cuda.device_count()} GPU(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RunError("device 'mps' asked for, but it is not available here")
    return torch.device(name)


def logits_model(model: nn.Module, softmax_head: bool) -> nn.Module:
    """The part of the model that outputs logits (a spec may end in Softmax, which keeps the argmax)."""
    return model[:-1] if softmax_head else model


@torch.no_grad()
def evaluate(net: nn.Module, split: Split, batch_size: int, speed: Speed | None = None,
             keep: list | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `net` (logits) on a split, in `speed`'s precision (fp32 when
    not given); `keep` receives (labels, predicted labels) per batch on the CPU (the confusion matrix)."""
    if len(split) == 0:
        return float("nan"), float("nan")
    was_training = net.training
    net.eval()
    device = split.y.device
    loss, correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
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


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63)


def steps_per_epoch(n: int, batch_size: int, processes: int) -> int:
    """Batches of an epoch; a last batch that leaves some process one sample (BatchNorm cannot train on it) is dropped."""
    last = n % batch_size
    return -(-n // batch_size) - (1 if 0 < last and last // processes <= 1 else 0)


class Trainer:
    """Trains `model` on `data` as `spec` says, at `speed` (resolved for `device` when not given).
    `observer` hears the loop's events; `ranks` is this process's place among torchrun's."""

    def __init__(self, spec: Spec, model: nn.Module, data: Data, device: torch.device, *, softmax_head: bool,
                 speed: Speed | None = None, observer: Observer | None = None, ranks: Ranks = SINGLE):
        self.spec, self.model, self.data, self.device, self.ranks = spec, model, data, device, ranks
        self.speed = speed or resolve(spec, device)
        self.net = logits_model(arrange(model, self.speed), softmax_head)  # evaluated as it is, on one process
        self.eager = wrap(self.net, ranks, device, spec.train.sync_batchnorm)  # DDP when there are several
        self.params = [p for p in self.net.parameters() if p.requires_grad]  # those the finite check reads
        self.events = observer if isinstance(observer, Observers) else Observers([observer])
        self.detect_anomaly = False
        # fp16 needs loss scaling against underflowing gradients; bf16 has fp32's range and does not
        self.scaler = torch.amp.GradScaler(device.type) if self.speed.precision == "fp16" else None
        t = spec.train
        self.augment = Augment(t.augment, data.image_shape, device) if t.augment.enabled else None
        self.steps_per_epoch = steps_per_epoch(len(data.train), t.batch_size, ranks.size)
        self.strategy = STRATEGIES[self.speed.compile](self)
        self.optimizer = self.strategy.optimizer
        self.history: list[EpochStats] = []
        self.outcome = Outcome()
        self.step_losses: list[tuple[float, float]] = []  # (epochs done, mean loss since the last look): the curve

    def state(self) -> dict:
        return {"epoch": len(self.history), "model": standard_state(self.model),
                "optimizer": self.optimizer.state_dict(), "schedule": self.strategy.schedule_state(),
                "history": [asdict(h) for h in self.history]}

    def load_state(self, state, source="checkpoint") -> None:
        """Continue from `state()`; anything else (another run's keys, a foreign file) is one clear error."""
        try:
            if not isinstance(state, dict) or not {"model", "optimizer", "history"} <= state.keys():
                raise ValueError("it lacks model, optimizer or history")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.history = [EpochStats(**h) for h in state["history"]]
            self.strategy.resume(state.get("schedule"), len(self.history) * self.steps_per_epoch)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as e:
            raise CheckpointError(f"{source} is not a checkpoint of this run: {first_line(e, type(e).__name__)}") from None

    def fit(self) -> Outcome:
        """Train the remaining epochs, until a stop request or a non-finite step; an epoch cut short is not kept."""
        first, last = len(self.history) + 1, self.spec.train.epochs
        self.events.start(epochs=last, first_epoch=first, steps=self.steps_per_epoch)
        try:
            with torch.autograd.detect_anomaly() if self.detect_anomaly else nullcontext(), stop.held():
                for epoch in range(first, last + 1):
                    if not self.train_epoch(epoch):
                        break
                    if reason := self.events.epoch(self.history[-1]):
                        self.outcome = Outcome(Status.STOPPED, reason)
                    if self.outcome.status is not Status.FINISHED or self._asked(every_step=False):
                        break
        except KeyboardInterrupt:  # Ctrl-C pressed again: the step under way is abandoned
            self.outcome = Outcome(Status.INTERRUPTED, "Ctrl-C")
        except Exception as e:
            # a step failing once a stop is asked for (a DataLoader worker stopped by the same Ctrl-C) or
            # because another process left (torchrun stopping it) is the stop
            left = self.ranks.size > 1 and isinstance(e, RuntimeError) and peer_left(e)
            if not (stop.requested() or left):
                raise
            self.outcome = Outcome(Status.INTERRUPTED, stop.requested() or "another process left")
        finally:
            self.events.end()
        return self.outcome

    def _asked(self, every_step: bool) -> bool:
        """Whether to stop now: a stop request, agreed by every process (at looks only, when several)."""
        if self.ranks.size > 1 and every_step:
            return False
        wanted = stop.requested()
        if self.ranks.size > 1:
            wanted = wanted or ("another process was stopped" if least(self.ranks, torch.tensor(
                0.0 if wanted else 1.0, device=self.device)).item() == 0 else None)
        if wanted:
            self.outcome = Outcome(Status.INTERRUPTED, wanted)
        return bool(wanted)

    def shuffle(self, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
        """The epoch's order (the same in every process) and its augmentation generator (each process's own)."""
        seed = epoch_seed(self.spec.train.seed, epoch)
        mine = seed if self.ranks.size == 1 else (seed + 104_729 * self.ranks.rank) % 2**63
        torch.manual_seed(mine)  # dropout (and any other global randomness) of this epoch
        order = torch.randperm(len(self.data.train), generator=torch.Generator().manual_seed(seed)).to(self.device)
        return order, torch.Generator(device=self.device).manual_seed(mine + 1)

    def train_epoch(self, epoch: int) -> bool:
        """One epoch of steps; False when it was cut short (a stop, a non-finite step)."""
        start, strategy, n = time.perf_counter(), self.strategy, self.steps_per_epoch
        strategy.tally.reset()
        strategy.begin(*self.shuffle(epoch))
        self.eager.train()
        for i in range(n):
            strategy.step(i)
            look = (i + 1) % strategy.looks_every == 0 or i + 1 == n
            if look and not self._look(epoch, i) or self._asked(every_step=not look):
                return False
        total, right, count = self._totals
        val_loss, val_acc = evaluate(self.net, self.data.val, self.spec.train.eval_batch_size, self.speed)
        self.history.append(EpochStats(epoch=epoch, train_loss=total / count, train_acc=right / count,
                                       val_loss=val_loss, val_acc=val_acc, seconds=time.perf_counter() - start,
                                       lr=strategy.lr(epoch)))
        return True

    def _look(self, epoch: int, step: int) -> bool:
        """A look at the tally from the host (a sync on a GPU): False at the first non-finite step."""
        tally = self.strategy.tally
        tally.fold()
        good = int(least(self.ranks, tally.steps_ok).item())  # every process takes the same branch
        if good <= step:
            what = "loss" if int(least(self.ranks, tally.loss_steps_ok).item()) == good else "gradient (the loss was finite)"
            self.outcome = Outcome(Status.FAILED, f"non-finite {what} at epoch {epoch}, step {good + 1}")
            return False
        total, right, count = (float(v) for v in summed(self.ranks, tally.loss_sum, tally.correct,
                                                        torch.tensor(float(tally.seen))))
        window = count - tally.shown_seen
        if window:
            self.step_losses.append((epoch - 1 + (step + 1) / self.steps_per_epoch, (total - tally.shown_sum) / window))
        tally.shown_sum, tally.shown_seen = total, count
        self._totals = (total, right, count)
        self.events.step(epoch=epoch, step=step + 1, loss=total / count)
        return True
