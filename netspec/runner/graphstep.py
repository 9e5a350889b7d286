"""The whole training step driven by the device (`train.compile: graph`), captured as one CUDA graph.

A step reads everything it needs from tensors on the device: its batch (the epoch's order, by a
batch counter), its learning rate and momentum (the schedule as a table, by the run's step
counter), and it leaves everything it measures there (the loss and accuracy sums, the finite
check). Nothing in it waits for the host, so on a CUDA GPU the step (augmentation, forward, loss,
backward, the finite check, the optimizer with `capturable=True`, the counters) is captured once
and replayed for every full batch, and the host looks at the counters once an epoch. A last
partial batch runs the same step without the graph (no second graph).

On other devices the same step runs eagerly, step by step: a run's numbers are those of the usual
loop (tests/test_speed.py compares them on the CPU), which is how the pieces are tested where no
GPU is. The capture itself runs on a CUDA GPU only; it is unmeasured until a GPU session runs
`tests/test_gpu.py` (README, "Speed").
"""
from __future__ import annotations

import warnings

import torch

from netspec.errors import RunError

WARMUP = 3  # eager steps on a side stream before the capture, as torch's CUDA graph docs do


def graph_problem(spec, speed, processes: int, loading: str = "memory") -> str | None:
    """Why `compile: graph` cannot train this run, or None."""
    t = spec.train
    if processes > 1:
        return "it trains one process (DDP's gradient exchange is not captured)"
    if speed.precision == "fp16":
        return "fp16's gradient scaler decides on the host at every step; use bf16 or fp32"
    if t.optimizer.name == "sgd" and t.schedule.name == "onecycle" and t.schedule.cycle_momentum:
        return "SGD's momentum cannot be a tensor, and the one-cycle schedule cycles it; set schedule.cycle_momentum: false"
    if loading != "memory":
        return "the training images must be in the device's memory (data.loading: memory)"
    return None


def schedule_table(optimizer, schedule, total_steps: int, device) -> torch.Tensor:
    """(total_steps + 1, 2): the learning rate and the momentum (Adam's beta1, SGD's momentum) of
    each step, and after the last, as torch's own scheduler sets them: computed once by stepping it
    on a throwaway optimizer of the same kind."""
    from netspec.runner.train import make_optimizer, make_schedule

    probe = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer([probe], optimizer)
    sched = make_schedule(opt, schedule, optimizer.lr, total_steps)
    rows = []
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": no optimizer steps here
        warnings.simplefilter("ignore", UserWarning)
        for step in range(total_steps + 1):
            group = opt.param_groups[0]
            rows.append((group["lr"], group["betas"][0] if "betas" in group else group.get("momentum", 0.0)))
            if sched is not None and step < total_steps:
                sched.step()
    return torch.tensor(rows, dtype=torch.float32, device=device)


def tensor_optimizer(params, spec, device: torch.device) -> torch.optim.Optimizer:
    """The run's optimizer with its learning rate (and Adam's beta1) as tensors on the device, which
    the step overwrites from the schedule table. On CUDA `capturable` (foreach kernels: fused Adam
    would read beta1 on the host); elsewhere torch's fused kernels, which take a tensor rate."""
    kw = {"capturable": True, "foreach": True} if device.type == "cuda" else {"fused": True}
    lr = torch.tensor(spec.lr, dtype=torch.float32, device=device)
    if spec.name in ("adam", "adamw"):
        cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
        betas = tuple(torch.tensor(b, dtype=torch.float32, device=device) for b in spec.betas)  # torch: both or neither
        return cls(params, lr=lr, betas=betas, weight_decay=spec.weight_decay, **kw)
    return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, nesterov=spec.nesterov,
                           weight_decay=spec.weight_decay, **kw)


class DeviceLoop:
    """A trainer's epochs as device-driven steps (captured as a CUDA graph on a CUDA GPU)."""

    def __init__(self, trainer):
        from netspec.runner.train import _Tally

        t, device = trainer.spec.train, trainer.device
        problem = graph_problem(trainer.spec, trainer.speed, trainer.ranks.size, trainer.data.loading)
        if problem:
            raise RunError(f"train.compile: graph: {problem}")
        self.trainer, self.device, self.batch = trainer, device, t.batch_size
        n = len(trainer.data.train)
        self.full = n // self.batch  # full batches an epoch; the rest (if more than one image) runs eagerly
        self.rest = n - self.full * self.batch
        total = t.epochs * trainer.steps_per_epoch
        self.table = schedule_table(t.optimizer, t.schedule, total, device)
        self.step_no = torch.zeros(1, dtype=torch.long, device=device)  # the run's step: the table's row
        self.batch_no = torch.zeros(1, dtype=torch.long, device=device)  # the epoch's full batch
        self.order = torch.zeros(max(self.full, 1), self.batch, dtype=torch.long, device=device)
        self.aug_gen = torch.Generator(device=device)
        self.tally = _Tally(device)
        self.graph = None
        self.capture = device.type == "cuda"

    def lr(self) -> float:
        """The learning rate of the next step, as a scheduler stepped after each step holds it."""
        return float(self.table[int(self.step_no)][0])

    def resume_at(self, step: int) -> None:
        """Continue at the run's step `step` (after loading a checkpoint), with the optimizer's
        tensor hyperparameters back on the device (a checkpoint loads them on the CPU)."""
        self.step_no.fill_(step)
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32).to(self.device)
            if "betas" in group and isinstance(group["betas"][0], torch.Tensor):
                group["betas"] = tuple(torch.as_tensor(b, dtype=torch.float32).to(self.device) for b in group["betas"])

    def epoch(self, epoch: int) -> tuple[float, float, float]:
        """Train one epoch; returns (loss sum, right, seen) as the host reads them, once."""
        tr = self.trainer
        order, gen = tr._shuffle(epoch)
        self.aug_gen.manual_seed(gen.initial_seed())  # the same stream, in the generator the graph knows
        if self.full:
            self.order.copy_(order[: self.full * self.batch].view(self.full, self.batch))
        self.batch_no.zero_()
        self.tally.reset()
        tr.eager.train()
        done = 0
        if self.capture and self.graph is None and self.full > WARMUP:
            done = self._capture()
        for _ in range(done, self.full):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._full_step()
        steps = self.full
        if self.rest > 1:  # the last partial batch: the same step, without the graph
            idx = order[self.full * self.batch:]
            self._step(tr.data.train.x.index_select(0, idx), tr.data.train.y.index_select(0, idx))
            steps += 1
        self.tally.seen = self.full * self.batch + (self.rest if self.rest > 1 else 0)
        return tr._look(self.tally, epoch, steps - 1)  # the epoch's one look

    def _capture(self) -> int:
        """WARMUP real steps on a side stream, then the step captured (and replayed once: capturing
        runs nothing). Returns the full batches done."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self._full_step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(self.aug_gen)
        self.trainer.optimizer.zero_grad(set_to_none=True)  # the graph's backward makes the gradients
        with torch.cuda.graph(self.graph):
            self._full_step()
        self.graph.replay()
        return WARMUP + 1

    def _full_step(self) -> None:
        idx = self.order.index_select(0, self.batch_no).view(-1)
        x, y = self.trainer.data.train.x.index_select(0, idx), self.trainer.data.train.y.index_select(0, idx)
        self._step(x, y)
        self.batch_no += 1

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        tr = self.trainer
        rates = self.table.index_select(0, self.step_no).view(2)
        for group in tr.optimizer.param_groups:
            group["lr"].copy_(rates[0])
            if isinstance(group.get("betas", (None,))[0], torch.Tensor):
                group["betas"][0].copy_(rates[1])
        # before the graph: fresh gradients each step; inside the capture there are none to clear;
        # after it (a last partial batch): cleared in place, keeping the graph's gradient tensors
        tr.backward(x, y, self.aug_gen, self.tally, set_to_none=self.graph is None)
        tr.optimizer.step()
        self.step_no += 1
