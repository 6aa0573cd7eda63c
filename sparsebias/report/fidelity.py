"""The fidelity report: a dense model's statistics beside CelebA's, as Markdown and a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.files import markdown_table, save_figure, write_atomic, write_json, written_together


def fidelity_markdown(result: dict) -> str:
    m, c = result["means"], result["celeba_means"]
    rows = [["mean accuracy", _f(m["accuracy"]), _f(c["accuracy"])],
            ["majority-class accuracy", _f(m["majority"]), "-"],
            ["accuracy over majority", _f(m["accuracy_over_majority"]), "-"],
            ["mean AUC", _f(m["auc"]), _f(c["auc"])],
            ["TCB", _f(m["tcb"]), _f(c["tcb"])],
            ["ECE", _f(m["ece"]), _f(c["ece"])],
            ["uncertainty rate (0.1 < p < 0.9)", _f(m["uncertainty"]), _f(c["uncertainty"])],
            ["label interdependence (R^2)", _f(m["interdependence"]), _f(c["interdependence"])]]
    rows += [[f"mean BA ({i}), {b['attributes']} attributes defined", _f(b["mean"]),
              _f(result["celeba_mean_ba"].get(i))] for i, b in result["ba"].items()]
    d = result["auc_distribution"]
    lines = [f"# Fidelity: {result['bundle']} beside CelebA",
             "",
             f"{result['split']} split, {result['samples']} samples, {result['attributes']} attributes. CelebA: the "
             "dense jointly trained ResNet18 of Iofinova et al. (CVPR 2023), Table J.1 and Tables J.2-J.6.",
             "",
             markdown_table(["statistic", "here", "CelebA"], rows),
             "",
             f"Per-attribute AUC: min {_f(d['min'])}, quartiles {_f(d['q25'])} / {_f(d['median'])} / "
             f"{_f(d['q75'])}, max {_f(d['max'])}; below 0.70: {', '.join(d['below_0.70']) or 'none'}; "
             f"below 0.75: {', '.join(d['below_0.75']) or 'none'}.",
             "",
             "## Highest bias amplification per identity",
             "",
             markdown_table(["identity", "top attributes here (BA)"],
                            [[i, ", ".join(f"{t['attribute']} ({t['value']:+.3f})" for t in b["top"]) or "-"]
                             for i, b in result["ba"].items()]),
             "",
             "CelebA (Section 3.3): " + ", ".join(f"{t['attribute']} ({t['identity']}, {t['value']:+.3f})"
                                                  for t in result["celeba_top_ba"]) + ".",
             "",
             "## Targets (issue 14)",
             "",
             markdown_table(["check", "value", "band", ""],
                            [[k["check"], _value(k["value"]), k.get("band", ""), "pass" if k["passed"] else "FAIL"]
                             for k in result["checks"]]),
             "",
             f"{result['passed']} of {result['total']} checks pass.",
             "",
             "## Per attribute",
             "",
             _per_attribute_table(result)]
    return "\n".join(lines) + "\n"


def _per_attribute_table(result: dict) -> str:
    celeba = result["celeba_per_attribute"]
    rows = []
    for a, v in result["per_attribute"].items():
        ref = celeba.get(a, {})
        rows.append([a, _f(v["accuracy"]), _f(v["majority"]), _f(v["auc"]), _f(v["tcb"]), _f(ref.get("tcb")),
                     _f(v["uncertainty"]), _f(ref.get("uncertainty")), _f(v.get("ba_Male")), _f(ref.get("ba_Male")),
                     _f(v.get("ba_Young")), _f(ref.get("ba_Young"))])
    return markdown_table(["attribute", "acc", "majority", "AUC", "TCB", "TCB CelebA", "unc.", "unc. CelebA",
                           "BA Male", "BA Male CelebA", "BA Young", "BA Young CelebA"], rows)


def fidelity_figure(result: dict):
    """Per attribute, ours against CelebA's: uncertainty, TCB, and BA for Male."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    celeba = result["celeba_per_attribute"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, key, label in zip(axes, ("uncertainty", "tcb", "ba_Male"), ("uncertainty rate", "TCB", "BA (Male)")):
        pairs = [(a, celeba[a][key], v[key]) for a, v in result["per_attribute"].items()
                 if a in celeba and celeba[a][key] is not None and v.get(key) is not None]
        if not pairs:
            ax.set_visible(False)
            continue
        x, y = np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs])
        ax.scatter(x, y, s=18)
        for a, xi, yi in pairs:
            ax.annotate(a, (xi, yi), fontsize=6, alpha=0.7)
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"CelebA {label}")
        ax.set_ylabel(f"{label} here")
        ax.set_title(label)
    fig.suptitle(f"{Path(result['bundle']).name}: per-attribute statistics beside CelebA (dense ResNet18)")
    return fig


@written_together
def write_fidelity(result: dict, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    return [write_json(out_dir / "fidelity.json", result),
            write_atomic(out_dir / "fidelity.md", fidelity_markdown(result)),
            save_figure(fidelity_figure(result), out_dir / "fidelity.png")]


def _value(v) -> str:
    if isinstance(v, list):
        return ", ".join(v) or "none"
    return _f(v) if not isinstance(v, int) else str(v)


def _f(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"
