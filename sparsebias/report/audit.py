"""The audit report: report.json, report.md, a self-contained report.html, and PNG plots.

Markdown and HTML are rendered from the same list of sections, so they never disagree.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.files import markdown_table, save_figure, write_atomic, write_json, written_together

VIEW_LABELS = {"default": "p > 0.5", "calibrated": "calibrated thresholds", "overridden": "with overrides",
               "mitigated": "as deployed (bundle's thresholds and overrides)"}


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


def _f(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def summary_lines(report: dict, top: int = 5) -> list[str]:
    """What a person wants first: mean BA per identity, and the largest increases."""
    c, r = report["models"]["compressed"]["name"], report["models"]["reference"]["name"]
    lines = [f"{c} vs {r} on {report['samples']} {report['settings']['split']} samples, "
             f"{len(report['attributes'])} attribute(s)."]
    for view, per_identity in report["summary"]["mean_ba"].items():
        parts = []
        for identity, v in per_identity.items():
            comp, ref = v.get("compressed"), v.get("reference")
            delta = f" ({comp - ref:+.3f})" if comp is not None and ref is not None else ""
            parts.append(f"{identity} {_f(comp)} vs {_f(ref)}{delta}")
        if any(v.get("compressed") is not None for v in per_identity.values()):
            lines.append(f"mean BA, {VIEW_LABELS[view]}: " + "; ".join(parts))
    amplified = report["summary"]["amplified"]
    if amplified:
        lines.append(f"BA higher than the reference for {len(amplified)} (attribute, identity) pair(s); largest: "
                     + ", ".join(f"{e['attribute']} x {e['identity']} {e['compressed']:.3f} vs {e['reference']:.3f} "
                                 f"(+{e['increase']:.3f})" for e in amplified[:top]))
    else:
        lines.append("BA is nowhere higher than the reference's.")
    return lines


def sections(report: dict, images: dict[str, str]) -> list[Section]:
    m, names = report["metrics"], report["attributes"]
    comp, ref = m["compressed"], m["reference"]
    comp_views = list(comp["views"])
    out = [Section("Summary", summary_lines(report, top=10), images=[images["ba"]])]

    rows = []
    for a in names:
        rows.append([a, f"{_f(ref['views']['default']['accuracy'][a])} / {_f(comp['views']['default']['accuracy'][a])}",
                     f"{_f(ref['auc'][a])} / {_f(comp['auc'][a])}",
                     f"{_f(ref['uncertainty'][a])} / {_f(comp['uncertainty'][a])}",
                     f"{_f(ref['ece'][a])} / {_f(comp['ece'][a])}",
                     f"{_f(ref['views']['default']['tcb'][a], 2)} / {_f(comp['views']['default']['tcb'][a], 2)}",
                     _f(comp["views"].get("calibrated", {}).get("tcb", {}).get(a), 2),
                     f"{_f(ref['views']['default']['interdependence'][a], 2)} / "
                     f"{_f(comp['views']['default']['interdependence'][a], 2)}",
                     _f(report["pairwise"]["cie_rate"][a]), _f(report["pairwise"]["cie_dense_uncertain"][a], 2)])
    out.append(Section("Per attribute (reference / compressed)",
                       ["Accuracy, TCB and interdependence at p > 0.5; TCB (cal.) with calibrated thresholds. "
                        "CIE: decisions differ; CIE unc.: share of those the dense model was uncertain about."],
                       ["attribute", "accuracy", "AUC", "uncertainty", "ECE", "TCB", "TCB (cal.)", "interdep.",
                        "CIE", "CIE unc."], rows, [images["uncertainty"], images["tcb_ece"], images["reliability"]]))

    for identity in report["settings"]["identities"]:
        rows = []
        for a in names:
            ref_ba = ref["views"]["default"]["ba"][identity][a]
            cells = [_f(comp["views"][v]["ba"][identity][a]["value"]) for v in comp_views]
            reason = comp["views"]["default"]["ba"][identity][a]["reason"] or ""
            pie = report["pairwise"]["pie"][identity][a]
            rows.append([a, _f(ref_ba["value"]), *cells, _f(pie["gap"]), reason])
        out.append(Section(f"Bias amplification, identity {identity}",
                           ["Reference at p > 0.5, then the compressed model in each view. PIE gap: rate of "
                            f"dense-right-compressed-wrong among {identity}=1 minus among {identity}=0."],
                           ["attribute", "reference", *(f"compressed, {VIEW_LABELS[v]}" for v in comp_views),
                            "PIE gap", "undefined because"], rows))

    if report.get("groups"):
        g = report["groups"]
        rows = [[a, _f(v["accuracy"]), _f(v["fnr"]), _f(v["fpr"]), _f(v["std_dacc"]), _f(v["std_ap"]),
                 _f(v["std_dap"])] for a, v in g["attributes"].items()]
        out.append(Section(f"Group metrics over {' x '.join(g['by'])} ({len(g['groups'])} groups)",
                           ["FairGRAPE's metrics per attribute for the compressed model, against the reference."],
                           ["attribute", "accuracy", "FNR", "FPR", "Std(dAcc)", "Std(AP)", "Std(dAP)"], rows))
    s = report["settings"]
    out.append(Section("Settings", [
        f"Split {s['split']}; identities {', '.join(s['identities'])}; uncertain means {s['uncertainty_band'][0]} < p "
        f"< {s['uncertainty_band'][1]}; ECE over {s['ece_bins']} equal-width bins; BA undefined with fewer than "
        f"{s['ba_min_positives']} eval positives on a side or a relative training-rate gap below "
        f"{s['ba_min_relative_gap']}. Calibrated thresholds: compressed from the {s['thresholds']['compressed']}, "
        f"reference from the {s['thresholds']['reference']}. Definitions: {s['definitions']}.",
        *(f"Choice: {c}" for c in s["choices"]), *logits_lines(report["models"])]))
    return out


def logits_lines(models: dict) -> list[str]:
    """Where each model's logits came from: re-run on the data, or as the bundle stores them."""
    return [f"Logits, {role}: " + describe_logits_source(m["name"], m["logits"])
            for role, m in models.items() if "logits" in m]


def to_markdown(report: dict, parts: list[Section]) -> str:
    c, r = report["models"]["compressed"]["name"], report["models"]["reference"]["name"]
    lines = [f"# Bias audit: {c} against {r}", ""]
    for s in parts:
        lines += [f"## {s.title}", ""]
        lines += [f"{t}\n" for t in s.text]
        if s.header:
            lines += [markdown_table(s.header, s.rows), ""]
        lines += [f"![{Path(i).stem}]({Path(i).name})\n" for i in s.images]
    return "\n".join(lines) + "\n"


def to_html(report: dict, parts: list[Section], out_dir: Path) -> str:
    """One file with the plots inlined, so it can be mailed or attached to a CI run as is."""
    esc = html.escape
    c, r = report["models"]["compressed"]["name"], report["models"]["reference"]["name"]
    body = [f"<h1>Bias audit: {esc(c)} against {esc(r)}</h1>"]
    for s in parts:
        body.append(f"<h2>{esc(s.title)}</h2>")
        body += [f"<p>{esc(t)}</p>" for t in s.text]
        if s.header:
            body.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in s.header) + "</tr></thead><tbody>")
            body += ["<tr>" + "".join(f"<td>{esc(str(cell))}</td>" for cell in row) + "</tr>" for row in s.rows]
            body.append("</tbody></table>")
        for image in s.images:
            data = base64.b64encode((out_dir / image).read_bytes()).decode()
            body.append(f'<img alt="{esc(Path(image).stem)}" src="data:image/png;base64,{data}">')
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;"
             "font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child,"
             "th:first-child{text-align:left}img{max-width:100%;margin:1em 0}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Bias audit: {esc(c)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def figures(report: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, names = report["metrics"], report["attributes"]
    comp, ref = m["compressed"], m["reference"]
    figs = {}

    identities = report["settings"]["identities"]
    fig, ax = plt.subplots(figsize=(1.8 * len(identities) + 3, 4))
    series = [("reference", "reference, p > 0.5", "default"),
              *(("compressed", f"compressed, {VIEW_LABELS[v]}", v) for v in comp["views"])]
    width = 0.8 / len(series)
    for i, (role, label, view) in enumerate(series):
        means = [report["summary"]["mean_ba"][view][ident][role] for ident in identities]
        ax.bar(np.arange(len(identities)) + i * width, [np.nan if v is None else v for v in means], width, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(identities)) + width * (len(series) - 1) / 2, identities)
    ax.set_ylabel("mean bias amplification")
    ax.set_title("Bias amplification per identity (mean over attributes where defined)")
    ax.legend(fontsize=7)
    figs["ba"] = fig

    def per_attribute(ax, metric_ref, metric_comp, title):
        y = np.arange(len(names))
        ax.barh(y - 0.2, [np.nan if metric_ref[a] is None else metric_ref[a] for a in names], 0.4, label="reference")
        ax.barh(y + 0.2, [np.nan if metric_comp[a] is None else metric_comp[a] for a in names], 0.4, label="compressed")
        ax.set_yticks(y, names, fontsize=6)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.legend(fontsize=7)

    height = max(3, 0.18 * len(names) + 1)
    fig, ax = plt.subplots(figsize=(6, height))
    per_attribute(ax, ref["uncertainty"], comp["uncertainty"], "Uncertainty rate (0.1 < p < 0.9)")
    figs["uncertainty"] = fig

    fig, axes = plt.subplots(1, 2, figsize=(11, height))
    per_attribute(axes[0], ref["views"]["default"]["tcb"], comp["views"]["default"]["tcb"], "TCB at p > 0.5 (1 = unbiased)")
    axes[0].axvline(1, color="black", lw=0.8)
    per_attribute(axes[1], ref["ece"], comp["ece"], "Expected calibration error")
    figs["tcb_ece"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1)
    for role, data in (("reference", ref), ("compressed", comp)):
        rel = data["reliability"]
        pts = [(p, y) for p, y in zip(rel["mean_p"], rel["mean_y"]) if p is not None]
        ax.plot([p for p, _ in pts], [y for _, y in pts], marker="o", label=role)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability, all attributes pooled")
    ax.legend()
    figs["reliability"] = fig
    return figs


def write_audit_report(report: dict, out_dir: Path) -> list[Path]:
    return write_report(report, out_dir, figures(report), sections)


@written_together
def write_report(report: dict, out_dir: Path, figs: dict, make_sections) -> list[Path]:
    """Plots, report.json, report.md and report.html into out_dir, all or none."""
    out_dir = Path(out_dir)
    images = {}
    written = []
    for key, fig in figs.items():
        path = save_figure(fig, out_dir / f"{key.replace(' ', '_')}.png")
        images[key] = path.name
        written.append(path)
    parts = make_sections(report, images)
    written.append(write_json(out_dir / "report.json", report))
    written.append(write_atomic(out_dir / "report.md", to_markdown(report, parts)))
    written.append(write_atomic(out_dir / "report.html", to_html(report, parts, out_dir)))
    return written


def describe_logits_source(name: str, source: dict) -> str:
    """One line for reports and the gate."""
    if source["source"] == "stored":
        return f"{name}: {source['note']}"
    worst = max(source["max_abs_diff"].values())
    samples = " and ".join(f"{n} {split}" for split, n in source["samples"].items())
    stored = "".join(f"; its {split} logits are as stored, not re-run" for split in source["not_re_run"])
    return (f"{name}: re-run with {source['engine']['engine']} on {samples} images; the stored logits agree "
            f"(max |difference| {worst:.2g}, tolerance {source['tolerance']:g}){stored}")
