"""How a run uses the hardware (precision, layout, compilation, fused attention, determinism): only its speed and
float rounding. `auto` picks what measured fastest (README, "Speed"); the values go into the run's spec.yaml."""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace

import torch

from netspec.spec.config import Spec

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES = {"on": "default", "cudagraphs": "reduce-overhead"}


@dataclass(frozen=True)
class Speed:
    precision: str  # fp32 | bf16 | fp16 (mixed: weights stay fp32, autocast computes in the low precision)
    channels_last: bool  # NHWC activations for convolutions
    compile: str  # off | on | cudagraphs | graph (the whole step, netspec/runner/steps.py)
    fused_attention: bool  # scaled_dot_product_attention in the ViT's batched attention
    deterministic: bool  # bit-for-bit repeatable on a GPU (slower)

    def describe(self) -> str:
        compiled = {"off": "eager", "on": "compiled", "cudagraphs": "compiled (CUDA graphs)",
                    "graph": "whole step as one graph"}[self.compile]
        flags = (("fused attention", self.fused_attention), ("deterministic", self.deterministic))
        return ", ".join([self.precision + (" mixed" if self.precision != "fp32" else ""),
                          "channels_last" if self.channels_last else "standard layout", compiled,
                          *(name for name, on in flags if on)])


def _bf16_ok(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # on a CPU, oneDNN's own test for native bf16 (AVX-512 BF16 or AMX); absent in some builds
        return device.type == "cpu" and torch.backends.mkldnn.is_available() and bool(
            torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve(spec: Spec, device: torch.device) -> Speed:
    """Concrete settings for `spec` on `device` (every `auto` decided)."""
    t = spec.train
    heavy = spec.family.heavy(spec.model)  # an MLP is too small for any of this to pay
    precision = t.precision
    if precision == "auto":  # bf16 where the device computes it natively, else fp16 on a GPU
        low = heavy and device.type in ("cpu", "cuda")
        precision = "bf16" if low and _bf16_ok(device) else "fp16" if low and device.type == "cuda" else "fp32"
    conv = spec.family.has_conv(spec.model)
    channels_last = conv if t.channels_last == "auto" else bool(t.channels_last)
    compile_ = ("cudagraphs" if device.type == "cuda" and heavy else "off") if t.compile == "auto" else t.compile
    fused = (device.type == "cuda") if t.fused_attention == "auto" else bool(t.fused_attention)
    return Speed(precision, channels_last and conv, compile_, fused and spec.family.attention, t.deterministic)


def spec_with_speed(spec: Spec, speed: Speed) -> Spec:
    """`spec` with its speed settings written out as decided (Speed's fields are those of spec.train)."""
    return replace(spec, train=replace(spec.train, **asdict(speed)))


def autocast(speed: Speed, device: torch.device):
    """Mixed precision for forward passes and the loss (fp32 master weights); nothing for fp32."""
    return nullcontext() if speed.precision == "fp32" else torch.autocast(device.type, DTYPES[speed.precision])


def arrange(model: torch.nn.Module, speed: Speed) -> torch.nn.Module:
    """Put a built model in the run's layout and attention kernel (in place)."""
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = speed.fused_attention
    return model


def standard_state(model: torch.nn.Module) -> dict:
    """state_dict in the standard (contiguous NCHW) layout, whatever layout trained it."""
    return {k: v.contiguous() for k, v in model.state_dict().items()}


@contextmanager
def backend_flags(speed: Speed, device: torch.device):
    """cuDNN and determinism flags for the run, restored afterwards (they are process-wide)."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"), torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    try:
        if speed.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable sums
            torch.backends.cudnn.benchmark = False  # autotuning may pick different kernels run to run
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True)
        else:
            torch.backends.cudnn.benchmark = True  # fixed shapes: autotune each convolution once
        # fp32 stays fp32: TF32 would round matmuls to 10-bit mantissas behind the user's back
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, det, warn, env,
         torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved
        torch.use_deterministic_algorithms(det, warn_only=warn)
        if env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = env
