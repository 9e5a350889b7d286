"""The whole training step driven by the device (`train.compile: graph`), captured as one CUDA graph.

A step reads everything it needs from tensors on the device: its batch (the epoch's order, by a
batch counter), its learning rate and momentum (the schedule as a table, by the run's step
counter), and it leaves everything it measures there (the loss and accuracy sums, the finite
check). Nothing in it waits for the host, so on a CUDA GPU the step (augmentation, forward, loss,
backward, the finite check, the optimizer (DeviceOptimizer), the counters) is captured once
and replayed for every full batch, and the host looks at the counters once an epoch. A last
partial batch runs the same step without the graph (no second graph).

On other devices the same step runs eagerly, step by step: a run's numbers are those of the usual
loop (tests/test_speed.py compares them on the CPU), which is how the pieces are tested where no
GPU is. The capture ran on one H200 (torch 2.11, 2026-12-04): the CNN recipe trained in 14.6 s,
the ViT's in 29.0 s, the MLP's step went from 1.22 to 0.24 ms (benchmarks/results/gpu-h200-2026-12-04.md).
"""
from __future__ import annotations

import traceback
import warnings
from pathlib import Path

import torch

from netspec.errors import RunError, first_line

WARMUP = 3  # eager steps on a side stream before the capture, as torch's CUDA graph docs do


def graph_problem(spec, speed, processes: int, loading: str = "memory") -> str | None:
    """Why `compile: graph` cannot train this run, or None."""
    if processes > 1:
        return "it trains one process (DDP's gradient exchange is not captured)"
    if speed.precision == "fp16":
        return "fp16's gradient scaler decides on the host at every step; use bf16 or fp32"
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
    return torch.tensor(rows, dtype=torch.float64, device=device)


class DeviceOptimizer(torch.optim.Optimizer):
    """torch's Adam, AdamW and SGD (no dampening) as a few foreach kernels whose every input is a
    device tensor: the learning rate and momentum (Adam's beta1) of the step from `rates`, the step
    number from `step_no` (steps done before this one). Nothing reads a value on the host, so the
    update is captured in the step's CUDA graph and replayed with each step's values.

    torch's own optimizers cannot be captured with a momentum that changes at every step, as the
    one-cycle schedule changes it (torch 2.11 on an H200, 2026-12-04): capturable foreach Adam
    passes the tensor `1 - beta1` to `_foreach_lerp_` as a number (a read on the host, refused while
    capturing); the single-tensor path does the same with `1 - beta2` in `addcmul_`; fused Adam takes
    its betas as numbers; SGD has no capturable mode and takes its momentum as a number.

    The rates and the bias corrections are worked out in fp64, as torch works them out in Python
    floats: in fp32, 1 - 0.999**t is off by up to 1e-4 of itself early on, and a run drifted from
    the usual loop's by 1e-3 in its weights within two epochs. The state has torch's names
    (exp_avg, exp_avg_sq, momentum_buffer), so a checkpoint holds what torch's optimizer would; runs
    agree with the usual loop's to fp32 rounding (tests/test_speed.py)."""

    def __init__(self, params, spec, rates: torch.Tensor, step_no: torch.Tensor, momentum: bool):
        defaults = {"kind": spec.name, "weight_decay": spec.weight_decay, "beta2": spec.betas[1], "eps": 1e-8,
                    "nesterov": spec.nesterov, "uses_momentum": momentum}
        super().__init__(params, defaults)
        self.rates, self.step_no = rates, step_no

    def load_state_dict(self, state_dict) -> None:
        """The moments from a checkpoint (this optimizer's, or torch's Adam/AdamW/SGD that a graph
        run saved before this class: the same state names); the settings stay this run's own."""
        own = [{k: v for k, v in group.items() if k != "params"} for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, settings in zip(self.param_groups, own):
            params = group["params"]
            group.clear()
            group.update(settings, params=params)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ARG002 - torch's signature
        lr, mom = self.rates[0], self.rates[1]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._adam if group["kind"] in ("adam", "adamw") else self._sgd)(group, params, lr, mom)

    def _adam(self, group, params, lr, beta1) -> None:
        grads, wd, beta2 = [p.grad for p in params], group["weight_decay"], group["beta2"]
        for p in params:
            if "exp_avg" not in self.state[p]:
                self.state[p]["exp_avg"] = torch.zeros_like(p)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p)
        m = [self.state[p]["exp_avg"] for p in params]
        v = [self.state[p]["exp_avg_sq"] for p in params]
        if wd and group["kind"] == "adamw":
            torch._foreach_mul_(params, _f32(1 - lr * wd))
        elif wd:
            grads = torch._foreach_add(grads, params, alpha=wd)
        torch._foreach_mul_(m, _f32(beta1))
        torch._foreach_add_(m, torch._foreach_mul(grads, _f32(1 - beta1)))
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        t = self.step_no.view(()).to(torch.float64) + 1
        step_size = lr / (1 - beta1 ** t)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, _f32(torch.sqrt(1 - torch.pow(beta2, t))))
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(m, denom)
        torch._foreach_mul_(update, _f32(-step_size))
        torch._foreach_add_(params, update)

    def _sgd(self, group, params, lr, momentum) -> None:
        grads = [p.grad for p in params]
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        if group["uses_momentum"]:
            if any("momentum_buffer" not in self.state[p] for p in params):  # the first step: the gradient
                for p, g in zip(params, grads):
                    self.state[p]["momentum_buffer"] = g.clone()
            else:
                bufs = [self.state[p]["momentum_buffer"] for p in params]
                torch._foreach_mul_(bufs, _f32(momentum))
                torch._foreach_add_(bufs, grads)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            if group["nesterov"]:
                grads = torch._foreach_add(grads, torch._foreach_mul(bufs, _f32(momentum)))
            else:
                grads = bufs
        torch._foreach_add_(params, torch._foreach_mul(grads, _f32(-lr)))


def _f32(x: torch.Tensor) -> torch.Tensor:
    """A hyperparameter worked out in fp64 (as torch works them out on the host, in Python floats),
    in the parameters' fp32 for the foreach kernels (a scalar of another dtype sends them to a slow
    path)."""
    return x.to(torch.float32)


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
        self.host_table = schedule_table(t.optimizer, t.schedule, total, "cpu")  # for the report's rate
        self.table = self.host_table.to(device)
        self.step_no = torch.zeros(1, dtype=torch.long, device=device)  # the run's step: the table's row
        self.rates = torch.zeros(2, dtype=torch.float64, device=device)  # this step's learning rate and momentum, from the table
        self.optimizer = DeviceOptimizer(trainer.net.parameters(), t.optimizer, self.rates, self.step_no,
                                         momentum=bool(self.host_table[:, 1].any()))
        self.batch_no = torch.zeros(1, dtype=torch.long, device=device)  # the epoch's full batch
        self.order = torch.zeros(max(self.full, 1), self.batch, dtype=torch.long, device=device)
        self.aug_gen = torch.Generator(device=device)
        self.tally = _Tally(device)
        self.graph = None
        self.capture = device.type == "cuda"

    def lr(self, epoch: int) -> float:
        """The learning rate after epoch `epoch` (1-based), as a scheduler stepped after each step
        holds it: read on the host, not the device."""
        return float(self.host_table[epoch * self.trainer.steps_per_epoch, 0])

    def resume_at(self, step: int) -> None:
        """Continue at the run's step `step` (after loading a checkpoint)."""
        self.step_no.fill_(step)

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
            tr.pending.take()
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
        x, y = self.trainer.data.train.x.index_select(0, idx), self.trainer.data.train.y.index_select(0, idx)
        self._step(x, y)
        self.batch_no += 1

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        tr = self.trainer
        self.rates.copy_(self.table.index_select(0, self.step_no).view(2))
        # before the graph: fresh gradients each step; inside the capture there are none to clear;
        # after it (a last partial batch): cleared in place, keeping the graph's gradient tensors
        tr.backward(x, y, self.aug_gen, self.tally, set_to_none=self.graph is None)
        tr.optimizer.step()
        self.step_no += 1


def capture_error(e: BaseException) -> RunError:
    """What stopped the capture, in one line: the first error (a failed capture raises a second,
    "operation failed due to a previous error during capture", on leaving the graph) and where in
    the step it was raised, with what to do instead."""
    first = e
    while first.__context__ is not None:  # Python keeps the chain free of cycles
        first = first.__context__
    frames = traceback.extract_tb(first.__traceback__)
    where = f", in {Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}" if frames else ""
    return RunError(f"train.compile: graph: the training step could not be captured as one CUDA graph "
                    f"({type(first).__name__}: {first_line(first)}{where}); train with train.compile: "
                    f"cudagraphs (the model alone as CUDA graphs) or off")
