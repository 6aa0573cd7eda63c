"""Every user error: one line naming the problem and the file, exit status 2, nothing written."""

import json
import os
import re
import shutil

import pytest
from click.testing import CliRunner
from conftest import TINY_DATA

from sparsebias.cli import main

FAST = ["--set", "image_size=32", "--set", "num_epochs=1"]


def run(tmp_path, *args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    assert not (tmp_path / "out").exists(), "nothing half-written, not even an empty folder"
    return lines[0]


def compress(tmp_path, recipe, *extra):
    return run(tmp_path, "compress", "--recipe", recipe, "--out", tmp_path / "out", *extra)


def recipe_file(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


PRUNE = """num_epochs: 2
modifiers:
  - !EpochRangeModifier
    start_epoch: 0.0
    end_epoch: eval(num_epochs)
  - !GMPruningModifier
    params: {params}
    init_sparsity: {init}
    final_sparsity: {final}
    start_epoch: 0
    end_epoch: 1
    update_frequency: 1
    mask_type: {mask}
"""


def test_missing_recipe(tmp_path):
    assert "recipe not found" in compress(tmp_path, tmp_path / "missing.yaml")


@pytest.mark.parametrize("what, command", [
    ("recipe", lambda path, out: ["compress", "--recipe", path, "--out", out]),
    ("policy", lambda path, out: ["gate", out.parent / "bundle", "--policy", path]),
    ("model", lambda path, out: ["bench", path, "--out", out]),
    ("checkpoint", lambda path, out: ["compress", "--recipe", "recipes/resnet18_pt_90.yaml", "--from", path,
                                      "--out", out]),
    ("key file", lambda path, out: ["info", out.parent / "bundle", "--trusted-key", path]),
])
def test_a_pipe_where_a_file_belongs_is_refused_not_read(repo, tmp_path, monkeypatch, dense_bundle, what, command):
    """Reading a pipe would wait for a writer for ever."""
    monkeypatch.chdir(repo)
    (tmp_path / "bundle").symlink_to(dense_bundle.path)
    pipe = tmp_path / "input.yaml"
    os.mkfifo(pipe)
    line = run(tmp_path, *command(pipe, tmp_path / "out"))
    assert line == f"error: {what} {pipe} is not a regular file (a pipe, device or socket)"


def test_check_file_says_what_stands_where_a_file_belongs(tmp_path):
    from sparsebias.core.errors import SparsebiasError, check_file

    (tmp_path / "r.yaml").write_text("x: 1")
    assert check_file(str(tmp_path / "r.yaml"), "recipe") == tmp_path / "r.yaml"
    with pytest.raises(SparsebiasError, match=f"^recipe {re.escape(str(tmp_path))} is a folder, not a file$"):
        check_file(tmp_path, "recipe")
    with pytest.raises(SparsebiasError, match="^recipe not found: .*nope.yaml$"):
        check_file(tmp_path / "nope.yaml", "recipe")


def test_yaml_error_names_the_line(tmp_path):
    line = compress(tmp_path, recipe_file(tmp_path, "num_epochs: 2\nmodifiers:\n  - !EpochRangeModifier\n    end_epoch: {2\n"))
    assert "r.yaml:5: YAML error" in line or "r.yaml:4: YAML error" in line


def test_unknown_modifier(tmp_path):
    line = compress(tmp_path, recipe_file(tmp_path, "modifiers:\n  - !EpochRangeModifier\n    end_epoch: 2\n  - !Prunotron\n    x: 1\n"))
    assert "r.yaml:4: unknown modifier !Prunotron" in line


def test_pattern_matching_no_layer(tmp_path):
    path = recipe_file(tmp_path, PRUNE.format(params='["re:layer7.*"]', init=0.1, final=0.5, mask="unstructured"))
    line = compress(tmp_path, path, "--data", TINY_DATA, *FAST)
    assert "params 're:layer7.*' matches no parameter of resnet18; nearest: layer1.0.conv1.weight" in line


def test_nm_target_not_matching_ratio(tmp_path):
    path = recipe_file(tmp_path, PRUNE.format(params='["re:layer.*conv.*weight"]', init=0.75, final=0.75, mask='"1:8"'))
    assert "mask_type 1:8 needs sparsity 0.875 (1 - N/M), got 0.75" in compress(tmp_path, path)


def test_unknown_architecture(tmp_path, repo):
    line = compress(tmp_path, repo / "recipes/resnet18_dense.yaml", "--set", "arch=resnet19", "--data", TINY_DATA)
    assert "unknown architecture 'resnet19'" in line


def test_missing_data_folder(tmp_path, repo):
    line = compress(tmp_path, repo / "recipes/resnet18_dense.yaml", "--data", f"celeba:{tmp_path / 'nowhere'}")
    assert "data folder not found" in line and "nowhere" in line


def test_attribute_file_with_wrong_columns(tmp_path, repo):
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    (root / "list_attr_celeba.txt").write_text("2\nSmiling Male\n000001.jpg 1 -1\n000002.jpg 1\n")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    line = compress(tmp_path, repo / "recipes/resnet18_dense.yaml", "--data", f"celeba:{root}")
    assert "list_attr_celeba.txt:4: expected an image id and 2 values, got 2 fields" in line


def test_unknown_attribute_name(tmp_path, repo):
    line = compress(tmp_path, repo / "recipes/resnet18_dense.yaml", "--data", TINY_DATA, "--attributes", "Smiling,Bearded")
    assert "unknown attribute 'Bearded'" in line and "list_attr_celeba.txt" in line


def test_unknown_data_set_kind(tmp_path, repo):
    assert "unknown data set 'imagenet'" in compress(tmp_path, repo / "recipes/resnet18_dense.yaml", "--data", "imagenet:/x")


def test_bad_set_syntax(tmp_path, repo):
    assert "--set expects KEY=VALUE" in compress(tmp_path, repo / "recipes/resnet18_dense.yaml", "--set", "num_epochs")


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**64)])
def test_seeds_no_generator_takes(tmp_path, repo, seed):
    line = compress(tmp_path, repo / "recipes/resnet18_dense.yaml", "--seed", seed)
    assert line == f"error: seed must be an integer from 0 to 2**32 - 1, got {seed}"


def test_resume_without_an_interrupted_run(tmp_path, repo):
    line = compress(tmp_path, repo / "recipes/resnet18_dense.yaml", "--data", TINY_DATA, *FAST, "--resume")
    assert "nothing to resume" in line


def test_corrupt_checkpoint_for_gmp_pt(tmp_path, repo):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"\x80\x04not really a checkpoint")
    line = compress(tmp_path, repo / "recipes/resnet18_dense.yaml", "--data", TINY_DATA, *FAST, "--from", bad)
    assert "cannot load checkpoint" in line and "weights.pt" in line


def test_pickled_code_is_never_run(tmp_path, repo):
    """A checkpoint that would run code when unpickled is refused by the restricted loader."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Evil()}))
    line = compress(tmp_path, repo / "recipes/resnet18_dense.yaml", "--data", TINY_DATA, *FAST, "--from", evil)
    assert "cannot load checkpoint" in line
    assert (tmp_path / "victim").exists()


def test_bundle_errors(tmp_path, dense_bundle):
    assert "bundle not found" in run(tmp_path, "info", tmp_path / "nothing")
    copy = tmp_path / "b"
    shutil.copytree(dense_bundle.path, copy)
    (copy / "splits/test.npz").unlink()
    assert "splits/test.npz: missing from the bundle" in run(tmp_path, "info", copy)
    (copy / "manifest.json").write_text("{not json")
    assert "manifest.json: unreadable manifest" in run(tmp_path, "info", copy)
    manifest = json.loads((dense_bundle.path / "manifest.json").read_text())
    manifest["files"]["../../etc/passwd"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert "points outside the bundle" in run(tmp_path, "info", copy)


def test_a_folder_that_is_not_a_bundle_is_never_replaced(tmp_path, repo):
    precious = tmp_path / "out" / "resnet18_dense"
    precious.mkdir(parents=True)
    (precious / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["compress", "--recipe", str(repo / "recipes/resnet18_dense.yaml"),
                                       "--data", TINY_DATA, *FAST, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "exists and is not a bundle" in result.output
    assert (precious / "notes.txt").read_text() == "mine"
