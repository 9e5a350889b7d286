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


# --- image files as they mean their pixels -------------------------------------------------------

def _digit(seed: int = 0) -> np.ndarray:
    images, _ = blobs(1, 4, (1, 20, 20), seed=seed)
    return images[0, 0].numpy()  # uint8 (20, 20): noise and a bright square


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG that declares width x height and holds almost nothing (what a decompression bomb looks like)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_deep_and_transparent_images_are_read_as_they_look(tmp_path):
    from netspec.data.datasets import read_image

    gray = _digit()
    Image.fromarray(gray, "L").save(tmp_path / "plain.png")
    plain = read_image(str(tmp_path / "plain.png"), "L", (20, 20))[0].numpy().astype(int)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit: I;16
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    Image.fromarray(gray.astype(np.float32) / 255).save(tmp_path / "float.tif")  # mode F, 0..1
    ink = np.zeros((20, 20, 4), np.uint8)
    ink[..., 3] = gray  # black ink, the digit in the alpha channel (as drawing programs save it)
    Image.fromarray(ink, "RGBA").save(tmp_path / "alpha.png")
    for name in ("deep.png", "float.tif", "alpha.png"):
        read = read_image(str(tmp_path / name), "L", (20, 20))[0].numpy().astype(int)
        assert np.abs(read - plain).max() <= 1, name
    rgb = read_image(str(tmp_path / "alpha.png"), "RGB", (20, 20)).numpy().astype(int)
    assert np.abs(rgb - plain[None]).max() <= 1
    # a coloured picture with transparency is laid over a background that keeps it visible
    pic = np.zeros((20, 20, 4), np.uint8)
    red = np.broadcast_to(200 + 2 * np.arange(20, dtype=np.uint8), (20, 20))
    pic[..., 0], pic[..., 1], pic[..., 3] = red, gray, np.where(gray > 100, 255, 0)
    Image.fromarray(pic, "RGBA").save(tmp_path / "pic.png")
    out = read_image(str(tmp_path / "pic.png"), "RGB", (20, 20)).numpy()
    assert (out[:, gray <= 100] == 0).all() and (out[0, gray > 100] == red[gray > 100]).all()


def test_unreadable_pixels_and_huge_images_are_one_line(tmp_path):
    from netspec.data.datasets import read_image

    bad = np.full((4, 4), np.nan, np.float32)
    Image.fromarray(bad).save(tmp_path / "nan.tif")
    with pytest.raises(DataError, match="16 NaN or infinite pixels"):
        read_image(str(tmp_path / "nan.tif"), "L", (4, 4))
    Image.fromarray(np.full((4, 4), -3.0, np.float32)).save(tmp_path / "neg.tif")
    with pytest.raises(DataError, match=r"float pixels in -3..-3"):
        read_image(str(tmp_path / "neg.tif"), "L", (4, 4))
    _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(DataError, match=r"bomb.png is larger than netspec decodes"):
        read_image(str(tmp_path / "bomb.png"), "L", (28, 28))


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory, fake_data):
    folder = tmp_path_factory.mktemp("digit-run")
    spec = folder / "s.yaml"
    spec.write_text("name: s\ndata: {validation: 100}\nmodel:\n  layers: [Flatten, {Linear: {out_features: 10}}]\n"
                    "train: {epochs: 1, batch_size: 64}\n")
    run(check_file(spec), out=folder / "r", data_dir=fake_data, limit=200)
    return folder / "r"


def test_predict_skips_fifos_reads_16_bit_and_shows_names_as_given(tmp_path, digit_run):
    images = tmp_path / "[red]in"
    images.mkdir()
    Image.fromarray(_digit(), "L").resize((28, 28)).save(images / "[red]hidden.png")
    Image.fromarray(np.asarray(Image.open(images / "[red]hidden.png")).astype(np.uint16) * 257).save(images / "deep.png")
    os.mkfifo(images / "f.png")
    result = cli.invoke(app, ["predict", str(digit_run), str(images), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [os.path.basename(r["file"]) for r in rows] == ["[red]hidden.png", "deep.png"]
    assert rows[0]["class"] == rows[1]["class"] and abs(rows[0]["probability"] - rows[1]["probability"]) < 0.02
    shown = cli.invoke(app, ["predict", str(digit_run), str(images / "[red]hidden.png")], terminal_width=200)
    assert shown.exit_code == 0 and "[red]hidden.png" in shown.stdout
    fifo = cli.invoke(app, ["predict", str(digit_run), str(images / "f.png")])
    assert fifo.exit_code == 1 and "is not a regular file" in fifo.output
    _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    bomb = cli.invoke(app, ["predict", str(digit_run), str(tmp_path / "bomb.png")])
    assert bomb.exit_code == 1 and "is larger than netspec decodes" in bomb.output and "Traceback" not in bomb.output
