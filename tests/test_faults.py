"""Faults: a run killed mid-epoch resumes to the same bundle; locks; full disks; hostile images."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import TINY_DATA, TINY_SETTINGS, cli, refused, tiny_compress
from onnx import numpy_helper
from PIL import Image

from sparsebias.bundle import bundle_lock, load_bundle
from sparsebias.quantization.graph import read_qdq
from sparsebias.training.checkpoint import load_checkpoint

GMP = ["pruning_start_epoch=0", "pruning_end_epoch=2"]


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".staging" in p.name or ".tmp-" in p.name) \
        if folder.exists() else []


def onnx_weights(bundle) -> dict[str, np.ndarray]:
    model = onnx.load(str(bundle.file("model.onnx")))
    return {w.name: numpy_helper.to_array(w) for w in model.graph.initializer}


QAT = "recipes/resnet18_layerwise_95_qat.yaml"
QAT_SETTINGS = ["pruning_end_epoch=0.5", "quantization_start_epoch=0.5"]   # the first checkpoint holds QAT state


@pytest.fixture(scope="module")
def uninterrupted(repo, tmp_path_factory):
    return tiny_compress(repo / "recipes/resnet18_90.yaml", tmp_path_factory.mktemp("full"), epochs=3, extra=GMP)


@pytest.fixture(scope="module")
def uninterrupted_qat(repo, tmp_path_factory):
    return tiny_compress(repo / QAT, tmp_path_factory.mktemp("qat"), epochs=3, extra=QAT_SETTINGS)


def kill_and_resume(recipe: Path, settings: list[str], signum, out: Path):
    """Start compress, kill it with `signum` in its second epoch, check that it stopped cleanly, and
    run it again with --resume."""
    args = ["--recipe", str(recipe), "--data", TINY_DATA, "--out", str(out), "--name", "tiny",
            *[x for s in [*TINY_SETTINGS, "num_epochs=3", *settings] for x in ("--set", s)]]
    # a shell's background job ignores SIGINT, and Python then never turns it into KeyboardInterrupt
    process = subprocess.Popen([sys.executable, "-m", "sparsebias", "compress", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    checkpoint = out / ".work/tiny/last.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    time.sleep(0.3)  # into the second epoch
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not (out / "tiny").exists() and hidden_leftovers(out) == []
    kept_epochs = load_checkpoint(checkpoint)
    resumed = cli("compress", *args, "--resume")
    assert resumed.exit_code == 0 and "Resuming from" in resumed.output, resumed.output
    bundle = load_bundle(out / "tiny")
    # the run's time counts the first process's, up to the epoch the second one resumed from
    later_epochs = bundle.manifest["training"]["history"][kept_epochs["epoch"]:]
    assert kept_epochs["seconds"] > 0
    assert bundle.manifest["training"]["seconds"] >= (
        kept_epochs["seconds"] + sum(e["train_seconds"] for e in later_epochs) - 0.1)   # each rounded
    return bundle


def assert_same_run(bundle, uninterrupted):
    timing = {"train_seconds", "train_images_per_s"}
    untimed = [[{k: v for k, v in e.items() if k not in timing} for e in b.manifest["training"]["history"]]
               for b in (bundle, uninterrupted)]
    assert untimed[0] == untimed[1]
    ours, theirs = onnx_weights(bundle), onnx_weights(uninterrupted)
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name] == 0, theirs[name] == 0, err_msg=f"mask of {name}")
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-6, err_msg=name)
    for split in ("val", "test"):
        np.testing.assert_allclose(bundle.split(split)["logits"], uninterrupted.split(split)["logits"], atol=1e-5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_run_killed_mid_epoch_resumes_to_the_same_bundle(signum, uninterrupted, repo, tmp_path):
    bundle = kill_and_resume(repo / "recipes/resnet18_90.yaml", GMP, signum, tmp_path / "out")
    assert_same_run(bundle, uninterrupted)


def test_a_run_killed_during_quantization_aware_training_resumes_to_the_same_bundle(uninterrupted_qat, repo,
                                                                                      tmp_path):
    bundle = kill_and_resume(repo / QAT, QAT_SETTINGS, signal.SIGTERM, tmp_path / "out")
    assert_same_run(bundle, uninterrupted_qat)
    ours, theirs = (read_qdq(onnx.load(str(b.file("model.qdq.onnx"))))[1] for b in (bundle, uninterrupted_qat))
    assert ours.keys() == theirs.keys() and len(ours) > 20   # the trained activation ranges
    for name, p in ours.items():
        assert p.zero_point == theirs[name].zero_point and p.scale == pytest.approx(theirs[name].scale, rel=1e-5)


def test_a_run_started_before_a_run_setting_existed_resumes_with_its_value(tmp_path):
    import json

    from sparsebias.core import SparsebiasError
    from sparsebias.training.pipeline import _prepare_work_dir

    run = {"recipe": "...", "settings": {"precision": "auto", "small_maps": "product", "final_sparsity": 0.9},
           "seed": 0}
    (tmp_path / "run.json").write_text(json.dumps({**run, "settings": {"precision": "auto", "final_sparsity": 0.9}}))
    said = []
    _prepare_work_dir(tmp_path, run, True, said.append)
    assert said == ["Resuming a run started before the setting(s) small_maps existed; from here on small_maps=product"]
    for started in ({"precision": "fp32", "final_sparsity": 0.9}, {"precision": "auto", "small_maps": "product"}):
        (tmp_path / "run.json").write_text(json.dumps({**run, "settings": started}))   # a changed one; a recipe's
        with pytest.raises(SparsebiasError, match="cannot resume: .*run.json was started with a different"):
            _prepare_work_dir(tmp_path, run, True, said.append)


def test_a_bundle_name_being_written_is_refused_to_a_second_writer(dense_bundle, repo, tmp_path):
    with bundle_lock(tmp_path / "tiny"):   # as a compress of that name holds it
        refused(cli("compress", "--recipe", repo / "recipes/resnet18_dense.yaml", "--data", TINY_DATA,
                           "--out", tmp_path, "--name", "tiny", "--set", "image_size=32"),
                       "is being written by another process")
    assert not (tmp_path / "tiny").exists() and not (tmp_path / ".work").exists()
    assert not (tmp_path / ".tiny.lock").exists(), "a lock file goes with its lock"
    with bundle_lock(dense_bundle.path):
        refused(cli("calibrate", dense_bundle.path), "is being written by another process")
    assert "thresholds.json" not in dense_bundle.manifest["files"]


def test_a_full_disk_while_writing_the_bundle_leaves_nothing(repo, tmp_path, monkeypatch):
    original = np.savez_compressed

    def full_on_the_third_split(path, **arrays):
        if Path(path).name == "test.npz":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, **arrays)

    monkeypatch.setattr(np, "savez_compressed", full_on_the_third_split)
    out = tmp_path / "out"
    result = cli("compress", "--recipe", repo / "recipes/resnet18_dense.yaml", "--data", TINY_DATA, "--out", out,
                 "--name", "tiny", "--set", "image_size=32", "--set", "num_epochs=1")
    refused(result, f"cannot write the bundle {out / 'tiny'} (test.npz): No space left on device")
    assert not (out / "tiny").exists() and hidden_leftovers(out) == []


def test_a_full_disk_while_writing_a_report_leaves_none_of_it(dense_bundle, tmp_path, monkeypatch):
    from sparsebias.core import files

    written = []
    original = Path.write_bytes

    def full_after_two_files(self, data):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        written.append(self)
        return original(self, data)

    monkeypatch.setattr(files.Path, "write_bytes", full_after_two_files)
    result = cli("audit", dense_bundle.path, "--reference", dense_bundle.path, "--out", tmp_path / "audit")
    refused(result, "No space left on device")
    assert not (tmp_path / "audit").exists() and hidden_leftovers(tmp_path) == []


def test_an_output_folder_that_cannot_be_made_fails_in_one_line(dense_bundle, tmp_path):
    (tmp_path / "a_file").write_text("in the way")
    refused(cli("audit", dense_bundle.path, "--reference", dense_bundle.path,
                       "--out", tmp_path / "a_file/audit"), "a_file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_fails_before_training(repo, tmp_path):
    out = tmp_path / "read-only"
    out.mkdir(mode=0o555)
    refused(cli("compress", "--recipe", repo / "recipes/resnet18_dense.yaml", "--data", TINY_DATA,
                       "--out", out, "--set", "image_size=32"), "Permission denied")


def test_predict_names_hostile_images_and_goes_on(dense_bundle, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 50), (200, 150, 120)).save(folder / "good.jpg")
    Image.new("1", (12_000, 12_000)).save(folder / "bomb.png")  # 144 M pixels in a few kB
    whole = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[:len(whole) // 2])
    (folder / "text.jpg").write_text("this is not an image")
    (folder / "empty.png").write_bytes(b"")
    assert (folder / "bomb.png").stat().st_size < 200_000
    result = cli("predict", dense_bundle.path, folder, "--engine", "onnxruntime", "--out", tmp_path / "pred.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "5 image(s) could not be read" not in result.output
    for name in ("bomb.png", "truncated.jpg", "text.jpg", "empty.png"):
        assert f"skipped {folder / name}" in result.output, result.output
    assert "decompression bomb" in result.output
    rows = (tmp_path / "pred.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(str(folder / "good.jpg"))
