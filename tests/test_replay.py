"""The gate and the audit judge what a bundle's model computes, not the logits it claims."""

import hashlib
import json
import shutil

import numpy as np
import pytest
from conftest import cli, refused

from sparsebias.auditing import replay_bundle
from sparsebias.bundle import load_bundle

PASSING = "mitigations: false\nrules:\n  - {metric: accuracy, aggregate: mean, max_decrease: 1}\n"


def rehash(folder):
    """What an attacker does after editing a bundle: rewrite every sha256 in its manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def set_split(folder, split, **arrays):
    with np.load(folder / f"splits/{split}.npz") as z:
        data = {k: z[k] for k in z.files}
    np.savez_compressed(folder / f"splits/{split}.npz", **{**data, **arrays})


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text(PASSING)
    return path


@pytest.fixture
def copy(sparse_bundle, tmp_path):
    folder = tmp_path / "shipped"
    shutil.copytree(sparse_bundle.path, folder)
    return folder


def gate(bundle, reference, policy, *extra):
    return cli("gate", bundle, "--policy", policy, "--reference", reference.path, *extra)


def test_an_honest_bundle_replays_to_its_stored_logits(sparse_bundle):
    replayed = replay_bundle(sparse_bundle, echo=lambda *a: None)
    for split in ("val", "test"):
        stored = sparse_bundle.split(split)
        np.testing.assert_allclose(replayed.split(split)["logits"], stored["logits"], atol=1e-3)
        np.testing.assert_array_equal(replayed.split(split)["labels"], stored["labels"])
        assert replayed.replay["max_abs_diff"][split] < 1e-3
    assert replayed.replay["samples"] == {"val": 48, "test": 400}
    np.testing.assert_array_equal(replayed.split("train")["ids"], sparse_bundle.split("train")["ids"])


def test_the_gate_says_it_re_ran_both_models(sparse_bundle, dense_bundle, policy):
    result = gate(sparse_bundle.path, dense_bundle, policy)
    assert result.exit_code == 0, result.output
    assert ("Logits, compressed: resnet18_90: re-run with onnxruntime on 400 test images; the stored logits agree"
            in result.output and "its val logits are as stored, not re-run" in result.output)
    assert "Logits, reference: dense: re-run" in result.output
    assert "on what their models compute on the data" in result.output


def test_logits_swapped_for_the_references_with_hashes_rewritten_are_refused(copy, dense_bundle, policy):
    for split in ("val", "test"):
        set_split(copy, split, logits=dense_bundle.split(split)["logits"])
    rehash(copy)
    assert load_bundle(copy)  # the hashes check out: only re-running the model finds it
    refused(gate(copy, dense_bundle, policy), "the stored test logits are not what model.onnx computes: largest "
                                              "difference")
    stored = gate(copy, dense_bundle, policy, "--stored-logits")
    assert stored.exit_code == 0 and "not re-run" in stored.output, stored.output


def test_a_small_edit_of_one_test_logit_is_found(copy, dense_bundle, policy):
    logits = load_bundle(copy).split("test")["logits"].copy()
    logits[7, 3] += 0.01
    set_split(copy, "test", logits=logits)
    rehash(copy)
    ids = load_bundle(copy).split("test")["ids"]
    refused(gate(copy, dense_bundle, policy), f"test logits are not what model.onnx computes: largest difference "
                                              f"0.01 (sample {ids[7]}, output 3")


def test_a_model_swapped_for_another_is_refused(copy, dense_bundle, policy):
    shutil.copy(dense_bundle.file("model.onnx"), copy / "model.onnx")
    rehash(copy)
    refused(gate(copy, dense_bundle, policy), "model.onnx has 0.00% zero weights, the manifest says 89.")


def test_a_model_swapped_with_its_sparsity_claims_rewritten_is_refused_by_its_logits(copy, dense_bundle, policy):
    shutil.copy(dense_bundle.file("model.onnx"), copy / "model.onnx")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["flops"] = dense_bundle.manifest["flops"]
    manifest["sparsity"] = dense_bundle.manifest["sparsity"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    rehash(copy)
    refused(gate(copy, dense_bundle, policy), "logits are not what model.onnx computes")


def edit_sparsity(folder, edit):
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest["sparsity"])
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_an_edited_sparsity_claim_is_refused(copy, dense_bundle, policy):
    edit_sparsity(copy, lambda s: s.update(overall=0.5))
    for result in (gate(copy, dense_bundle, policy), cli("info", copy)):
        refused(result, "shipped: model.onnx has 89.")
        refused(result, "zero weights, the manifest says 50.00%")


def test_an_edited_layer_sparsity_is_refused(copy, dense_bundle, policy):
    def first_layer_as_sparse_as_a_last(sparsity):   # the overall figure stays as it was
        layers = sparsity["per_layer"]
        layers[next(iter(layers))] = layers[next(k for k in layers if k.startswith("layer4"))]
    edit_sparsity(copy, first_layer_as_sparse_as_a_last)
    refused(gate(copy, dense_bundle, policy), "the manifest's sparsity per layer is not model.onnx's")


@pytest.mark.parametrize("split", ["train", "test"])
def test_edited_labels_are_refused(copy, dense_bundle, policy, split):
    labels = load_bundle(copy).split(split)["labels"].copy()
    labels[0] = 1 - labels[0]
    set_split(copy, split, labels=labels)
    rehash(copy)
    refused(gate(copy, dense_bundle, policy), f"the {split} split's labels are not those of the data set at")


def test_a_reference_tampered_with_is_refused_too(sparse_bundle, dense_bundle, policy, tmp_path):
    reference = tmp_path / "dense"
    shutil.copytree(dense_bundle.path, reference)
    set_split(reference, "val", logits=sparse_bundle.split("val")["logits"])
    rehash(reference)
    refused(cli("audit", sparse_bundle.path, "--reference", reference, "--out", tmp_path / "audit"),
            f"{reference}: the stored val logits are not what model.onnx computes")
    assert not (tmp_path / "audit").exists()


def test_data_that_is_not_at_hand_is_named_with_the_way_out(copy, dense_bundle, policy, tmp_path):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["data"]["spec"] = f"celeba:{tmp_path / 'elsewhere'}"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    rehash(copy)
    refused(gate(copy, dense_bundle, policy), "cannot open the data set to re-run its model on")
    assert "--stored-logits" in gate(copy, dense_bundle, policy).output
    assert gate(copy, dense_bundle, policy, "--stored-logits").exit_code == 0


def test_data_given_on_the_command_line_is_checked_against_the_bundle(copy, dense_bundle, policy):
    refused(gate(copy, dense_bundle, policy, "--data", "synthfaces:train=96,val=48,test=400,size=32,seed=1"),
            "the train split's labels are not those of the data set at")


def test_the_audit_report_records_where_the_logits_came_from(sparse_bundle, dense_bundle, tmp_path):
    result = cli("audit", sparse_bundle.path, "--reference", dense_bundle.path, "--out", tmp_path / "audit")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "audit/report.json").read_text())
    assert report["models"]["compressed"]["logits"]["source"] == "re-run"
    assert report["models"]["compressed"]["logits"]["engine"]["engine"] == "onnxruntime"
    assert "Logits, reference: dense: re-run with onnxruntime" in (tmp_path / "audit/report.md").read_text()
    stored = cli("audit", sparse_bundle.path, "--reference", dense_bundle.path, "--out", tmp_path / "stored",
                 "--stored-logits")
    assert stored.exit_code == 0, stored.output
    again = json.loads((tmp_path / "stored/report.json").read_text())
    assert again["models"]["compressed"]["logits"]["source"] == "stored"
    mean_acc = [np.mean(list(r["metrics"]["compressed"]["views"]["default"]["accuracy"].values()))
                for r in (report, again)]
    assert mean_acc[0] == pytest.approx(mean_acc[1], abs=1e-3)


def test_group_bundles_are_re_run_too(group_bundles, tmp_path):
    dense, fair = group_bundles
    result = cli("audit", fair.path, "--reference", dense.path, "--out", tmp_path / "groups")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "groups/report.json").read_text())
    assert report["models"]["compressed"]["logits"]["source"] == "re-run"
    assert report["models"]["compressed"]["logits"]["max_abs_diff"]["test"] < 1e-3


def test_a_bundle_that_brings_its_own_labels_is_refused(copy, dense_bundle, policy, tmp_path):
    """Data of the shipper's own, labelled to suit the model: consistent with itself, not with the reference."""
    from conftest import TINY_DATA

    from sparsebias.data import open_data

    source = open_data(TINY_DATA, echo=lambda *a, **k: None).root
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "img_align_celeba").symlink_to(source / "img_align_celeba")
    (forged / "list_eval_partition.txt").write_text((source / "list_eval_partition.txt").read_text())
    lines = (source / "list_attr_celeba.txt").read_text().splitlines()
    test_ids = set(load_bundle(copy).split("test")["ids"].tolist())
    for i, line in enumerate(lines[2:], 2):
        name, *values = line.split()
        if name in test_ids:   # the first attribute made to say what the model says, here: always 1
            lines[i] = " ".join([name, "1", *values[1:]])
    (forged / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    labels = load_bundle(copy).split("test")["labels"].copy()
    labels[:, 0] = 1
    set_split(copy, "test", labels=labels)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["data"]["spec"] = f"celeba:{forged}"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    rehash(copy)
    assert replay_bundle(load_bundle(copy), splits=("test",), echo=lambda *a: None)  # consistent with its own data
    refused(gate(copy, dense_bundle, policy), "the test labels of")
