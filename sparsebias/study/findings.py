"""The paper's findings, checked on a study: each claim of Iofinova et al. (CVPR 2023) with
the paper's numbers, ours, and whether it reproduces (True, False, or None: not tested).
"""

from __future__ import annotations

import numpy as np

from .runs import GMP_PT, backdoored, family_of, level_label

# The paper's numbers for each finding (CVPR 2023: Table J.1, Sections 3-4, Appendix E).
PAPER = {
    "F1": "dense 90.4; 80-99%: 90.8, 91.0, 91.3, 91.5, 91.5 (+0.4 to +1.1 points)",
    "F2": "dense 80.5; 80-99%: 81.0, 81.3, 81.5, 81.5, 81.0 (+0.5 to +1.0 points)",
    "F3": "0.139 dense, 0.276 at 99.5% (x1.99)",
    "F4": "0.903 dense, 0.805 at 99.5%, falling at every step",
    "F5": "0.054 dense, 0.013 at 99.5%, falling at every step",
    "F6": "0.310 dense, 0.361 at 99.5%, rising at every step",
    "F7": "Male 0.0170, Young 0.0060, Chubby -0.0021, Pale_Skin 0.0001",
    "F8": "Male 0.0170 dense; 0.024, 0.029, 0.034, 0.040 at 95-99.5%; Young 0.0060; 0.009, 0.008, 0.010, 0.015",
    "F9": "lower at every sparsity, near zero up to 90% (Figure 5, left)",
    "F10": "Male BA at 99.5%: 23% lower (5% overridden), 35% lower (10%) (Figure 6)",
    "F11": "CIEs mostly dense-uncertain, far above the 13.9% of all predictions (Figure 5, right)",
    "F12": "Male BA about 3x higher single than joint for Oval_Face and Big_Nose; single dense models more "
           "uncertain (Figure 3)",
    "F13": "BA(backdoor) high for every model, rising only slightly with sparsity (Figure 4)",
    "F14": "GMP-PT models support the same conclusions (Appendix E)",
}
CLAIMS = {
    "F1": "Accuracy at 80-99% within 0.5 points of dense",
    "F2": "AUC up to 99% within 1 point of dense",
    "F3": "Uncertainty roughly doubles from dense to the highest sparsity",
    "F4": "TCB falls with sparsity",
    "F5": "ECE falls with sparsity",
    "F6": "Label interdependence rises with sparsity",
    "F7": "Dense BA is highest for Male and Young",
    "F8": "BA rises at >= 95% (Male and Young, mean over seeds)",
    "F9": "Threshold calibration lowers BA",
    "F10": "Overriding the 5% / 10% most dense-uncertain samples lowers BA (Male) at the highest sparsity",
    "F11": "CIEs are enriched for dense-uncertain samples",
    "F12": "Single-attribute training: higher BA (Male) than joint and higher dense uncertainty "
           "(Oval_Face, Big_Nose)",
    "F13": "A backdoor's BA rises only slightly with sparsity",
    "F14": "GMP-PT supports the same conclusions (F1-F11)",
}
DOUBLING = (1.5, 3.0)   # F3: "roughly doubles"
SLIGHT = 0.5            # F13: a rise of at most half the dense BA is slight
F12_ATTRIBUTES = ("Oval_Face", "Big_Nose")


def findings(study: dict) -> list[dict]:
    """F1-F14 of the paper, each with the paper's numbers, ours, and whether it reproduces.

    A finding this sweep has no runs for (single-attribute, backdoor or GMP-PT runs) is
    reported as not tested, with what is missing. Definitions are fixed here, not tuned to
    any data: thresholds are the paper's words made numeric (DOUBLING, SLIGHT).
    """
    joint = study["levels"].get("joint") or []
    cies = study["cie"].get("joint") or []
    ri, pt = _ladder(joint, "ri"), _ladder(joint, GMP_PT)
    out = {f: None for f in CLAIMS}
    if len(ri) >= 2:
        out.update(_ladder_findings(study, ri, _of_ladder(cies, ri)))
    out["F12"] = _single_vs_joint(study, ri)
    out["F13"] = _backdoor(study)
    if len(pt) >= 2 and len(ri) >= 2:
        ours = _ladder_findings(study, pt, _of_ladder(cies, pt))
        same = [f for f in ours if ours[f]["holds"] is not None and out[f] is not None
                and ours[f]["holds"] == out[f]["holds"]]
        tested = [f for f in ours if ours[f]["holds"] is not None and out[f] is not None]
        at = ", ".join(level_label(lv["level"].removeprefix(f"{GMP_PT}_")) for lv in pt[1:])
        out["F14"] = {"holds": len(same) >= 0.8 * len(tested) if tested else None,
                      "numbers": f"GMP-PT at {at}% agrees with GMP-RI on {len(same)} of {len(tested)} findings: "
                                 + ", ".join(f"{f} {_verdict_word(ours[f]['holds'])}" for f in tested)}
    missing = {"F12": "no single-attribute runs of Oval_Face or Big_Nose beside joint runs",
               "F13": "no backdoored runs in this sweep", "F14": "no GMP-PT runs (resnet18_pt_*) in this sweep"}
    return [{"id": f, "claim": CLAIMS[f], "paper": PAPER[f],
             "reproduces": None if out[f] is None or out[f]["holds"] is None else bool(out[f]["holds"]),
             "numbers": missing.get(f, "fewer than two sparsity levels") if out[f] is None else out[f]["numbers"]}
            for f in CLAIMS]


def _ladder(levels: list[dict], family: str) -> list[dict]:
    """Dense, then the levels of one pruning family ('ri': 80, 90, ...; 'pt': pt_80, ...), by sparsity."""
    return [lv for lv in levels if family_of(lv["level"]) in ("dense", family)]


def _of_ladder(entries: list[dict], ladder: list[dict]) -> list[dict]:
    names = {lv["level"] for lv in ladder}
    return [e for e in entries if e["level"] in names]


def _ladder_findings(study: dict, levels: list[dict], cies: list[dict]) -> dict:
    dense, sparse, top = levels[0], levels[1:], levels[-1]
    if dense["level"] != "dense":
        return {}
    m = lambda lv, key: lv[key]["mean"]  # noqa: E731
    out = {}
    for f, key, limit, low, high in (("F1", "accuracy", 0.005, 0.795, 0.991), ("F2", "auc", 0.01, 0.0, 0.991)):
        band = [lv for lv in sparse if low <= lv["sparsity"] <= high]
        if band:
            gaps = [m(lv, key) - m(dense, key) for lv in band]
            out[f] = {"holds": min(gaps) >= -limit,
                      "numbers": f"dense {100 * m(dense, key):.1f}; " + ", ".join(
                          f"{level_label(lv['level'])}: {100 * m(lv, key):.1f} ({100 * g:+.1f})" for lv, g in zip(band, gaps))}
    ratio = m(top, "uncertainty") / m(dense, "uncertainty") if m(dense, "uncertainty") else float("inf")
    out["F3"] = {"holds": DOUBLING[0] <= ratio <= DOUBLING[1],
                 "numbers": f"{m(dense, 'uncertainty'):.3f} dense, {m(top, 'uncertainty'):.3f} at "
                            f"{level_label(top['level'])}% (x{ratio:.2f})"}
    for f, key, sign in (("F4", "tcb", -1), ("F5", "ece", -1), ("F6", "interdependence", 1)):
        values = [m(lv, key) for lv in levels]
        if None in values:
            continue
        rho = _spearman([lv["sparsity"] for lv in levels], values)
        out[f] = {"holds": sign * rho > 0 and sign * (values[-1] - values[0]) > 0,
                  "numbers": f"{values[0]:.3f} dense, {values[-1]:.3f} at {level_label(top['level'])}%; "
                             f"Spearman rho with sparsity {rho:+.2f}; " + ", ".join(f"{v:.3f}" for v in values)}
    dense_ba = {i: dense["ba"][i]["mean"] for i in study["identities"] if dense["ba"][i]["mean"] is not None}
    if len(dense_ba) >= 2:
        ranked = sorted(dense_ba, key=lambda i: -dense_ba[i])
        out["F7"] = {"holds": set(ranked[:2]) == {"Male", "Young"},
                     "numbers": ", ".join(f"{i} {dense_ba[i]:+.4f}" for i in ranked)}
    high = [lv for lv in sparse if lv["sparsity"] >= 0.945]
    rises, parts = [], []
    for identity in ("Male", "Young"):
        values = [lv["ba"][identity]["mean"] for lv in high if identity in lv["ba"] and lv["ba"][identity]["mean"] is not None]
        if identity in dense_ba and values:
            rises.append(np.mean(values) > dense_ba[identity])
            parts.append(f"{identity} {dense_ba[identity]:+.4f} dense; " + ", ".join(
                f"{level_label(lv['level'])} {lv['ba'][identity]['mean']:+.4f}" for lv in high
                if lv["ba"][identity]["mean"] is not None) + f" (mean {np.mean(values):+.4f})")
    if rises:
        out["F8"] = {"holds": all(rises), "numbers": "; ".join(parts)}
    pairs = [(lv, i) for lv in levels for i in study["identities"]
             if i in lv["ba"] and lv["ba"][i]["mean"] is not None and lv["ba_calibrated"][i]["mean"] is not None]
    if pairs:
        lower = sum(lv["ba_calibrated"][i]["mean"] < lv["ba"][i]["mean"] for lv, i in pairs)
        change = np.mean([lv["ba_calibrated"][i]["mean"] - lv["ba"][i]["mean"] for lv, i in pairs])
        out["F9"] = {"holds": lower > len(pairs) / 2,
                     "numbers": f"lower in {lower} of {len(pairs)} (sparsity, identity) pairs; mean change {change:+.4f}"}
    positive = [lv for lv in sparse if (lv["ba"].get("Male", {}).get("mean") or 0) > 0]
    if positive:  # the paper's 99.5%, or the sparsest level with amplification to lower
        lv = positive[-1]
        base = lv["ba"]["Male"]["mean"]
        after = {k: v["mean"] for k, v in lv["ba_overrides"]["Male"].items() if v["mean"] is not None}
        out["F10"] = {"holds": all(after[k] < base for k in after if "true" in k),
                      "numbers": f"{level_label(lv['level'])}%: BA {base:+.4f}; " + "; ".join(
                          f"{k}: {100 * (base - v) / base:.0f}% lower" for k, v in after.items())}
    elif sparse:
        out["F10"] = {"holds": False, "numbers": "no pruned model has positive mean BA (Male) to lower"}
    enriched = [c for c in cies if c["dense_uncertain_among_cies"] is not None]
    if enriched:
        ratio = [c["dense_uncertain_among_cies"] / c["dense_uncertain_overall"] for c in enriched]
        out["F11"] = {"holds": min(ratio) > 1, "numbers": "dense-uncertain share among CIEs vs all: " + ", ".join(
            f"{level_label(c['level'])} {c['dense_uncertain_among_cies']:.2f} vs {c['dense_uncertain_overall']:.2f}"
            for c in enriched)}
    return out


def _single_vs_joint(study: dict, ri: list[dict]) -> dict | None:
    if not ri or ri[0]["level"] != "dense":
        return None
    joint = ri[0]
    rows = []
    for a in F12_ATTRIBUTES:
        single = next((lv for lv in study["levels"].get(a, []) if lv["level"] == "dense"), None)
        if single is None:
            continue
        ba_s, ba_j = single["ba_per_attribute"]["Male"].get(a), joint["ba_per_attribute"]["Male"].get(a)
        u_s, u_j = single["per_attribute"]["uncertainty"].get(a), joint["per_attribute"]["uncertainty"].get(a)
        rows.append((a, ba_s, ba_j, u_s, u_j))
    if not rows:
        return None
    holds = all(None not in r[1:] and r[1] > r[2] and r[3] > r[4] for r in rows)
    return {"holds": holds, "numbers": "; ".join(
        f"{a}: BA(Male) single {_f(bs, 3)} vs joint {_f(bj, 3)}, uncertainty {_f(us, 3)} vs {_f(uj, 3)}"
        for a, bs, bj, us, uj in rows)}


def _backdoor(study: dict) -> dict | None:
    tasks = [t for t in study["tasks"] if backdoored(t)]
    if not tasks:
        return None
    rows = []
    for task in tasks:
        levels = study["levels"][task]
        if len(levels) < 2 or levels[0]["level"] != "dense":
            continue
        dense = levels[0]["ba"].get("backdoor", {}).get("mean")
        high = [lv["ba"]["backdoor"]["mean"] for lv in levels[1:]
                if lv["sparsity"] >= 0.945 and lv["ba"].get("backdoor", {}).get("mean") is not None]
        if dense is not None and high:
            rows.append((task, dense, float(np.mean(high))))
    if not rows:
        return {"holds": None, "numbers": f"{', '.join(tasks)}: BA(backdoor) is undefined for the dense model or at "
                                          ">= 95% (no such level, or nothing predicted positive)"}
    holds = all(d > 0 and 0 <= s - d <= SLIGHT * d for _, d, s in rows)
    return {"holds": holds, "numbers": "; ".join(f"{t}: BA(backdoor) {d:+.3f} dense, {s:+.3f} at >= 95% "
                                                 f"({s - d:+.3f})" for t, d, s in rows)}


def _verdict_word(holds) -> str:
    return {True: "reproduces", False: "does not", None: "not tested"}[holds]


def _spearman(x, y) -> float:
    """Rank correlation: Pearson's r of the average ranks."""
    from ..metrics.classification import _average_ranks

    rx, ry = _average_ranks(np.asarray(x, float)), _average_ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _f(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"
