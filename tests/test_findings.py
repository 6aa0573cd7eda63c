"""F1-F14 on hand-made studies: each verdict follows from the numbers as the claim says."""

import pytest

from sparsebias.study import findings

IDS = ("Male", "Young", "Chubby", "Pale_Skin")


def ms(v):
    return {"mean": v, "std": 0.0}


def level(name, sparsity, *, acc=0.90, auc=0.85, unc=0.15, tcb=0.9, ece=0.05, inter=0.3, ba=None, cal=None,
          over=None, per_attribute=None, ba_attr=None):
    ba = ba or {"Male": 0.02, "Young": 0.01, "Chubby": 0.0, "Pale_Skin": 0.0}
    cal = cal or {i: v - 0.01 for i, v in ba.items()}
    over = over or {k: ms(ba.get("Male", 0) * f) for k, f in (("5% true", 0.7), ("5% dense", 0.8), ("10% true", 0.6),
                                                        ("10% dense", 0.7))}
    return {"level": name, "sparsity": sparsity, "accuracy": ms(acc), "auc": ms(auc), "uncertainty": ms(unc),
            "tcb": ms(tcb), "ece": ms(ece), "interdependence": ms(inter),
            "ba": {i: ms(v) for i, v in ba.items()}, "ba_calibrated": {i: ms(v) for i, v in cal.items()},
            "ba_overrides": {"Male": over, **{i: {} for i in IDS[1:]}},
            "per_attribute": per_attribute or {"uncertainty": {}}, "ba_per_attribute": ba_attr or {"Male": {}}}


def paper_like_ladder():
    """Numbers shaped like the paper's Table J.1: every F1-F11 claim holds."""
    rows = [("dense", 0.0, 0.904, 0.805, 0.14, 0.90, 0.054, 0.31, 0.017, 0.006),
            ("80", 0.8, 0.908, 0.810, 0.17, 0.89, 0.040, 0.32, 0.018, 0.0066),
            ("95", 0.95, 0.913, 0.815, 0.21, 0.88, 0.025, 0.33, 0.024, 0.0085),
            ("99", 0.99, 0.914, 0.810, 0.26, 0.83, 0.013, 0.35, 0.034, 0.0101),
            ("99_5", 0.995, 0.911, 0.797, 0.28, 0.80, 0.012, 0.36, 0.040, 0.0148)]
    return [level(n, s, acc=a, auc=u, unc=c, tcb=t, ece=e, inter=i,
                  ba={"Male": m, "Young": y, "Chubby": -0.002, "Pale_Skin": 0.0001})
            for n, s, a, u, c, t, e, i, m, y in rows]


def study(levels, cie=None, **tasks):
    return {"identities": list(IDS), "tasks": ["joint", *tasks], "levels": {"joint": levels, **tasks},
            "cie": {"joint": cie or [{"level": "99", "dense_uncertain_among_cies": 0.8,
                                      "dense_uncertain_overall": 0.14}]}}


def verdicts(s):
    return {f["id"]: f["reproduces"] for f in findings(s)}


def test_paper_like_numbers_reproduce_f1_to_f11():
    v = verdicts(study(paper_like_ladder()))
    assert all(v[f"F{k}"] is True for k in range(1, 12)), v
    assert v["F12"] is None and v["F13"] is None and v["F14"] is None


def test_each_claim_can_fail():
    levels = paper_like_ladder()
    levels[3]["accuracy"] = ms(0.895)                    # 99% loses 0.9 points: F1 fails
    levels[3]["auc"] = ms(0.790)                          # 1.5 points: F2 fails
    levels[4]["uncertainty"] = ms(0.60)                   # x4.3, not "roughly doubles": F3 fails
    levels[4]["tcb"] = ms(0.95)                           # ends above dense: F4 fails
    for lv in levels:
        lv["ece"] = ms(0.03)                              # flat: F5 fails (rho 0)
    levels[4]["interdependence"] = ms(0.20)               # F6 fails
    for lv in levels:
        lv["ba"]["Chubby"] = ms(0.05)                     # Chubby above Young dense: F7 fails
        lv["ba_calibrated"] = {i: ms(v["mean"] + 0.01) for i, v in lv["ba"].items()}  # F9 fails
    levels[2]["ba"]["Male"] = levels[3]["ba"]["Male"] = levels[4]["ba"]["Male"] = ms(0.010)  # F8 fails
    for lv in levels:
        lv["ba_overrides"]["Male"]["5% true"] = ms(0.5)  # overrides raise BA: F10 fails
    cie = [{"level": "99", "dense_uncertain_among_cies": 0.1, "dense_uncertain_overall": 0.14}]  # F11 fails
    v = verdicts(study(levels, cie))
    assert [v[f"F{k}"] for k in range(1, 12)] == [False] * 11, v


def test_f3_accepts_a_doubling_only():
    levels = paper_like_ladder()
    levels[4]["uncertainty"] = ms(0.14 * 1.2)
    assert verdicts(study(levels))["F3"] is False
    levels[4]["uncertainty"] = ms(0.14 * 2.9)
    assert verdicts(study(levels))["F3"] is True


def test_single_vs_joint_and_gmp_pt():
    ladder = paper_like_ladder()
    ladder[0]["ba_per_attribute"] = {"Male": {"Oval_Face": 0.04, "Big_Nose": 0.03}}
    ladder[0]["per_attribute"] = {"uncertainty": {"Oval_Face": 0.35, "Big_Nose": 0.2}}
    single = {a: [level("dense", 0.0, ba_attr={"Male": {a: 0.12}}, per_attribute={"uncertainty": {a: 0.5}})]
              for a in ("Oval_Face", "Big_Nose")}
    pt = [{**lv, "level": "pt_" + lv["level"]} for lv in paper_like_ladder()[1:]]
    cie = [{"level": "99", "dense_uncertain_among_cies": 0.8, "dense_uncertain_overall": 0.14},
           {"level": "pt_99", "dense_uncertain_among_cies": 0.1, "dense_uncertain_overall": 0.14}]
    found = {f["id"]: f for f in findings(study(ladder + pt, cie, **single))}
    assert found["F11"]["reproduces"] is True and "pt_99" not in found["F11"]["numbers"]  # each ladder its own CIEs
    assert found["F12"]["reproduces"] is True and found["F14"]["reproduces"] is True
    assert "10 of 11" in found["F14"]["numbers"] and "F11 does not" in found["F14"]["numbers"]
    single["Big_Nose"][0]["per_attribute"]["uncertainty"]["Big_Nose"] = 0.1   # less uncertain single: F12 fails
    assert verdicts(study(ladder + pt, **single))["F12"] is False


@pytest.mark.parametrize("dense, sparse, holds", [(0.30, 0.33, True), (0.30, 0.60, False), (0.30, 0.25, False)])
def test_backdoor_rises_only_slightly(dense, sparse, holds):
    task = [level("dense", 0.0, ba={"backdoor": dense}), level("99", 0.99, ba={"backdoor": sparse})]
    s = study(paper_like_ladder(), **{"Smiling (backdoor)": task})
    assert verdicts(s)["F13"] is holds


def test_single_vs_joint_pairs_each_attribute_with_the_joint_run_and_plots_figure_3():
    from sparsebias.report.study import single_vs_joint, single_vs_joint_figure, single_vs_joint_rows

    def own(a, acc, unc, tcb, ba):
        return {"per_attribute": {"accuracy": {a: acc}, "uncertainty": {a: unc}, "tcb": {a: tcb}},
                "ba_attr": {"Male": {a: ba}}}

    joint = [level("dense", 0.0, per_attribute={"accuracy": {"Big_Nose": 0.77}, "uncertainty": {"Big_Nose": 0.59},
                                                "tcb": {"Big_Nose": 0.66}}, ba_attr={"Male": {"Big_Nose": 0.20}}),
             level("95", 0.95)]
    single = [level("dense", 0.0, **own("Big_Nose", 0.88, 0.20, 0.85, 0.02)),
              level("99", 0.99, **own("Big_Nose", 0.86, 0.25, 0.80, None))]   # no joint 99%: left out
    rows = single_vs_joint_rows(study(joint, Big_Nose=single), "Male")
    assert rows == [{"attribute": "Big_Nose", "level": "dense", "accuracy": (0.88, 0.77), "uncertainty": (0.20, 0.59),
                     "tcb": (0.85, 0.66), "ba": (0.02, 0.20)}]
    assert "| Big_Nose | Dense | 0.880 | 0.770 | 0.200 | 0.590 | 0.850 | 0.660 | 0.020 | 0.200 |" in single_vs_joint(
        rows, "Male")
    assert single_vs_joint_rows(study(joint), "Male") == []                           # no single-attribute task
    fig = single_vs_joint_figure(rows, "Male")
    ba_axis = fig.axes[3]                                                   # rows: accuracy, uncertainty, TCB, BA
    assert [list(line.get_ydata()) for line in ba_axis.lines[:2]] == [[0.02], [0.20]]
    assert ba_axis.get_title() == "Big_Nose: Bias amplification (Male)"


def test_backdoored_tasks_are_plotted_as_figure_4_and_kept_out_of_single_vs_joint():
    from sparsebias.report.study import backdoor_figure, single_vs_joint_rows

    joint = [level("dense", 0.0), level("95", 0.95)]
    smiling = [level("dense", 0.0, ba={"backdoor": 0.30, "Male": 0.01}), level("99", 0.99, ba={"backdoor": 0.33})]
    blond = [level("dense", 0.0, ba={"backdoor": 0.20}), level("95", 0.95, ba={"backdoor": None}, cal={"backdoor": 0.0}),
             level("99", 0.99, ba={"backdoor": 0.22})]
    s = study(joint, **{"Smiling (backdoor)": smiling, "Blond_Hair (backdoor)": blond})
    assert single_vs_joint_rows(s, "Male") == []                     # a backdoored task has nothing clean to compare
    fig = backdoor_figure(s)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["Dense", "95", "99"]
    series = {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata()))
              for c in fig.axes[0].containers}
    assert series == {"Smiling": ([0, 2], [0.30, 0.33]), "Blond_Hair": ([0, 2], [0.20, 0.22])}   # 95%: undefined
    assert backdoor_figure(study(joint)) is None


def test_a_gmp_pt_ladder_beside_gmp_ri_gets_its_own_figures():
    from sparsebias.report.study import figures

    per_attribute = {k: {"Big_Nose": 0.1} for k in ("tcb", "ece", "interdependence", "uncertainty")}
    ri = [{**lv, "per_attribute": per_attribute} for lv in paper_like_ladder()]
    pt = [{**lv, "level": "pt_" + lv["level"], "ba": {**lv["ba"], "Male": ms(lv["ba"]["Male"]["mean"] + 0.1)}}
          for lv in ri[1:]]
    cie = [{"level": "99", "dense_uncertain_among_cies": 0.8, "dense_uncertain_overall": 0.14},
           {"level": "pt_99", "dense_uncertain_among_cies": 0.5, "dense_uncertain_overall": 0.14}]
    with_common = lambda s: {**s, "systematic_attributes": {"joint": {k: ["Big_Nose"] for k in per_attribute}}}  # noqa: E731
    figs = figures(with_common(study(ri + pt, cie)))
    assert {"systematic", "ba", "calibration", "cie_uncertainty", "overrides"} < set(figs)
    assert {"pt_systematic", "pt_ba", "pt_calibration", "pt_cie_uncertainty", "pt_overrides"} < set(figs)
    ticks = lambda fig: [t.get_text() for t in fig.axes[0].get_xticklabels()]  # noqa: E731
    assert ticks(figs["ba"]) == ["Dense", "80", "95", "99", "99.5"]
    assert ticks(figs["pt_ba"]) == ["Dense", "PT 80", "PT 95", "PT 99", "PT 99.5"]
    male = lambda fig: list(fig.axes[0].containers[0].lines[0].get_ydata())  # noqa: E731
    assert male(figs["ba"]) == [0.017, 0.018, 0.024, 0.034, 0.040]
    assert male(figs["pt_ba"]) == pytest.approx([0.017, 0.118, 0.124, 0.134, 0.140])   # dense is shared
    assert figs["pt_ba"].axes[0].get_title() == "Mean bias amplification (GMP-PT)"
    assert [p.get_height() for p in figs["pt_cie_uncertainty"].axes[0].patches] == [0.14, 0.5]
    assert not any(name.startswith("pt_") for name in figures(with_common(study(ri, cie))))
