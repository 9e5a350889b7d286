"""The Vision Transformer family (`model: {vit: {...}}`, problem 3): its config, schema,
parameter formula and builder. The torch modules are in netspec/families/vit_torch.py."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from netspec.spec.family import (BYTES, MAX_ACTIVATION_BYTES, Analysis, BuildProblem, Family, Row, num_classes,
                                   register_family)
from netspec.spec.layers import MAX_SIZE

MAX_MODULES = 5_000  # building (even on meta) costs ~1 ms per module; real ViTs have hundreds


@dataclass(frozen=True)
class ViTSpec:
    patch_size: int  # side of a square patch; must tile the image
    dim: int  # model width
    depth: int  # encoder layers
    heads: int  # attention heads per layer
    dim_head: int  # query/key/value size of one head
    mlp_dim: int  # hidden size of the encoder MLP
    dropout: float = 0.1  # after attention, inside and after the MLP
    attention_dropout: float = 0.0  # on the attention weights themselves
    emb_dropout: float = 0.0  # on patch embeddings + positions
    pool: str = "cls"  # classify from the class token ("cls") or the token mean
    attention: str = "batched"  # "per_head" runs single-head modules one by one


def _int(lo: int, hi: int, desc: str) -> dict:
    return {"type": "integer", "minimum": lo, "maximum": min(hi, MAX_SIZE), "description": desc}


def _share(desc: str, default: float) -> dict:
    return {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": default, "description": desc}


SCHEMA = {
    "type": "object", "additionalProperties": False,
    "description": "a Vision Transformer: patches, a class token, pre-norm encoder layers, a linear head",
    "properties": {
        "patch_size": _int(1, 1024, "side of the square patches; must tile the image"),
        "dim": _int(1, 65536, "model width (token embedding size)"),
        "depth": _int(1, 256, "number of encoder layers"),
        "heads": _int(1, 256, "attention heads per layer"),
        "dim_head": _int(1, 65536, "query/key/value size of one head"),
        "mlp_dim": _int(1, 1 << 20, "hidden size of each encoder MLP"),
        "dropout": _share("dropout after attention, inside and after the MLP", 0.1),
        "attention_dropout": _share("dropout on the attention weights", 0.0),
        "emb_dropout": _share("dropout on the patch embeddings", 0.0),
        "pool": {"enum": ["cls", "mean"], "default": "cls"},
        "attention": {
            "enum": ["batched", "per_head"], "default": "batched",
            "description": "batched: all heads in one matmul; per_head: one single-head module after another",
        },
    },
    "required": ["patch_size", "dim", "depth", "heads", "dim_head", "mlp_dim"],
}


def vit_modules(v: ViTSpec) -> int:
    """Modules of the encoder: norms, MLP (4), attention (4, or 4 per head when run head by head)."""
    return v.depth * (7 + (5 * v.heads + 1 if v.attention == "per_head" else 4))


class ViTFamily(Family):
    key = "vit"
    config = ViTSpec
    doc = "a Vision Transformer (problem 3)"
    attention = True

    def schema(self, allowed):
        return SCHEMA, {}

    def parse(self, raw):
        return ViTSpec(**raw)

    def to_dict(self, config):
        return asdict(config)

    def describe(self, config):
        return [(k, f"{k}={v}") for k, v in asdict(config).items()]

    def heavy(self, config):
        return True

    def analyze(self, spec, analysis: Analysis) -> None:
        v: ViTSpec = spec.model
        shape = analysis.input_shape
        if len(shape) != 3:
            analysis.problems.append(BuildProblem(
                ("data", "input_shape"), f"a ViT needs an image shape [channels, height, width], got {list(shape)}"))
            return
        c, h, w = shape
        classes = num_classes(spec)
        if h % v.patch_size or w % v.patch_size:
            divisors = [d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]
            analysis.problems.append(BuildProblem(
                ("model", "vit", "patch_size"), f"patch size {v.patch_size} does not tile a {h}x{w} image",
                f"use one of {divisors}"))
            return
        tokens = (h // v.patch_size) * (w // v.patch_size) + 1
        # activations per sample and layer: the attention maps dominate for long sequences
        per_layer = v.heads * tokens * tokens * 2 + tokens * (3 * v.heads * v.dim_head + 6 * v.dim + 2 * v.mlp_dim)
        analysis.activation_elements = tokens * v.dim * 2 + v.depth * per_layer
        if analysis.activation_elements * max(spec.train.batch_size, spec.train.eval_batch_size) * BYTES > MAX_ACTIVATION_BYTES:
            return  # reported by the activation check in analyze
        analysis.modules = vit_modules(v)
        if analysis.modules > MAX_MODULES:
            analysis.problems.append(BuildProblem(
                ("model", "vit"), f"depth {v.depth} x {v.heads} heads ({v.attention}) would build about "
                                  f"{analysis.modules:,} modules; netspec builds at most {MAX_MODULES:,}",
                "use fewer layers or heads, or attention: batched (one module for all heads)", code="limit"))
            return
        d, inner = v.dim, v.heads * v.dim_head
        # two LayerNorms; q, k, v without bias and the output projection; the MLP's two Linears
        encoder = 4 * d + (3 * inner * d + inner * d + d) + (d * v.mlp_dim + v.mlp_dim + v.mlp_dim * d + d)
        n = tokens - 1
        rows = [
            ("to_patch_embedding", f"patches {v.patch_size}x{v.patch_size} -> Linear", (n, d),
             v.patch_size * v.patch_size * c * d + d),
            ("tokens", "class token + position embedding", (tokens, d), d + tokens * d),
            *((f"layers.{i}", f"EncoderLayer(heads={v.heads}, dim_head={v.dim_head}, mlp_dim={v.mlp_dim})",
               (tokens, d), encoder) for i in range(v.depth)),
            ("norm", "LayerNorm", (tokens, d), 2 * d),
            ("mlp_head", f"{v.pool} token -> Linear", (classes,), d * classes + classes),
        ]
        for i, (name, text, out, params) in enumerate(rows):
            analysis.rows.append(Row(i, name, text, out, params, path=("model", "vit")))
        analysis.output_shape = (classes,)
        analysis.output_path = ("model", "vit")

    def attention_depth(self, model):
        return len(model.layers)

    def attention_maps(self, model, x, layer):
        from netspec.families.vit_torch import record_attention

        with record_attention(model, layer) as maps:
            model(x)
        p = model.to_patch_embedding.patchify.p
        return maps[0], (x.shape[-2] // p, x.shape[-1] // p)

    def build(self, spec):
        from netspec.families.vit_torch import ViT

        return ViT(spec.model, image_shape=tuple(spec.data.input_shape), num_classes=num_classes(spec))


VIT = register_family(ViTFamily())
