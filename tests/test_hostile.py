"""The hostile corpus: inputs built to leak, repeat or explode (symlink loops, label and zip bombs,
a cut-off study journal, a FIFO, 16-bit and RGBA images...). Each must give a right result or one
clear line, never a silently wrong number, an unbounded cost or a traceback."""
from __future__ import annotations

import json
import os
import threading
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import run
from netspec.builder.check import check_file
from netspec.cli import app
from netspec.data.datasets import load_source
from netspec.errors import DataError, SpecError
from test_datasets import blobs, mlp_spec, write_folder

cli = CliRunner()


def _messages(path) -> list[str]:
    with pytest.raises(SpecError) as e:
        check_file(path)
    return [f"{p.path}: {p.message}" for p in e.value.problems]


# --- image folders: one listing, each file once, links to folders never followed ----------------

def test_a_link_to_its_own_folder_lists_each_image_once(tmp_path):
    folder = write_folder(tmp_path / "pets", n=30)
    os.symlink(".", folder / "cat" / "loop")  # cat/loop/loop/loop/... for ever, through a link
    os.symlink("..", folder / "dog" / "up")  # dog/up/cat/... : the other classes' images again
    checked = mlp_spec(tmp_path, "{dataset: imagefolder, path: pets, input_shape: [3, 8, 8]}", 3, 192)
    source = load_source(checked.spec.data)
    assert len(source.train) + len(source.test) == 30  # not 30 + 40 copies
    files = [p for p, _ in source.train.samples + source.test.samples]
    assert len(set(files)) == 30 and not any("loop" in f or "/up/" in f for f in files)


def test_two_self_links_in_one_class_do_not_walk_for_ever(tmp_path):
    folder = write_folder(tmp_path / "pets", n=30)
    os.symlink(".", folder / "cat" / "a")
    os.symlink(".", folder / "cat" / "b")  # followed, 2^depth paths
    checked = mlp_spec(tmp_path, "{dataset: imagefolder, path: pets, input_shape: [3, 8, 8]}", 3, 192)
    done = []
    worker = threading.Thread(target=lambda: done.append(len(load_source(checked.spec.data).train)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert done and done[0] == 24  # 30 images, 6 held out as the test split


def test_a_file_linked_into_another_class_or_split_is_refused(tmp_path):
    folder = write_folder(tmp_path / "pets", n=40, split=True)
    test_image = next((folder / "test" / "dog").iterdir())
    os.symlink(test_image, folder / "train" / "dog" / "leak.png")  # a test image also in training
    checked = mlp_spec(tmp_path, "{dataset: imagefolder, path: pets, input_shape: [3, 8, 8]}", 3, 192)
    with pytest.raises(DataError, match=r"same image file is in .*test/dog.* and in train/dog|same image file is in "
                                        r"train/dog .* and in test/dog"):
        load_source(checked.spec.data)
    os.remove(folder / "train" / "dog" / "leak.png")
    os.link(next((folder / "train" / "cat").iterdir()), folder / "train" / "dog" / "twin.png")  # a hard link
    with pytest.raises(DataError, match=r"train/cat .* and in train/dog"):
        load_source(checked.spec.data)


def test_a_link_to_a_file_in_the_same_class_counts_once(tmp_path):
    folder = write_folder(tmp_path / "pets", n=30)
    first = sorted((folder / "cat").iterdir())[0]
    os.symlink(first.name, folder / "cat" / "again.png")
    checked = mlp_spec(tmp_path, "{dataset: imagefolder, path: pets, input_shape: [3, 8, 8]}", 3, 192)
    source = load_source(checked.spec.data)
    assert len(source.train) + len(source.test) == 30


def test_a_fifo_named_like_an_image_is_not_read(tmp_path):
    folder = write_folder(tmp_path / "pets", n=30)
    os.mkfifo(folder / "cat" / "f.png")  # opening it would block for ever
    checked = mlp_spec(tmp_path, "{dataset: imagefolder, path: pets, input_shape: [3, 8, 8]}", 3, 192)
    source = load_source(checked.spec.data)
    assert len(source.train) + len(source.test) == 30


def test_an_empty_test_split_is_an_error_before_training(tmp_path):
    folder = write_folder(tmp_path / "pets", n=40, split=True)
    for f in (folder / "test").rglob("*.png"):
        f.unlink()
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ndata: {dataset: imagefolder, path: pets, input_shape: [3, 8, 8]}\n"
                    "model:\n  layers: [Flatten, {Linear: {out_features: 3}}]\n")
    [msg] = _messages(spec)
    assert msg.startswith("data.path:") and "a test split of 0 images" in msg
    small = write_folder(tmp_path / "few", n=4, classes=("a", "b"))
    spec.write_text("name: s\ndata: {dataset: imagefolder, path: few, input_shape: [3, 8, 8], validation: 1}\n"
                    "model:\n  layers: [Flatten, {Linear: {out_features: 2}}]\n")
    with pytest.raises(DataError, match="a test split of 0 images"):
        run(check_file(spec), out=tmp_path / "r")
    assert small.is_dir()
