"""The CUDA path. Skipped (with the reason) where torch sees no GPU; benchmarks/gpu.sh
runs these on a GPU machine together with the timed full runs."""
from __future__ import annotations

import pytest
import torch

from netspec.families.vit_torch import MultiHeadAttention
from netspec.runner.reopen import evaluate_run
from conftest import run
from conftest import check_file

from conftest import SPECS

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: torch.cuda.is_available() is False")]


def tiny(tmp_path, name="cnn-small.yaml", *extra):
    spec = tmp_path / name
    spec.write_text((SPECS / name).read_text().split("\nsweep:")[0].replace("rules: mnist-cnn\n", "")
                    .replace("rules: mnist-vit\n", ""))
    return check_file(spec, overrides=("train.epochs=2", "data.validation=200", "train.device=cuda") + extra)


def test_cuda_run_with_auto_settings_and_cpu_eval(fake_data, tmp_path):
    result = run(tiny(tmp_path), out=tmp_path / "r", data_dir=fake_data, limit=600)
    m = result.metrics
    assert m.device.startswith("cuda") and m.speed["channels_last"] and m.speed["precision"] in ("bf16", "fp16")
    assert m.test_accuracy > 0.5
    again = evaluate_run(tmp_path / "r", fake_data)  # on the CPU, in the run's precision
    assert abs(again.test_accuracy - m.test_accuracy) <= 0.01


def test_deterministic_runs_repeat_bit_for_bit(fake_data, tmp_path):
    weights = []
    for i in range(2):
        run(tiny(tmp_path, "cnn-small.yaml", "train.deterministic=true"), out=tmp_path / f"r{i}", data_dir=fake_data,
            limit=600)
        weights.append(torch.load(tmp_path / f"r{i}" / "model.pt", weights_only=True)["state_dict"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # and the process-wide flags are back as they were
    assert not torch.are_deterministic_algorithms_enabled()


def test_fused_attention_on_gpu_equals_explicit():
    torch.manual_seed(0)
    attn = MultiHeadAttention(dim=64, heads=8, dim_head=64).cuda().eval()
    x = torch.randn(32, 17, 64, device="cuda")
    with torch.no_grad():
        explicit = attn(x)
        attn.fused = True
        fused = attn(x)
    assert torch.allclose(fused, explicit, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["on", "cudagraphs"])
def test_compiled_training_on_gpu(fake_data, tmp_path, mode):
    notes = []

    class Notes:
        def start(self, **kw): ...
        def step(self, **kw): ...
        def epoch(self, stats): ...
        def note(self, text):
            notes.append(text)

    result = run(tiny(tmp_path, "cnn-small.yaml", f"train.compile={mode}"), out=tmp_path / "r", data_dir=fake_data,
                 limit=600, observer=Notes())
    assert notes == [] and result.metrics.speed["compile"] == mode
    assert result.metrics.test_accuracy > 0.5


def test_vit_trains_on_gpu_with_fused_attention_and_draws_heatmaps(fake_data, tmp_path):
    checked = tiny(tmp_path, "vit.yaml", "model.vit.depth=2", "train.schedule.name=none")
    result = run(checked, out=tmp_path / "r", data_dir=fake_data, limit=600)
    assert result.metrics.speed["fused_attention"]
    assert (tmp_path / "r" / "attention.png").is_file()


def test_the_whole_step_captured_as_one_cuda_graph_trains_as_eager(fake_data, tmp_path):
    """compile: graph on a GPU: the step is captured once and replayed; the run reaches what the
    eager run reaches (bf16 rounding and another Adam kernel allow small differences)."""
    from netspec.builder.model import build_model
    from netspec.runner.run import load_data
    from netspec.runner.trainer import Trainer

    eager = run(tiny(tmp_path, "cnn-small.yaml", "train.compile=off"), out=tmp_path / "e", data_dir=fake_data, limit=600)
    graph = run(tiny(tmp_path, "cnn-small.yaml", "train.compile=graph"), out=tmp_path / "g", data_dir=fake_data,
                limit=600)
    assert graph.metrics.speed["compile"] == "graph" and graph.metrics.status == "finished"
    assert abs(graph.metrics.test_accuracy - eager.metrics.test_accuracy) <= 0.02
    for a, b in zip(eager.history, graph.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=0.05)
    checked = tiny(tmp_path, "cnn-small.yaml", "train.compile=graph")
    device = torch.device("cuda")
    data = load_data(checked, device, fake_data, limit=600)
    trainer = Trainer(checked.spec, build_model(checked.spec, device), data, device,
                      softmax_head=checked.analysis.softmax_head)
    trainer.fit()
    assert trainer.loop.graph is not None  # captured, not run eagerly


def test_a_step_that_cannot_be_captured_stops_the_run_in_one_line(fake_data, tmp_path, monkeypatch):
    """A host read inside the step (here: one added to the optimizer) breaks the capture: the run
    stops with a RunError naming the first error and its place, not torch's two tracebacks."""
    from netspec.errors import RunError
    from netspec.runner.optim import DeviceOptimizer

    step = DeviceOptimizer.step

    def reads_the_host(self, closure=None):
        float(self.rates[0])  # a sync: refused while capturing
        return step(self, closure)

    monkeypatch.setattr(DeviceOptimizer, "step", reads_the_host)
    with pytest.raises(RunError, match=r"could not be captured .*reads_the_host"):
        run(tiny(tmp_path, "cnn-small.yaml", "train.compile=graph"), out=tmp_path / "g", data_dir=fake_data, limit=600)
