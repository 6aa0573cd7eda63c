"""The audit, calibration and overrides end to end on bundles from `compress`, and from plain files."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, roc_auc_score

from sparsebias.auditing import audit, inputs_from_bundles, replay_bundle
from sparsebias.bundle import load_bundle, update_bundle
from sparsebias.cli import main
from sparsebias.metrics import bias_amplification, sigmoid, training_rates


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def pair(sparse_bundle, dense_bundle, tmp_path):
    """Private copies: calibrate and overrides rewrite bundles."""
    paths = {}
    for name, b in (("sparse", sparse_bundle), ("dense", dense_bundle)):
        paths[name] = tmp_path / name
        shutil.copytree(b.path, paths[name])
    return paths


def columns(bundle, names):
    label_names = bundle.manifest["label_names"]
    return [label_names.index(n) for n in names]


def test_audit_report_matches_independent_computation(pair, tmp_path):
    result = cli("audit", pair["sparse"], "--reference", pair["dense"], "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert "mean BA, p > 0.5" in result.output
    out = tmp_path / "report"
    assert {"report.json", "report.md", "report.html", "ba.png", "uncertainty.png", "tcb_ece.png",
            "reliability.png"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "report.json").read_text())
    bundle = load_bundle(pair["sparse"])
    # the audit judges model.onnx re-run, not the stored logits (equal to rounding, which can reorder near-ties)
    test, train = replay_bundle(bundle, echo=lambda *a, **k: None).split("test"), bundle.split("train")
    attrs = bundle.attributes
    y = test["labels"][:, columns(bundle, attrs)]
    z = test["logits"]
    for j, a in enumerate(attrs[:10]):
        assert report["metrics"]["compressed"]["views"]["default"]["accuracy"][a] == pytest.approx(
            accuracy_score(y[:, j], z[:, j] > 0))
        if 0 < y[:, j].sum() < len(y):
            assert report["metrics"]["compressed"]["auc"][a] == pytest.approx(roc_auc_score(y[:, j], z[:, j]))
    male = test["labels"][:, columns(bundle, ["Male"])[0]]
    r1, r0 = training_rates(train["labels"][:, columns(bundle, attrs)], train["labels"][:, columns(bundle, ["Male"])[0]])
    ba, reasons = bias_amplification(y, (z > 0).astype(int), male, r1=r1, r0=r0,
                                     is_identity=[a == "Male" for a in attrs])
    reported = report["metrics"]["compressed"]["views"]["default"]["ba"]["Male"]
    assert sum(r is None for r in reasons) >= 3, "the tiny test split still defines BA somewhere"
    for j, a in enumerate(attrs):
        assert reported[a]["reason"] == reasons[j]
        assert (reported[a]["value"] is None) if reasons[j] else reported[a]["value"] == pytest.approx(ba[j])
    assert reported["Male"]["reason"] == "the attribute is the identity"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<script" not in html
    assert report["settings"]["thresholds"] == {"compressed": "validation split", "reference": "validation split"}


def test_calibrate_sets_validation_counts_and_is_stored(pair):
    result = cli("calibrate", pair["sparse"])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(pair["sparse"])  # hashes verified, thresholds.json among them
    assert "thresholds.json" in bundle.manifest["files"]
    thresholds = json.loads(bundle.file("thresholds.json").read_text())["thresholds"]
    val = bundle.split("val")
    y = val["labels"][:, columns(bundle, bundle.attributes)]
    for j, a in enumerate(bundle.attributes):
        assert int((val["logits"][:, j] > thresholds[a]).sum()) == int(y[:, j].sum())
    report = audit(inputs_from_bundles(pair["sparse"], pair["dense"]))
    assert report["settings"]["thresholds"]["compressed"] == "bundle"
    assert set(report["metrics"]["compressed"]["views"]) == {"default", "calibrated", "mitigated"}


@pytest.mark.parametrize("label", ["true", "dense"])
def test_overrides_from_the_dense_model(pair, label):
    result = cli("overrides", pair["sparse"], "--reference", pair["dense"], "--budget", "0.1", "--label", label)
    assert result.exit_code == 0, result.output
    bundle, dense = load_bundle(pair["sparse"]), load_bundle(pair["dense"])
    meta = bundle.manifest["mitigations"]["overrides"]
    table = pd.read_csv(bundle.file("overrides.csv"), dtype={"id": str})
    test = dense.split("test")
    n = len(test["ids"])
    assert meta["attributes"], "some attribute has positive dense BA"
    assert len(table) == round(0.1 * n) * len(meta["attributes"])
    p = sigmoid(test["logits"])
    for a, rows in table.groupby("attribute"):
        j = dense.attributes.index(a)
        chosen = np.flatnonzero(np.isin(test["ids"], rows["id"]))
        others = np.setdiff1d(np.arange(n), chosen)
        assert np.abs(p[chosen, j] - 0.5).max() <= np.abs(p[others, j] - 0.5).min()  # the most uncertain
        truth = test["labels"][chosen, columns(dense, [a])[0]]
        expected = truth if label == "true" else (p[chosen, j] > 0.5).astype(int)
        got = rows.set_index("id").loc[test["ids"][chosen], "label"].to_numpy()
        assert (got == expected).all()
    report = audit(inputs_from_bundles(pair["sparse"], pair["dense"]))
    views = report["metrics"]["compressed"]["views"]
    assert "overridden" in views
    if label == "true":  # true-label overrides can only make those decisions right
        for a in meta["attributes"]:
            assert views["overridden"]["accuracy"][a] >= views["default"]["accuracy"][a]


def test_predict_applies_thresholds_and_overrides(pair, tmp_path):
    assert cli("calibrate", pair["sparse"]).exit_code == 0
    assert cli("overrides", pair["sparse"], "--reference", pair["dense"], "--budget", "0.2").exit_code == 0
    bundle = load_bundle(pair["sparse"])
    table = pd.read_csv(bundle.file("overrides.csv"), dtype={"id": str})
    from sparsebias.data import open_data
    images = open_data(bundle.manifest["data"]["spec"], echo=lambda *a: None).image_dir
    picked = table["id"].unique()[:5]
    result = cli("predict", pair["sparse"], *[images / i for i in picked], "--engine", "onnxruntime",
                 "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "p.csv")
    thresholds = json.loads(bundle.file("thresholds.json").read_text())["thresholds"]
    for _, row in rows.iterrows():
        fixed = table[table["id"] == row["path"].rsplit("/", 1)[1]].set_index("attribute")["label"]
        for a in bundle.attributes:
            expected = fixed[a] if a in fixed.index else int(row[f"p_{a}"] > sigmoid(thresholds[a]))
            assert row[a] == expected, a


def test_audit_from_csv_and_parquet_files_equals_the_bundle_audit(pair, tmp_path):
    bundle, dense = load_bundle(pair["sparse"]), load_bundle(pair["dense"])
    names = bundle.manifest["label_names"]
    test, train, val = bundle.split("test"), bundle.split("train"), bundle.split("val")
    # CelebA's own -1/1 encoding for the labels, CSV and Parquet mixed
    pd.DataFrame(2 * test["labels"].astype(int) - 1, columns=names).assign(image_id=test["ids"]) \
        .to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame(train["labels"], columns=names).assign(id=train["ids"]).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame(val["labels"], columns=names).assign(id=val["ids"]).to_csv(tmp_path / "val.csv", index=False)
    shuffled = np.random.default_rng(0).permutation(len(test["ids"]))  # order must not matter
    for name, b in (("model", bundle), ("dense", dense)):
        pd.DataFrame(b.split("test")["logits"][shuffled], columns=b.attributes) \
            .assign(id=test["ids"][shuffled]).to_parquet(tmp_path / f"{name}.parquet")
        pd.DataFrame(b.split("val")["logits"], columns=b.attributes).assign(id=val["ids"]) \
            .to_csv(tmp_path / f"{name}_val.csv", index=False)
    result = cli("audit", "--labels", tmp_path / "labels.csv", "--logits", tmp_path / "model.parquet",
                 "--reference-logits", tmp_path / "dense.parquet", "--train-labels", tmp_path / "train.parquet",
                 "--val-labels", tmp_path / "val.csv", "--val-logits", tmp_path / "model_val.csv",
                 "--val-reference-logits", tmp_path / "dense_val.csv", "--out", tmp_path / "files_report")
    assert result.exit_code == 0, result.output
    from_files = json.loads((tmp_path / "files_report" / "report.json").read_text())
    from_bundles = audit(inputs_from_bundles(pair["sparse"], pair["dense"]))
    for key in ("metrics", "pairwise", "groups", "summary"):
        assert json.loads(json.dumps(from_bundles[key])) == from_files[key], key


def test_audit_of_celeba_sized_logits_is_fast():
    """20,000 samples x 40 attributes x 4 identities: the computation bench/ records."""
    import time

    from sparsebias.auditing import AuditInputs, ModelOutputs

    rng = np.random.default_rng(0)
    n, k = 20_000, 40
    y = (rng.random((n, k)) < 0.25).astype(np.int8)
    ids = {f"I{i}": y[:, i] for i in range(4)}
    inputs = AuditInputs(
        attributes=[f"A{j}" for j in range(k)], ids=np.arange(n).astype(str), labels=y, identities=ids,
        train_positive_rate=y.mean(axis=0), train_rates={i: training_rates(y, v) for i, v in ids.items()},
        model=ModelOutputs("m", rng.normal(size=(n, k)) + y, calibrated=np.zeros(k)),
        reference=ModelOutputs("r", rng.normal(size=(n, k)) + 2 * y, calibrated=np.zeros(k)),
        intersect=("I0", "I1"))
    start = time.perf_counter()
    report = audit(inputs)
    assert time.perf_counter() - start < 10  # generous for CI; bench/audit_speed.py records the real figure
    assert len(report["metrics"]["compressed"]["views"]["default"]["ba"]) == 4


@pytest.fixture
def files(tmp_path):
    """A small, valid files-mode audit: ids s0..s59, two attributes and the Male identity."""
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(60)]
    labels = pd.DataFrame({"id": ids, "Smiling": rng.integers(0, 2, 60), "Male": rng.integers(0, 2, 60)})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    labels.to_csv(tmp_path / "train.csv", index=False)
    for name in ("model", "dense"):
        pd.DataFrame({"id": ids, "Smiling": rng.normal(size=60)}).to_csv(tmp_path / f"{name}.csv", index=False)
    return tmp_path


def audit_files(d, **change):
    args = {"labels": d / "labels.csv", "logits": d / "model.csv", "reference-logits": d / "dense.csv",
            "train-labels": d / "train.csv", **change}
    return cli("audit", *[x for k, v in args.items() for x in (f"--{k}", v)], "--identity", "Male",
               "--out", d / "out")


def test_files_mode_works(files):
    result = audit_files(files)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("damage, message", [
    (lambda d: pd.read_csv(d / "model.csv").assign(id=lambda f: f["id"].str.replace("s1", "x1"))
     .to_csv(d / "model.csv", index=False), "sample ids do not match"),
    (lambda d: pd.read_csv(d / "model.csv").assign(Smiling=lambda f: f["Smiling"].where(f.index != 3, np.nan))
     .to_csv(d / "model.csv", index=False), "logits must be finite"),
    (lambda d: pd.read_csv(d / "dense.csv").assign(Smiling=lambda f: f["Smiling"].where(f.index != 3, np.inf))
     .to_csv(d / "dense.csv", index=False), "logits must be finite"),
    (lambda d: pd.read_csv(d / "labels.csv").assign(Smiling=lambda f: f["Smiling"].where(f.index != 0, 2))
     .to_csv(d / "labels.csv", index=False), "labels other than 0/1 or -1/1"),
    (lambda d: pd.read_csv(d / "labels.csv").rename(columns={"Male": "Gender"})
     .to_csv(d / "labels.csv", index=False), "identity 'Male' is not an attribute"),
    (lambda d: pd.concat([pd.read_csv(d / "model.csv")] * 2).to_csv(d / "model.csv", index=False),
     "appears more than once"),
])
def test_bad_files_exit_2_and_write_nothing(files, damage, message):
    damage(files)
    result = audit_files(files)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not (files / "out").exists()


def test_unknown_identity_for_bundles(pair, tmp_path):
    result = cli("audit", pair["sparse"], "--reference", pair["dense"], "--identity", "Mael", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "identity 'Mael' is not an attribute" in result.output
    assert not (tmp_path / "o").exists()


def test_thresholds_that_do_not_match_the_attributes(pair, tmp_path):
    bundle = load_bundle(pair["sparse"])
    wrong = json.dumps({"thresholds": {"Smiling": 0.0}}).encode()
    update_bundle(bundle, {"thresholds.json": wrong}, {})  # hashes are right; the content is not
    result = cli("audit", pair["sparse"], "--reference", pair["dense"], "--out", tmp_path / "o")
    assert result.exit_code == 2 and "thresholds do not match the bundle's attributes" in result.output
    assert not (tmp_path / "o").exists()
