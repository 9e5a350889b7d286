"""Speed settings (issue 14): precision, memory layout, compilation, fused attention.
They change float rounding and time, never what is trained; the tests bound the
difference with stated tolerances and check that fallbacks are announced."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from netspec.families.vit import ViTSpec
from netspec.families.vit_torch import MultiHeadAttention, ViT, record_attention
from netspec.runner.observer import Observer
from netspec.runner.reopen import evaluate_run
from conftest import run
from netspec.runner.speed import Speed, resolve
from conftest import check_file

from conftest import SPECS
from conftest import ctrl_c

CNN_QUICK = ("train.epochs=2", "data.validation=200", "train.augment.rotate=0")


def tiny_cnn(tmp_path, *extra):
    spec = tmp_path / "cnn.yaml"
    spec.write_text((SPECS / "cnn-small.yaml").read_text().replace("rules: mnist-cnn\n", ""))
    return check_file(spec, overrides=CNN_QUICK + extra)


def test_auto_settings_per_model_and_device(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cnn = check_file(SPECS / "cnn.yaml").spec
    vit = check_file(SPECS / "vit.yaml").spec
    mlp = check_file(SPECS / "mlp.yaml").spec
    bf16 = resolve(cnn, cpu).precision  # bf16 where this CPU has it (AMX / AVX-512 BF16), else fp32
    assert resolve(cnn, cpu) == Speed(bf16, True, "off", False, False)
    assert resolve(vit, cpu) == Speed(bf16, False, "off", False, False)
    assert resolve(mlp, cpu) == Speed("fp32", False, "off", False, False)  # bf16 measured no faster for the MLP
    # what auto means on a GPU is decided without touching one
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve(cnn, cuda) == Speed("bf16", True, "cudagraphs", False, False)
    assert resolve(vit, cuda) == Speed("bf16", False, "cudagraphs", True, False)
    assert resolve(mlp, cuda) == Speed("fp32", False, "off", False, False)  # measured slower under CUDA graphs
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve(cnn, cuda).precision == "fp16"
    exact = check_file(SPECS / "cnn.yaml", overrides=("train.precision=fp32", "train.channels_last=false")).spec
    assert resolve(exact, cpu) == Speed("fp32", False, "off", False, False)


@pytest.mark.slow
@pytest.mark.parametrize("extra, tolerance", [
    (("train.precision=bf16",), 0.05),
    (("train.precision=fp16",), 0.05),
    (("train.channels_last=true", "train.precision=fp32"), 0.01),
    (("train.channels_last=true", "train.precision=bf16"), 0.05),
])
def test_each_precision_and_layout_trains_like_fp32(fake_data, tmp_path, extra, tolerance):
    """Same data, same start: the final training loss stays within `tolerance` (relative: 1% for
    another layout, whose convolution kernels round differently, 5% for bf16/fp16)
    of exact fp32, and the test accuracy within 2 points (float rounding only)."""
    exact = run(tiny_cnn(tmp_path, "train.precision=fp32", "train.channels_last=false"), out=tmp_path / "fp32",
                data_dir=fake_data, limit=600)
    other = run(tiny_cnn(tmp_path, *extra), out=tmp_path / "other", data_dir=fake_data, limit=600)
    a, b = exact.history[-1].train_loss, other.history[-1].train_loss
    assert abs(a - b) <= tolerance * a, (a, b)
    assert abs(exact.metrics.test_accuracy - other.metrics.test_accuracy) <= 0.02
    assert other.metrics.speed["precision"] == other.run_dir.path.joinpath("spec.yaml").read_text().split(
        "precision: ")[1].split()[0]
    # model.pt holds the standard layout, whatever layout trained it
    saved = torch.load(other.run_dir / "model.pt", weights_only=True)["state_dict"]
    assert all(t.is_contiguous() for t in saved.values())


def test_eval_of_a_bf16_run_matches_its_own_figure(fake_data, tmp_path):
    result = run(tiny_cnn(tmp_path, "train.precision=bf16"), out=tmp_path / "r", data_dir=fake_data, limit=600)
    assert "bf16 mixed precision" in (tmp_path / "r" / "report.md").read_text()
    again = evaluate_run(tmp_path / "r", fake_data)
    assert again.precision == "bf16" and again.test_accuracy == result.metrics.test_accuracy
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["evaluated_in"] == "bf16"


def test_compile_failure_is_one_line_and_training_goes_on(fake_data, tmp_path, monkeypatch):
    def broken_compile(module, **kw):
        def call(x):
            raise RuntimeError("no C++ compiler here\nlong backtrace ...")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    notes = []

    class Notes(Observer):
        def note(self, text):
            notes.append(text)

    result = run(tiny_cnn(tmp_path, "train.compile=on"), out=tmp_path / "r", data_dir=fake_data, limit=600,
                 observer=Notes())
    assert notes == ["torch.compile failed (RuntimeError: no C++ compiler here); training continues eagerly"]
    assert result.metrics.status == "finished" and result.metrics.speed["compile"] == "off"
    exact = run(tiny_cnn(tmp_path, "train.compile=off"), out=tmp_path / "eager", data_dir=fake_data, limit=600)
    assert result.metrics.test_accuracy == exact.metrics.test_accuracy


def test_ctrl_c_during_a_failed_compile_still_stops_the_run(fake_data, tmp_path, monkeypatch):
    """Ctrl-C while a long first compile runs, and the compile then fails: training falls back to
    eager, and the stop recorded meanwhile still ends the run at the end of that step."""
    from netspec.errors import Interrupted

    def interrupted_compile(module, **kw):
        def call(x):
            ctrl_c()
            raise RuntimeError("backend compiler failed")
        return call

    monkeypatch.setattr(torch, "compile", interrupted_compile)
    with pytest.raises(Interrupted, match="before the first epoch"):
        run(tiny_cnn(tmp_path, "train.compile=on"), out=tmp_path / "r", data_dir=fake_data, limit=600)


def test_compile_off_is_spelled_as_yaml_reads_it(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text((SPECS / "mlp.yaml").read_text().replace("  seed: 0\n", "  seed: 0\n  compile: off\n"))
    assert check_file(spec).spec.train.compile == "off"


@pytest.mark.parametrize("heads, dim_head", [(8, 64), (3, 5)])
def test_fused_attention_equals_the_explicit_path(heads, dim_head):
    torch.manual_seed(0)
    attn = MultiHeadAttention(dim=32, heads=heads, dim_head=dim_head).double().eval()
    x = torch.randn(4, 17, 32, dtype=torch.float64)
    explicit = attn(x)
    attn.fused = True
    fused = attn(x)
    assert torch.allclose(fused, explicit, atol=1e-12)
    # and in training mode with dropout off (p = 0), gradients agree too
    attn.train()
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    for flag, xi in zip((False, True), xs):
        attn.fused = flag
        attn(xi).sum().backward()
    assert torch.allclose(xs[0].grad, xs[1].grad, atol=1e-12)


def test_heatmaps_use_the_explicit_path_even_when_fused():
    torch.manual_seed(0)
    vit = ViT(ViTSpec(patch_size=7, dim=32, depth=2, heads=4, dim_head=8, mlp_dim=64, dropout=0.0),
              image_shape=(1, 28, 28), num_classes=10).eval()
    for layer in vit.layers:
        layer.attn.fused = True
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad(), record_attention(vit) as maps:
        out = vit(x)
    assert maps and maps[0].shape == (2, 4, 17, 17)
    assert vit.layers[-1].attn.fused  # switched back on afterwards
    for layer in vit.layers:
        layer.attn.fused = False
    with torch.no_grad():
        assert torch.allclose(vit(x), out, atol=1e-5)


def test_the_problem_sets_single_head_module_stays_explicit():
    from netspec.families.vit_torch import Attention
    assert not hasattr(Attention(dim=8, dim_head=4), "fused")
    assert [type(m).__name__ for m in Attention(dim=8, dim_head=4).children()] == ["Linear", "Linear", "Linear",
                                                                                    "Softmax", "Dropout"]
    assert isinstance(MultiHeadAttention(dim=8, heads=2, dim_head=4).attend, nn.Softmax)


def test_the_schedule_table_is_torchs_own_schedule():
    """compile: graph reads each step's learning rate and beta1 from a table on the device: the
    values torch's OneCycleLR gives an optimizer that really steps, in fp64 (Python's floats)."""
    from netspec.runner.optim import schedule_table
    from netspec.runner.optim import make_optimizer, make_schedule

    spec = check_file(SPECS / "mlp.yaml").spec.train
    total = 40
    table = schedule_table(spec.optimizer, spec.schedule, total)
    p = nn.Parameter(torch.zeros(3))
    opt = make_optimizer([p], spec.optimizer)
    sched = make_schedule(opt, spec.schedule, spec.optimizer.lr, total)
    seen = []
    for _ in range(total):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))  # after the last step
    assert table.shape == (total + 1, 2) and torch.equal(table, torch.tensor(seen, dtype=torch.float64))
    assert spec.schedule.name == "onecycle" and len({round(b, 6) for _, b in seen}) > 2  # beta1 cycles


@pytest.mark.parametrize("name,extra", [("adam", {}), ("adamw", {"weight_decay": 0.05}), ("adam", {"weight_decay": 0.01}),
                                        ("sgd", {"nesterov": True, "weight_decay": 1e-3}), ("sgd", {})])
def test_the_device_optimizer_steps_as_torchs_with_the_cycled_momentum(name, extra):
    """The graph's optimizer reads its rate, momentum and step number from device tensors; stepped
    with the one-cycle table (beta1 or SGD's momentum cycled), it follows torch's optimizer under
    torch's OneCycleLR, state and weights, to fp32 rounding."""
    from dataclasses import replace

    from netspec.runner.optim import DeviceOptimizer, schedule_table
    from netspec.runner.optim import make_optimizer, make_schedule

    spec = check_file(SPECS / "mlp.yaml").spec.train
    opt_spec = replace(spec.optimizer, name=name, lr=0.05 if name == "sgd" else 2e-3, **extra)
    total = 30
    table = schedule_table(opt_spec, spec.schedule, total)
    torch.manual_seed(0)
    ours, theirs = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))], []
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    rates, step_no = torch.zeros(2), torch.zeros(1, dtype=torch.long)
    mine = DeviceOptimizer(ours, opt_spec, rates, step_no, momentum=bool(table[:, 1].any()))
    ref = make_optimizer(theirs, opt_spec)
    sched = make_schedule(ref, spec.schedule, opt_spec.lr, total)
    for step in range(total):
        grads = [torch.randn_like(p) for p in ours]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        rates.copy_(table[step])
        mine.step()
        step_no += 1
        ref.step()
        sched.step()
        for p, q in zip(ours, theirs):
            assert torch.allclose(p, q, rtol=1e-6, atol=1e-7), (name, step)
    assert len({round(float(m), 6) for m in table[:, 1]}) > 2  # the momentum cycled
    state = next(iter(mine.state.values()))
    assert set(state) == {"exp_avg", "exp_avg_sq"} if name != "sgd" else {"momentum_buffer"}
    assert not torch.equal(ours[0], ours[0].detach() * 0)  # and it moved


def test_the_device_optimizer_continues_from_torchs_adam_state():
    """A graph run's checkpoint from before DeviceOptimizer holds torch's Adam state: loaded, the
    next step is torch's next step."""
    import copy

    from netspec.runner.optim import DeviceOptimizer, schedule_table
    from netspec.runner.optim import make_optimizer, make_schedule

    spec = check_file(SPECS / "mlp.yaml").spec.train
    table = schedule_table(spec.optimizer, spec.schedule, 10)
    torch.manual_seed(0)
    theirs = [nn.Parameter(torch.randn(5, 2))]
    ref = make_optimizer(theirs, spec.optimizer)
    sched = make_schedule(ref, spec.schedule, spec.optimizer.lr, 10)
    for _ in range(4):
        theirs[0].grad = torch.randn(5, 2)
        ref.step()
        sched.step()
    ours = [nn.Parameter(theirs[0].detach().clone())]
    rates, step_no = torch.zeros(2, dtype=torch.float64), torch.full((1,), 4)
    mine = DeviceOptimizer(ours, spec.optimizer, rates, step_no, momentum=True)
    mine.load_state_dict(copy.deepcopy(ref.state_dict()))  # as from a file: not torch's own tensors
    g = torch.randn(5, 2)
    theirs[0].grad, ours[0].grad = g.clone(), g.clone()
    rates.copy_(table[4])
    mine.step()
    ref.step()
    assert mine.param_groups[0]["kind"] == "adam" and torch.allclose(ours[0], theirs[0], rtol=1e-6, atol=1e-7)


def test_the_device_driven_step_trains_as_the_usual_loop_and_resumes(fake_data, tmp_path):
    """compile: graph on the CPU: the same step without the capture (the CUDA graph is a GPU's).
    Batches by a device counter, the schedule from the table, tensor hyperparameters, one look an
    epoch, the last partial batch, the device optimizer: the numbers of the usual loop, to fp32
    rounding (the optimizer's arithmetic in another order)."""
    from conftest import quick_mlp

    from netspec.errors import Interrupted

    usual = run(quick_mlp(), out=tmp_path / "usual", data_dir=fake_data, limit=300)  # 4 full batches of 64, and 44
    graph = run(quick_mlp("train.compile=graph"), out=tmp_path / "graph", data_dir=fake_data, limit=300)
    assert graph.metrics.speed["compile"] == "graph" and usual.metrics.speed["compile"] == "off"
    for a, b in zip(usual.history, graph.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-6) and a.train_acc == b.train_acc
        assert a.val_acc == b.val_acc and a.lr == pytest.approx(b.lr, rel=1e-6)
    w1 = torch.load(tmp_path / "usual" / "model.pt", weights_only=True)["state_dict"]
    w2 = torch.load(tmp_path / "graph" / "model.pt", weights_only=True)["state_dict"]
    assert all((w1[k] - w2[k]).abs().max() < 1e-6 for k in w1) and graph.metrics.test_accuracy == usual.metrics.test_accuracy
    assert "whole step as one graph" in (tmp_path / "graph" / "report.md").read_text()

    class StopInEpoch2(Observer):
        def step(self, *, epoch, step, loss):  # in graph mode, once an epoch: at its look
            if epoch == 2:
                ctrl_c()

    with pytest.raises(Interrupted):
        run(quick_mlp("train.compile=graph"), out=tmp_path / "cut", data_dir=fake_data, limit=300,
            observer=StopInEpoch2())
    resumed = run(quick_mlp("train.compile=graph"), out=tmp_path / "cut", data_dir=fake_data, resume=True)
    w3 = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(w2[k], w3[k]) for k in w2)  # resumed: the uninterrupted run's weights, bit for bit
    assert [(h.train_loss, h.lr) for h in resumed.history] == [(h.train_loss, h.lr) for h in graph.history]


@pytest.mark.parametrize("setting,why", [
    ("train.precision=fp16", "fp16's gradient scaler decides on the host"),
    ("data.loading=stream", "the training images must be in the device's memory"),
])
def test_what_the_device_driven_step_cannot_train_is_refused_before_a_folder(fake_data, tmp_path, setting, why):
    from conftest import quick_mlp

    from netspec.errors import RunError

    with pytest.raises(RunError, match=why):
        run(quick_mlp("train.compile=graph", setting), out=tmp_path / "r", data_dir=fake_data, limit=300)
    assert not (tmp_path / "r").exists()


def test_the_device_driven_step_is_refused_for_several_processes():
    from netspec.runner.steps import graph_problem
    spec = check_file(SPECS / "mlp.yaml", overrides=("train.compile=graph",)).spec
    speed = resolve(spec, torch.device("cpu"))
    assert graph_problem(speed, 1, "memory") is None
    assert "one process" in graph_problem(speed, 2, "memory")


def test_sgd_with_one_cycle_momentum_trains_under_the_device_driven_step_as_usual(fake_data, tmp_path):
    """SGD's momentum cycled by one-cycle (a number torch's SGD reads on the host) comes from the
    table: the run is the usual loop's."""
    from conftest import quick_mlp

    sgd = ("train.optimizer.name=sgd", "train.optimizer.lr=0.05", "train.optimizer.nesterov=true")
    usual = run(quick_mlp(*sgd), out=tmp_path / "usual", data_dir=fake_data, limit=300)
    graph = run(quick_mlp("train.compile=graph", *sgd), out=tmp_path / "graph", data_dir=fake_data, limit=300)
    assert graph.metrics.speed["compile"] == "graph"
    for a, b in zip(usual.history, graph.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-6) and a.val_acc == b.val_acc
    w1 = torch.load(tmp_path / "usual" / "model.pt", weights_only=True)["state_dict"]
    w2 = torch.load(tmp_path / "graph" / "model.pt", weights_only=True)["state_dict"]
    assert all((w1[k] - w2[k]).abs().max() < 1e-6 for k in w1)
    assert usual.history[0].train_loss != pytest.approx(usual.history[-1].train_loss, rel=1e-2)  # it trained


def test_a_failed_capture_is_said_in_one_line_with_its_first_error_and_place():
    """A capture that fails raises twice: the op that cannot be captured, then, on leaving the
    graph, "operation failed due to a previous error during capture". The run says the first and
    where it was, in one line, with what to use instead (the real capture: tests/test_gpu.py)."""
    from netspec.errors import NetspecError
    from netspec.runner.steps import capture_error

    def optimizer_step():
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nSearch for ...")

    try:
        try:
            optimizer_step()
        finally:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
    except RuntimeError as e:
        error = capture_error(e)
    text = str(error)
    assert "\n" not in text and "operation not permitted when stream is capturing" in text
    assert "previous error" not in text and "test_speed.py:" in text and "optimizer_step" in text
    assert "train.compile: cudagraphs" in text and isinstance(error, NetspecError)
