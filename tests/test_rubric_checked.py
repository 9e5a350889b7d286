"""A rubric is checked as fully as a spec when it loads, before anyone is graded: its locked
settings (keys, values, and what they make of a spec), its points (bounded), its accuracy steps
(readable errors), and its hidden test set (read at the images' own shape, or at the one stated)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netspec.errors import SpecError
from netspec.grading.rubric import load_rubric
from conftest import NETSPEC


def problems_of(tmp_path: Path, text: str) -> list[tuple]:
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(SpecError) as e:
        load_rubric(tmp_path / "r.yaml")
    return [(p.line, p.col, p.path, p.message, p.hint) for p in e.value.problems]


TRAIN_KEYS = ("optimizer, schedule, epochs, batch_size, eval_batch_size, seed, device, label_smoothing, augment, "
              "precision, channels_last, compile, fused_attention, deterministic, sync_batchnorm")
DATASETS = ("mnist, fashion-mnist, kmnist, emnist-balanced, emnist-byclass, emnist-bymerge, emnist-letters, "
            "emnist-digits, emnist-mnist, cifar10, svhn, imagefolder, npz, none")


def test_each_bad_locked_setting_is_reported_at_its_own_line(tmp_path):
    assert problems_of(tmp_path, "locked:\n  train.seed: 0\n  train.epoch: 2\n  train.epochs: 0\n"
                                 "  data.dataset: mnsit\n  train.optimizer: sgd\n  trian.device: cpu\n"
                                 "points: {valid: 1}\n") == [
        (3, 16, "locked.train.epoch", "unknown key 'epoch'", f"did you mean 'epochs'? known keys: {TRAIN_KEYS}"),
        (4, 17, "locked.train.epochs", "0 is less than the minimum of 1", ""),
        (5, 17, "locked.data.dataset", f"'mnsit' is not one of {DATASETS}", "did you mean 'mnist'?"),
        (6, 20, "locked.train.optimizer", "'sgd' is not a mapping",
         "train.optimizer is a section of settings; lock one of them, e.g. train.optimizer.name: sgd"),
        (7, 17, "locked.trian.device", "unknown key 'trian'",
         "did you mean 'train'? known keys: name, description, rules, data, model, train, sweep, lint"),
    ]


def test_a_locked_layer_too_big_to_build_is_refused(tmp_path):
    # past the schema's largest size
    assert problems_of(tmp_path, "locked:\n  model.layers.1.Linear.out_features: 10000000000\npoints: {valid: 1}\n") == [
        (2, 39, "locked.model.layers.1.Linear.out_features",
         "10000000000 is greater than the maximum of 2147483647", "")]
    # a size the schema takes, in a model over netspec's parameter limit: 784 x 10^8 + 10^8 and
    # 10^8 x 10 + 10 parameters in the reference spec (Flatten, Linear(100), ReLU, Linear(10) on MNIST)
    found = problems_of(tmp_path, "locked:\n  train.batch_size: 64\n  model.layers.1.Linear.out_features: 100000000\n"
                                  "points: {valid: 1}\n")
    assert [f[:4] for f in found] == [
        (3, 39, "locked.model.layers.1.Linear.out_features",
         "the model has 79,500,000,010 parameters; netspec builds at most 500,000,000 (in a small reference spec, "
         "Flatten, Linear(100), ReLU, Linear(10), with the locked settings written in)")]


def test_locks_are_checked_together_against_the_data_set(tmp_path):
    assert problems_of(tmp_path, "locked:\n  data.dataset: cifar10\n  data.image_shape: [1, 28, 28]\n"
                                 "  model.layers: [Flatten, {Linear: {out_features: 7}}]\npoints: {valid: 1}\n") == [
        (3, 21, "locked.data.image_shape", "[1, 28, 28] stated, but cifar10 images are [3, 32, 32]", "")]
    assert problems_of(tmp_path, "locked:\n  data.dataset: cifar10\n"
                                 "  model.layers: [Flatten, {Linear: {out_features: 7}}]\npoints: {valid: 1}\n") == [
        (3, 27, "locked.model.layers[1]", "the model outputs shape (7) but cifar10 has 10 classes",
         "make the last Linear's out_features 10")]


def test_good_locks_load_including_those_only_a_submission_can_judge(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "locked:\n  train.seed: 0\n  train.epochs: 2\n  train.optimizer.name: SGD\n  data.dataset: cifar10\n"
        "  data.validation: 5000\n  model.layers.4.Conv2d.out_channels: 16\n  model.layers.1.Linear.out_features: 64\n"
        "points: {valid: 1}\n")
    rubric = load_rubric(tmp_path / "r.yaml")
    assert rubric.locked[3] == ("data.dataset", "cifar10") and len(rubric.locked) == 7
    (tmp_path / "own.yaml").write_text("locked: {data.dataset: imagefolder, data.path: images, "
                                       "data.image_shape: [3, 32, 32], model.vit.dim: 64}\npoints: {valid: 1}\n")
    assert dict(load_rubric(tmp_path / "own.yaml").locked)["data.path"] == "images"  # each submission's own folder
    assert load_rubric(Path(__file__).parents[1] / "rubrics/hw2-cnn.yaml").locked[2] == ("train.epochs", 2)


def test_locks_that_cannot_be_written_are_said_so(tmp_path):
    assert problems_of(tmp_path, "locked:\n  train.epochs: 3\n  train.epochs.x: 1\n  model.layers.-1.ReLU: 1\n"
                                 "  model.layers.5000.Linear.out_features: 3\n  train..seed: 1\n  model.layers.x: 3\n"
                                 "points: {valid: 1}\n") == [
        (3, 19, "locked.train.epochs.x", "'train.epochs' is locked to a value, so nothing is locked inside it", ""),
        (4, 25, "locked.model.layers.-1.ReLU", "a locked key counts a list's items from 0", ""),
        (5, 42, "locked.model.layers.5000.Linear.out_features",
         "item 5000: no list of a spec holds more than 1,000 items", ""),
        (6, 16, "locked.train..seed", "a locked key is a dotted spec key, such as train.epochs, with no empty part", ""),
        (7, 19, "locked.model.layers.x", "'model.layers.x' does not name a spec setting: model.layers is a list", ""),
    ]


def test_validate_with_a_rubric_whose_locks_are_wrong_stops_there(tmp_path):
    (tmp_path / "r.yaml").write_text("locked:\n  train.epoch: 2\npoints: {valid: 1}\n")
    (tmp_path / "s.yaml").write_text("name: s\nmodel: {layers: [Flatten, {Linear: {out_features: 10}}]}\n")
    proc = subprocess.run(NETSPEC + ["validate", "--rubric", str(tmp_path / "r.yaml"), str(tmp_path / "s.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "✓" not in proc.stdout
    assert f"{tmp_path / 'r.yaml'}:2:16 locked.train.epoch: unknown key 'epoch'" in " ".join(
        (proc.stdout + proc.stderr).split())


def test_points_are_bounded_at_their_lines(tmp_path):
    assert [f[:4] for f in problems_of(
        tmp_path, "points:\n  valid: 1.0e+308\n  rules: {params: 20000}\n  accuracy:\n"
                  "    - {at_least: 0.9, points: 1.0e+308}\n    - {at_least: 1.5, points: 3}\n")] == [
        (2, 10, "points.valid", "1e+308 is greater than the maximum of 10000"),
        (3, 19, "points.rules.params", "20000 is greater than the maximum of 10000"),
        (5, 31, "points.accuracy[0].points", "1e+308 is greater than the maximum of 10000"),
        (6, 18, "points.accuracy[1].at_least", "1.5 is greater than the maximum of 1"),
    ]
    assert problems_of(tmp_path, "points: {accuracy: {from: 0.5, to: 0.9, points: 1.0e+308}}\n")[0][2:4] == (
        "points.accuracy.points", "1e+308 is greater than the maximum of 10000")
    (tmp_path / "most.yaml").write_text("points: {valid: 10000, rules: 10000, accuracy: {from: 0.5, to: 0.9, points: 10000}}\n")
    rubric = load_rubric(tmp_path / "most.yaml")
    assert rubric.accuracy_max() == 10000 and rubric.accuracy_points(0.95) == 10000


def test_linear_credit_inside_a_list_is_said_in_words(tmp_path):
    assert problems_of(tmp_path, "points:\n  accuracy:\n    - {at_least: 0.9, points: 5}\n"
                                 "    - {from: 0.9, to: 0.99, points: 40}\n") == [
        (4, 7, "points.accuracy[1]", "each accuracy step is {at_least, points}; for linear credit write "
                                     "accuracy: {from, to, points} without the list", "")]


def write_folder(root: Path, mode: str, size: tuple[int, int], per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")


def test_a_hidden_image_folder_is_read_at_its_images_shape(tmp_path):
    from netspec.data.datasets import load_test_set

    write_folder(tmp_path / "rgb", "RGB", (32, 32))
    images = load_test_set(tmp_path / "rgb")
    assert tuple(images.images.shape) == (6, 3, 32, 32) and images.labels.tolist() == [0, 0, 0, 1, 1, 1]
    first = np.asarray(Image.open(tmp_path / "rgb" / "cat" / "0.png")).transpose(2, 0, 1)
    assert (images.images[0].numpy() == first).all()  # every pixel as stored, no resize, no grey
    assert tuple(load_test_set(tmp_path / "rgb", (1, 16, 16)).images.shape) == (6, 1, 16, 16)  # stated wins
    write_folder(tmp_path / "gray", "L", (20, 24), per_class=2)  # width 20, height 24
    assert tuple(load_test_set(tmp_path / "gray").images.shape) == (4, 1, 24, 20)


def test_the_rubric_states_the_hidden_images_shape(tmp_path):
    write_folder(tmp_path / "hidden", "RGB", (32, 32), per_class=1)
    (tmp_path / "r.yaml").write_text("test: {path: hidden/, image_shape: [3, 32, 32]}\npoints: {valid: 1}\n")
    rubric = load_rubric(tmp_path / "r.yaml")
    assert rubric.test_image_shape == (3, 32, 32) and rubric.test_path == str((tmp_path / "hidden").resolve())
    (tmp_path / "r.yaml").write_text("test: {path: hidden/}\npoints: {valid: 1}\n")
    assert load_rubric(tmp_path / "r.yaml").test_image_shape is None  # the first image decides
    assert problems_of(tmp_path, "test: {path: hidden/, image_shape: [2, 32, 0]}\npoints: {valid: 1}\n") == [
        (1, 37, "test.image_shape[0]", "2 is not one of 1, 3", ""),
        (1, 44, "test.image_shape[2]", "0 is less than the minimum of 1", "")]
    assert problems_of(tmp_path, "test:\n  dataset: mnsit\n  image_shape: [3, 32, 32]\npoints: {valid: 1}\n") == [
        (2, 12, "test.dataset", f"'mnsit' is not one of {DATASETS.replace(', imagefolder, npz, none', '')}",
         "did you mean 'mnist'?")]
    assert problems_of(tmp_path, "test:\n  dataset: mnist\n  image_shape: [3, 32, 32]\npoints: {valid: 1}\n") == [
        (3, 16, "test.image_shape", "image_shape is the size a hidden image folder (test.path) is read at; a named "
                                    "set's images have their own", "remove image_shape, or give test.path")]
