"""Reports of group-mode audits: one audit (report.md/html/json + PNG), and the method
comparison of a sweep in the layout of FairGRAPE's supplement, Tables 1 and 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..auditing.groups import intersection, mean_ap, table2_grouping
from ..core.files import markdown_table, save_figure, write_atomic, write_json, written_together
from .audit import Section, logits_lines, write_report


def _pct(x, digits=1):
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}"


def _f(x, digits=3):
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def summary_lines(report: dict) -> list[str]:
    c, r = report["models"]["compressed"]["name"], report["models"]["reference"]["name"]
    grouping = intersection(report)
    lines = [f"{c} vs {r}, {report['split']} split, groups by {grouping}:"]
    for task, t in report["tasks"].items():
        m, ref = t["compressed"]["by"][grouping], t["reference"]["by"][grouping]
        lines.append(f"  {task:16s} accuracy {_pct(m['accuracy'])}% (reference {_pct(ref['accuracy'])}%), "
                     f"FNR {_pct(m['fnr'], 2)}, FPR {_pct(m['fpr'], 2)}, Std(dAcc) {_pct(m['std_dacc'], 2)}, "
                     f"PIE gap ({t['pie']['reference_group']} vs rest) {_pct(t['pie']['gap'], 2)}")
    return lines


def sections(report: dict, images: dict[str, str]) -> list[Section]:
    grouping = intersection(report)
    parts = [Section("Setting", text=[
        f"Split {report['split']}; groupings: {', '.join(report['groupings'])}. Tasks are the model's class heads "
        "and, with two heads, their joint classification. Percentages as in FairGRAPE's supplement; "
        "Std(dAcc) is the sample standard deviation over groups of (compressed - reference) accuracy.",
        *logits_lines(report["models"])])]
    rows = []
    for task, t in report["tasks"].items():
        for side in ("reference", "compressed"):
            m = t[side]["by"][grouping]
            rows.append([task, report["models"][side]["name"], _pct(m["accuracy"]), _pct(m["fnr"], 2),
                         _pct(m["fpr"], 2), _pct(m.get("std_dacc"), 2)])
    parts.append(Section(f"Accuracy and bias (supplement Table 1 layout), groups by {grouping}",
                         header=["task", "model", "Acc", "FNR", "FPR", "Std(dAcc)"], rows=rows))
    rows = []
    for task, t in report["tasks"].items():
        by = table2_grouping(report, task)
        for side in ("reference", "compressed") if by else ():
            m = t[side]["by"][by]
            rows.append([task, by, report["models"][side]["name"], _f(mean_ap(m)), _f(m["std_ap"]),
                         _f(m.get("std_dap"))])
    parts.append(Section("Average precision by group (supplement Table 2 layout)",
                         text=["AP is one-vs-rest, macro over classes, per group; the AP column is its mean over groups. "
                               "Each single task is grouped by the other sensitive column, as in the supplement."],
                         header=["task", "groups", "model", "AP", "Std(AP)", "Std(dAP)"], rows=rows))
    for task, t in report["tasks"].items():
        by = table2_grouping(report, task) or grouping
        groups = list(t["compressed"]["by"][by]["group_accuracy"])
        parts.append(Section(f"{task}: accuracy per {by} group", header=["group", "samples", "reference", "compressed", "change"],
                             rows=[[g, report["group_sizes"][by][g], _pct(t["reference"]["by"][by]["group_accuracy"][g]),
                                    _pct(t["compressed"]["by"][by]["group_accuracy"][g]),
                                    _pct(t["compressed"]["by"][by]["group_accuracy"][g]
                                         - t["reference"]["by"][by]["group_accuracy"][g])] for g in groups],
                             images=[images[f"groups_{task}"]] if f"groups_{task}" in images else []))
    rows = [[task, t["pie"]["reference_group"], _pct(t["pie"]["rate"], 2), _pct(t["pie"]["rate_reference_group"], 2),
             _pct(t["pie"]["rate_rest"], 2), _pct(t["pie"]["gap"], 2)] for task, t in report["tasks"].items()]
    parts.append(Section(f"PIE: right under the reference, wrong compressed (supplement Figure 4), by {report['pie_grouping']}",
                         header=["task", "reference group", "PIE %", "in group %", "rest %", "gap (rest - group)"],
                         rows=rows, images=[images["pie"]] if "pie" in images else []))
    rows = []
    for task, t in report["tasks"].items():
        for side in ("reference", "compressed"):
            s = t[side]
            buckets = "; ".join(f"{k}: F1 {_pct(v['f1'])} ({v['classes']} cl.)" for k, v in s["by_class_size"].items())
            rows.append([task, report["models"][side]["name"], _pct(s["precision"]), _pct(s["recall"]), _pct(s["f1"]),
                         _f(s["entropy"]), buckets])
    parts.append(Section("Macro precision, recall, F1 by class size and class-balanced entropy (CVPR Appendix L)",
                         header=["task", "model", "P", "R", "F1", "entropy", "F1 by test class size"], rows=rows))
    return parts


def figures(report: dict) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    for task, t in report["tasks"].items():
        by = table2_grouping(report, task) or intersection(report)
        groups = list(t["compressed"]["by"][by]["group_accuracy"])
        x = np.arange(len(groups))
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(groups) + 2), 3.2))
        for k, side in enumerate(("reference", "compressed")):
            ax.bar(x + (k - 0.5) * 0.4, [t[side]["by"][by]["group_accuracy"][g] for g in groups], 0.4,
                   label=report["models"][side]["name"])
        ax.set_xticks(x, groups, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{task}: accuracy per {by} group")
        ax.legend(fontsize=8)
        figs[f"groups_{task}"] = fig
    fig, ax = plt.subplots(figsize=(6, 3))
    tasks = list(report["tasks"])
    x = np.arange(len(tasks))
    pie = [report["tasks"][t]["pie"] for t in tasks]
    ax.bar(x - 0.2, [p["rate_reference_group"] for p in pie], 0.4, label=pie[0]["reference_group"])
    ax.bar(x + 0.2, [p["rate_rest"] for p in pie], 0.4, label="rest")
    ax.set_xticks(x, tasks)
    ax.set_ylabel("PIE rate")
    ax.legend(fontsize=8)
    figs["pie"] = fig
    return figs


def write_group_report(report: dict, out_dir: Path) -> list[Path]:
    return write_report(report, out_dir, figures(report), sections)


# ---------------------------------------------------------------- a sweep's method comparison

def _cell(entry: dict, key: str, scale=100.0, digits=1) -> str:
    value, spread = entry.get(key), entry.get(f"{key}_std")
    if value is None:
        return "-"
    text = f"{scale * value:.{digits}f}"
    return text + (f" ± {scale * spread:.{digits}f}" if spread is not None else "")


def comparison_markdown(study: dict) -> str:
    arch, methods = study["architecture"], study["methods"]
    pruned = [m for m in methods if m != "No-Pruning"]
    sparsity = np.mean([study["sparsity"][m] for m in pruned]) if pruned else 0.0
    seeds = max(e["seeds"] for m in methods for e in study["table"][m].values())
    lines = [f"# Pruning methods compared on group tasks: {arch}, {sparsity:.0%} sparsity", "",
             f"Runs in {study['out']}; {seeds} seed(s) per method (mean ± sample std where more than one). "
             "Percentages; Std(dAcc) over the intersectional groups; AP per group as the supplement's Table 2.", "",
             "## Accuracy and bias (supplement Table 1 layout)", ""]
    rows = [[task, m, _cell(e, "accuracy"), _cell(e, "fnr", digits=2), _cell(e, "fpr", digits=2),
             _cell(e, "std_dacc", digits=2)]
            for task in study["tasks"] for m in methods for e in [study["table"][m][task]]]
    lines += [markdown_table(["task", "method", "Acc (↑)", "FNR (↓)", "FPR (↓)", "Std(ΔAcc) (↓)"], rows), ""]
    ap_tasks = [t for t in study["tasks"] if study["table"][methods[0]][t]["ap_groups"]]
    if ap_tasks:
        rows = [[task, study["table"][m][task]["ap_groups"], m, _cell(e, "ap", 1, 3), _cell(e, "std_ap", 1, 3),
                 _cell(e, "std_dap", 1, 3)]
                for task in ap_tasks for m in methods for e in [study["table"][m][task]]]
        lines += ["## Average precision by group (supplement Table 2 layout)", "",
                  markdown_table(["task", "group", "method", "AP (↑)", "Std(AP) (↓)", "Std(ΔAP) (↓)"], rows), ""]
    rows = [[task, m, _cell(study["table"][m][task], "pie_gap", digits=2)] for task in study["tasks"] for m in pruned]
    lines += ["## PIE gap, rest minus reference group (supplement Figure 4)", "",
              markdown_table(["task", "method", "PIE gap (pp)"], rows), "", "![comparison](comparison.png)", ""]
    if study["findings"]:
        lines += ["## Does FairGRAPE give the lowest Std(ΔAcc) and the highest accuracy?", ""]
        for f in study["findings"]:
            lines.append(f"- {f['task']}: lowest Std(ΔAcc) {f['lowest_std_dacc']} "
                         f"({'FairGRAPE' if f['fairgrape_lowest_std_dacc'] else 'not FairGRAPE'}), highest accuracy "
                         f"{f['highest_accuracy']} ({'FairGRAPE' if f['fairgrape_highest_accuracy'] else 'not FairGRAPE'}).")
        lines.append("")
    return "\n".join(lines)


def comparison_figure(study: dict):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pruned = [m for m in study["methods"] if m != "No-Pruning"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    x = np.arange(len(study["tasks"]))
    width = 0.8 / max(len(pruned), 1)
    for k, m in enumerate(pruned):
        entries = [study["table"][m][t] for t in study["tasks"]]
        axes[0].bar(x + k * width, [100 * e["accuracy"] for e in entries], width, label=m)
        axes[1].bar(x + k * width, [100 * (e["std_dacc"] or 0) for e in entries], width, label=m)
    dense = [100 * study["table"]["No-Pruning"][t]["accuracy"] for t in study["tasks"]]
    axes[0].scatter(x + 0.4 - width / 2, dense, marker="_", s=400, c="k", label="No-Pruning", zorder=3)
    for ax, title in zip(axes, ("accuracy (%)", "Std(ΔAcc) over groups (pp)")):
        ax.set_xticks(x + 0.4 - width / 2, study["tasks"])
        ax.set_title(title)
    axes[0].legend(fontsize=8, ncol=2)
    return fig


@written_together
def write_comparison_report(study: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    return [save_figure(comparison_figure(study), out_dir / "comparison.png"),
            write_json(out_dir / "study.json", study),
            write_atomic(out_dir / "study.md", comparison_markdown(study))]
