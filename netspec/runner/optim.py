"""The optimizers and learning-rate schedules a spec names, and the device-driven optimizer of the
whole-step CUDA graph (`train.compile: graph`)."""
from __future__ import annotations

import math
import warnings

import torch

from netspec.errors import RunError
from netspec.spec.config import OptimizerSpec, ScheduleSpec


def make_optimizer(params, spec: OptimizerSpec, fused: bool = False) -> torch.optim.Optimizer:
    """`fused`: torch's fused kernels, one kernel per parameter tensor for the whole update."""
    kw = {"fused": True} if fused else {}
    if spec.name in ("adam", "adamw"):
        adam = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
        return adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay, **kw)
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


def schedule_table(optimizer, schedule, total_steps: int) -> torch.Tensor:
    """(total_steps + 1, 2): the learning rate and momentum (Adam's beta1) of each step and after the last,
    as torch's own scheduler sets them on a throwaway optimizer of the same kind."""
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
    return torch.tensor(rows, dtype=torch.float64)


class DeviceOptimizer(torch.optim.Optimizer):
    """torch's Adam, AdamW and SGD (no dampening) as foreach kernels whose every input is a device tensor
    (learning rate and momentum from `rates`, the step from `step_no`), so the update is captured in the
    step's CUDA graph. It exists only because torch's cannot capture a momentum that changes every step
    (one-cycle): torch 2.14's capturable foreach Adam reads `1 - beta1` on the host, torch/optim/adam.py:704
    `cast(float, 1 - device_beta1)`. Rates are worked out in fp64, as torch's in Python floats; the state
    has torch's names (exp_avg, exp_avg_sq, momentum_buffer). Against the eager step (tests/test_speed.py)
    they agree to fp32 rounding step by step, and drift apart over long runs (docs/speed.md)."""

    def __init__(self, params, spec, rates: torch.Tensor, step_no: torch.Tensor, momentum: bool):
        defaults = {"kind": spec.name, "weight_decay": spec.weight_decay, "beta2": spec.betas[1], "eps": 1e-8,
                    "nesterov": spec.nesterov, "uses_momentum": momentum}
        super().__init__(params, defaults)
        self.rates, self.step_no = rates, step_no

    def load_state_dict(self, state_dict) -> None:
        """The moments from a checkpoint; the settings stay this run's own."""
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
    """A hyperparameter worked out in fp64, in fp32 for the foreach kernels (another dtype is a slow path)."""
    return x.to(torch.float32)
