"""Problem 3: attention, multi-head attention, the encoder layer and the ViT."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netspec.builder.model import build_model
from netspec.families.vit import ViTSpec
from netspec.families.vit_torch import Attention, EncoderLayer, MultiHeadAttention, PerHeadAttention, ViT, record_attention
from netspec.errors import SpecError
from netspec.report import plots
from conftest import check_file

from conftest import SPECS


def test_attention_matches_torch_sdpa_float64():
    torch.manual_seed(0)
    attn = Attention(dim=16, dim_head=8).double().eval()
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    expected = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(attn(x), expected, atol=1e-12)


def test_attention_gradcheck():
    torch.manual_seed(0)
    attn = Attention(dim=4, dim_head=3).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(attn, (x,))


def test_attention_is_built_only_from_allowed_modules():
    kinds = {type(m) for m in Attention(dim=8, dim_head=4).modules()} - {Attention}
    assert kinds <= {nn.Linear, nn.Softmax, nn.Dropout}
    assert all(m.bias is None for m in Attention(dim=8, dim_head=4).modules() if isinstance(m, nn.Linear))


def test_batched_multihead_equals_single_heads_one_by_one():
    torch.manual_seed(0)
    per_head = PerHeadAttention(dim=32, heads=8, dim_head=6).double().eval()
    batched = MultiHeadAttention(dim=32, heads=8, dim_head=6).double().eval()
    batched.load_heads(list(per_head.heads), per_head.to_out)
    x = torch.randn(4, 17, 32, dtype=torch.float64)
    assert torch.allclose(batched(x), per_head(x), atol=1e-12)


def test_encoder_layer_equals_step_by_step_reference():
    torch.manual_seed(0)
    layer = EncoderLayer(dim=16, heads=4, dim_head=8, mlp_dim=32, dropout=0.0).double().eval()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    # written out by hand from problem 3(b), figure 1
    a = layer.attn
    h = F.layer_norm(x, (16,), layer.norm1.weight, layer.norm1.bias)
    qkv = h @ a.to_qkv.weight.T
    q, k, v = qkv.split(32, dim=-1)
    heads = []
    for i in range(4):
        s = slice(8 * i, 8 * (i + 1))
        w = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 8 ** 0.5, dim=-1)
        heads.append(w @ v[..., s])
    x1 = x + torch.cat(heads, -1) @ a.to_out.weight.T + a.to_out.bias
    h = F.layer_norm(x1, (16,), layer.norm2.weight, layer.norm2.bias)
    mlp = layer.mlp.net
    h = F.gelu(h @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias
    assert torch.allclose(layer(x), x1 + h, atol=1e-12)


def test_encoder_layer_dropout_places():
    layer = EncoderLayer(dim=8, heads=2, dim_head=4, mlp_dim=16, dropout=0.3)
    drops = [name for name, m in layer.named_modules() if isinstance(m, nn.Dropout)]
    # after the attention, inside the MLP, after the MLP (+ attention-weight dropout, off by default)
    assert {"drop1", "mlp.net.drop", "drop2"} <= set(drops)
    assert all(m.p == 0.3 for n, m in layer.named_modules() if n in ("drop1", "mlp.net.drop", "drop2"))


def reference_attention(vit, x, layer):
    """softmax(Q K^T / sqrt(d)) of encoder layer `layer`, computed by hand from its weights."""
    h = vit.embed(x)
    for block in vit.layers[:layer]:
        h = block(h)
    block = vit.layers[layer]
    z = block.norm1(h)
    attn = block.attn
    if hasattr(attn, "to_qkv"):
        b, t, _ = z.shape
        q, k, _ = attn.to_qkv(z).view(b, t, 3, attn.heads, attn.dim_head).permute(2, 0, 3, 1, 4)
        return torch.softmax(q @ k.transpose(-1, -2) * attn.dim_head ** -0.5, -1)
    return torch.stack([torch.softmax(hd.to_q(z) @ hd.to_k(z).transpose(-1, -2) * hd.scale, -1) for hd in attn.heads], 1)


@pytest.mark.parametrize("per_head", [False, True])
def test_vit_shapes_and_recorded_attention(per_head, tmp_path):
    torch.manual_seed(0)
    config = ViTSpec(patch_size=7, dim=32, depth=2, heads=8, dim_head=16, mlp_dim=64, dropout=0.0,
                     attention="per_head" if per_head else "batched")
    vit = ViT(config, image_shape=(1, 28, 28), num_classes=10).eval()
    x = torch.randn(3, 1, 28, 28)
    with record_attention(vit) as maps:
        out = vit(x)
    assert out.shape == (3, 10)
    [attn] = maps
    assert attn.shape == (3, 8, 17, 17)
    # the maps of the layer asked for (the last by default), not of any other layer
    with torch.no_grad():
        assert torch.allclose(attn, reference_attention(vit, x, 1), atol=1e-6)
        assert not torch.allclose(attn, reference_attention(vit, x, 0), atol=1e-3)
        with record_attention(vit, 0) as first:
            vit(x)
        assert torch.allclose(first[0], reference_attention(vit, x, 0), atol=1e-6)
    fig = plots.attention_figure(x[0, 0].numpy(), attn[0].numpy(), grid=(4, 4))
    png = tmp_path / "a.png"
    fig.savefig(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vit_from_spec_matches_rules():
    checked = check_file(SPECS / "vit.yaml")
    assert all(r.ok for r in checked.results if r.ok is not None)
    model = build_model(checked.spec)
    assert len(model.layers) == 6 and model.layers[0].attn.heads == 8
    assert checked.analysis.params == sum(p.numel() for p in model.parameters())


VIT = """name: v
data: {{input_shape: [1, 28, 28]}}
model:
  vit:
{body}
"""
FULL = {"patch_size": 7, "dim": 32, "depth": 2, "heads": 4, "dim_head": 8, "mlp_dim": 64}


def _vit_spec(write_spec, **fields):
    body = "\n".join(f"    {k}: {v}" for k, v in {**FULL, **fields}.items() if v is not None)
    return write_spec(VIT.format(body=body))


def test_vit_patch_must_tile_image(write_spec):
    with pytest.raises(SpecError) as e:
        check_file(_vit_spec(write_spec, patch_size=5))
    [p] = e.value.problems
    assert p.line == 5 and "does not tile a 28x28 image" in p.message and "[1, 2, 4, 7, 14, 28]" in p.hint


def test_vit_zero_heads_and_missing_field(write_spec):
    with pytest.raises(SpecError) as e:
        check_file(_vit_spec(write_spec, heads=0, mlp_dim=None))
    msgs = {p.path: (p.line, p.message) for p in e.value.problems}
    assert msgs["model.vit.heads"][0] == 8 and "minimum of 1" in msgs["model.vit.heads"][1]
    assert "'mlp_dim' is missing" in msgs["model.vit"][1] and msgs["model.vit"][0] == 5


def test_vit_rules_fix_the_problem_settings():
    with pytest.raises(SpecError) as e:
        check_file(SPECS / "vit.yaml", overrides=("model.vit.heads=4",))
    assert "fixed at 8" in e.value.problems[0].message
