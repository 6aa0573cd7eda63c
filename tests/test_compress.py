"""The whole compress path on tiny data: training, pruning, export, bundle."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_DATA, tiny_compress

from sparsebias.cli import main
from sparsebias.core import SparsebiasError
from sparsebias.data import open_data
from sparsebias.data.loader import FaceImages, normalize
from sparsebias.training.checkpoint import state_dict_from
from sparsebias.training.models import build_model, prunable_weights

GMP_TINY = ["pruning_start_epoch=0", "pruning_end_epoch=2"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def gmp_bundle(sparse_bundle):
    return sparse_bundle


def test_bundle_layout_and_manifest(gmp_bundle, repo):
    m = gmp_bundle.manifest
    files = set(m["files"])
    assert {"model.onnx", "model.pt", "recipe.yaml", "check.npz", "splits/train.npz", "splits/val.npz",
            "splits/test.npz"} <= files
    assert m["schema_version"] == 1
    assert m["architecture"] == "resnet18"
    assert m["input"]["shape"] == [None, 3, 32, 32]
    assert len(m["attributes"]) == 40 and m["identities"] == ["Male", "Young", "Chubby", "Pale_Skin"]
    assert m["training"]["epochs"] == 3 and len(m["training"]["history"]) == 3
    assert m["training"]["best_epoch"] == 3  # only epochs at the final sparsity are eligible
    assert gmp_bundle.file("recipe.yaml").read_text() == (repo / "recipes/resnet18_90.yaml").read_text()
    assert not list(gmp_bundle.path.parent.glob(".*")), "no staging or work folder left behind"


def test_versions_recorded_without_package_metadata(monkeypatch, repo):
    """Run from a working tree (PYTHONPATH=., as on a lent GPU machine), sparsebias has no
    installed metadata; the manifest and --version still give its version, pyproject.toml's."""
    import importlib.metadata
    import tomllib

    from sparsebias.training.pipeline import _versions

    def no_metadata(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", no_metadata)
    declared = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    assert _versions()["sparsebias"] == declared
    assert cli("--version").output == f"sparsebias, version {declared}\n"


def test_a_model_near_chance_is_flagged():
    """Big_Nose alone, blown up at init_lr 0.3, kept an epoch of validation AUC 0.596."""
    from sparsebias.training.pipeline import near_chance

    warning = near_chance(0.5959, 1)
    assert warning.startswith("warning: the kept model's mean validation AUC is 0.596, near chance")
    assert "the mean over its 1 output(s)" in warning
    assert near_chance(0.6582, 1) is None and near_chance(0.9253, 40) is None
    assert near_chance(float("nan"), 1) is None   # no AUC defined: nothing to say


def test_sparsity_matches_the_recipe(gmp_bundle):
    m = gmp_bundle.manifest
    assert m["sparsity"]["overall"] == pytest.approx(0.90, abs=0.005)
    model = build_model("resnet18", 40)
    model.load_state_dict(state_dict_from(gmp_bundle.file("model.pt")))
    weights = prunable_weights(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values())
    assert zeros == pytest.approx(m["sparsity"]["overall"])


def test_manifest_records_flops(gmp_bundle):
    flops = gmp_bundle.manifest["flops"]
    assert flops["weight_sparsity"] == pytest.approx(gmp_bundle.manifest["sparsity"]["overall"], abs=1e-6)
    assert flops["dense_flops"] == 2 * flops["dense_macs"]
    assert flops["sparse_macs"] < flops["dense_macs"] / 3  # 90% of all but conv1 and fc
    assert sum(layer["dense_macs"] for layer in flops["per_layer"]) + flops["other_ops"] == flops["dense_macs"]


def test_onnx_matches_torch_and_logits_are_keyed_by_id(gmp_bundle):
    model = build_model("resnet18", 40)
    model.load_state_dict(state_dict_from(gmp_bundle.file("model.pt")))
    model.eval()
    table = open_data(TINY_DATA, echo=lambda *a: None)
    test = FaceImages(table, "test", table.names, 32)
    x = normalize(torch.stack([test[i][0] for i in range(16)]))
    session = ort.InferenceSession(str(gmp_bundle.file("model.onnx")), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        torch_out = model(x).numpy()
    assert np.abs(onnx_out - torch_out).max() < 1e-4
    assert gmp_bundle.manifest["export"]["max_abs_diff_vs_torch"] < 1e-4

    split = gmp_bundle.split("test")
    assert split["ids"].tolist() == test.ids.tolist()
    np.testing.assert_allclose(split["logits"][:16], torch_out, atol=1e-4)
    np.testing.assert_array_equal(split["labels"], table.labels[table.split("test")])
    assert "logits" not in gmp_bundle.split("train")


def test_tampered_bundle_is_refused(gmp_bundle, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(gmp_bundle.path, copy)
    with open(copy / "model.onnx", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    result = cli("info", copy)
    assert result.exit_code == 2
    assert "model.onnx: sha256 does not match the manifest" in result.output
    assert "Traceback" not in result.output

    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = cli("info", copy)
    assert result.exit_code == 2 and "schema version 99" in result.output


def test_files_the_manifest_does_not_list_are_not_read(gmp_bundle, tmp_path):
    """Dropping a split from the manifest and forging the file must not feed the audit forged labels."""
    import shutil

    from sparsebias.bundle.format import load_bundle
    copy = tmp_path / "copy"
    shutil.copytree(gmp_bundle.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["splits/test.npz"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(copy)   # what it lists still checks out
    with pytest.raises(SparsebiasError, match=r"has no split 'test'"):
        bundle.split("test")
    with pytest.raises(SparsebiasError, match=r"its manifest lists no splits/test.npz"):
        bundle.file("splits/test.npz")
    assert bundle.split("val")["ids"].shape == gmp_bundle.split("val")["ids"].shape
    result = cli("info", copy)
    assert result.exit_code == 0
    assert "not listed   1 file(s) the manifest does not list, so not the bundle's and never read: " \
           "splits/test.npz\n" in result.output


def test_seed_makes_runs_repeatable(dense_bundle, repo, tmp_path):
    again = tiny_compress(repo / "recipes/resnet18_dense.yaml", tmp_path, name="again")
    np.testing.assert_array_equal(again.split("test")["logits"], dense_bundle.split("test")["logits"])
    other = tiny_compress(repo / "recipes/resnet18_dense.yaml", tmp_path, name="other", seed=1)
    assert not np.array_equal(other.split("test")["logits"], dense_bundle.split("test")["logits"])


def test_tiny_maps_take_matrix_products_unless_told_not_to(dense_bundle, repo, tmp_path):
    """The default run's last stage (1x1 maps on 32 px data) trained as products: with torch's
    convolutions the same seed gives another model (rounding apart, then training's chaos)."""
    plain = tiny_compress(repo / "recipes/resnet18_dense.yaml", tmp_path, name="plain", extra=["small_maps=torch"])
    assert plain.manifest["training"]["small_maps"] == "torch"
    ours, theirs = (b.split("test")["logits"] for b in (dense_bundle, plain))
    assert not np.array_equal(ours, theirs)


def test_precision_is_chosen_and_recorded(dense_bundle, repo, tmp_path):
    import torch

    from sparsebias.core.devices import resolve_precision

    training = dense_bundle.manifest["training"]
    assert training["precision"] == resolve_precision("auto", torch.device("cpu"))
    assert training["memory_format"] == "channels_last" and training["processes"] == 1
    assert training["small_maps"] == "product"
    assert training["device"].startswith("cpu (")
    assert all(e["train_images_per_s"] > 0 for e in training["history"])
    fp32 = tiny_compress(repo / "recipes/resnet18_dense.yaml", tmp_path, name="fp32", extra=["precision=fp32"])
    assert fp32.manifest["training"]["precision"] == "fp32"
    again = tiny_compress(repo / "recipes/resnet18_dense.yaml", tmp_path, name="fp32b", extra=["precision=fp32"])
    np.testing.assert_array_equal(again.split("test")["logits"], fp32.split("test")["logits"])


def test_gmp_pt_from_a_dense_bundle_and_from_a_checkpoint(dense_bundle, repo, tmp_path):
    recipe = repo / "recipes/resnet18_pt_90.yaml"
    pt = tiny_compress(recipe, tmp_path, name="pt", epochs=3, extra=["pruning_end_epoch=2"],
                       from_path=dense_bundle.path)
    assert pt.manifest["training"]["from"] == str(dense_bundle.path)
    assert pt.manifest["sparsity"]["overall"] == pytest.approx(0.90, abs=0.005)
    assert pt.manifest["recipe"]["settings"]["optimizer"] == "adam"
    # starting from the dense weights, the first epoch already scores like the dense model
    dense_auc = dense_bundle.manifest["metrics"]["val"]["auc"]
    assert pt.manifest["training"]["history"][0]["val_auc"] > dense_auc - 0.1

    ckpt = tiny_compress(recipe, tmp_path, name="pt_ckpt", epochs=3, extra=["pruning_end_epoch=2"],
                         from_path=dense_bundle.file("model.pt"))
    assert ckpt.manifest["sparsity"]["overall"] == pytest.approx(0.90, abs=0.005)


def test_gmp_pt_from_weights_saved_through_a_wrapper(dense_bundle, tmp_path):
    """A Lightning checkpoint (`state_dict`, keys under `model.`) of a torch.compile'd model
    (DDP's `module.` goes the same way)."""
    from sparsebias.training.pipeline import _load_pretrained

    weights = state_dict_from(dense_bundle.file("model.pt"))
    wrapped = tmp_path / "lightning.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"model._orig_mod.{k}": v for k, v in weights.items()}}, wrapped)
    model = build_model("resnet18", 40)
    _load_pretrained(model, wrapped, None, "resnet18", dense_bundle.attributes, lambda *a, **k: None)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)
    torch.save({"state_dict": {f"model.{k}" if k.startswith("fc") else k: v for k, v in weights.items()}}, wrapped)
    with pytest.raises(SparsebiasError, match="weights do not fit resnet18 \\(e.g. 'model.fc.weight'\\)"):
        _load_pretrained(model, wrapped, None, "resnet18", dense_bundle.attributes, lambda *a, **k: None)


def test_a_recipe_naming_no_model_trains_the_architecture_of_its_from_bundle(repo, tmp_path):
    """SparseML's transfer-learning cards name no model: the --from bundle's weights decide it."""
    source = tiny_compress(repo / "recipes/mobilenet_v1_dense.yaml", tmp_path, name="mobilenet", epochs=1)
    card = tmp_path / "transfer.md"
    card.write_text("<!-- a licence comment, as SparseML's cards have -->\n\n---\nnum_epochs: &num_epochs 2.0\n"
                    "modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0.0\n    end_epoch: *num_epochs\n"
                    "  - !ConstantPruningModifier\n    start_epoch: 0.0\n    params: __ALL_PRUNABLE__\n---\n")
    messages = []
    bundle = tiny_compress(card, tmp_path, name="transfer", epochs=1, from_path=source.path,
                           echo=lambda *a, **k: messages.append(" ".join(map(str, a))))
    assert bundle.manifest["architecture"] == "mobilenet_v1"
    assert any("Training mobilenet_v1, the architecture of --from" in m for m in messages)
    with pytest.raises(SparsebiasError, match="a mobilenet_v1 bundle, the recipe trains resnet18"):
        tiny_compress(card, tmp_path, name="resnet", epochs=1, extra=["arch=resnet18"], from_path=source.path)


def test_pruned_batch_norm_scales_empty_channels_the_bundle_counts(tmp_path):
    """SparseML prunes whatever `params` match: 're:.*weight' takes the batch norms' scales too,
    and each zero scale empties its convolution's output channel when the export folds them."""
    from sparsebias.bundle import load_bundle
    from sparsebias.bundle.flops import check_claimed_sparsity
    from sparsebias.training.models import sparsity_report

    recipe = tmp_path / "everything.yaml"
    recipe.write_text("num_epochs: 1\nmodifiers:\n  - !EpochRangeModifier\n    start_epoch: 0.0\n"
                      "    end_epoch: eval(num_epochs)\n"
                      "  - !GMPruningModifier\n    params: ['re:.*weight']\n    init_sparsity: 0.5\n"
                      "    final_sparsity: 0.5\n    start_epoch: 0.0\n    end_epoch: 1.0\n"
                      "    update_frequency: 1.0\n    leave_enabled: true\n")
    messages = []
    bundle = tiny_compress(recipe, tmp_path, epochs=1, echo=lambda *a, **k: messages.append(" ".join(map(str, a))))
    model = build_model("resnet18", 40)
    model.load_state_dict(state_dict_from(bundle.file("model.pt")))
    assert int((model.bn1.weight == 0).sum()) == 32   # half of the stem's 64 scales
    pruned = sparsity_report(model)[0]
    assert pruned == pytest.approx(0.5, abs=0.005)
    # a conv weight stays only where both it and its channel's scale survived: about a quarter
    assert bundle.manifest.layer_sparsity["conv1.weight"] == pytest.approx(
        float(((model.conv1.weight == 0) | (model.bn1.weight == 0).view(-1, 1, 1, 1)).float().mean()))
    assert 0.7 < bundle.manifest.sparsity < 0.8
    assert any("the recipe pruned batch-norm scales" in m for m in messages)
    check_claimed_sparsity(load_bundle(bundle.path))   # the graph holds what the manifest says


def test_single_attribute_training(repo, tmp_path):
    bundle = tiny_compress(repo / "recipes/resnet18_dense.yaml", tmp_path, epochs=1,
                           attributes=["Smiling"])
    assert bundle.attributes == ["Smiling"]
    assert bundle.split("val")["logits"].shape == (48, 1)
    assert bundle.split("val")["labels"].shape == (48, 40)  # identities stay available to the audit


def test_sparseml_style_recipe_works_unchanged(repo, tmp_path):
    recipe = repo / "tests/fixtures/sparseml_style_recipe.md"
    bundle = tiny_compress(recipe, tmp_path, epochs=3, extra=["pruning_start_epoch=0", "pruning_end_epoch=2"])
    per_layer = bundle.manifest["sparsity"]["per_layer"]
    assert per_layer["layer1.0.conv1.weight"] == pytest.approx(0.85, abs=0.005)
    assert per_layer["layer3.0.downsample.0.weight"] == pytest.approx(0.85, abs=0.005)
    assert per_layer["conv1.weight"] == 0.0 and per_layer["fc.weight"] == 0.0


def test_nm_recipe_end_to_end(repo, tmp_path):
    bundle = tiny_compress(repo / "recipes/resnet18_nm_2_4.yaml", tmp_path, epochs=3,
                           extra=["pruning_start_epoch=0"])
    model = build_model("resnet18", 40)
    model.load_state_dict(state_dict_from(bundle.file("model.pt")))
    w = model.layer2[0].conv1.weight.detach()
    assert (w.permute(0, 2, 3, 1).reshape(-1, 4) != 0).sum(dim=1).max() <= 2
    assert bundle.manifest["sparsity"]["per_layer"]["conv1.weight"] == 0.0


def test_a_diverging_run_stops_with_a_clear_error(repo, tmp_path, monkeypatch):
    from sparsebias.core import Outputs

    monkeypatch.setattr(Outputs, "loss", lambda self: lambda logits, y: logits.sum() * float("nan"))
    result = CliRunner().invoke(main, [
        "compress", "--recipe", str(repo / "recipes/resnet18_dense.yaml"), "--data", TINY_DATA,
        "--set", "image_size=32", "--set", "batch_size=32", "--set", "num_epochs=1",
        "--out", str(tmp_path), "--name", "diverged"])
    assert result.exit_code == 2
    assert "training diverged: the loss is" in result.output and "lower init_lr" in result.output
    assert not (tmp_path / "diverged").exists()


def test_export_tolerance_scales_with_the_logits(tmp_path):
    """A diverging (or over-confident) model has logits in the thousands, where fp32 rounding
    alone moves them by more than 1e-3: export accepts it, and still refuses a graph that errs."""
    from sparsebias.bundle.export import ExportError, export_onnx
    from sparsebias.core.tolerance import logit_tolerance

    assert logit_tolerance(1e-3, np.array([[0.5, -0.2]])) == 1e-3
    assert logit_tolerance(1e-3, np.array([[-2e4, 3.0, np.inf, np.nan]])) == pytest.approx(0.2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(16 * 6 * 6, 4))
    with torch.no_grad():
        model[1].running_var.fill_(1e-6)   # a dead channel's statistics: activations scaled up 1000x
        model[4].weight.mul_(1e3)
    batch = torch.randn(8, 3, 8, 8)
    checked = export_onnx(model, tmp_path / "big.onnx", batch)
    assert 1e-3 < checked["max_abs_diff_vs_torch"] < logit_tolerance(1e-3, model.eval()(batch).detach().numpy())

    class Wrong(torch.nn.Module):   # the graph exported is not the model torch runs: 1% off
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            out = self.inner(x)
            return out if torch.jit.is_tracing() else out * 1.01

    with pytest.raises(ExportError, match="ONNX output differs from torch by"):
        export_onnx(Wrong(), tmp_path / "wrong.onnx", batch)
