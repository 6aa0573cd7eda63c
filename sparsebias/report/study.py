"""The study report: study.json, study.md (Table 1, Table J.1, single vs joint, the findings) and figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import markdown_table, save_figure, write_atomic, write_json

LABEL = {"dense": "Dense", "99_5": "99.5", "nm_2_4": "2:4", "nm_1_4": "1:4", "nm_1_8": "1:8"}
SYSTEMATIC = [("tcb", "Threshold calibration bias"), ("ece", "Expected calibration error"),
              ("interdependence", "Interdependence (R^2)"), ("uncertainty", "Uncertainty")]


def _ms(entry, digits=3):
    if entry["mean"] is None:
        return "-"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}" if entry["std"] else f"{entry['mean']:.{digits}f}"


def _label(level):
    return LABEL.get(level, level.replace("_", "."))


def table1(study: dict, task: str = "joint") -> str:
    levels = study["levels"][task]
    speed = {t["level"]: t for t in study["throughput"]}
    rows = [["Accuracy", *(_ms(lv["accuracy"]) for lv in levels)],
            ["AUC", *(_ms(lv["auc"]) for lv in levels)],
            ["Inf. FLOPs (B)", *(f"{lv['flops'] / 1e9:.3f}" for lv in levels)]]
    for engine in ("deepsparse", "onnxruntime"):
        if any(engine in speed.get(lv["level"], {}) for lv in levels):
            rows.append([f"Inf. items/s ({engine})",
                         *(f"{speed[lv['level']][engine]:.0f}" if engine in speed.get(lv["level"], {}) else "-"
                           for lv in levels)])
    return markdown_table(["Metric", *(_label(lv["level"]) for lv in levels)], rows)


def table_j1(study: dict, task: str = "joint") -> str:
    levels = study["levels"][task]
    rows = [[name, *(_ms(lv[key], 4) for lv in levels)] for key, name in
            [("accuracy", "Accuracy"), ("auc", "AUC"), ("ece", "Expected Calibration Error"),
             ("interdependence", "Interdependence"), ("tcb", "Threshold Calibration Bias"),
             ("uncertainty", "Uncertainty")]]
    rows += [[f"'{i}' Bias Amplification", *(_ms(lv["ba"][i], 4) for lv in levels)] for i in study["identities"]]
    rows += [[f"'{i}' BA, calibrated thresholds", *(_ms(lv["ba_calibrated"][i], 4) for lv in levels)]
             for i in study["identities"]]
    return markdown_table(["Sparsity / Metric", *(_label(lv["level"]) for lv in levels)], rows)


def single_vs_joint(study: dict, identity: str) -> str | None:
    singles = [t for t in study["tasks"] if t != "joint"]
    if not singles or "joint" not in study["tasks"]:
        return None
    joint = {lv["level"]: lv for lv in study["levels"]["joint"]}
    rows = []
    for attribute in singles:
        for lv in study["levels"][attribute]:
            j = joint.get(lv["level"])
            if j is None:
                continue
            cells = []
            for metric in ("accuracy", "uncertainty", "tcb"):
                cells += [_f(lv["per_attribute"][metric].get(attribute)), _f(j["per_attribute"][metric].get(attribute))]
            cells += [_f(lv["ba_per_attribute"][identity].get(attribute)),
                      _f(j["ba_per_attribute"][identity].get(attribute))]
            rows.append([attribute, _label(lv["level"]), *cells])
    return markdown_table(["attribute", "sparsity", "acc single", "acc joint", "unc. single", "unc. joint",
                           "TCB single", "TCB joint", f"BA({identity}) single", f"BA({identity}) joint"], rows)


def _f(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def findings(study: dict) -> list[dict]:
    """The paper's findings, each checked on this study's numbers: reproduces or not, and the figures."""
    out = []
    levels = study["levels"].get("joint") or study["levels"][study["tasks"][0]]
    if len(levels) < 2:
        return out
    dense, sparse = levels[0], levels[1:]
    top = levels[-1]
    mean = lambda lv, key: lv[key]["mean"]  # noqa: E731

    up_to_95 = [lv for lv in sparse if lv["sparsity"] <= 0.955]
    if up_to_95:
        worst = min(mean(lv, "accuracy") - mean(dense, "accuracy") for lv in up_to_95)
        out.append(_finding("Accuracy is roughly flat up to 95% sparsity", worst >= -0.01,
                            f"largest drop from dense up to 95%: {worst:+.4f} (flat: within 0.01)"))
    for key, name, sign in (("uncertainty", "Uncertainty rises with sparsity", 1),
                            ("tcb", "TCB falls with sparsity", -1)):
        rho = _spearman([lv["sparsity"] for lv in levels], [mean(lv, key) for lv in levels])
        out.append(_finding(name, sign * rho > 0 and sign * (mean(top, key) - mean(dense, key)) > 0,
                            f"dense {mean(dense, key):.4f}, highest sparsity {mean(top, key):.4f}; "
                            f"Spearman rho with sparsity {rho:+.2f}"))
    high = [lv for lv in sparse if lv["sparsity"] >= 0.945]
    for identity in study["identities"]:
        if not high or dense["ba"][identity]["mean"] is None:
            continue
        values = [lv["ba"][identity]["mean"] for lv in high if lv["ba"][identity]["mean"] is not None]
        if values:
            out.append(_finding(f"BA ({identity}) rises at 95% sparsity and above",
                                np.mean(values) > dense["ba"][identity]["mean"],
                                f"dense {dense['ba'][identity]['mean']:+.4f}; at >= 95%: "
                                + ", ".join(f"{_label(lv['level'])} {lv['ba'][identity]['mean']:+.4f}" for lv in high
                                            if lv["ba"][identity]["mean"] is not None)))
    lowered = [(lv, i) for lv in levels for i in study["identities"]
               if lv["ba"][i]["mean"] is not None and lv["ba_calibrated"][i]["mean"] is not None]
    if lowered:
        count = sum(lv["ba_calibrated"][i]["mean"] < lv["ba"][i]["mean"] for lv, i in lowered)
        out.append(_finding("Threshold calibration lowers BA", count > len(lowered) / 2,
                            f"lower with calibrated thresholds in {count} of {len(lowered)} (sparsity, identity) "
                            f"pairs; mean change {np.mean([lv['ba_calibrated'][i]['mean'] - lv['ba'][i]['mean'] for lv, i in lowered]):+.4f}"))
    identity = study["identities"][0]
    claim = f"Overriding the most uncertain samples lowers BA ({identity}) at the highest sparsity"
    positive = [lv for lv in sparse if (lv["ba"][identity]["mean"] or 0) > 0]
    if positive:  # the paper's 99.5%, or the sparsest level where there is amplification to lower
        lv = positive[-1]
        base = lv["ba"][identity]["mean"]
        after = {k: v["mean"] for k, v in lv["ba_overrides"][identity].items() if v["mean"] is not None}
        out.append(_finding(claim, all(after[k] < base for k in after if "true" in k),
                            f"{_label(lv['level'])}: BA {base:+.4f}; "
                            + "; ".join(f"{k}: {100 * (base - v) / base:.0f}% lower" for k, v in after.items())
                            + " (paper, 99.5%, true labels: 23% and 35% lower)"))
    else:
        out.append(_finding(claim, None, f"no pruned model has positive mean BA ({identity}) to lower"))
    cies = study["cie"].get("joint") or []
    enriched = [c for c in cies if c["dense_uncertain_among_cies"] is not None]
    if enriched:
        ratio = [c["dense_uncertain_among_cies"] / c["dense_uncertain_overall"] for c in enriched]
        out.append(_finding("CIEs are enriched for dense-uncertain samples", min(ratio) > 1,
                            "share dense-uncertain among CIEs vs all test sample-attributes: "
                            + ", ".join(f"{_label(c['level'])} {c['dense_uncertain_among_cies']:.2f} vs "
                                        f"{c['dense_uncertain_overall']:.2f}" for c in enriched)))
    singles = [t for t in study["tasks"] if t != "joint"]
    if singles and "joint" in study["tasks"]:
        joint = study["levels"]["joint"][0]
        pairs = []
        for a in singles:
            s = study["levels"][a][0]
            if s["level"] == joint["level"]:
                sv, jv = s["ba_per_attribute"][identity].get(a), joint["ba_per_attribute"][identity].get(a)
                if sv is not None and jv is not None:
                    pairs.append((a, sv, jv))
        if pairs:
            out.append(_finding(f"Single-attribute training shows higher BA ({identity}) than joint at low sparsity",
                                sum(sv > jv for _, sv, jv in pairs) > len(pairs) / 2,
                                "dense: " + ", ".join(f"{a} {sv:+.3f} vs {jv:+.3f}" for a, sv, jv in pairs)))
    return out


def _finding(claim, holds, numbers) -> dict:
    """holds: True, False, or None where this data gives nothing to test the claim on."""
    return {"claim": claim, "reproduces": None if holds is None else bool(holds), "numbers": numbers}


def _spearman(x, y) -> float:
    """Rank correlation: Pearson's r of the average ranks."""
    from ..metrics.classification import _average_ranks

    rx, ry = _average_ranks(np.asarray(x, float)), _average_ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def study_markdown(study: dict, found: list[dict]) -> str:
    identity = study["identities"][0]
    n_runs = len(study["runs"])
    lines = ["# Study: bias in pruned models, by sparsity", "",
             f"{n_runs} audited run(s) from `{study['out']}`; tasks: {', '.join(study['tasks'])}. Means over "
             "attributes, then mean ± standard deviation over seeds. Each number comes from the per-run audit "
             "reports in `audits/`.", "",
             "Bias amplification is undefined for an attribute a model never predicts positive (and where the "
             "data give too few positives), so BA means are taken over the attributes where it is defined in "
             "every run and view of the task, the same set at every sparsity: "
             + "; ".join(f"{t}, {i}: {len(a)} ({', '.join(a)})" for t, per in study["ba_attributes"].items()
                         for i, a in per.items()) + ".", "", "## Findings", "",
             markdown_table(["paper's finding", "on this data", "numbers"],
                            [[f["claim"], {True: "reproduces", False: "**does not reproduce**",
                                           None: "cannot be tested here"}[f["reproduces"]], f["numbers"]]
                             for f in found]), ""]
    for task in study["tasks"]:
        title = "joint training" if task == "joint" else f"single-attribute training: {task}"
        lines += [f"## Table 1 layout, {title}", "", table1(study, task), "",
                  f"## Table J.1 layout, {title}", "", table_j1(study, task), ""]
    svj = single_vs_joint(study, identity)
    if svj:
        lines += ["## Single-attribute vs joint training (each attribute's own numbers)", "", svj, ""]
    for task, cies in study["cie"].items():
        if cies:
            lines += [f"## Compression-identified exemplars ({task})", "",
                      "Modal decisions over seeds; sample-attributes whose decisions tie across a model's seeds "
                      "have no modal label and are not counted.", "",
                      markdown_table(["sparsity", "runs (dense, compressed)", "CIE share", "CIEs",
                                      "dense-uncertain among CIEs", "dense-uncertain overall"],
                                     [[_label(c["level"]), f"{c['dense_runs']}, {c['compressed_runs']}",
                                       f"{c['cie_share']:.4f}", c["cie_count"], _f(c["dense_uncertain_among_cies"]),
                                       f"{c['dense_uncertain_overall']:.3f}"] for c in cies]), ""]
    levels = study["levels"][study["tasks"][0]]
    lines += [f"## Overrides, mean BA ({identity})", "", markdown_table(
        ["sparsity", "none", *levels[0]["ba_overrides"][identity]],
        [[_label(lv["level"]), _ms(lv["ba"][identity], 4),
          *(_ms(v, 4) for v in lv["ba_overrides"][identity].values())] for lv in levels]), "",
        "Figures: `systematic.png` (Figure 2), `ba.png` (BA per identity), `calibration.png` (Figure 5 left), "
        "`cie_uncertainty.png` (Figure 5 right), `overrides.png` (Figure 6).", ""]
    return "\n".join(lines) + "\n"


def figures(study: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = study["tasks"][0]
    levels = study["levels"][task]
    x = np.arange(len(levels))
    names = [_label(lv["level"]) for lv in levels]
    figs = {}

    fig, axes = plt.subplots(1, len(SYSTEMATIC), figsize=(4.2 * len(SYSTEMATIC), 3.8))
    for ax, (key, title) in zip(axes, SYSTEMATIC):
        data = [[v for v in lv["per_attribute"][key].values() if v is not None] for lv in levels]
        ax.boxplot(data, positions=x, widths=0.6, whis=2.5, flierprops={"markersize": 3})
        ax.plot(x, [np.mean(d) if d else np.nan for d in data], color="black", lw=2.5)
        ax.set_xticks(x, names)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("sparsity (%)")
    fig.suptitle("Systematic bias across attributes (box: attributes; line: mean)")
    fig.tight_layout()
    figs["systematic"] = fig

    def lines(ax, series, title):
        for label, values in series:
            means = [np.nan if v["mean"] is None else v["mean"] for v in values]
            stds = [0 if v["std"] is None else v["std"] for v in values]
            ax.errorbar(x, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(x, names)
        ax.set_xlabel("sparsity (%)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)

    fig, ax = plt.subplots(figsize=(6, 4))
    lines(ax, [(i, [lv["ba"][i] for lv in levels]) for i in study["identities"]], "Mean bias amplification")
    figs["ba"] = fig

    identities = study["identities"]
    fig, axes = plt.subplots(1, len(identities), figsize=(4.2 * len(identities), 3.8), squeeze=False)
    for ax, i in zip(axes[0], identities):
        lines(ax, [("p > 0.5", [lv["ba"][i] for lv in levels]),
                   ("calibrated thresholds", [lv["ba_calibrated"][i] for lv in levels])], f"BA ({i})")
    fig.tight_layout()
    figs["calibration"] = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    cies = study["cie"].get(task) or []
    if cies:
        xs = np.arange(len(cies))
        ax.bar(xs - 0.2, [c["dense_uncertain_overall"] for c in cies], 0.4, label="all test sample-attributes")
        ax.bar(xs + 0.2, [np.nan if c["dense_uncertain_among_cies"] is None else c["dense_uncertain_among_cies"]
                          for c in cies], 0.4, label="CIEs")
        ax.set_xticks(xs, [_label(c["level"]) for c in cies])
        ax.legend(fontsize=8)
    ax.set_ylabel("share uncertain under the dense model")
    ax.set_xlabel("sparsity (%)")
    ax.set_title("Dense-model uncertainty: CIEs vs all")
    figs["cie_uncertainty"] = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    i = identities[0]
    lines(ax, [("no override", [lv["ba"][i] for lv in levels])]
          + [(k, [lv["ba_overrides"][i][k] for lv in levels]) for k in levels[0]["ba_overrides"][i]],
          f"Effect of overrides on BA ({i}), ranked by dense uncertainty")
    figs["overrides"] = fig
    return figs


def write_study_report(study: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    if study.get("kind") == "groups":
        from .groups import write_comparison_report
        return write_comparison_report(study, out_dir)
    found = findings(study)
    written = [save_figure(fig, out_dir / f"{name}.png") for name, fig in figures(study).items()]
    written.append(write_json(out_dir / "study.json", {**study, "findings": found}))
    written.append(write_atomic(out_dir / "study.md", study_markdown(study, found)))
    return written
