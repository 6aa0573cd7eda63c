"""Group-mode audit: every metric against scikit-learn, fairlearn and hand computation;
the CLI on real group bundles; clear errors for bad groups."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, precision_recall_fscore_support
from sklearn.preprocessing import label_binarize

from sparsebias.auditing.groups import GroupAuditInputs, Task, group_audit, group_inputs_from_bundles
from sparsebias.bundle import load_bundle
from sparsebias.cli import main
from sparsebias.core import Outputs, SparsebiasError


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def random_task():
    rng = np.random.default_rng(1)
    n, c = 600, 4
    y = rng.integers(0, c, n)
    groups = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    dense = softmax(rng.normal(size=(n, c)) + 2.5 * np.eye(c)[y])
    pruned = softmax(rng.normal(size=(n, c)) + np.where(groups[:, None] == "c", 0.5, 1.8) * np.eye(c)[y])
    task = Task("t", list("wxyz"), y, pruned, dense)
    report = group_audit(GroupAuditInputs([task], {"g": groups}, "g", "a", "test", {}))
    return y, groups, dense, pruned, report["tasks"]["t"]


def test_accuracy_and_error_rates_match_scikit_learn(random_task):
    y, groups, dense, pruned, t = random_task
    m = t["compressed"]["by"]["g"]
    yhat = pruned.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, yhat))
    cm = confusion_matrix(y, yhat)
    tp, fn, fp = np.diag(cm), cm.sum(axis=1) - np.diag(cm), cm.sum(axis=0) - np.diag(cm)
    tn = cm.sum() - tp - fn - fp
    assert m["fnr"] == pytest.approx(np.mean(fn / (fn + tp)))
    assert m["fpr"] == pytest.approx(np.mean(fp / (fp + tn)))


def test_group_accuracy_and_std_dacc_match_fairlearn(random_task):
    y, groups, dense, pruned, t = random_task
    comp = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pruned.argmax(axis=1), sensitive_features=groups)
    ref = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=dense.argmax(axis=1), sensitive_features=groups)
    m = t["compressed"]["by"]["g"]
    assert m["group_accuracy"] == pytest.approx(comp.by_group.to_dict())
    assert m["std_dacc"] == pytest.approx(np.std((comp.by_group - ref.by_group).to_numpy(), ddof=1))
    assert m["group_accuracy"]["c"] < m["group_accuracy"]["a"]  # the group built to lose more does


def test_group_ap_matches_scikit_learn(random_task):
    y, groups, dense, pruned, t = random_task

    def ap(scores, g):
        inside = groups == g
        onehot = label_binarize(y[inside], classes=range(4))
        return average_precision_score(onehot, scores[inside], average="macro")

    m = t["compressed"]["by"]["g"]
    for g in "abc":
        assert m["group_ap"][g] == pytest.approx(ap(pruned, g))
    assert m["std_ap"] == pytest.approx(np.std([ap(pruned, g) for g in "abc"], ddof=1))
    assert m["std_dap"] == pytest.approx(np.std([ap(pruned, g) - ap(dense, g) for g in "abc"], ddof=1))


def test_macro_scores_entropy_and_pie(random_task):
    y, groups, dense, pruned, t = random_task
    p, r, f, _ = precision_recall_fscore_support(y, pruned.argmax(axis=1), average="macro", zero_division=0)
    assert (t["compressed"]["precision"], t["compressed"]["recall"], t["compressed"]["f1"]) == pytest.approx((p, r, f))
    entropy = -(pruned * np.log(pruned)).sum(axis=1)
    assert t["compressed"]["entropy"] == pytest.approx(np.mean([entropy[y == c].mean() for c in range(4)]))
    assert t["compressed"]["by_class_size"] == {"51-200": pytest.approx(
        {"classes": 4, "precision": p, "recall": r, "f1": f})}
    pie = (dense.argmax(axis=1) == y) & (pruned.argmax(axis=1) != y)
    assert t["pie"]["rate_reference_group"] == pytest.approx(pie[groups == "a"].mean())
    assert t["pie"]["gap"] == pytest.approx(pie[groups != "a"].mean() - pie[groups == "a"].mean())


def test_audit_cli_on_group_bundles(group_bundles, tmp_path):
    dense, fair = group_bundles
    out = tmp_path / "audit"
    result = CliRunner().invoke(main, ["audit", str(fair.path), "--reference", str(dense.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "gender x race" in result.output and "Std(dAcc)" in result.output
    report = json.loads((out / "report.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.html", "pie.png", "groups_gender.png"}
    # recompute from the bundles' own files
    test, test_ref = fair.split("test"), dense.split("test")
    outputs = Outputs.from_manifest(fair.manifest)
    names = list(fair.manifest["label_names"])
    y = test["labels"][:, [names.index("gender"), names.index("race")]]
    pred, pred_ref = outputs.predict(test["logits"]), outputs.predict(test_ref["logits"])
    tasks = report["tasks"]
    assert tasks["gender"]["compressed"]["by"]["race"]["accuracy"] == pytest.approx(np.mean(pred[:, 0] == y[:, 0]))
    assert tasks["race"]["reference"]["by"]["gender"]["accuracy"] == pytest.approx(np.mean(pred_ref[:, 1] == y[:, 1]))
    assert tasks["gender x race"]["compressed"]["by"]["gender x race"]["accuracy"] == \
        pytest.approx(np.mean((pred == y).all(axis=1)))
    assert len(tasks["gender x race"]["classes"]) == 14
    white = y[:, 1] == 0
    pie = (pred_ref[:, 1] == y[:, 1]) & (pred[:, 1] != y[:, 1])
    assert tasks["race"]["pie"]["gap"] == pytest.approx(pie[~white].mean() - pie[white].mean())
    assert fair.manifest["sparsity"]["overall"] == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize("args, message", [
    (["--identity", "gender,ethnicity"], "unknown group column 'ethnicity'"),
    (["--reference-group", "race=Martian"], "no race group 'Martian'"),
    (["--reference-group", "White"], "expects COLUMN=GROUP"),
])
def test_bad_group_options_are_one_line_errors(group_bundles, tmp_path, args, message):
    dense, fair = group_bundles
    result = CliRunner().invoke(main, ["audit", str(fair.path), "--reference", str(dense.path),
                                       "--out", str(tmp_path / "a"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "a").exists()


class EditedSplit:
    """A real bundle whose test labels are changed, as a data set with odd groups would give."""

    def __init__(self, bundle, column, value):
        self.path, self.manifest, self._bundle = bundle.path, bundle.manifest, bundle
        self.column, self.value = list(bundle.manifest["label_names"]).index(column), value

    def split(self, name):
        data = dict(self._bundle.split(name))
        labels = data["labels"].copy()
        labels[:, self.column] = self.value(labels[:, self.column])
        data["labels"] = labels
        return data


@pytest.mark.parametrize("column, value, message", [
    ("gender", lambda v: np.zeros_like(v), "group column 'gender' has a single value in the test split"),
    ("race", lambda v: np.where(v == 6, 0, v), "group race=Middle Eastern has no samples in the test split"),
])
def test_degenerate_groups_are_refused(group_bundles, column, value, message):
    dense, fair = group_bundles
    with pytest.raises(SparsebiasError, match=message):
        group_inputs_from_bundles(EditedSplit(fair, column, value), EditedSplit(dense, column, value))


def test_attribute_commands_refuse_group_bundles(group_bundles, dense_bundle, tmp_path):
    dense, fair = group_bundles
    result = CliRunner().invoke(main, ["calibrate", str(fair.path)])
    assert result.exit_code == 2 and "class heads" in result.output
    result = CliRunner().invoke(main, ["audit", str(fair.path), "--reference", str(dense_bundle.path)])
    assert result.exit_code == 2 and "different outputs" in result.output
    assert load_bundle(fair.path).manifest == fair.manifest  # nothing written


def test_predict_gives_class_probabilities(group_bundles, tmp_path):
    dense, fair = group_bundles
    images = sorted((fair.path.parent.parent / "x").glob("*"))  # no images: use the data set's
    root = fair.manifest["data"]["root"]
    files = [f"{root}/{i}" for i in fair.split("test")["ids"][:5]]
    result = CliRunner().invoke(main, ["predict", str(fair.path), *files, "--engine", "onnxruntime", "--out", "-"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("path", root))]
    header = lines[0].split(",")
    assert "p_race=White" in header and header[-3:] == ["gender", "race", "overridden"]
    row = dict(zip(header, lines[1].split(",")))
    race_p = [float(row[f"p_race={c}"]) for c in fair.manifest["output"]["heads"][1]["classes"]]
    assert sum(race_p) == pytest.approx(1, abs=1e-4)
    assert row["race"] == fair.manifest["output"]["heads"][1]["classes"][int(np.argmax(race_p))]
    assert not images


def test_sweep_study_tabulates_methods_as_the_supplement(group_bundles, tmp_path):
    from sparsebias.report.groups import write_comparison_report
    from sparsebias.study import Job, Run
    from sparsebias.study.groups import run_group_study

    dense, fair = group_bundles
    runs = [Run(Job("recipes/groups/dense.yaml", 0, "dense-s0"), dense, "dense", "joint"),
            Run(Job("recipes/groups/fairgrape.yaml", 0, "fairgrape-s0"), fair, "fairgrape", "joint"),
            Run(Job("recipes/groups/fairgrape.yaml", 1, "fairgrape-s1"), fair, "fairgrape", "joint")]
    study = run_group_study(tmp_path, runs[:2] + [Run(Job("x", 0, "ws-s0"), fair, "ws", "joint")])
    report = group_audit(group_inputs_from_bundles(fair, dense))
    row = study["table"]["fairgrape"]
    assert row["gender"]["std_dacc"] == pytest.approx(report["tasks"]["gender"]["compressed"]["by"]["gender x race"]["std_dacc"])
    assert row["race"]["ap"] == pytest.approx(np.mean(list(report["tasks"]["race"]["compressed"]["by"]["gender"]["group_ap"].values())))
    assert row["gender"]["ap_groups"] == "race" and row["gender x race"]["ap_groups"] is None
    assert study["table"]["No-Pruning"]["race"]["accuracy"] == pytest.approx(
        report["tasks"]["race"]["reference"]["by"]["gender x race"]["accuracy"])
    assert [f["task"] for f in study["findings"]] == ["gender", "race", "gender x race"]
    written = write_comparison_report(study, tmp_path / "study")
    md = (tmp_path / "study" / "study.md").read_text()
    assert "| gender | No-Pruning |" in md and "| race | gender | fairgrape |" in md and len(written) == 3
    assert (tmp_path / "audits" / "fairgrape-s0.json").is_file()
    # two seeds of a method: mean and sample std
    two = run_group_study(tmp_path, runs)
    assert two["table"]["fairgrape"]["gender"]["seeds"] == 1  # seed 1 has no dense run: skipped


def test_group_frames_are_the_reports(group_bundles, tmp_path):
    """One row per (head, grouping, group) for an audit, per (run, head) for a study, read from the documents."""
    import sparsebias
    from sparsebias.study import Job, Run, Study
    from sparsebias.study.groups import run_group_study

    dense, fair = group_bundles
    report = sparsebias.audit(fair, dense, replay=False)
    assert report.mode == "groups" and report.attributes == ["gender", "race", "gender x race"]
    frame = report.to_frame()
    by = report["tasks"]["race"]["compressed"]["by"]["gender"]
    for group, accuracy in by["group_accuracy"].items():
        assert frame.loc[("race", "gender", str(group)), "compressed_accuracy"] == pytest.approx(accuracy)
    pie_grouping = report["pie_grouping"]
    rates = report["tasks"]["gender"]["pie"]["rates"]
    assert frame.xs(pie_grouping, level="grouping").loc["gender"]["pie_rate"].to_dict() == pytest.approx(rates)
    runs = [Run(Job("recipes/groups/dense.yaml", 0, "dense-s0"), dense, "dense", "joint"),
            Run(Job("recipes/groups/fairgrape.yaml", 0, "fairgrape-s0"), fair, "fairgrape", "joint")]
    study = Study(run_group_study(tmp_path, runs))
    rows = study.to_frame()
    assert rows.loc[("fairgrape-s0", "race"), "accuracy"] == pytest.approx(
        study.document["runs"][1]["tasks"]["race"]["accuracy"])
    assert set(rows.loc["dense-s0"].index) == {"gender", "race", "gender x race"}
