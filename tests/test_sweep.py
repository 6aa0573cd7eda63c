"""`sweep`: planning, a tiny sweep end to end, restarting an interrupted one, and the Ray path."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_DATA, TINY_SETTINGS

from sparsebias.cli import main
from sparsebias.core import SparsebiasError
from sparsebias.recipes import parse_overrides
from sparsebias.study import level_of, plan, read_plan, run_study, run_sweep
from sparsebias.study.jobs import QUICK, state

TINY = parse_overrides([*TINY_SETTINGS, "num_epochs=2", "pruning_start_epoch=0", "pruning_end_epoch=1",
                        f"data={TINY_DATA}"])


def recipes(repo, *names):
    return [str(repo / "recipes" / f"{n}.yaml") for n in names]


def test_plan(repo):
    jobs = plan(recipes(repo, "resnet18_dense", "resnet18_90"), 2, single=["Smiling"], quick=True,
                overrides={"pruning_end_epoch": 3})
    assert [j.name for j in jobs] == ["resnet18_dense-s0", "resnet18_dense-s0-Smiling", "resnet18_dense-s1",
                                      "resnet18_dense-s1-Smiling", "resnet18_90-s0", "resnet18_90-s0-Smiling",
                                      "resnet18_90-s1", "resnet18_90-s1-Smiling"]
    dense, sparse = jobs[0], jobs[4]
    assert "pruning_end_epoch" not in dense.overrides and sparse.overrides["pruning_end_epoch"] == 3
    assert dense.overrides["num_epochs"] == QUICK["num_epochs"] and jobs[1].attributes == ("Smiling",)
    assert dense.overrides["image_size"] == 32 and dense.overrides["data"] == "synthfaces:size=32"
    assert "init_lr" not in dense.overrides   # the recipes' own
    mine = plan(recipes(repo, "resnet18_dense"), 1, quick=True, data="celeba:/d",
                overrides={"image_size": 64, "init_lr": 0.05})
    assert mine[0].overrides == {**QUICK, "data": "celeba:/d", "image_size": 64, "init_lr": 0.05}  # the user's win
    adam = plan(recipes(repo, "resnet18_pt_95", "resnet18_dense"), 1, quick=True, from_dense=True,
                overrides=parse_overrides(["resnet18_dense:init_lr=0.2"]))
    assert {j.name: j.overrides.get("init_lr") for j in adam} == {"resnet18_dense-s0": 0.2, "resnet18_pt_95-s0": None}
    pt = plan(recipes(repo, "resnet18_pt_95", "resnet18_dense"), 1, from_dense=True)
    assert [(j.name, j.start_from) for j in pt] == [("resnet18_dense-s0", None), ("resnet18_pt_95-s0", "resnet18_dense-s0")]
    assert level_of("recipes/resnet18_99_5.yaml") == "99_5" and level_of("x/mobilenet_v2_dense.yaml") == "dense"
    twice = plan(recipes(repo, "resnet18_dense", "resnet18_pt_95", "resnet18_pt_99"), 1, from_dense=True,
                 overrides=parse_overrides(["num_epochs=32", "resnet18_pt_*:num_epochs=16", "resnet18_pt_99:init_lr=1e-5"]))
    assert {j.name: j.overrides for j in twice} == {"resnet18_dense-s0": {"num_epochs": 32},
                                                   "resnet18_pt_95-s0": {"num_epochs": 16},
                                                   "resnet18_pt_99-s0": {"num_epochs": 16, "init_lr": 1e-5}}
    later = plan(recipes(repo, "resnet18_pt_95", "resnet18_dense"), 2, from_dense=True, first_seed=1)
    assert [(j.name, j.seed, j.start_from) for j in later] == [
        ("resnet18_dense-s1", 1, None), ("resnet18_dense-s2", 2, None),
        ("resnet18_pt_95-s1", 1, "resnet18_dense-s1"), ("resnet18_pt_95-s2", 2, "resnet18_dense-s2")]


@pytest.mark.parametrize("kwargs, message", [
    (dict(recipes=["recipes/nope_*.yaml"]), "no recipe matches"),
    (dict(from_dense=True), "exactly one dense recipe"),
    (dict(overrides={"warp_speed": 9}), "no recipe of the sweep has this variable"),
    (dict(overrides={"resnet18_pt_*:num_epochs": 9}), "no recipe of the sweep is named 'resnet18_pt_\\*'"),
    (dict(overrides={"resnet18_9*:warp_speed": 9}), "resnet18_90.yaml has no variable 'warp_speed'"),
    (dict(joint=False), "nothing to run"),
    (dict(first_seed=-1), r"--first-seed must be an integer from 0 to 2\*\*32 - 1, got -1"),
    (dict(first_seed=2**32 - 1, seeds=2), r"the last seed \(--first-seed \+ --seeds - 1\) must be .* got 4294967296"),
    (dict(seeds=5001), r"2 recipe\(s\) x 5001 seed\(s\) x 1 task\(s\) is more than 10,000 runs"),
])
def test_plan_errors(repo, kwargs, message):
    kwargs.setdefault("recipes", recipes(repo, "resnet18_90", "resnet18_95"))
    with pytest.raises(SparsebiasError, match=message):
        plan(kwargs.pop("recipes"), kwargs.pop("seeds", 1), **kwargs)


@pytest.mark.parametrize("args, message", [
    (["--gpus-per-run", "1"], "--gpus-per-run is for --ray"),
    (["--gpus-per-run", "nan", "--ray", "auto"], "--gpus-per-run must be a finite number of at least 0, got nan"),
    (["--gpus-per-run", "inf", "--ray", "auto"], "--gpus-per-run must be a finite number of at least 0, got inf"),
])
def test_gpus_per_run_is_checked_before_anything_runs(repo, tmp_path, args, message):
    result = CliRunner().invoke(main, ["sweep", "--recipes", str(repo / "recipes/resnet18_dense.yaml"), "--seeds", "1",
                                       "--out", str(tmp_path / "sweep"), *args])
    assert result.exit_code == 2 and f"error: {message}" in result.output, result.output
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("single, identities, message", [
    (["Big_Nose", "Big_Ears"], None, "attribute 'Big_Ears' is not a label of the data"),
    ([], ["Male", "backdoor"], "identity 'backdoor' is not a label of the data"),
])
def test_names_the_data_lack_are_refused_before_anything_runs(repo, tmp_path, single, identities, message):
    jobs = plan(recipes(repo, "resnet18_dense", "resnet18_90"), 1, single=single, overrides=TINY)
    with pytest.raises(SparsebiasError, match=message):
        run_sweep(jobs, tmp_path / "sweep", identities=identities)
    assert not (tmp_path / "sweep").exists()


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, repo):
    out = tmp_path_factory.mktemp("sweep")
    jobs = plan(recipes(repo, "resnet18_dense", "resnet18_90"), 2, overrides=TINY)
    said = []
    assert run_sweep(jobs, out, workers=2, echo=said.append) == [], said  # the process pool path
    return out


def test_sweep_runs_everything_once(tiny_sweep, repo):
    jobs = read_plan(tiny_sweep)
    assert all(state(j, tiny_sweep) == "done" for j in jobs)
    messages = []
    assert run_sweep(jobs, tiny_sweep, echo=messages.append) == []
    assert messages == ["4 run(s): 4 done, 0 to resume, 0 new"]


def test_study_is_built_from_the_per_run_audits(tiny_sweep):
    study = run_study(tiny_sweep, speed=False, echo=lambda *a: None)
    assert study["tasks"] == ["joint"] and [lv["level"] for lv in study["levels"]["joint"]] == ["dense", "90"]
    level = study["levels"]["joint"][1]
    audits = [json.loads((tiny_sweep / "audits" / f"resnet18_90-s{s}.json").read_text()) for s in (0, 1)]
    per_seed = [np.mean([v for v in a["metrics"]["compressed"]["views"]["default"]["accuracy"].values()])
                for a in audits]
    assert level["accuracy"]["mean"] == pytest.approx(np.mean(per_seed))
    assert level["accuracy"]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    common = study["ba_attributes"]["joint"]["Male"]  # BA defined in every run and view: the same set everywhere
    assert common
    ba = [a["metrics"]["compressed"]["views"]["default"]["ba"]["Male"] for a in audits]
    assert all(b[name]["value"] is not None for b in ba for name in common)
    male = [np.mean([b[name]["value"] for name in common]) for b in ba]
    assert level["ba"]["Male"]["mean"] == pytest.approx(np.mean(male))
    every_run = [json.loads(path.read_text())["metrics"]["compressed"]["views"]["default"]["interdependence"]
                 for path in sorted((tiny_sweep / "audits").glob("*.json"))]
    common = study["systematic_attributes"]["joint"]["interdependence"]
    assert set(common) == {name for name in every_run[0] if all(i[name] is not None for i in every_run)}
    inter = [a["metrics"]["compressed"]["views"]["default"]["interdependence"] for a in audits]
    assert level["interdependence"]["mean"] == pytest.approx(np.mean([np.mean([i[a] for a in common]) for i in inter]))
    dense_vs_itself = json.loads((tiny_sweep / "audits" / "resnet18_dense-s0.json").read_text())
    assert all(v == 0 for v in dense_vs_itself["pairwise"]["cie_rate"].values())
    cie = study["cie"]["joint"][0]
    assert cie["level"] == "90" and 0 <= cie["cie_share"] <= 1


def test_levels_are_compared_on_the_attributes_every_run_defines():
    from sparsebias.study.attributes import SYSTEMATIC, _systematic_means

    def row(task, interdependence):
        per_attribute = {m: {"A": 0.5, "B": 0.5} for m in SYSTEMATIC}
        return {"task": task, "per_attribute": {**per_attribute, "interdependence": interdependence}}

    rows = [row("joint", {"A": 0.2, "B": 0.6}), row("joint", {"A": 0.4, "B": None}), row("other", {"A": 0.1, "B": 0.3})]
    common = _systematic_means(rows, "joint")
    assert common["interdependence"] == ["A"] and common["ece"] == ["A", "B"]
    assert [r["interdependence"] for r in rows[:2]] == [0.2, 0.4]    # B, constant in one model, is left out of both
    assert "interdependence" not in rows[2]                           # another task's set is its own


def test_cli_writes_the_study_report(tiny_sweep, repo):
    result = CliRunner().invoke(main, ["sweep", "--recipes", str(repo / "recipes/resnet18_dense.yaml"),
                                       "--recipes", str(repo / "recipes/resnet18_90.yaml"), "--seeds", "2",
                                       "--out", str(tiny_sweep), "--no-speed",
                                       *[x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]])
    assert result.exit_code == 0, result.output
    report = tiny_sweep / "study"
    text = (report / "study.md").read_text()
    assert "## Findings" in text and "## Table J.1 layout, joint training" in text
    study = json.loads((report / "study.json").read_text())
    n_inter = len(study["systematic_attributes"]["joint"]["interdependence"])
    assert (f"joint, interdependence: {n_inter} of 40 attributes, without" in text) == (n_inter < 40)
    for name in ("systematic", "ba", "calibration", "cie_uncertainty", "overrides"):
        assert (report / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_backdoored_runs_are_their_own_task_with_the_backdoor_as_identity(repo, tmp_path):
    settings = {**TINY, "data": TINY_DATA + ",backdoor=Smiling/square/0.9/0.1/0.5"}
    jobs = plan(recipes(repo, "resnet18_dense", "resnet18_99"), 1, single=["Smiling"], joint=False,
                overrides=settings)
    assert run_sweep(jobs, tmp_path, echo=lambda *a: None) == []
    study = run_study(tmp_path, speed=False, echo=lambda *a: None)
    assert study["tasks"] == ["Smiling (backdoor)"]
    dense, sparse = study["levels"]["Smiling (backdoor)"]
    assert set(dense["ba"]) == {"Male", "Young", "Chubby", "Pale_Skin", "backdoor"}
    audit = json.loads((tmp_path / "audits" / "resnet18_99-s0-Smiling.json").read_text())
    calibrated = audit["metrics"]["compressed"]["views"]["calibrated"]["ba"]["backdoor"]["Smiling"]
    assert calibrated["value"] is not None or calibrated["reason"]      # audited against the backdoor flag
    from sparsebias.study import findings
    f13 = next(f for f in findings(study) if f["id"] == "F13")
    assert "Smiling (backdoor)" in f13["numbers"]   # tiny models may predict nothing: then F13 says so
    assert f13["reproduces"] is not None or "undefined" in f13["numbers"]


def test_an_interrupted_run_is_resumed(repo, tmp_path):
    from conftest import tiny_compress

    dense_settings = {k: v for k, v in TINY.items() if not k.startswith("pruning")}
    jobs = plan(recipes(repo, "resnet18_dense"), 1, overrides={**dense_settings, "num_epochs": 3})

    def stop_after_epoch_2(text, **_):
        if str(text).startswith("epoch 2/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_compress(jobs[0].recipe, tmp_path / "bundles", name=jobs[0].name, epochs=3, echo=stop_after_epoch_2)
    assert state(jobs[0], tmp_path) == "interrupted"
    messages = []
    assert run_sweep(jobs, tmp_path, echo=messages.append) == []
    assert messages[0] == "1 run(s): 0 done, 1 to resume, 0 new"
    assert "Resuming from" in (tmp_path / "logs" / f"{jobs[0].name}.log").read_text()
    assert state(jobs[0], tmp_path) == "done"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A real local Ray head node, started and stopped by the test, as an existing cluster would be."""
    pytest.importorskip("ray")
    port = _free_port()
    ray = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    started = subprocess.run([str(ray), "start", "--head", f"--port={port}", "--num-cpus=2",
                              "--node-ip-address=127.0.0.1", "--include-dashboard=false", f"--temp-dir={temp}"],
                             env=env, capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr
    yield f"127.0.0.1:{port}"
    subprocess.run([str(ray), "stop", "--force"], env=env, capture_output=True)
    shutil.rmtree(temp, ignore_errors=True)


def test_ray_path_on_a_local_cluster(repo, tmp_path, ray_cluster):
    import ray

    jobs = plan(recipes(repo, "resnet18_dense", "resnet18_90"), 1, overrides=TINY)
    messages = []
    try:
        assert run_sweep(jobs, tmp_path, ray_address=ray_cluster, echo=messages.append) == [], messages
    finally:
        ray.shutdown()
    assert any("to Ray at" in m for m in messages)
    assert all(state(j, tmp_path) == "done" for j in jobs)


def test_sweeps_into_one_folder_add_up(repo, tmp_path):
    from sparsebias.study.jobs import _write_plan

    joint = plan(recipes(repo, "resnet18_dense"), 1)
    single = plan(recipes(repo, "resnet18_dense"), 1, single=["Smiling"], joint=False)
    _write_plan(joint, tmp_path)
    _write_plan(single, tmp_path)
    assert [j.name for j in read_plan(tmp_path)] == ["resnet18_dense-s0", "resnet18_dense-s0-Smiling"]


def _visible_gpus_after(seconds):
    import time

    time.sleep(seconds)
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_each_pool_worker_sees_its_own_gpu(monkeypatch):
    from sparsebias.study import jobs

    monkeypatch.setattr(jobs, "_local_gpus", lambda: 2)
    with jobs._pool(3) as pool:   # 3 workers on 2 GPUs: round robin
        seen = sorted(f.result() for f in [pool.submit(_visible_gpus_after, 1.5) for _ in range(3)])
    assert seen == ["0", "0", "1"]
    monkeypatch.setattr(jobs, "_local_gpus", lambda: 0)
    with jobs._pool(2) as pool:
        assert pool.submit(_visible_gpus_after, 0).result() == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_the_sweep_verb_continues_a_sweep_and_frames_its_runs(tiny_sweep, repo):
    """sparsebias.sweep over a finished sweep: nothing re-runs, and the frame is the study's runs."""
    import sparsebias

    said = []
    study = sparsebias.sweep([repo / "recipes/resnet18_dense.yaml", repo / "recipes/resnet18_90.yaml"], tiny_sweep,
                             seeds=2, overrides=TINY, speed=False, echo=said.append)
    assert said[0] == "4 run(s): 4 done, 0 to resume, 0 new" and study.failed == []
    frame = study.to_frame()
    assert sorted(frame.index) == ["resnet18_90-s0", "resnet18_90-s1", "resnet18_dense-s0", "resnet18_dense-s1"]
    run = next(r for r in study.to_dict()["runs"] if r["name"] == "resnet18_90-s1")
    assert frame.loc["resnet18_90-s1", "sparsity"] == run["sparsity"] and frame.loc["resnet18_90-s1", "seed"] == 1
    assert {f["id"] for f in study.findings} >= {"F3", "F13"}


def test_int8_rungs_are_studied_beside_their_fp32_levels(tiny_sweep, repo, tmp_path):
    """sweep --int8: each pruned run quantized once, audited against the dense FP32 run, a rung after its level."""
    import sparsebias
    import sparsebias.report

    said = []
    study = sparsebias.sweep([repo / "recipes/resnet18_dense.yaml", repo / "recipes/resnet18_90.yaml"], tiny_sweep,
                             seeds=2, overrides=TINY, int8=True, speed=False, echo=said.append)
    assert [s for s in said if s.startswith("quantizing")] == ["quantizing resnet18_90-s0", "quantizing resnet18_90-s1"]
    assert [lv["level"] for lv in study.to_dict()["levels"]["joint"]] == ["dense", "90", "int8_90"]
    audit = json.loads((tiny_sweep / "audits" / "resnet18_90-s1-int8.json").read_text())
    assert audit["models"]["compressed"]["precision"] == "int8"
    assert audit["models"]["reference"]["name"] == "resnet18_dense-s1"
    sparsebias.report.write_study(study, tmp_path)
    assert "| Metric | Dense | 90 | 90 INT8 |" in (tmp_path / "study.md").read_text()
    again = []
    sparsebias.sweep([repo / "recipes/resnet18_90.yaml"], tiny_sweep, seeds=2, overrides=TINY, int8=True, speed=False,
                     echo=again.append)
    assert not [s for s in again if s.startswith("quantizing")]   # made once


def test_a_run_begun_with_other_settings_is_refused(repo, tmp_path):
    """`--quick` (or another --set) into a folder whose runs were trained otherwise would count
    them as done and study them under the new budget's name: refused, nothing written."""
    from sparsebias.study.jobs import _check_same_settings, _write_plan

    full = plan(recipes(repo, "resnet18_dense"), 1, overrides={"num_epochs": 32})
    _write_plan(full, tmp_path)
    (tmp_path / "bundles" / ".work" / full[0].name).mkdir(parents=True)
    (tmp_path / "bundles" / ".work" / full[0].name / "run.json").write_text("{}")
    plan_file = (tmp_path / "sweep.json").read_text()
    quick = plan(recipes(repo, "resnet18_dense"), 1, quick=True)
    with pytest.raises(SparsebiasError, match=r"run resnet18_dense-s0 was planned there with settings "
                                              r"num_epochs=32; this sweep asks for data=synthfaces:size=32, image_size=32, "
                                              r"num_epochs=14 \(sweep into"):
        run_sweep(quick, tmp_path)
    assert (tmp_path / "sweep.json").read_text() == plan_file
    _check_same_settings(plan(recipes(repo, "resnet18_dense"), 1, overrides={"num_epochs": 32.0}), tmp_path)
