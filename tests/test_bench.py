"""`bench` on tiny bundles: the numbers hang together, the report is complete, bad input exits 2."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DEEPSPARSE

from sparsebias.cli import main
from sparsebias.engines import load_engine, open_model
from sparsebias.engines.benchmark import Settings, _add_speedups, measure, run_bench

QUICK = dict(warmup_s=0.0, duration_s=0.2)


def test_measure_is_self_consistent(dense_bundle):
    engine = load_engine("onnxruntime", open_model(dense_bundle.path), 4, 1)
    m = measure(engine, **QUICK)
    lat = m["latency_ms"]
    assert m["iterations"] >= 5
    assert m["items_per_second"] == pytest.approx(4 / (lat["mean"] / 1e3))  # items/s is batch / mean latency
    assert lat["p50"] <= lat["p90"] <= lat["p99"]


@pytest.fixture(scope="module")
def report(sparse_bundle, dense_bundle):
    settings = Settings(engines=[*DEEPSPARSE, "torch"], batch_sizes=[1, 4], cores=1, **QUICK)
    return run_bench([sparse_bundle.path], settings, reference=dense_bundle.path)


def test_every_model_engine_and_batch_is_measured(report):
    combos = {(r["model"], r["engine"], r["batch_size"]) for r in report["results"]}
    assert combos == {(m, e, b) for m in ("resnet18_90", "dense") for e in (*DEEPSPARSE, "torch", "onnxruntime")
                      for b in (1, 4)}
    assert all(r["items_per_second"] > 0 for r in report["results"])


def test_speedups_are_median_ratios_of_this_runs_rounds(report):
    rounds = {(r["model"], r["engine"], r["batch_size"]): np.array(r["rounds_items_per_second"])
              for r in report["results"]}
    for r in report["results"]:
        own, key = rounds[(r["model"], r["engine"], r["batch_size"])], (r["engine"], r["batch_size"])
        assert len(own) == 3 and r["iterations"] >= 15
        assert r["speedup_same_engine"] == pytest.approx(np.median(own / rounds[("dense", *key)]))
        vs_ort = own / rounds[("dense", "onnxruntime", r["batch_size"])]
        assert r["speedup_vs_onnxruntime"] == pytest.approx(np.median(vs_ort))
        assert r["speedup_vs_onnxruntime_range"] == pytest.approx([vs_ort.min(), vs_ort.max()])
    assert all(r["speedup_same_engine"] == 1.0 for r in report["results"] if r["reference"])


def test_speedup_is_the_median_of_per_round_ratios_not_of_totals():
    # the machine slowed down in round 2 for both models; the per-round ratio stays 2
    results = [{"model": "sparse", "engine": "onnxruntime", "batch_size": 1, "rounds_items_per_second": [200, 50, 180]},
               {"model": "dense", "engine": "onnxruntime", "batch_size": 1, "rounds_items_per_second": [100, 25, 60]}]
    _add_speedups(results, "dense")
    assert results[0]["speedup_vs_onnxruntime"] == 2.0
    assert results[0]["speedup_vs_onnxruntime_range"] == [2.0, 3.0]
    assert results[1]["speedup_same_engine"] == 1.0


def test_agreement_and_flops_are_reported(report, sparse_bundle):
    assert {(a["model"], a["engine"]) for a in report["agreement"]} == {
        (m, e) for m in ("resnet18_90", "dense") for e in (*DEEPSPARSE, "torch", "onnxruntime")}
    assert all(a["agrees"] and a["max_abs_diff"] <= 1e-4 for a in report["agreement"])
    sparse = next(m for m in report["models"] if m["name"] == "resnet18_90")
    assert sparse["flops"]["sparse_macs"] == sparse_bundle.manifest["flops"]["sparse_macs"]
    assert report["machine"]["versions"]["onnxruntime"]


def test_cli_writes_json_markdown_and_png(sparse_bundle, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["bench", str(sparse_bundle.path), "--engine", "onnxruntime",
                                       "--batch-size", "2", "--duration", "0.2", "--warmup", "0", "--cores", "1",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| resnet18_90 | onnxruntime | 2 |" in result.output
    data = json.loads((out / "bench.json").read_text())
    assert data["results"][0]["speedup_vs_onnxruntime"] == 1.0
    assert "## Engine agreement" in (out / "bench.md").read_text()
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "every value must be at least 1"),
    (["--batch-size", "a,b"], "comma-separated whole numbers"),
    (["--engine", "tensorrt-llm"], "unknown engine 'tensorrt-llm'"),
    (["--rounds", "0"], "--rounds"),
    # values that would never return, or measure nothing
    (["--rounds", "100000000"], "error: rounds must be 1 to 1000, got 100000000"),
    (["--duration", "1e308"], "error: duration must be 0.1 to 86,400 seconds, got 1e+308"),
    (["--duration", "nan"], "error: duration must be 0.1 to 86,400 seconds, got nan"),
    (["--warmup", "inf"], "error: warm-up must be 0 to 86,400 seconds, got inf"),
    (["--cores", "100000", "--engine", "onnxruntime"], "error: 100000 cores asked for; this machine has"),
    (["--batch-size", "10000000000000", "--engine", "onnxruntime"], "error: out of memory: Unable to allocate"),  # > 2**47 bytes: refused even where memory is overcommitted
])
def test_bad_options_exit_2(dense_bundle, tmp_path, args, message):
    result = CliRunner().invoke(main, ["bench", str(dense_bundle.path), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "r").exists()


def test_bad_models_exit_2(dense_bundle, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_text("not onnx")
    result = CliRunner().invoke(main, ["bench", str(junk), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "junk.onnx: not a valid ONNX model" in result.output
    assert "Traceback" not in result.output


def test_a_bare_onnx_file_with_external_data_on_every_available_engine(dense_bundle, tmp_path):
    """Large models are saved with their weights beside the graph; the torch engine needs a
    bundle, so 'available' leaves it out for a bare file and says why."""
    import onnx

    model = onnx.load(str(dense_bundle.file("model.onnx")))
    onnx.save_model(model, str(tmp_path / "big.onnx"), save_as_external_data=True, location="big.weights",
                    size_threshold=0)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "big.onnx"), "--engine", "available",
                                       "--batch-size", "2", "--duration", "0.2", "--warmup", "0", "--rounds", "1",
                                       "--cores", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "bench.json").read_text())
    assert "torch" not in data["settings"]["engines"]
    assert "bare ONNX file" in data["skipped_engines"]["torch"]
    assert "note: torch left out" in result.output
    assert all(a["agrees"] for a in data["agreement"])
    assert data["models"][0]["weight_sparsity"] == pytest.approx(
        dense_bundle.manifest["sparsity"]["overall"], abs=0.01)
