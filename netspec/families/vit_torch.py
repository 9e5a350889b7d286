"""A Vision Transformer built from plain parts (problem 3 of the problem set).

Classes appear in the order they are built: the MLP, single-head attention,
multi-head attention (batched, and the same thing head by head), the encoder
layer, and the ViT. Every softmax over attention scores is its own module
(`attend`), so a forward hook records the attention weights without touching
`forward` (see `record_attention`).
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """Linear -> GELU -> Dropout -> Linear, applied to every token."""

    def __init__(self, *, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(OrderedDict(
            fc1=nn.Linear(dim, hidden_dim),
            act=nn.GELU(),
            drop=nn.Dropout(dropout),
            fc2=nn.Linear(hidden_dim, dim),
        ))

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        return self.net(x)


class Attention(nn.Module):
    """Single-head scaled dot-product attention: softmax(Q K^T / sqrt(d_k)) V.

    Q, K and V are projections of the hidden state without bias. Built only
    from nn.Linear, nn.Softmax and nn.Dropout plus tensor functions.
    """

    def __init__(self, *, dim: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.to_q = nn.Linear(dim, dim_head, bias=False)
        self.to_k = nn.Linear(dim, dim_head, bias=False)
        self.to_v = nn.Linear(dim, dim_head, bias=False)
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):  # (B, T, D) -> (B, T, d_k)
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)  # (B, T, d_k) each
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, T, T)
        weights = self.dropout(self.attend(scores))  # row i: how token i attends to all
        return torch.matmul(weights, v)


class MultiHeadAttention(nn.Module):
    """`heads` single-head attentions computed in one batched matmul, concatenated
    and projected back to the model width. Same numbers as `PerHeadAttention`
    (a test proves it); one (B, H, T, T) softmax instead of H small ones.

    With `fused` set (the runner sets it where it pays: on a GPU), the same
    attention runs as one `scaled_dot_product_attention` kernel that never
    materialises the weights; `record_attention` turns it off while it records,
    so heatmaps always come from the explicit Softmax.
    """

    def __init__(self, *, dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head ** -0.5
        # rows ordered (q|k|v, head, d_k) so a view splits them without copying
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(dropout)
        self.to_out = nn.Linear(heads * dim_head, dim)
        self.fused = False

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        b, t, _ = x.shape
        qkv = self.to_qkv(x).view(b, t, 3, self.heads, self.dim_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, d_k) each
        if self.fused:
            drop = self.dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale)  # (B, H, T, d_k)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, H, T, T)
            weights = self.dropout(self.attend(scores))
            out = torch.matmul(weights, v)  # (B, H, T, d_k)
        return self.to_out(out.transpose(1, 2).reshape(b, t, self.heads * self.dim_head))

    @torch.no_grad()
    def load_heads(self, heads: list[Attention], to_out: nn.Linear) -> None:
        """Take the weights of single-head modules (and the output projection)."""
        self.to_qkv.weight.copy_(torch.cat(
            [h.to_q.weight for h in heads] + [h.to_k.weight for h in heads] + [h.to_v.weight for h in heads]
        ))
        self.to_out.load_state_dict(to_out.state_dict())


class PerHeadAttention(nn.Module):
    """The textbook form: each head its own `Attention`, run one after another."""

    def __init__(self, *, dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        self.heads = nn.ModuleList(Attention(dim=dim, dim_head=dim_head, dropout=dropout) for _ in range(heads))
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        return self.to_out(torch.cat([head(x) for head in self.heads], dim=-1))


class EncoderLayer(nn.Module):
    """Pre-norm encoder layer (problem 3(b), figure 1):
    x + Dropout(MHA(LayerNorm(x))), then x + Dropout(MLP(LayerNorm(x))),
    with dropout after the attention, inside the MLP and after the MLP."""

    def __init__(self, *, dim: int, heads: int, dim_head: int, mlp_dim: int,
                 dropout: float = 0.0, attention_dropout: float = 0.0, per_head: bool = False):
        super().__init__()
        attention = PerHeadAttention if per_head else MultiHeadAttention
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention(dim=dim, heads=heads, dim_head=dim_head, dropout=attention_dropout)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim=dim, hidden_dim=mlp_dim, dropout=dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x):  # (B, T, D) -> (B, T, D)
        x = x + self.drop1(self.attn(self.norm1(x)))
        return x + self.drop2(self.mlp(self.norm2(x)))


class Patchify(nn.Module):
    """(B, C, H, W) -> (B, N, p*p*C): non-overlapping p x p patches, row by row."""

    def __init__(self, patch_size: int):
        super().__init__()
        self.p = patch_size

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.p
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, H/p, W/p, p, p, C)
        return x.reshape(b, (h // p) * (w // p), p * p * c)


class ViT(nn.Module):
    """A Vision Transformer. `config` is the spec's `model.vit` (a ViTSpec, netspec/families/vit.py),
    as nanoGPT's modules take their GPTConfig; the image and the classes come from the data."""

    def __init__(self, config, *, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        v = config
        patch_size, dim, pool = v.patch_size, v.dim, v.pool
        c, h, w = image_shape
        self.num_patches = (h // patch_size) * (w // patch_size)
        self.pool = pool
        self.to_patch_embedding = nn.Sequential(OrderedDict(
            patchify=Patchify(patch_size),
            proj=nn.Linear(patch_size * patch_size * c, dim),
        ))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embedding = nn.Parameter(torch.randn(1, self.num_patches + 1, dim) * 0.02)
        self.dropout = nn.Dropout(v.emb_dropout)
        self.layers = nn.Sequential(*(
            EncoderLayer(dim=dim, heads=v.heads, dim_head=v.dim_head, mlp_dim=v.mlp_dim, dropout=v.dropout,
                         attention_dropout=v.attention_dropout, per_head=v.attention == "per_head")
            for _ in range(v.depth)
        ))
        self.norm = nn.LayerNorm(dim)
        self.mlp_head = nn.Linear(dim, num_classes)

    def embed(self, img):  # (B, C, H, W) -> (B, N + 1, D)
        x = self.to_patch_embedding(img)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return self.dropout(torch.cat([cls, x], dim=1) + self.pos_embedding)

    def forward(self, img):  # (B, C, H, W) -> (B, classes)
        x = self.norm(self.layers(self.embed(img)))
        x = x[:, 0] if self.pool == "cls" else x.mean(dim=1)
        return self.mlp_head(x)


@contextmanager
def record_attention(model: ViT, layer: int = -1):
    """Collect post-softmax attention weights of one encoder layer.

    Yields a list that, after a forward pass, holds one (B, heads, T, T)
    tensor per pass, whichever attention form the layer uses.
    """
    attn = model.layers[layer].attn
    batched = isinstance(attn, MultiHeadAttention)
    softmaxes = [attn.attend] if batched else [h.attend for h in attn.heads]
    fused = batched and attn.fused
    if fused:
        attn.fused = False  # the fused kernel has no weights to record
    seen: list[torch.Tensor] = []
    out: list[torch.Tensor] = []

    def hook(module, inputs, output):
        seen.append(output.detach())
        if len(seen) == len(softmaxes):
            out.append(seen[0] if len(seen) == 1 else torch.stack(seen, dim=1))
            seen.clear()

    handles = [m.register_forward_hook(hook) for m in softmaxes]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()
        if fused:
            attn.fused = True
