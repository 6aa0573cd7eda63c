"""The public Python API as a notebook uses it: `import sparsebias` and nothing else.

Each result's frame is checked against the document the CLI writes and against values
worked out here from the bundles' own files."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_DATA

import sparsebias


@pytest.fixture(scope="module")
def pruned(sparse_bundle, tmp_path_factory):
    """A copy of the session's tiny 90% resnet18 (compressed by the CLI, that is by sparsebias.compress),
    which these tests calibrate and give an override table."""
    copy = tmp_path_factory.mktemp("api") / "pruned"
    shutil.copytree(sparse_bundle.path, copy)
    return sparsebias.load_bundle(copy)


def test_import_loads_no_torch():
    code = "import sys, sparsebias; sparsebias.audit; sparsebias.gate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_predict_runs_without_torch(pruned):
    """Images are prepared with numpy: a deployment needs onnxruntime, not torch."""
    image = sparsebias.open_data(TINY_DATA).image_dir / pruned.split("test")["ids"][0]
    code = (f"import sys, sparsebias; p = sparsebias.predict({str(pruned.path)!r}, [{str(image)!r}], "
            "engine='onnxruntime'); print(len(p.paths), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "False"]


def test_every_public_name_resolves():
    from sparsebias.training import pipeline

    for name in sparsebias.__all__:
        assert getattr(sparsebias, name) is not None
    assert sparsebias.compress is pipeline.compress
    with pytest.raises(AttributeError):
        sparsebias.no_such_verb


def test_audit_frame_is_the_report(pruned, dense_bundle):
    report = sparsebias.audit(pruned, dense_bundle.path)
    assert isinstance(report, sparsebias.AuditReport) and report.mode == "attributes"
    frame = report.to_frame()
    assert list(frame.index) == pruned.attributes == report.attributes
    for a in pruned.attributes[:5]:
        assert frame.loc[a, "compressed_auc"] == pytest.approx(report["metrics"]["compressed"]["auc"][a], nan_ok=True)
        ba = report["metrics"]["reference"]["views"]["default"]["ba"]["Male"][a]["value"]
        assert frame.loc[a, "reference_ba_Male"] == pytest.approx(np.nan if ba is None else ba, nan_ok=True)
    # accuracy recomputed from the bundle's files: the re-run logits agree with the stored ones
    test = pruned.split("test")
    y = pruned.attribute_labels(test)
    expected = ((test["logits"] > 0) == (y > 0)).mean(axis=0)
    np.testing.assert_allclose(frame["compressed_accuracy"], expected, atol=2 / len(y))
    assert report.to_dict()["models"]["compressed"]["logits"]["source"] == "re-run"


def test_audit_of_frames_equals_the_audit_of_bundles(pruned, dense_bundle):
    """A user's own predictions as pandas frames: the same figures as the bundles give."""
    train, test, test_ref = pruned.split("train"), pruned.split("test"), dense_bundle.split("test")
    names = pruned.attributes
    labels = pd.DataFrame(pruned.attribute_labels(test), columns=names).assign(id=test["ids"])
    train_labels = pd.DataFrame(pruned.attribute_labels(train), columns=names).assign(id=train["ids"])
    logits = pd.DataFrame(test["logits"], columns=names).assign(id=test["ids"])
    reference_logits = pd.DataFrame(test_ref["logits"], columns=names).assign(id=test["ids"])
    from_frames = sparsebias.audit(labels=labels, logits=logits, reference_logits=reference_logits,
                                   train_labels=train_labels)
    from_bundles = sparsebias.audit(pruned, dense_bundle, replay=False)
    columns = ["compressed_accuracy", "reference_auc", "compressed_ba_Male", "cie_rate"]
    pd.testing.assert_frame_equal(from_frames.to_frame()[columns], from_bundles.to_frame()[columns])
    assert from_frames.models["compressed"]["name"] == "logits"


def test_a_frame_error_names_the_frame(pruned, dense_bundle):
    test = pruned.split("test")
    labels = pd.DataFrame({"id": test["ids"], "Smiling": 7})
    logits = pd.DataFrame({"id": test["ids"], "Smiling": 0.0})
    with pytest.raises(sparsebias.SparsebiasError, match="the labels frame: column 'Smiling' holds labels other"):
        sparsebias.audit(labels=labels, logits=logits, reference_logits=logits, train_labels=labels)


def test_mitigations_gate_bench_and_predict(pruned, dense_bundle, tmp_path):
    calibrated, thresholds = sparsebias.calibrate(pruned)
    assert len(thresholds) == len(pruned.attributes)
    mitigated, table = sparsebias.overrides(calibrated, dense_bundle, budget=0.1, echo=lambda *a, **k: None)
    assert "mitigated" in sparsebias.audit(mitigated, dense_bundle).views

    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - {metric: accuracy, aggregate: mean, max_decrease: 1.0}\n"
                      "  - {metric: uncertainty, aggregate: max, max: -1}\n")
    result = sparsebias.gate(mitigated, policy, reference=dense_bundle)
    assert not result.passed and [o.passed for o in result.outcomes] == [True, False]
    frame = result.to_frame()
    assert list(frame["passed"]) == [True, False] and frame.loc[1, "rule"] == "max uncertainty max -1"

    as_mapping = sparsebias.gate(mitigated, {"rules": [{"metric": "accuracy", "aggregate": "mean", "max_decrease": 1}]},
                                 reference=dense_bundle, replay=False)
    assert as_mapping.passed and "the logits the bundles store" in as_mapping.to_dict()["judged"]

    speed = sparsebias.bench([mitigated], engines=["onnxruntime"], batch_sizes=[2], warmup_s=0, duration_s=0.2)
    row = speed.to_frame().loc[("pruned", "onnxruntime", 2)]
    assert row["items_per_second"] > 0 and row["speedup_vs_onnxruntime"] == pytest.approx(1.0)

    table_data = sparsebias.open_data(TINY_DATA)
    images = [table_data.image_dir / i for i in pruned.split("test")["ids"][:5]]
    found = sparsebias.predict(mitigated, images, engine="onnxruntime")
    frame = found.to_frame()
    assert list(frame.index) == [str(p) for p in images]
    p = frame[[f"p_{a}" for a in pruned.attributes]].to_numpy()
    decided = frame[pruned.attributes].to_numpy()
    # calibrated thresholds, then the override table: rows the table does not touch follow the thresholds
    logit = np.log(p / (1 - p))
    clear = (frame["overridden"] == "").to_numpy()[:, None] & (np.abs(logit - thresholds) > 1e-3)
    np.testing.assert_array_equal(decided[clear], (logit > thresholds)[clear].astype(int))
    assert found.to_dict()["decided_by"].startswith("calibrated thresholds")
    one = sparsebias.predict(mitigated, str(images[0]), engine="onnxruntime").to_frame()   # one path, not a list
    pd.testing.assert_frame_equal(one, frame.iloc[:1])
