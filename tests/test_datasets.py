"""Datasets beyond MNIST (issue 12): each read from small files written here in its own
layout (torchvision's for the named sets), checked against its facts, and trained one epoch.

torchvision checks CIFAR-10's and SVHN's files against the MD5 sums of the real downloads;
the tests give it the sums of the small files they write (`_accept`), nothing else is patched.
"""
from __future__ import annotations

import hashlib
import json
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets
from typer.testing import CliRunner

import netspec
from conftest import run, synthetic_mnist, write_idx
from conftest import check_file
from netspec.cli import app
from netspec.data.datasets import load_source
from netspec.errors import DataError, SpecError
from netspec.spec.config import DataSpec
from netspec.spec.datasets import NAMED

cli = CliRunner()


def blobs(n: int, classes: int, shape=(1, 28, 28), seed: int = 0):
    """Learnable images: class k is a bright square at the k-th cell of a grid, on noise.
    Returns uint8 (n, C, H, W) and int64 labels."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    cols = math.ceil(math.sqrt(classes))
    rows = math.ceil(classes / cols)
    ch, cw = h // rows, w // cols
    labels = torch.randint(0, classes, (n,), generator=g)
    images = torch.randint(0, 60, (n, c, h, w), generator=g)
    for i, k in enumerate(labels.tolist()):
        r, q = divmod(k, cols)
        images[i, :, r * ch: r * ch + max(ch - 1, 1), q * cw: q * cw + max(cw - 1, 1)] = 255
    return images.to(torch.uint8), labels


def mlp_spec(tmp_path, data: str, classes: int, values: int, name: str = "tiny") -> object:
    """A small MLP spec for `data` (a YAML flow mapping) written to tmp_path/spec.yaml, checked."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ndata: {data}\nmodel:\n  layers:\n    - Flatten\n"
                    f"    - Linear: {{out_features: 64}}\n    - ReLU\n    - Dropout: {{p: 0.2}}\n"
                    f"    - Linear: {{out_features: {classes}}}\n"
                    "train: {epochs: 1, batch_size: 32, optimizer: {name: adam, lr: 0.003}}\n")
    return check_file(path)


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _accept(monkeypatch, cls, attr, value):
    monkeypatch.setattr(cls, attr, value)


# --- writers: each dataset's own file layout ------------------------------------------

def write_emnist(root, split: str, n_train=600, n_test=200):
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    k = len(NAMED[f"emnist-{split}"].classes)
    for part, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = blobs(n, k, seed=seed)
        stored = images[:, 0].transpose(1, 2)  # EMNIST's files hold each image transposed
        write_idx(raw / f"emnist-{split}-{part}-images-idx3-ubyte", stored)
        write_idx(raw / f"emnist-{split}-{part}-labels-idx1-ubyte", labels + (1 if split == "letters" else 0))
    return root


def write_cifar10(root, monkeypatch, n_train=500, n_test=200):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = blobs(n_train, 10, (3, 32, 32), seed=1)
    per = math.ceil(n_train / 5)
    train_list = []
    for b in range(5):
        part = slice(b * per, (b + 1) * per)
        f = folder / f"data_batch_{b + 1}"
        # CIFAR's rows: 1024 red values, 1024 green, 1024 blue (row-major 32x32 planes)
        f.write_bytes(pickle.dumps({"data": images[part].reshape(-1, 3072).numpy(), "labels": labels[part].tolist()}))
        train_list.append([f.name, _md5(f)])
    t_images, t_labels = blobs(n_test, 10, (3, 32, 32), seed=2)
    f = folder / "test_batch"
    f.write_bytes(pickle.dumps({"data": t_images.reshape(-1, 3072).numpy(), "labels": t_labels.tolist()}))
    meta = folder / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": list(NAMED["cifar10"].classes)}))
    _accept(monkeypatch, datasets.CIFAR10, "train_list", train_list)
    _accept(monkeypatch, datasets.CIFAR10, "test_list", [["test_batch", _md5(f)]])
    _accept(monkeypatch, datasets.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": _md5(meta)})
    return root, images, labels


def write_svhn(root, monkeypatch, n_train=500, n_test=200):
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    split_list = dict(datasets.SVHN.split_list)
    out = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = blobs(n, 10, (3, 32, 32), seed=seed)
        f = root / f"{split}_32x32.mat"
        # SVHN's .mat: X is (32, 32, 3, N), y is (N, 1) with the digit 0 labelled 10
        y = labels.numpy().copy()
        y[y == 0] = 10
        scipy.io.savemat(f, {"X": images.permute(2, 3, 1, 0).numpy(), "y": y.reshape(-1, 1)})
        split_list[split] = [split_list[split][0], f.name, _md5(f)]
        out[split] = (images, labels)
    _accept(monkeypatch, datasets.SVHN, "split_list", split_list)
    return root, out


def write_folder(root, classes=("cat", "dog", "fox"), n=60, rgb=True, split=False, size=(20, 24)):
    """PNG files in class sub-folders (optionally under train/ and test/), each its own size."""
    images, labels = blobs(n, len(classes), (3, 24, 24), seed=3)
    parts = [("train", slice(0, n * 3 // 4)), ("test", slice(n * 3 // 4, n))] if split else [("", slice(0, n))]
    for part, sl in parts:
        for i in range(*sl.indices(n)):
            d = root / part / classes[int(labels[i])]
            d.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(images[i].permute(1, 2, 0).numpy(), "RGB").resize((size[1] + i % 3, size[0]))
            (img if rgb else img.convert("L")).save(d / f"{i}.png")
    return root


# --- the named sets: read from their own layout, trained one epoch ------------------------------

def test_kmnist_reads_its_layout_and_trains(tmp_path):
    root = synthetic_mnist(tmp_path / "data", n_train=600, n_test=200, folder="KMNIST")
    source = load_source(DataSpec(dataset="kmnist"), root, download=False)
    assert source.train.images.shape == (600, 1, 28, 28) and source.classes[:3] == ("o", "ki", "su")
    checked = mlp_spec(tmp_path, "{dataset: kmnist, validation: 100, input_shape: [784]}", 10, 784)
    metrics = run(checked, out=tmp_path / "r", data_dir=root).metrics
    assert metrics.test_size == 200 and metrics.test_accuracy > 0.5
    assert json.loads((tmp_path / "r" / "data.json").read_text())["classes"][0] == "o"


@pytest.mark.parametrize("split, classes", [("letters", 26), ("balanced", 47), ("digits", 10)])
def test_emnist_splits_upright_with_their_classes(tmp_path, split, classes):
    root = write_emnist(tmp_path / "data", split)
    source = load_source(DataSpec(dataset=f"emnist-{split}"), root, download=False)
    assert len(source.classes) == classes
    images, labels = blobs(600, classes, seed=1)
    assert torch.equal(source.train.images, images)  # transposed back: upright as drawn
    assert torch.equal(source.train.labels, labels)  # letters: 1..26 in the file, 0..25 here
    if split == "letters":
        checked = mlp_spec(tmp_path, "{dataset: emnist-letters, validation: 100}", classes, 784)
        assert checked.spec.data.classes == 26
        metrics = run(checked, out=tmp_path / "r", data_dir=root).metrics
        assert metrics.test_accuracy > 1 / 26 * 3


def test_cifar10_reads_its_pickles_as_rgb_planes_and_trains(tmp_path, monkeypatch):
    root, images, labels = write_cifar10(tmp_path / "data", monkeypatch)
    source = load_source(DataSpec(dataset="cifar10"), root, download=False)
    assert source.train.images.shape == (500, 3, 32, 32)
    assert torch.equal(source.train.images, images) and torch.equal(source.train.labels, labels)
    checked = mlp_spec(tmp_path, "{dataset: cifar10, validation: 100, input_shape: [3, 32, 32]}", 10, 3072)
    assert checked.spec.data.image_shape == (3, 32, 32)
    metrics = run(checked, out=tmp_path / "r", data_dir=root).metrics
    assert metrics.test_accuracy > 0.5
    record = json.loads((tmp_path / "r" / "data.json").read_text())
    assert record["classes"][0] == "airplane" and len(record["mean"]) == 3


def test_svhn_reads_its_mat_files_and_maps_label_10_to_0(tmp_path, monkeypatch):
    root, written = write_svhn(tmp_path / "data", monkeypatch)
    source = load_source(DataSpec(dataset="svhn"), root, download=False)
    assert torch.equal(source.train.images, written["train"][0])
    assert torch.equal(source.test.labels, written["test"][1]) and source.test.labels.min() == 0
    checked = mlp_spec(tmp_path, "{dataset: svhn, validation: 100, input_shape: [3072]}", 10, 3072)
    assert run(checked, out=tmp_path / "r", data_dir=root).metrics.test_accuracy > 0.5


def test_a_corrupted_cifar_file_is_one_clear_error(tmp_path, monkeypatch):
    root, _, _ = write_cifar10(tmp_path / "data", monkeypatch)
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"CIFAR-10 is not in .*cifar-10-batches-py"):
        load_source(DataSpec(dataset="cifar10"), root, download=False)


# --- a user's own images ----------------------------------------------------------------------

def test_imagefolder_trains_on_pngs_resized_to_the_stated_size(tmp_path):
    folder = write_folder(tmp_path / "pets", n=90)
    spec = tmp_path / "pets.yaml"
    spec.write_text("name: pets\ndata: {dataset: imagefolder, path: pets, image_shape: [3, 16, 16], input_shape: [768], "
                    "validation: 0.2}\nmodel:\n  layers: [{Linear: {out_features: 32}}, ReLU, {Linear: {out_features: 3}}]\n"
                    "train: {epochs: 3, batch_size: 8, optimizer: {name: adam, lr: 0.003}}\n")
    checked = check_file(spec)
    d = checked.spec.data
    assert d.classes == 3 and d.image_shape == (3, 16, 16) and d.path == str(folder.resolve()) and d.test == 0.2
    result = run(checked, out=tmp_path / "r")
    m = result.metrics
    assert (m.train_size, m.val_size, m.test_size) == (58, 14, 18)  # 90: 18 test, then 72 * 0.2 validation
    assert m.test_accuracy > 0.6
    record = json.loads((tmp_path / "r" / "data.json").read_text())
    assert record["classes"] == ["cat", "dog", "fox"] and record["image_shape"] == [3, 16, 16]
    # the run folder's spec is portable: the path is absolute, and predict reads files as training did
    opened = netspec.open_run(tmp_path / "r")
    rows = opened.predict_files([folder / "dog"])
    assert {r.class_name for r in rows} <= {"cat", "dog", "fox"} and len(rows) == len(list((folder / "dog").iterdir()))
    assert sum(r.class_name == "dog" for r in rows) > len(rows) / 2


def test_imagefolder_with_train_and_test_and_grayscale(tmp_path):
    write_folder(tmp_path / "gray", n=80, rgb=False, split=True)
    spec = tmp_path / "g.yaml"
    spec.write_text("name: g\ndata: {dataset: imagefolder, path: gray, input_shape: [1, 12, 12], validation: 10}\n"
                    "model:\n  layers: [Flatten, {Linear: {out_features: 3}}]\n")
    checked = check_file(spec)
    assert checked.spec.data.image_shape == (1, 12, 12) and checked.spec.data.test is None
    source = load_source(checked.spec.data)
    assert len(source.train) == 60 and len(source.test) == 20 and source.facts.layout == "split"
    from netspec.data.datasets import load_all
    assert load_all(source.test).images.shape == (20, 1, 12, 12)


def test_npz_both_layouts(tmp_path):
    images, labels = blobs(300, 4, (1, 10, 10), seed=5)
    keras = tmp_path / "keras.npz"
    np.savez(keras, x_train=images[:200, 0].numpy(), y_train=labels[:200].numpy(),
             x_test=images[200:, 0].numpy(), y_test=labels[200:].numpy())
    src = load_source(DataSpec(dataset="npz", path=str(keras)))
    assert src.train.images.shape == (200, 1, 10, 10) and len(src.test) == 100 and src.classes == ("0", "1", "2", "3")
    plain = tmp_path / "plain.npz"
    rgb = images.repeat(1, 3, 1, 1).permute(0, 2, 3, 1)  # (N, H, W, 3), channels last
    np.savez(plain, images=rgb.numpy(), labels=labels.numpy(), classes=np.array(["a", "b", "c", "d"]))
    spec = tmp_path / "n.yaml"
    spec.write_text("name: n\ndata: {dataset: npz, path: plain.npz, input_shape: [300], test: 50}\n"
                    "model:\n  layers: [{Linear: {out_features: 16}}, ReLU, {Linear: {out_features: 4}}]\n"
                    "train: {epochs: 2, batch_size: 16, optimizer: {name: adam, lr: 0.003}}\n")
    checked = check_file(spec)
    assert checked.spec.data.image_shape == (3, 10, 10) and checked.spec.data.classes == 4
    m = run(checked, out=tmp_path / "r").metrics
    assert (m.test_size, m.val_size, m.train_size) == (50, 25, 225) and m.test_accuracy > 0.6
    source = load_source(checked.spec.data)
    assert torch.equal(source.train.images[0], source.train.images[0, :1].repeat(3, 1, 1))  # channels read right


# --- checks from the dataset's facts, at their line -------------------------------------------

def _problems(tmp_path, text: str):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(SpecError) as e:
        check_file(spec)
    return [(p.path, p.line, p.message) for p in e.value.problems]


def test_cifar_shape_validates_and_wrong_shapes_and_classes_give_their_line(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: c\ndata: {dataset: cifar10, input_shape: [3, 32, 32]}\nmodel:\n  layers:\n"
                  "    - Conv2d: {out_channels: 8, kernel_size: 3}\n    - Flatten\n    - Linear: {out_features: 10}\n")
    assert check_file(ok).analysis.output_shape == (10,)
    [(path, line, msg)] = _problems(tmp_path, "name: c\ndata:\n  dataset: cifar10\n  input_shape: [1, 28, 28]\n"
                                              "model:\n  layers: [Flatten, {Linear: {out_features: 10}}]\n")
    assert path == "data.input_shape" and line == 4 and "cifar10 images are [3, 32, 32] (3072 values)" in msg
    [(path, line, msg)] = _problems(tmp_path, "name: e\ndata: {dataset: emnist-balanced, input_shape: [784]}\nmodel:\n"
                                              "  layers:\n    - Linear: {out_features: 10}\n")
    assert path == "model.layers[0]" and line == 5 and "emnist-balanced has 47 classes" in msg
    [(path, line, msg)] = _problems(tmp_path, "name: c\ndata:\n  dataset: svhn\n  classes: 11\n  input_shape: [3, 32, 32]\n"
                                              "model:\n  layers: [Flatten, {Linear: {out_features: 10}}]\n")
    assert path == "data.classes" and line == 4 and "svhn has 10" in msg


def test_imagefolder_mistakes_are_located(tmp_path):
    msgs = _problems(tmp_path, "name: f\ndata:\n  dataset: imagefolder\n  path: nowhere\n  image_shape: [3, 8, 8]\n"
                               "  input_shape: [192]\nmodel:\n  layers: [{Linear: {out_features: 2}}]\n")
    assert msgs[0][:2] == ("data.path", 4) and "is not a folder" in msgs[0][2]
    write_folder(tmp_path / "three", n=30)
    msgs = _problems(tmp_path, "name: f\ndata:\n  dataset: imagefolder\n  path: three\n  input_shape: [192]\n"
                               "model:\n  layers: [{Linear: {out_features: 3}}]\n")
    assert msgs[0][:2] == ("data.input_shape", 5) and "does not say the channels" in msgs[0][2]
    msgs = _problems(tmp_path, "name: f\ndata:\n  dataset: imagefolder\n  path: three\n  input_shape: [3, 8, 8]\n"
                               "model:\n  layers: [Flatten, {Linear: {out_features: 2}}]\n")
    assert msgs[0][0] == "model.layers[1]" and "imagefolder has 3 classes" in msgs[0][2]
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "only").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "single" / "only" / "a.png")
    msgs = _problems(tmp_path, "name: f\ndata: {dataset: imagefolder, path: single, input_shape: [1, 4, 4]}\n"
                               "model:\n  layers: [Flatten, {Linear: {out_features: 2}}]\n")
    assert "a classifier needs at least 2" in msgs[0][2]
    # the root of the disk is one quick error (the first empty "class" is reported), not a walk of the disk
    msgs = _problems(tmp_path, "name: f\ndata: {dataset: imagefolder, path: /, input_shape: [1, 4, 4]}\n"
                               "model:\n  layers: [Flatten, {Linear: {out_features: 2}}]\n")
    assert msgs[0][0] == "data.path" and "no image files" in msgs[0][2] and "in class folder" in msgs[0][2]


def test_hidden_folders_are_not_classes(tmp_path):
    folder = write_folder(tmp_path / "pets", n=30)
    (folder / ".ipynb_checkpoints").mkdir()  # what Jupyter leaves in a folder it opened
    checked = mlp_spec(tmp_path, "{dataset: imagefolder, path: pets, input_shape: [3, 8, 8]}", 3, 192)
    source = load_source(checked.spec.data)
    assert source.classes == ("cat", "dog", "fox") and len(source.train) + len(source.test) == 30


def test_npz_mistakes_are_located(tmp_path):
    np.savez(tmp_path / "wrong.npz", pictures=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4, np.int64))
    [(path, line, msg)] = _problems(tmp_path, "name: n\ndata:\n  dataset: npz\n  path: wrong.npz\n  input_shape: [25]\n"
                                              "model:\n  layers: [{Linear: {out_features: 2}}]\n")
    assert (path, line) == ("data.path", 4) and "x_train, y_train, x_test, y_test" in msg
    np.savez(tmp_path / "short.npz", images=np.zeros((4, 5, 5), np.uint8), labels=np.array([0, 1, 1], np.int64))
    [(path, line, msg)] = _problems(tmp_path, "name: n\ndata: {dataset: npz, path: short.npz, input_shape: [25]}\n"
                                              "model:\n  layers: [{Linear: {out_features: 2}}]\n")
    assert "one integer label per image (4 images)" in msg


# --- normalisation, loading paths ------------------------------------------------------------

def test_statistics_come_from_the_training_split_only(tmp_path):
    """Validation and test images here are far brighter than training images: statistics that
    looked at them would differ from the training split's, computed independently below."""
    images, labels = blobs(400, 2, (1, 8, 8), seed=7)
    images[:, :, :, :] = images // 4  # training pixels 0..63
    test, test_labels = blobs(100, 2, (1, 8, 8), seed=8)  # 0..255
    np.savez(tmp_path / "d.npz", x_train=images[:, 0].numpy(), y_train=labels.numpy(),
             x_test=test[:, 0].numpy(), y_test=test_labels.numpy())
    from netspec.data.splits import prepare

    spec = DataSpec(dataset="npz", path=str(tmp_path / "d.npz"), validation=100, input_shape=(64,))
    data = prepare(load_source(spec), spec, seed=3)
    order = torch.randperm(400, generator=torch.Generator().manual_seed(3))
    train = images[order[100:]].double() / 255
    assert data.mean[0] == pytest.approx(float(train.mean()), abs=1e-9)
    assert data.std[0] == pytest.approx(float(train.std(unbiased=False)), abs=1e-9)
    everything = torch.cat([images, test]).double() / 255
    assert abs(data.mean[0] - float(everything.mean())) > 0.02
    # given in the spec, they are used as given
    given = DataSpec(dataset="npz", path=str(tmp_path / "d.npz"), validation=100, input_shape=(64,), mean=(0.5,), std=(0.25,))
    data = prepare(load_source(given), given, seed=3)
    assert data.mean == (0.5,) and data.stats_from == "spec"
    assert float(data.test.x[0, 0]) == pytest.approx((int(test[0, 0, 0, 0]) / 255 - 0.5) / 0.25, abs=1e-6)


def test_streaming_trains_exactly_like_memory_and_is_recorded(tmp_path, monkeypatch):
    """Dropout in the model: a DataLoader that drew from torch's global RNG would change its masks."""
    root, _, _ = write_cifar10(tmp_path / "data", monkeypatch)
    base = "{dataset: cifar10, validation: 100, input_shape: [3, 32, 32], %s}"
    results = {}
    for name, extra in (("memory", "loading: memory"), ("auto", "memory_mb: 1, workers: 1")):
        checked = mlp_spec(tmp_path, base % extra, 10, 3072, name=name)
        results[name] = run(checked, out=tmp_path / name, data_dir=root).metrics.to_dict()
    assert results["auto"]["loading"] == "stream" and results["memory"]["loading"] == "memory"
    for key in ("test_accuracy", "test_loss", "best_val_accuracy"):
        assert results["auto"][key] == results["memory"][key], key
    record = json.loads((tmp_path / "auto" / "data.json").read_text())
    assert record["loading"] == "stream" and "exceed data.memory_mb 1" in record["loading_reason"]
    assert "- Data: cifar10, streamed by a DataLoader; 400 training images" in (tmp_path / "auto" / "report.md").read_text()


def test_streaming_an_image_folder_with_workers(tmp_path):
    write_folder(tmp_path / "pets", n=60)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ndata: {dataset: imagefolder, path: pets, input_shape: [3, 12, 12], loading: stream, "
                    "workers: 2}\nmodel:\n  layers: [Flatten, {Linear: {out_features: 3}}]\ntrain: {epochs: 1, batch_size: 8}\n")
    m = run(check_file(spec), out=tmp_path / "r").metrics
    assert m.loading == "stream" and m.test_size == 12 and m.status == "finished"


# --- the CLI -----------------------------------------------------------------------------------

def test_cli_data_for_a_named_set_a_folder_and_an_npz(tmp_path, monkeypatch):
    root, _, _ = write_cifar10(tmp_path / "data", monkeypatch)
    r = cli.invoke(app, ["data", "cifar10", "--data-dir", str(root), "--validation", "100",
                         "--samples", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    assert "32 x 32 pixels, 3 channels (RGB)" in r.output and "400 / 100" in r.output and "airplane" in r.output
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    write_folder(tmp_path / "pets", n=30)
    r = cli.invoke(app, ["data", str(tmp_path / "pets"), "--image-shape", "1,10,12"])
    assert r.exit_code == 0, r.output
    assert "10 x 12 pixels, 1 channel (grayscale)" in r.output and "3: cat, dog, fox" in r.output
    assert "6 images" in r.output and "image_shape: [1, 10, 12]" in r.output
    spec = tmp_path / "pets.yaml"  # a spec: its data section, as it would train
    spec.write_text("name: p\ndata: {dataset: imagefolder, path: pets, input_shape: [3, 8, 8], test: 10}\n"
                    "model:\n  layers: [Flatten, {Linear: {out_features: 3}}]\n")
    r = cli.invoke(app, ["data", str(spec)])
    assert r.exit_code == 0, r.output
    assert "8 x 8 pixels, 3 channels" in r.output and "10 images" in r.output
    np.savez(tmp_path / "a.npz", images=np.zeros((10, 4, 4), np.uint8) + np.arange(10, dtype=np.uint8)[:, None, None],
             labels=np.arange(10) % 2)
    r = cli.invoke(app, ["data", str(tmp_path / "a.npz")])
    assert r.exit_code == 0, r.output
    assert "4 x 4 pixels, 1 channel (grayscale)" in r.output and "classes" in r.output
    r = cli.invoke(app, ["data", "cifar100"])
    assert r.exit_code == 1 and "Traceback" not in r.output and "is not a dataset netspec knows" in r.output


def test_svhn_without_scipy_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *args, **kw):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(DataError, match=r"netspec\[svhn\]"):
        load_source(DataSpec(dataset="svhn"), tmp_path, download=False)


# --- models of other datasets leave the run folder with their preprocessing --------------------

def test_an_rgb_run_exports_and_predicts_with_its_own_statistics(tmp_path):
    import onnxruntime

    folder = write_folder(tmp_path / "pets", n=60)
    spec = tmp_path / "p.yaml"
    spec.write_text("name: p\ndata: {dataset: imagefolder, path: pets, input_shape: [3, 12, 12]}\n"
                    "model:\n  layers: [{Conv2d: {out_channels: 4, kernel_size: 3}}, ReLU, Flatten, {Linear: {out_features: 3}}]\n"
                    "train: {epochs: 1, batch_size: 8}\nlint: {ignore: [small-receptive-field]}\n")
    run(check_file(spec), out=tmp_path / "r")
    opened = netspec.open_run(tmp_path / "r")
    path = opened.export()
    meta = json.loads(path.with_name("model.onnx.json").read_text())
    record = json.loads((tmp_path / "r" / "data.json").read_text())
    assert meta["normalise"] == {"mean": record["mean"], "std": record["std"]} and len(record["mean"]) == 3
    assert meta["classes"] == ["cat", "dog", "fox"] and meta["pixels"].startswith("RGB 12x12")
    files = sorted((folder / "fox").iterdir())[:3]
    from netspec.data.images import read_images

    pixels = read_images(files, (3, 12, 12))  # (3, 3, 12, 12) in 0..1
    x = ((pixels - torch.tensor(meta["normalise"]["mean"]).view(3, 1, 1)) / torch.tensor(meta["normalise"]["std"]).view(3, 1, 1))
    got = onnxruntime.InferenceSession(str(path)).run(None, {"images": x.numpy()})[0]
    rows = opened.predict_files(files)
    assert [meta["classes"][i] for i in got.argmax(1)] == [r.class_name for r in rows]


def test_a_vit_takes_its_head_size_from_the_dataset(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("name: v\ndata: {dataset: emnist-balanced}\nmodel:\n  vit: {patch_size: 7, dim: 16, depth: 1, heads: 2, "
                    "dim_head: 8, mlp_dim: 16}\n")
    checked = check_file(path)
    assert checked.analysis.output_shape == (47,) and checked.spec.data.classes == 47
    path.write_text("name: v\ndata: {dataset: cifar10, input_shape: [3, 32, 32]}\nmodel:\n  vit: {patch_size: 8, dim: 16, "
                    "depth: 1, heads: 2, dim_head: 8, mlp_dim: 16}\n")
    from netspec.builder.model import build_model

    model = build_model(check_file(path).spec)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_validation_is_a_count_or_a_share(tmp_path):
    [(path, line, msg)] = _problems(tmp_path, "name: v\ndata:\n  validation: 1.5\nmodel:\n  layers: [Flatten, {Linear: {out_features: 10}}]\n")
    assert (path, line) == ("data.validation", 3) and "neither a count of images" in msg
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: v\ndata: {validation: 0.25}\nmodel:\n  layers: [Flatten, {Linear: {out_features: 10}}]\n")
    assert check_file(ok).spec.data.validation == 0.25


@pytest.mark.parametrize("loading", ["loading: memory", "loading: stream, workers: 2"])
def test_an_unreadable_image_is_one_line_and_leaves_no_run_folder(tmp_path, loading):
    folder = write_folder(tmp_path / "pets", n=30)
    bad = folder / "cat" / "broken.png"
    bad.write_bytes(b"not a png")
    checked = mlp_spec(tmp_path, "{dataset: imagefolder, path: pets, input_shape: [3, 8, 8], test: 3, %s}" % loading, 3, 192)
    with pytest.raises(DataError) as e:
        run(checked, out=tmp_path / "r")
    assert str(e.value).startswith(f"cannot read image {bad}") and "Traceback" not in str(e.value)
    assert not (tmp_path / "r").exists()  # the next try may use the same --out
    bad.unlink()
    assert run(mlp_spec(tmp_path, "{dataset: imagefolder, path: pets, input_shape: [3, 8, 8], %s}" % loading, 3, 192),
               out=tmp_path / "r").metrics.status == "finished"


@pytest.mark.parametrize("path", ["a\\0b", "x" * 5000, "~nosuchuser123/x"])
@pytest.mark.parametrize("dataset", ["imagefolder", "npz"])
def test_unusable_paths_are_errors_at_their_line(tmp_path, path, dataset):
    [(where, line, msg)] = _problems(tmp_path, f'name: p\ndata:\n  dataset: {dataset}\n  path: "{path}"\n  input_shape: [1, 4, 4]\n'
                                               "model:\n  layers: [Flatten, {Linear: {out_features: 2}}]\n")
    assert (where, line) == ("data.path", 4)


def test_input_shape_defaults_to_the_datasets_image_shape(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\ndata: {dataset: cifar10}\nmodel:\n  layers: [Flatten, {Linear: {out_features: 10}}]\n")
    assert check_file(path).spec.data.input_shape == (3, 32, 32)
    write_folder(tmp_path / "pets", n=30)
    [(where, line, msg)] = _problems(tmp_path, "name: f\ndata:\n  dataset: imagefolder\n  path: pets\n"
                                               "model:\n  layers: [Flatten, {Linear: {out_features: 3}}]\n")
    assert (where, line) == ("data.dataset", 3) and "states none" in msg
    path.write_text("name: f\ndata: {dataset: imagefolder, path: pets, image_shape: [1, 6, 6]}\n"
                    "model:\n  layers: [Flatten, {Linear: {out_features: 3}}]\n")
    assert check_file(path).spec.data.input_shape == (1, 6, 6)


def test_given_statistics_are_checked_against_the_channels(tmp_path):
    msgs = _problems(tmp_path, "name: s\ndata:\n  dataset: cifar10\n  mean: [0.5]\n  std: [0.2, 0.2, 0.2]\n"
                               "model:\n  layers: [Flatten, {Linear: {out_features: 10}}]\n")
    assert [(p, line) for p, line, _ in msgs] == [("data.mean", 4)] and "3 channel(s)" in msgs[0][2]
    msgs = _problems(tmp_path, "name: s\ndata:\n  dataset: mnist\n  std: [0.3]\n"
                               "model:\n  layers: [Flatten, {Linear: {out_features: 10}}]\n")
    assert msgs[0][:2] == ("data.std", 4) and "without data.mean" in msgs[0][2]


def test_the_same_images_as_npz_train_exactly_like_the_named_set(fake_data, tmp_path):
    """One pipeline behind every source: MNIST's own files and the same arrays in an npz give
    the same split, statistics and metrics."""
    from conftest import mnist_source

    src = mnist_source(fake_data)
    np.savez(tmp_path / "same.npz", x_train=src.train.images[:, 0].numpy(), y_train=src.train.labels.numpy(),
             x_test=src.test.images[:, 0].numpy(), y_test=src.test.labels.numpy())
    metrics = {}
    for name, data in (("named", "{dataset: mnist, validation: 200}"), ("npz", "{dataset: npz, path: same.npz, validation: 200}")):
        checked = mlp_spec(tmp_path, data, 10, 784, name=name)
        metrics[name] = run(checked, out=tmp_path / name, data_dir=fake_data).metrics.to_dict()
        metrics[name]["mean"] = json.loads((tmp_path / name / "data.json").read_text())["mean"]
    for key in ("test_accuracy", "test_loss", "best_val_accuracy", "train_size", "mean"):
        assert metrics["named"][key] == metrics["npz"][key], key


def test_cli_trains_an_image_folder_and_says_data_dir_is_not_its_place(tmp_path):
    write_folder(tmp_path / "pets", n=30)
    spec = tmp_path / "p.yaml"
    spec.write_text("name: p\ndata: {dataset: imagefolder, path: pets, image_shape: [1, 8, 8]}\n"
                    "model:\n  layers: [Flatten, {Linear: {out_features: 3}}]\ntrain: {epochs: 1, batch_size: 4}\n")
    r = cli.invoke(app, ["run", str(spec), "--out", str(tmp_path / "r"), "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "--data-dir is where the named datasets are; imagefolder reads data.path" in r.output
    r = cli.invoke(app, ["predict", str(tmp_path / "r"), str(tmp_path / "pets" / "cat"), "--format", "json"])
    assert r.exit_code == 0 and {row["class"] for row in json.loads(r.stdout)} <= {"cat", "dog", "fox"}
