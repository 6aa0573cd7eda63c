"""`predict` on image files of any size, with a broken one among them."""

import csv
import io
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import needs_deepsparse
from PIL import Image

from sparsebias.cli import main
from sparsebias.data.images import load_image
from sparsebias.data.loader import normalize


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (w, h) in {"a.jpg": (50, 70), "b.png": (32, 32), "nested/c.jpg": (100, 40)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


def expected_probabilities(bundle, path):
    """Independently: manifest preprocessing, then onnxruntime directly."""
    spec = bundle.manifest["input"]
    x = normalize(torch.from_numpy(load_image(path, spec["shape"][-1])[None]), spec["mean"], spec["std"]).numpy()
    logits = ort.InferenceSession(str(bundle.file("model.onnx"))).run(None, {"input": x})[0][0]
    return 1 / (1 + np.exp(-logits))


@pytest.mark.parametrize("engine", [pytest.param("deepsparse", marks=needs_deepsparse), "onnxruntime"])
def test_predict_a_folder_with_a_broken_image(dense_bundle, photos, tmp_path, engine):
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(main, ["predict", str(dense_bundle.path), str(photos), "--engine", engine,
                                       "--batch-size", "2", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "broken.jpg" in result.output and "1 image(s) could not be read" in result.output
    assert "Traceback" not in result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["path"].split("photos/")[1] for r in rows] == ["a.jpg", "b.png", "nested/c.jpg"]
    attributes = dense_bundle.attributes
    for row in rows:
        p = np.array([float(row[f"p_{a}"]) for a in attributes])
        np.testing.assert_allclose(p, expected_probabilities(dense_bundle, row["path"]), atol=1e-5)
        assert [int(row[a]) for a in attributes] == [int(v > 0.5) for v in p]
        assert len(row["sha256"]) == 64


def test_predict_to_stdout(dense_bundle, photos):
    result = CliRunner().invoke(main, ["predict", str(dense_bundle.path), str(photos / "a.jpg"),
                                       "--engine", "onnxruntime"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("path,sha256,p_5_o_Clock_Shadow")
    assert len(result.output.splitlines()) == 2


def test_missing_path_exits_2(dense_bundle, tmp_path):
    result = CliRunner().invoke(main, ["predict", str(dense_bundle.path), str(tmp_path / "nope"),
                                       "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2 and "no such file or folder" in result.output
    assert not (tmp_path / "p.csv").exists()


def test_a_pipe_named_as_an_image_is_refused_not_read(dense_bundle, tmp_path):
    pipe = tmp_path / "a.jpg"
    os.mkfifo(pipe)   # reading it would wait for a writer forever
    result = CliRunner().invoke(main, ["predict", str(dense_bundle.path), str(pipe), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2 and f"image {pipe} is not a regular file (a pipe, device or socket)" in result.output
    assert not (tmp_path / "p.csv").exists()
