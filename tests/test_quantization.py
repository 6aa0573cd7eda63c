"""INT8 bundles: pruned zeros kept, the graph checked against its simulation in float, the
change against the FP32 parent recomputed here, and DeepSparse running all of it."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import TINY_DATA, TINY_SETTINGS, cli, needs_deepsparse, refused
from onnx import numpy_helper

import sparsebias
from sparsebias.engines import EngineUnavailable, load_engine, open_model


@pytest.fixture(scope="module")
def int8(sparse_bundle, tmp_path_factory):
    return sparsebias.quantize(sparse_bundle, calibration=64, out_dir=tmp_path_factory.mktemp("int8"),
                               echo=lambda *a, **k: None)


def _weights(path, op, *indices):
    """Per node of type `op`, in graph order, its initializer inputs at `indices`."""
    model = onnx.load(str(path))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [tuple(values[n.input[i]] for i in indices) for n in model.graph.node if n.op_type == op]


def test_weights_are_symmetric_int8_and_pruned_zeros_stay_zero(sparse_bundle, int8):
    fp32 = [w for w, in _weights(sparse_bundle.file("model.onnx"), "Conv", 1)]
    quantized = _weights(int8.file("model.onnx"), "QLinearConv", 3, 4, 5)
    assert len(fp32) == len(quantized) == 20 and not _weights(int8.file("model.onnx"), "Conv", 1)
    for w, (q, scale, zero_point) in zip(fp32, quantized):
        assert q.dtype == np.int8 and zero_point.dtype == np.int8 and zero_point == 0 and scale.shape == ()
        assert scale == pytest.approx(np.abs(w).max() / 127, rel=1e-6)
        assert np.all(q[w == 0] == 0)                                   # every pruned weight is still zero
        assert np.abs(q * scale - w).max() <= scale / 2 * (1 + 1e-5)   # round to nearest
    assert int8.manifest["flops"]["weight_sparsity"] >= sparse_bundle.manifest["flops"]["weight_sparsity"]


def test_the_change_against_the_parent_is_recomputed_from_the_logits(sparse_bundle, int8):
    q = int8.manifest["quantization"]
    for split in ("val", "test"):
        ours, theirs = int8.split(split), sparse_bundle.split(split)
        y = int8.attribute_labels(ours)
        accuracy = [((z > 0) == (y > 0)).mean() for z in (ours["logits"], theirs["logits"])]
        assert q["change"][split]["accuracy"] == pytest.approx(accuracy[0] - accuracy[1], abs=1e-12)
        assert q["decisions_changed"][split] == pytest.approx(np.mean((ours["logits"] > 0) != (theirs["logits"] > 0)))
        np.testing.assert_array_equal(ours["ids"], theirs["ids"])
    # the INT8 graph computes what its float simulation does, up to requantization rounding
    v = q["verified"]
    assert v["mean_abs_diff_vs_simulated"] < 0.5 * v["mean_abs_diff_vs_fp32"]
    assert v["decisions_differ_vs_simulated"] <= q["decisions_changed"]["val"]


def test_the_audit_of_int8_against_fp32_re_runs_both(sparse_bundle, int8):
    report = sparsebias.audit(int8, sparse_bundle)
    assert report.models["compressed"]["precision"] == "int8" and report.models["reference"]["precision"] == "fp32"
    assert report.models["compressed"]["logits"]["source"] == "re-run"
    test = int8.split("test")
    y = int8.attribute_labels(test)
    np.testing.assert_allclose(report.to_frame()["compressed_accuracy"], ((test["logits"] > 0) == (y > 0)).mean(0))


def test_int8_bundles_refuse_what_they_cannot_do(int8, repo, tmp_path):
    with pytest.raises(EngineUnavailable, match="no torch weights"):
        load_engine("torch", open_model(int8))
    refused(cli("quantize", int8.path), "is already quantized (int8)")
    refused(cli("quantize", int8.path, "--name", int8.path.name, "--out", int8.path.parent),
            "is already quantized")
    refused(cli("compress", "--recipe", repo / "recipes/resnet18_pt_95.yaml", "--from", int8.path, "--data", TINY_DATA,
                "--out", tmp_path, *[x for s in TINY_SETTINGS for x in ("--set", s)]),
            "has no torch weights (an INT8 bundle: start from its FP32 parent")


def _in_a_child(code: str) -> list[str]:
    """The lines a Python child prints; DeepSparse aborts the process, not raises, on graphs it
    cannot compile, so it runs outside pytest's."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()


@needs_deepsparse
def test_deepsparse_runs_the_whole_int8_graph(int8, sparse_bundle):
    code = ("import json, numpy as np; from sparsebias.engines import load_engine, open_model; "
            f"m = open_model({str(int8.path)!r}); x = np.load({str(int8.file('check.npz'))!r})['inputs']; "
            "d = load_engine('deepsparse', m, len(x)); o = load_engine('onnxruntime', m, len(x)); "
            "a, b = d.predict(x), o.predict(x); "
            "print(json.dumps({'share': d.describe()['supported_share'], 'deepsparse': a.tolist(), "
            "'onnxruntime': b.tolist()}))")
    result = json.loads(_in_a_child(code)[-1])
    assert result["share"] == 1.0
    deepsparse, onnxruntime = np.array(result["deepsparse"]), np.array(result["onnxruntime"])
    fp32 = np.load(sparse_bundle.file("check.npz"))
    np.testing.assert_array_equal(fp32["inputs"], np.load(int8.file("check.npz"))["inputs"])
    # The engines run the same integer arithmetic, but one requantization that rounds the other
    # way moves the layers after it: most logits agree to 1e-6, a few by up to 0.1 (a tiny
    # model trained at lr 0.3, AVX2). A wrong graph (a scale or a zero point off) moves every
    # logit, by as much as quantization itself does: export_qdq's rule tells the two apart.
    diff = np.abs(deepsparse - onnxruntime)
    assert np.median(diff) < 1e-4
    assert diff.mean() < 0.5 * np.abs(onnxruntime - fp32["logits"]).mean()
    assert ((deepsparse > 0) == (onnxruntime > 0)).mean() >= 0.95


@needs_deepsparse
def test_deepsparse_never_takes_the_process_down_on_an_int8_graph(int8):
    """DeepSparse 1.8 can abort the process compiling a sparse INT8 graph (batch 16 and 32 here,
    on AVX2 and on AVX-512 VNNI alike): the engine compiles it in a child first and refuses in one line.
    Where it runs, a re-run of the bundle on it agrees with the logits onnxruntime stored."""
    code = ("import sys; from sparsebias.auditing import replay_bundle; from sparsebias.bundle import load_bundle; "
            "from sparsebias.engines import EngineUnavailable, load_engine, open_model; "
            f"bundle = load_bundle({str(int8.path)!r}); model = open_model(bundle)\n"
            "for batch in (1, 16, 32):\n"
            "    try:\n"
            "        engine = load_engine('deepsparse', model, batch)\n"
            "        replay_bundle(bundle, splits=('val',), engine='deepsparse', batch_size=batch, echo=print)\n"
            "        print('ran', batch, engine.tolerance)\n"
            "    except EngineUnavailable as e:\n"
            "        print('refused', batch, e)\n")
    verdicts = [line for line in _in_a_child(code) if line.startswith(("ran", "refused"))]
    assert [int(v.split()[1]) for v in verdicts] == [1, 16, 32]
    for verdict in verdicts:
        assert verdict.endswith(" 0.2") or "aborted compiling the INT8 graph" in verdict, verdict


def test_the_command_writes_and_describes_the_int8_bundle(sparse_bundle, tmp_path):
    result = cli("quantize", sparse_bundle.path, "--calibration", 16, "--seed", 3, "--out", tmp_path, "--name", "q")
    assert result.exit_code == 0, result.output
    assert "precision    int8 for deepsparse, post-training static (16 calibration images)" in result.output
    manifest = sparsebias.load_bundle(tmp_path / "q").manifest
    assert manifest["quantization"]["calibration"] == {"split": "train", "samples": 16, "seed": 3,
                                                       "ranges": "min-max"}
    assert "model.pt" not in manifest["files"] and "mitigations" not in manifest


@pytest.fixture(scope="module")
def tensorrt_int8(sparse_bundle, tmp_path_factory):
    return sparsebias.quantize(sparse_bundle, calibration=64, out_dir=tmp_path_factory.mktemp("trt"),
                               name="trt", target="tensorrt", echo=lambda *a, **k: None)


def test_the_tensorrt_graph_quantizes_every_conv_input_and_residual_add_to_int8_symmetric(sparse_bundle,
                                                                                        tensorrt_int8):
    model = onnx.load(str(tensorrt_int8.file("model.onnx")))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    fp32 = [w for w, in _weights(sparse_bundle.file("model.onnx"), "Conv", 1)]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(convs) == len(fp32) == 20 and len(adds) == 8
    for node in convs + adds:
        for x in node.input[:1] if node.op_type == "Conv" else node.input:
            dq = producer[x]
            q = producer[dq.input[0]]
            assert (dq.op_type, q.op_type) == ("DequantizeLinear", "QuantizeLinear")
            zp = values[q.input[2]]
            assert zp.dtype == np.int8 and zp.shape == () and zp == 0 and values[dq.input[1]] == values[q.input[1]]
    for node, w in zip(convs, fp32):
        dq = producer[node.input[1]]
        q, scale, zp = (values[name] for name in dq.input)
        assert q.dtype == np.int8 and zp.dtype == np.int8 and not zp.any() and scale.shape == (len(w),)
        assert dict(a for a in [(a.name, a.i) for a in dq.attribute]) == {"axis": 0}
        expected = np.abs(w).reshape(len(w), -1).max(axis=1) / 127
        np.testing.assert_allclose(scale[expected > 0], expected[expected > 0], rtol=1e-6)
        assert np.all(q[w == 0] == 0)                                   # every pruned weight is still zero
        assert np.abs(q * scale.reshape(-1, 1, 1, 1) - w).max() <= scale.max() / 2 * (1 + 1e-5)
    flops = tensorrt_int8.manifest["flops"]
    assert flops["weight_sparsity"] >= sparse_bundle.manifest["flops"]["weight_sparsity"]
    assert flops["dense_macs"] > sparse_bundle.manifest["flops"]["dense_macs"] > flops["sparse_macs"] * 1.5


def test_the_tensorrt_bundle_records_its_target_and_its_change(sparse_bundle, tensorrt_int8):
    q = tensorrt_int8.manifest["quantization"]
    assert q["target"] == "tensorrt" and "int8, symmetric, per tensor, zero point 0" in q["scheme"]["activations"]
    ours, theirs = tensorrt_int8.split("test"), sparse_bundle.split("test")
    assert q["decisions_changed"]["test"] == pytest.approx(np.mean((ours["logits"] > 0) != (theirs["logits"] > 0)))
    assert q["decisions_changed"]["test"] < 0.05

