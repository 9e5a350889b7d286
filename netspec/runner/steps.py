"""How the Trainer's step runs: the step strategies (STRATEGIES, by train.compile) and the one tally they
count in. The Trainer calls `begin(order, gen)` at an epoch's start, then `step(i)` for each step."""
from __future__ import annotations

import math
import traceback
from dataclasses import replace
from pathlib import Path
import torch
import torch.nn.functional as F

from netspec.data.splits import share as data_share
from netspec.errors import first_line, RunError
from netspec.runner.optim import DeviceOptimizer, make_optimizer, make_schedule, schedule_table
from netspec.runner.speed import COMPILE_MODES, autocast

FUSED_DEVICES = ("cuda", "cpu")  # where torch has fused Adam, AdamW and SGD
WARMUP = 3  # eager steps on a side stream before a capture, as torch's CUDA graph docs do
CHUNK, CHUNK_VALUES = 8, 1 << 20  # eager batches gathered and augmented at once: at most 8, and 4 MB of fp32


class Tally:
    """An epoch's counters, on the device so that a step never waits for the host. A step keeps its loss,
    guesses and labels and writes its finite flag; `fold` adds the kept steps in whole-window operations.
    `found`: 1 after a non-finite gradient; `steps_ok`, `loss_steps_ok`: steps before anything (the loss) went wrong."""

    def __init__(self, device: torch.device, window: int):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.found = torch.zeros(1, device=device)
        self.one = torch.ones(1, device=device)
        self.steps_ok = torch.zeros((), device=device, dtype=torch.long)
        self.loss_steps_ok = torch.zeros((), device=device, dtype=torch.long)
        self.flags = torch.zeros(window, device=device)
        self.slots = [self.flags[i: i + 1] for i in range(window)]  # views made once: no op per step
        self.kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.seen, self.shown_sum, self.shown_seen = 0, 0.0, 0.0  # shown: as at the last look

    def reset(self) -> None:
        """Zeroed in place (a CUDA graph keeps these very tensors) for the next epoch."""
        torch._foreach_zero_([self.loss_sum, self.correct, self.found, self.steps_ok, self.loss_steps_ok, self.flags])
        self.kept.clear()
        self.seen, self.shown_sum, self.shown_seen = 0, 0.0, 0.0

    def flag(self) -> torch.Tensor:
        """Where this step's finite check of the gradients writes (1 if any is inf or NaN)."""
        return self.slots[len(self.kept)]

    def step(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        # guesses, not logits: under `compile: cudagraphs` the logits are the graph's, overwritten by its next replay
        self.kept.append((loss.detach(), logits.argmax(1), y))
        self.seen += len(y)

    def fold(self) -> None:
        """The kept steps added to the counters (no host read: a CUDA graph may capture it)."""
        if not self.kept:
            return
        k = len(self.kept)
        # the running sum after each step, as the steps added it, and the flags so far
        added = torch.stack([loss.float() * len(y) for loss, _, y in self.kept])
        sums = torch.cumsum(torch.cat([self.loss_sum.view(1), added]), 0)[1:]
        finite = torch.isfinite(sums)  # a sum stays non-finite once one loss was
        clean = (torch.cumsum(self.flags[:k], 0) + self.found) == 0
        self.loss_steps_ok += finite.sum()
        self.steps_ok += (finite & clean).sum()
        self.loss_sum.copy_(sums[-1])
        self.found.copy_(torch.maximum(self.found, self.flags[:k].max().view(1)))
        self.correct += (torch.cat([g for _, g, _ in self.kept]) == torch.cat([y for _, _, y in self.kept])).sum()
        self.flags.zero_()
        self.kept.clear()


class Strategy:
    """A step strategy: the optimizer, the step, how often the host looks at the tally (`looks_every`
    steps) and how many steps the tally keeps before it folds them (`window`). The Trainer calls
    `begin` as an epoch starts (its order of the samples, its augmentation generator), `step(i)` for
    its steps, `lr(epoch)` after it, and `resume` with a checkpoint's schedule and steps done."""

    def __init__(self, trainer, looks_every: int, window: int):
        self.tr, self.looks_every = trainer, looks_every
        self.tally = Tally(trainer.device, window)
        self.cast = autocast(trainer.speed, trainer.device)
        self.smoothing = trainer.spec.train.label_smoothing
        self.forward = trainer.eager

    def begin(self, order: torch.Tensor, gen: torch.Generator) -> None: ...
    def step(self, i: int) -> None: ...
    def lr(self, epoch: int) -> float: ...
    def schedule_state(self) -> dict | None: ...
    def resume(self, schedule: dict | None, steps_done: int) -> None: ...

    def gradients(self, x: torch.Tensor, y: torch.Tensor, set_to_none: bool = True) -> torch.Tensor:
        """This step's gradients, their finite check and the tally: forward, loss, backward."""
        tr, tally = self.tr, self.tally
        with self.cast:
            logits = self.logits(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.smoothing)
        if set_to_none:
            for p in tr.params:
                p.grad = None
        else:
            self.optimizer.zero_grad(set_to_none=False)
        if tr.scaler is not None:  # fp16: overflows are expected, the scaler skips that step and rescales
            tr.scaler.scale(loss).backward()
        else:
            loss.backward()  # the finite check: GradScaler's fused kernel at scale 1 sets the flag on inf or NaN
            torch._amp_foreach_non_finite_check_and_unscale_([p.grad for p in tr.params if p.grad is not None],
                                                             tally.flag(), tally.one)
        tally.step(loss, logits, y)
        return loss

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        try:  # a compiled forward compiles at its first calls (and once more for a last, smaller batch)
            return self.forward(x)
        except Exception as e:  # noqa: BLE001 - a compiler error is never the user's training failing
            if self.forward is self.tr.eager:
                raise
            self._compile_failed(e)
            return self.forward(x)

    def _compile_failed(self, e: BaseException) -> None:
        self.tr.events.note(f"torch.compile failed ({type(e).__name__}: {first_line(e)[:200]}); training continues eagerly")
        self.forward = self.tr.eager
        self.tr.speed = replace(self.tr.speed, compile="off")


class EagerStep(Strategy):
    """forward (eager, or torch.compile's), loss, backward, the finite check, torch's optimizer and scheduler."""

    def __init__(self, trainer):
        # a look every 25th step on a CPU (more often in a short epoch, for its curve), every 50th on a GPU (a sync)
        every = max(1, min(25, trainer.steps_per_epoch // 50)) if trainer.device.type == "cpu" else 50
        super().__init__(trainer, looks_every=every, window=every)
        tr, t = trainer, trainer.spec.train
        self.optimizer = make_optimizer(tr.net.parameters(), t.optimizer, fused=tr.device.type in FUSED_DEVICES)
        self.schedule = make_schedule(self.optimizer, t.schedule, t.optimizer.lr, t.epochs * tr.steps_per_epoch)
        if tr.speed.compile in COMPILE_MODES:
            try:
                self.forward = torch.compile(tr.eager, mode=COMPILE_MODES[tr.speed.compile], dynamic=False)
            except Exception as e:  # noqa: BLE001 - any failure to compile means: train eagerly
                self._compile_failed(e)

    def begin(self, order, gen) -> None:
        self.batches = self._batches(order, gen)

    def _batches(self, order, gen):
        """The epoch's batches, augmented: gathered and augmented CHUNK at a time, each a few large
        operations in place of a few small ones per batch (the per-batch cost of a small model's step)."""
        tr, size = self.tr, self.tr.spec.train.batch_size
        share = data_share(size, tr.ranks.part)
        chunk = max(1, min(CHUNK, CHUNK_VALUES // (share * math.prod(tr.data.input_shape))))
        for x, y in tr.data.train.batches(size, order, tr.steps_per_epoch, part=tr.ranks.part, chunk=chunk):
            if tr.augment is not None:
                x = tr.augment(x, gen, batch=share)
            yield from zip(x.split(share), y.split(share))

    def step(self, i: int) -> None:
        x, y = next(self.batches)
        self.gradients(x, y)
        if self.tr.scaler is not None:
            self.tr.scaler.step(self.optimizer)
            self.tr.scaler.update()
        else:
            self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()

    def lr(self, epoch: int) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def schedule_state(self) -> dict | None:
        return self.schedule.state_dict() if self.schedule else None

    def resume(self, schedule, steps_done) -> None:
        if self.schedule is not None and schedule:
            self.schedule.load_state_dict(schedule)



def graph_problem(speed, processes: int, loading: str) -> str | None:
    """Why `compile: graph` cannot train this run, or None."""
    if processes > 1:
        return "it trains one process (DDP's gradient exchange is not captured)"
    if speed.precision == "fp16":
        return "fp16's gradient scaler decides on the host at every step; use bf16 or fp32"
    if loading != "memory":
        return "the training images must be in the device's memory (data.loading: memory)"
    return None


class GraphStep(Strategy):
    """The whole step driven by device tensors (batch, learning rate, momentum, counters), so on a CUDA
    GPU it is captured once as a CUDA graph and replayed for every full batch; the host looks once an
    epoch. A last partial batch, and every step on other devices, runs the same step without a graph."""

    def __init__(self, trainer):
        super().__init__(trainer, looks_every=trainer.steps_per_epoch, window=1)  # folded inside the step
        tr, t, device = trainer, trainer.spec.train, trainer.device
        self.batch = t.batch_size
        self.full, self.rest = divmod(len(tr.data.train), self.batch)  # full batches; the rest runs without the graph
        self.host_table = schedule_table(t.optimizer, t.schedule, t.epochs * tr.steps_per_epoch)
        self.table = self.host_table.to(device)
        self.step_no = torch.zeros(1, dtype=torch.long, device=device)  # the run's step: the table's row
        self.rates = torch.zeros(2, dtype=torch.float64, device=device)  # this step's learning rate and momentum
        self.optimizer = DeviceOptimizer(tr.net.parameters(), t.optimizer, self.rates, self.step_no,
                                         momentum=bool(self.host_table[:, 1].any()))
        self.batch_no = torch.zeros(1, dtype=torch.long, device=device)  # the epoch's full batch
        self.order = torch.zeros(max(self.full, 1), self.batch, dtype=torch.long, device=device)
        self.aug_gen = torch.Generator(device=device)
        self.graph, self.capture, self.ahead, self.last = None, device.type == "cuda", 0, None

    def begin(self, order, gen) -> None:
        self.aug_gen.manual_seed(gen.initial_seed())  # the same stream, in the generator the graph knows
        if self.full:
            self.order.copy_(order[: self.full * self.batch].view(self.full, self.batch))
        self.last = order[self.full * self.batch:]
        self.batch_no.zero_()
        self.ahead = 0

    def step(self, i: int) -> None:
        if i >= self.full:  # the last partial batch: the same step, without the graph
            x, y = self.tr.data.train.x.index_select(0, self.last), self.tr.data.train.y.index_select(0, self.last)
            self._step(x, y)
        elif self.ahead:  # done by the capture
            self.ahead -= 1
        elif self.graph is not None:
            self.graph.replay()
        elif self.capture and self.full > WARMUP:
            self.ahead = self._capture() - 1
        else:
            self._full_step()
        self.tally.seen = min(i + 1, self.full) * self.batch + (self.rest if i >= self.full else 0)

    def lr(self, epoch: int) -> float:
        return float(self.host_table[epoch * self.tr.steps_per_epoch, 0])

    def resume(self, schedule, steps_done) -> None:
        self.step_no.fill_(steps_done)

    def _capture(self) -> int:
        """WARMUP real steps on a side stream, then the step captured and replayed once; the full batches done."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self._full_step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(self.aug_gen)
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward makes the gradients
        try:
            with torch.cuda.graph(self.graph):
                self._full_step()
        except Exception as e:  # noqa: BLE001 - whatever broke the capture is said in one line
            self.graph = None
            raise capture_error(e) from e
        self.graph.replay()
        return WARMUP + 1

    def _full_step(self) -> None:
        idx = self.order.index_select(0, self.batch_no).view(-1)
        self._step(self.tr.data.train.x.index_select(0, idx), self.tr.data.train.y.index_select(0, idx))
        self.batch_no += 1

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.rates.copy_(self.table.index_select(0, self.step_no).view(2))
        if self.tr.augment is not None:
            x = self.tr.augment(x, self.aug_gen)
        # gradients cleared: before the graph, anew; after it (a last partial batch), in the graph's own tensors
        self.gradients(x, y, set_to_none=self.graph is None)
        self.optimizer.step()
        self.step_no += 1
        self.tally.fold()  # at every step, inside the graph: nothing is kept across replays


def capture_error(e: BaseException) -> RunError:
    """What stopped the capture, in one line: the first error (a failed capture raises a second on
    leaving the graph), where it was raised, and what to do instead."""
    first = e
    while first.__context__ is not None:
        first = first.__context__
    frames = traceback.extract_tb(first.__traceback__)
    where = f", in {Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}" if frames else ""
    return RunError(f"train.compile: graph: the training step could not be captured as one CUDA graph "
                    f"({type(first).__name__}: {first_line(first)}{where}); train with train.compile: "
                    f"cudagraphs (the model alone as CUDA graphs) or off")


STRATEGIES = {"off": EagerStep, "on": EagerStep, "cudagraphs": EagerStep, "graph": GraphStep}  # by train.compile
