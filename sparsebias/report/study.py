"""The study report: study.json, study.md (Table 1, Table J.1, single vs joint, the findings) and figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.files import markdown_table, save_figure, write_atomic, write_json, written_together
from ..study.runs import GMP_PT, backdoored, gmp_pt, level_label, trained_task

SYSTEMATIC = [("tcb", "Threshold calibration bias"), ("ece", "Expected calibration error"),
              ("interdependence", "Interdependence (R^2)"), ("uncertainty", "Uncertainty")]


def _ms(entry, digits=3):
    if entry["mean"] is None:
        return "-"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}" if entry["std"] else f"{entry['mean']:.{digits}f}"


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
    return markdown_table(["Metric", *(level_label(lv["level"]) for lv in levels)], rows)


def table_j1(study: dict, task: str = "joint") -> str:
    levels = study["levels"][task]
    rows = [[name, *(_ms(lv[key], 4) for lv in levels)] for key, name in
            [("accuracy", "Accuracy"), ("auc", "AUC"), ("ece", "Expected Calibration Error"),
             ("interdependence", "Interdependence"), ("tcb", "Threshold Calibration Bias"),
             ("uncertainty", "Uncertainty")]]
    identities = list(levels[0]["ba"])   # the study's, and the backdoor flag on backdoored data
    rows += [[f"'{i}' Bias Amplification", *(_ms(lv["ba"][i], 4) for lv in levels)] for i in identities]
    rows += [[f"'{i}' BA, calibrated thresholds", *(_ms(lv["ba_calibrated"][i], 4) for lv in levels)]
             for i in identities]
    return markdown_table(["Sparsity / Metric", *(level_label(lv["level"]) for lv in levels)], rows)


SINGLE_VS_JOINT = [("accuracy", "Accuracy"), ("uncertainty", "Uncertainty"), ("tcb", "Threshold calibration bias")]


def single_vs_joint_rows(study: dict, identity: str) -> list[dict]:
    """Each single-attribute run's own numbers beside the joint run's for that attribute, per
    sparsity level both have (the paper's Figure 3); empty without both kinds of task."""
    if "joint" not in study["tasks"]:
        return []
    joint = {lv["level"]: lv for lv in study["levels"]["joint"]}
    rows = []
    for attribute in (t for t in study["tasks"] if t != "joint" and not backdoored(t)):
        for lv in study["levels"][attribute]:
            j = joint.get(lv["level"])
            if j is None:
                continue
            row = {"attribute": attribute, "level": lv["level"]}
            for metric, _ in SINGLE_VS_JOINT:
                row[metric] = (lv["per_attribute"][metric].get(attribute), j["per_attribute"][metric].get(attribute))
            row["ba"] = (lv["ba_per_attribute"][identity].get(attribute), j["ba_per_attribute"][identity].get(attribute))
            rows.append(row)
    return rows


def single_vs_joint(rows: list[dict], identity: str) -> str:
    cells = [[r["attribute"], level_label(r["level"]),
              *(_f(v) for key in (*(m for m, _ in SINGLE_VS_JOINT), "ba") for v in r[key])] for r in rows]
    return markdown_table(["attribute", "sparsity", "acc single", "acc joint", "unc. single", "unc. joint",
                           "TCB single", "TCB joint", f"BA({identity}) single", f"BA({identity}) joint"], cells)


def single_vs_joint_figure(rows: list[dict], identity: str):
    """The paper's Figure 3: one column per single-attribute task, one row per metric, single
    and joint training as two lines over sparsity."""
    import matplotlib.pyplot as plt

    attributes = list(dict.fromkeys(r["attribute"] for r in rows))
    metrics = [*SINGLE_VS_JOINT, ("ba", f"Bias amplification ({identity})")]
    fig, axes = plt.subplots(len(metrics), len(attributes), figsize=(4.2 * len(attributes), 2.6 * len(metrics)),
                             squeeze=False)
    for col, attribute in enumerate(attributes):
        mine = [r for r in rows if r["attribute"] == attribute]
        x = np.arange(len(mine))
        for row, (key, title) in enumerate(metrics):
            ax = axes[row][col]
            # a hollow circle and a cross: equal values stay visible as both
            for side, (label, style) in enumerate((("single", dict(marker="o", markersize=9, mfc="none")),
                                                   ("joint", dict(marker="x", markersize=7)))):
                ax.plot(x, [np.nan if r[key][side] is None else r[key][side] for r in mine], label=label, **style)
            ax.set_xticks(x, [level_label(r["level"]) for r in mine])
            ax.set_title(f"{attribute}: {title}", fontsize=9)
            if key == "ba":
                ax.axhline(0, color="gray", lw=0.8)
                ax.set_xlabel("sparsity (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Single-attribute vs joint training")
    fig.tight_layout()
    return fig


def backdoor_figure(study: dict):
    """The paper's Figure 4: BA with the backdoor flag as the identity, one line per backdoored
    task over sparsity (mean and standard deviation over seeds); None without such tasks."""
    import matplotlib.pyplot as plt

    tasks = [t for t in study["tasks"] if backdoored(t)]
    if not tasks:
        return None
    levels = {lv["level"]: lv["sparsity"] for t in tasks for lv in study["levels"][t]}
    order = sorted(levels, key=levels.get)
    fig, ax = plt.subplots(figsize=(6, 4))
    for task in tasks:
        mine = [lv for lv in study["levels"][task] if lv["ba"].get("backdoor", {}).get("mean") is not None]
        ax.errorbar([order.index(lv["level"]) for lv in mine], [lv["ba"]["backdoor"]["mean"] for lv in mine],
                    yerr=[lv["ba"]["backdoor"]["std"] or 0 for lv in mine], marker="o", capsize=3,
                    label=trained_task(task))
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(range(len(order)), [level_label(v) for v in order])
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("BA (backdoor flag as identity)")
    ax.set_title("Bias amplification of a backdoor", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _f(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def study_markdown(study: dict) -> str:
    found = study["findings"]
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
                         for i, a in per.items()) + ".", "",
             "The means of the other metrics over attributes are taken the same way: over the attributes where "
             "each is defined in every run of the task (interdependence is undefined for a label a model "
             "predicts constant); " + _left_out(study), "", "## Findings", "",
             markdown_table(["", "paper's finding", "paper (CelebA)", "here", "verdict"],
                            [[f["id"], f["claim"], f["paper"], f["numbers"],
                              {True: "reproduces", False: "**does not reproduce**",
                               None: "not tested"}[f["reproduces"]]] for f in found]), "",
             f"{sum(f['reproduces'] is True for f in found)} of {len(found)} findings reproduce; "
             f"{sum(f['reproduces'] is None for f in found)} not tested in this sweep.", ""]
    for task in study["tasks"]:
        base = trained_task(task)
        title = ("joint training" if base == "joint" else f"single-attribute training: {base}") + (
            ", backdoored data" if backdoored(task) else "")
        lines += [f"## Table 1 layout, {title}", "", table1(study, task), "",
                  f"## Table J.1 layout, {title}", "", table_j1(study, task), ""]
    svj = single_vs_joint_rows(study, identity)
    if svj:
        lines += ["## Single-attribute vs joint training (each attribute's own numbers)", "",
                  single_vs_joint(svj, identity), "", "Figure: `single_vs_joint.png` (Figure 3).", ""]
    if any(backdoored(t) for t in study["tasks"]):
        lines += ["Backdoored tasks: BA with the backdoor flag as the identity in their Table J.1 above; "
                  "figure: `backdoor.png` (Figure 4).", ""]
    for task, cies in study["cie"].items():
        if cies:
            lines += [f"## Compression-identified exemplars ({task})", "",
                      "Modal decisions over seeds; sample-attributes whose decisions tie across a model's seeds "
                      "have no modal label and are not counted.", "",
                      markdown_table(["sparsity", "runs (dense, compressed)", "CIE share", "CIEs",
                                      "dense-uncertain among CIEs", "dense-uncertain overall"],
                                     [[level_label(c["level"]), f"{c['dense_runs']}, {c['compressed_runs']}",
                                       f"{c['cie_share']:.4f}", c["cie_count"], _f(c["dense_uncertain_among_cies"]),
                                       f"{c['dense_uncertain_overall']:.3f}"] for c in cies]), ""]
    levels = study["levels"][study["tasks"][0]]
    lines += [f"## Overrides, mean BA ({identity})", "", markdown_table(
        ["sparsity", "none", *levels[0]["ba_overrides"][identity]],
        [[level_label(lv["level"]), _ms(lv["ba"][identity], 4),
          *(_ms(v, 4) for v in lv["ba_overrides"][identity].values())] for lv in levels]), "",
        "Figures: `systematic.png` (Figure 2), `ba.png` (BA per identity), `calibration.png` (Figure 5 left), "
        "`cie_uncertainty.png` (Figure 5 right), `overrides.png` (Figure 6)"
        + ("; GMP-PT's, from dense and the PT levels, the same names with `pt_` before them (Appendix E)"
           if f"{GMP_PT}_" in ladders(levels) else "") + ".", ""]
    return "\n".join(lines) + "\n"


def _left_out(study: dict) -> str:
    parts = []
    for task, per_metric in study["systematic_attributes"].items():
        every = study["levels"][task][0]["per_attribute"]
        for metric, common in per_metric.items():
            missing = [a for a in every[metric] if a not in common]
            if missing:
                parts.append(f"{task}, {metric}: {len(common)} of {len(every[metric])} attributes, "
                             f"without {', '.join(missing)}")
    return ("; ".join(parts) if parts else "every metric is defined for every attribute in every run") + "."


def figures(study: dict) -> dict:
    """The first task's figures, a set per ladder (`ladders`), then Figures 3 and 4 where they apply."""
    import matplotlib

    matplotlib.use("Agg")

    task = study["tasks"][0]
    figs = {}
    for prefix, levels in ladders(study["levels"][task]).items():
        names = {lv["level"] for lv in levels}
        cies = [c for c in study["cie"].get(task) or [] if c["level"] in names]
        figs.update({prefix + name: fig for name, fig in
                     _ladder_figures(levels, cies, study["identities"], study["systematic_attributes"][task],
                                     " (GMP-PT)" if prefix else "").items()})
    rows = single_vs_joint_rows(study, study["identities"][0])
    if rows:
        figs["single_vs_joint"] = single_vs_joint_figure(rows, study["identities"][0])
    backdoor = backdoor_figure(study)
    if backdoor is not None:
        figs["backdoor"] = backdoor
    return figs


def ladders(levels: list[dict]) -> dict[str, list[dict]]:
    """The levels drawn together, by figure-name prefix: all of them (''), unless GMP-PT levels,
    whose sparsities are GMP-RI's, stand beside other pruned levels: then those go apart ('pt_'),
    from the same dense level."""
    pt = [lv for lv in levels if gmp_pt(lv["level"])]
    rest = [lv for lv in levels if not gmp_pt(lv["level"])]
    if not pt or len(rest) < 2:
        return {"": levels}
    return {"": rest, f"{GMP_PT}_": [lv for lv in rest if lv["level"] == "dense"] + pt}


def _ladder_figures(levels: list[dict], cies: list[dict], identities: list[str], common: dict, method: str) -> dict:
    import matplotlib.pyplot as plt

    x = np.arange(len(levels))
    names = [level_label(lv["level"]) for lv in levels]
    figs = {}

    fig, axes = plt.subplots(1, len(SYSTEMATIC), figsize=(4.2 * len(SYSTEMATIC), 3.8))
    for ax, (key, title) in zip(axes, SYSTEMATIC):
        data = [[lv["per_attribute"][key][a] for a in common[key]] for lv in levels]  # the means' attributes
        ax.boxplot(data, positions=x, widths=0.6, whis=2.5, flierprops={"markersize": 3})
        ax.plot(x, [np.mean(d) if d else np.nan for d in data], color="black", lw=2.5)
        ax.set_xticks(x, names)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("sparsity (%)")
    fig.suptitle(f"Systematic bias across attributes{method} (box: attributes; line: mean)")
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
    lines(ax, [(i, [lv["ba"][i] for lv in levels]) for i in identities], f"Mean bias amplification{method}")
    figs["ba"] = fig

    fig, axes = plt.subplots(1, len(identities), figsize=(4.2 * len(identities), 3.8), squeeze=False)
    for ax, i in zip(axes[0], identities):
        lines(ax, [("p > 0.5", [lv["ba"][i] for lv in levels]),
                   ("calibrated thresholds", [lv["ba_calibrated"][i] for lv in levels])], f"BA ({i}){method}")
    fig.tight_layout()
    figs["calibration"] = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    if cies:
        xs = np.arange(len(cies))
        ax.bar(xs - 0.2, [c["dense_uncertain_overall"] for c in cies], 0.4, label="all test sample-attributes")
        ax.bar(xs + 0.2, [np.nan if c["dense_uncertain_among_cies"] is None else c["dense_uncertain_among_cies"]
                          for c in cies], 0.4, label="CIEs")
        ax.set_xticks(xs, [level_label(c["level"]) for c in cies])
        ax.legend(fontsize=8)
    ax.set_ylabel("share uncertain under the dense model")
    ax.set_xlabel("sparsity (%)")
    ax.set_title(f"Dense-model uncertainty: CIEs vs all{method}")
    figs["cie_uncertainty"] = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    i = identities[0]
    lines(ax, [("no override", [lv["ba"][i] for lv in levels])]
          + [(k, [lv["ba_overrides"][i][k] for lv in levels]) for k in levels[0]["ba_overrides"][i]],
          f"Effect of overrides on BA ({i}){method}, ranked by dense uncertainty")
    figs["overrides"] = fig
    return figs


def write_study_report(study: dict, out_dir: Path) -> list[Path]:
    if study.get("kind") == "groups":
        from .groups import write_comparison_report
        return write_comparison_report(study, out_dir)
    return _write_ladder_report(study, out_dir)


@written_together
def _write_ladder_report(study: dict, out_dir: Path) -> list[Path]:
    written = [save_figure(fig, out_dir / f"{name}.png") for name, fig in figures(study).items()]
    written.append(write_json(out_dir / "study.json", study))
    written.append(write_atomic(out_dir / "study.md", study_markdown(study)))
    return written
