"""The JSON Schema (Draft 2020-12) of a spec, generated from the layer registry.

`spec_schema()` is the full schema shipped as `schema.json` (editors complete
layer names and arguments from it); `spec_schema(allowed)` is the same schema
narrowed to a rule set's whitelist, which is how the whitelist is enforced.
A test proves the shipped file equals the generated one.
"""
from __future__ import annotations

import json
from pathlib import Path

from netspec.spec.datasets import DATASETS
from netspec.spec.family import FAMILIES
from netspec.spec.layers import MAX_SIZE

SCHEMA_FILE = Path(__file__).with_name("schema.json")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "onecycle", "cosine")


def _obj(properties: dict, required: tuple = (), **extra) -> dict:
    out = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = list(required)
    return out | extra


def _int(lo: int, hi: int = MAX_SIZE, default=None, desc: str = "") -> dict:
    s = {"type": "integer", "minimum": lo, "maximum": hi}
    if default is not None:
        s["default"] = default
    return s | ({"description": desc} if desc else {})


def _num(desc: str = "", default=None, **bounds) -> dict:
    s = {"type": "number", **bounds}
    if default is not None:
        s["default"] = default
    return s | ({"description": desc} if desc else {})


AUGMENT = _obj(
    {
        "shift": _num("random shift, in pixels, up to this much each way", 0.0, minimum=0, maximum=8),
        "rotate": _num("random rotation, in degrees, up to this much each way", 0.0, minimum=0, maximum=45),
        "scale": _num("random zoom up to this fraction each way", 0.0, minimum=0, maximum=0.5),
    }
)

TRAIN = _obj(
    {
        "optimizer": _obj(
            {
                "name": {"enum": list(OPTIMIZERS), "default": "adam"},
                "lr": _num("learning rate (the peak rate under onecycle)", 1e-3, exclusiveMinimum=0, maximum=10),
                "weight_decay": _num("", 0.0, minimum=0, maximum=1),
                "momentum": _num("SGD only", 0.9, minimum=0, exclusiveMaximum=1),
                "nesterov": {"type": "boolean", "default": False},
                "betas": {"type": "array", "items": _num(minimum=0, exclusiveMaximum=1),
                          "minItems": 2, "maxItems": 2, "default": [0.9, 0.999]},
            }
        ),
        "schedule": _obj(
            {
                "name": {"enum": list(SCHEDULES), "default": "none"},
                "pct_start": _num("onecycle: share of steps spent warming up", 0.25, exclusiveMinimum=0, exclusiveMaximum=1),
                "min_lr": _num("cosine: final learning rate", 0.0, minimum=0),
                "cycle_momentum": {
                    "type": "boolean", "default": True,
                    "description": "onecycle: cycle Adam's beta1 / SGD's momentum between max_momentum and "
                                   "base_momentum (replacing the optimizer's own value); false leaves it alone",
                },
                "base_momentum": _num("onecycle: lowest beta1/momentum (at the peak learning rate)", 0.85,
                                      minimum=0, exclusiveMaximum=1),
                "max_momentum": _num("onecycle: highest beta1/momentum (at the start and end)", 0.95,
                                     minimum=0, exclusiveMaximum=1),
            }
        ),
        "epochs": _int(1, 10000, 10),
        "batch_size": _int(1, 1 << 16, 32),
        "eval_batch_size": _int(1, 1 << 16, 1000),
        "seed": _int(0, 2**32 - 1, 0),
        "device": {"type": "string", "pattern": "^(auto|cpu|mps|cuda(:[0-9]+)?)$", "default": "auto"},
        "label_smoothing": _num("", 0.0, minimum=0, exclusiveMaximum=1),
        "augment": AUGMENT,
        "precision": {
            "enum": ["auto", "fp32", "bf16", "fp16"], "default": "auto",
            "description": "numeric precision of forward passes: fp32, or bf16/fp16 mixed (autocast; weights stay "
                           "fp32; fp16 with a gradient scaler); auto: the fastest measured for the device",
        },
        "channels_last": {
            "enum": ["auto", True, False], "default": "auto",
            "description": "convolutions in channels-last (NHWC) layout; auto: for conv nets",
        },
        "compile": {
            "enum": ["auto", "off", "on", "cudagraphs", "graph", False, True], "default": "auto",
            "description": "torch.compile the model: on, cudagraphs (mode reduce-overhead), off; auto: cudagraphs "
                           "for conv nets and ViTs on a CUDA GPU, off elsewhere (measured slower on the CPU); if "
                           "compiling fails the run says so and goes on eagerly. graph: the whole training step "
                           "(augmentation, forward, backward, optimizer, schedule) driven by the device and, on a "
                           "CUDA GPU, captured as one CUDA graph (one process; not fp16; opt-in: on one H200 the CNN "
                           "recipe trained in 14.6 s against 70.2 s under auto)",
        },
        "fused_attention": {
            "enum": ["auto", True, False], "default": "auto",
            "description": "ViT: scaled_dot_product_attention in batched attention (not while maps are recorded); "
                           "auto: on a GPU",
        },
        "deterministic": {
            "type": "boolean", "default": False,
            "description": "bit-for-bit repeatable runs on a GPU (deterministic kernels, no autotuning; slower)",
        },
        "sync_batchnorm": {
            "type": "boolean", "default": False,
            "description": "with several processes (torchrun, --nproc): BatchNorm statistics over the batch of all "
                           "of them (torch's SyncBatchNorm, on GPUs); off: each process normalises its own share",
        },
    }
)

def _count(desc: str, default=None) -> dict:
    s = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_SIZE},
                   {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}], "description": desc}
    return s | ({"default": default} if default is not None else {})


_PER_CHANNEL = {"type": "array", "minItems": 1, "maxItems": 3}

DATA = _obj(
    {
        "dataset": {"enum": list(DATASETS), "default": "mnist",
                    "description": "a torchvision dataset by name, imagefolder or npz (with path), or none (shapes only)"},
        "path": {"type": "string", "minLength": 1,
                 "description": "imagefolder: folder of class sub-folders (or of train/ and test/); npz: the file; "
                                "relative to the spec file"},
        "image_shape": {"type": "array", "items": _int(1, 4096), "minItems": 3, "maxItems": 3,
                        "description": "[channels, height, width] of a stored image; imagefolder resizes to it "
                                       "(channels 1 = grayscale, 3 = RGB); filled in from the dataset"},
        "classes": _int(2, 100000, desc="number of classes; filled in from the dataset, checked when stated"),
        "validation": _count("training images held out for validation: a count, or a share below 1 "
                             "(default 5000; imagefolder and npz: 0.1)", 5000),
        "test": _count("imagefolder or npz without a test split: images held out as the test set "
                       "(a count or a share below 1; default 0.2)"),
        "layout": {"enum": ["NHW", "NHWC", "NCHW"],
                   "description": "npz: how the image array is stored; needed only where its shape reads both ways, "
                                  "such as (N, 3, 8, 3)"},
        "mean": _PER_CHANNEL | {"items": {"type": "number"},
                                "description": "per-channel mean of pixels scaled to 0..1; default: computed on the training split"},
        "std": _PER_CHANNEL | {"items": {"type": "number", "exclusiveMinimum": 0},
                               "description": "per-channel standard deviation; default: computed on the training split"},
        "loading": {"enum": ["auto", "memory", "stream"], "default": "auto",
                    "description": "memory: whole dataset as tensors on the device; stream: a DataLoader with "
                                   "workers; auto: memory when it fits memory_mb"},
        "memory_mb": _int(1, 10**7, 2048, desc="auto loading keeps the dataset in memory up to this many MiB of float32"),
        "workers": {"anyOf": [{"const": "auto"}, _int(0, 64)], "default": "auto",
                    "description": "DataLoader worker processes that read and decode images (streaming, or image files "
                                   "into memory); auto: none for arrays already in memory, and for files on 2 cores"},
        "input_shape": {
            "type": "array", "items": _int(1), "minItems": 1, "maxItems": 3,
            "description": "shape of one input without the batch: the image [C, H, W], or a reshape of its values "
                           "such as [784] for flattened 28x28 images; default: the dataset's image shape",
        },
    }
)

SWEEP = _obj(
    {
        "sampler": {"enum": ["grid", "tpe", "random"], "default": "grid"},
        "trials": _int(1, 100000, desc="trial budget (grid: defaults to the grid's size)"),
        "metric": {"enum": ["val_accuracy"], "default": "val_accuracy"},
        "prune": {"type": "boolean", "default": False},
        "grid": {
            "type": "object",
            "description": "dotted spec key -> list of values",
            "additionalProperties": {"type": "array", "minItems": 1},
        },
        "range": {
            "type": "object",
            "description": "dotted spec key -> {low, high, log, int}",
            "additionalProperties": _obj(
                {"low": {"type": "number"}, "high": {"type": "number"},
                 "log": {"type": "boolean", "default": False}, "int": {"type": "boolean", "default": False}},
                required=("low", "high"),
            ),
        },
    }
)


LINT_WARNINGS = {  # name -> why it is probably a mistake (netspec/check/lint.py finds them)
    "activation-after-output": "a nonlinearity after the last Linear changes the logits the loss sees",
    "linear-after-linear": "two Linear layers with nothing between them are one linear map",
    "dropout-after-output": "Dropout after the last Linear drops logits (or probabilities), not features",
    "batchnorm-after-output": "BatchNorm after the last Linear normalises the logits",
    "pool-to-1x1": "a pooling leaves a 1x1 map, yet more convolutions follow",
    "small-receptive-field": "the convolutions see less than the subject of an image (a digit) before the classifier",
    "inferred-argument": "in_features, in_channels or num_features stated: netspec infers them (a note, not a mistake)",
}

LINT = _obj({"ignore": {"type": "array", "uniqueItems": True, "items": {"enum": list(LINT_WARNINGS)},
                        "description": "warnings this spec silences, by name"}})


def model_schema(allowed: list[str] | None) -> tuple[dict, dict]:
    """model: exactly one registered family's key, and the $defs the families refer to."""
    properties, defs = {}, {}
    for key, family in FAMILIES.items():
        properties[key], more = family.schema(allowed)
        defs.update(more)
    return _obj(properties, minProperties=1, maxProperties=1,
                description="one of: " + "; ".join(f"{k}: {f.doc}" for k, f in FAMILIES.items())), defs


def spec_schema(allowed_layers: list[str] | None = None) -> dict:
    """The spec's schema; `allowed_layers` (layer and block names) narrows it to a rule set's whitelist."""
    model, defs = model_schema(allowed_layers)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:netspec:schema:spec",
        "title": "netspec spec",
        "description": "A neural network for netspec (a layer list with residual, branching and repeated blocks, or a "
                       "Vision Transformer), its data set and its training, in one YAML file.",
        **_obj(
            {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                "description": {"type": "string"},
                "rules": {"type": "string", "minLength": 1,
                          "description": "a shipped rule set (mnist-mlp, mnist-cnn, mnist-vit) or a path to a rules file"},
                "data": DATA,
                "model": model,
                "train": TRAIN,
                "sweep": SWEEP,
                "lint": LINT,
            },
            required=("name", "model"),
        ),
        **({"$defs": defs} if defs else {}),
    }


def schema_text() -> str:
    return json.dumps(spec_schema(), indent=2) + "\n"
