"""Every engine loads a bundle and returns the same logits; missing back ends fail in one line."""

import numpy as np
import onnx
import pytest
from conftest import DEEPSPARSE, needs_deepsparse

from sparsebias.core import SparsebiasError
from sparsebias.core.ort_session import ort_session
from sparsebias.engines import ENGINES, EngineUnavailable, available_engines, load_engine, open_model, parse_engines

CPU_ENGINES = [pytest.param("deepsparse", marks=needs_deepsparse), "onnxruntime", "torch"]
GPU_ENGINES = ["onnxruntime-cuda", "onnxruntime-tensorrt"]


def check_batch(bundle):
    with np.load(bundle.file("check.npz")) as z:
        return z["inputs"], z["logits"]


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_cpu_engines_reproduce_the_exported_logits(sparse_bundle, engine):
    inputs, torch_logits = check_batch(sparse_bundle)
    ort = load_engine("onnxruntime", open_model(sparse_bundle.path), len(inputs)).predict(inputs)
    got = load_engine(engine, open_model(sparse_bundle.path), 4, num_cores=1).predict(inputs)
    assert got.shape == (len(inputs), 40)
    assert np.abs(got - ort).max() <= 1e-4
    assert np.abs(got - torch_logits).max() <= 1e-4


@pytest.mark.parametrize("engine", GPU_ENGINES)
def test_gpu_engines_agree_or_skip(sparse_bundle, engine):
    if ENGINES[engine].unavailable_reason():
        with pytest.raises(EngineUnavailable, match="onnxruntime-gpu"):
            load_engine(engine, open_model(sparse_bundle.path), 8)
        pytest.skip(f"{engine}: {ENGINES[engine].unavailable_reason()}")
    inputs, torch_logits = check_batch(sparse_bundle)
    got = load_engine(engine, open_model(sparse_bundle.path), len(inputs)).predict(inputs)
    assert np.abs(got - torch_logits).max() <= 1e-2  # TF32 math on the GPU


TORCH_GPU_ENGINES = ["torch-cuda", "torch-cuda-bf16"]


@pytest.mark.parametrize("engine", TORCH_GPU_ENGINES)
def test_torch_gpu_engines_agree_in_half_precision_or_skip(sparse_bundle, engine):
    if ENGINES[engine].unavailable_reason():
        with pytest.raises(EngineUnavailable, match="no CUDA GPU|no bf16"):
            load_engine(engine, open_model(sparse_bundle.path), 8)
        pytest.skip(f"{engine}: {ENGINES[engine].unavailable_reason()}")
    inputs, torch_logits = check_batch(sparse_bundle)
    loaded = load_engine(engine, open_model(sparse_bundle.path), len(inputs))
    got = loaded.predict(inputs)
    assert loaded.describe()["dtype"] == engine.rpartition("-")[2].replace("cuda", "fp16")
    assert np.abs(got - torch_logits).max() <= 0.05 * max(1.0, np.abs(torch_logits).max())


def test_torch_cuda_sparse_runs_2_4_layers_on_sparse_kernels_or_skips(repo, tmp_path, sparse_bundle):
    from conftest import tiny_compress

    if ENGINES["torch-cuda-sparse"].unavailable_reason():
        pytest.skip(f"torch-cuda-sparse: {ENGINES['torch-cuda-sparse'].unavailable_reason()}")
    unstructured = load_engine("torch-cuda-sparse", open_model(sparse_bundle.path), 8).describe()
    assert unstructured["sparse_layers"] == 0 and unstructured["sparse_weight_share"] == 0   # all dense, and said
    nm = tiny_compress(repo / "recipes/resnet18_nm_2_4.yaml", tmp_path, epochs=3, extra=["pruning_start_epoch=0"])
    inputs, torch_logits = check_batch(nm)
    sparse = load_engine("torch-cuda-sparse", open_model(nm.path), len(inputs))
    dense = load_engine("torch-cuda", open_model(nm.path), len(inputs))
    info = sparse.describe()
    assert info["sparse_layers"] >= 16 and 0.9 < info["sparse_weight_share"] <= 1.0
    np.testing.assert_allclose(sparse.predict(inputs), dense.predict(inputs), atol=0.05, rtol=0.05)


def test_predict_pads_the_last_batch(dense_bundle):
    inputs = np.random.default_rng(0).standard_normal((11, 3, 32, 32), dtype=np.float32)
    model = open_model(dense_bundle.path)
    whole = load_engine("onnxruntime", model, 11).predict(inputs)
    for engine in (*DEEPSPARSE, "onnxruntime"):
        np.testing.assert_allclose(load_engine(engine, model, 4, 1).predict(inputs), whole, atol=1e-4)


def test_onnxruntime_sessions_are_opened_one_way(dense_bundle):
    """The engine, export's check and quantize all open sessions through ort_session: exact INT8
    (no int16 saturation without VNNI), the engine's thread count, and a path or a proto alike."""
    inputs, _ = check_batch(dense_bundle)
    engine = load_engine("onnxruntime", open_model(dense_bundle.path), len(inputs), num_cores=1)
    options = engine._session.get_session_options()
    assert options.get_session_config_entry("session.x64quantprecision") == "1"
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    as_written = ort_session(onnx.load(str(dense_bundle.file("model.onnx"))), optimize=False)
    level = as_written.get_session_options().graph_optimization_level
    assert level == type(level).ORT_DISABLE_ALL
    got = as_written.run(None, {as_written.get_inputs()[0].name: inputs})[0]
    np.testing.assert_allclose(got, engine.predict(inputs), atol=1e-4)


def test_bare_onnx_file_runs_but_not_on_torch(dense_bundle):
    model = open_model(dense_bundle.file("model.onnx"))
    assert model.bundle is None and model.input_shape == (3, 32, 32) and model.fixed_batch is None
    with pytest.raises(EngineUnavailable, match="bare ONNX file"):
        load_engine("torch", model, 2)


def test_engine_names():
    assert parse_engines("deepsparse, onnxruntime,deepsparse") == ["deepsparse", "onnxruntime"]
    assert set(parse_engines("available")) >= {"onnxruntime", "torch", *DEEPSPARSE}
    assert parse_engines("auto,onnxruntime") == [*DEEPSPARSE, "onnxruntime"]
    assert set(available_engines()) <= set(ENGINES)
    with pytest.raises(SparsebiasError, match="unknown engine 'tensorflow'"):
        parse_engines("onnxruntime,tensorflow")


def test_not_onnx(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00 this is not a protobuf \xff" * 10)
    with pytest.raises(SparsebiasError, match="not a valid ONNX model"):
        open_model(bad)


def test_fixed_batch_that_does_not_match(dense_bundle, tmp_path):
    model = onnx.load(str(dense_bundle.file("model.onnx")))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    source = open_model(fixed)
    load_engine("onnxruntime", source, 1)
    with pytest.raises(SparsebiasError, match="fixed batch of 1, cannot run batch 16"):
        load_engine("onnxruntime", source, 16)


def test_batch_size_zero(dense_bundle):
    with pytest.raises(SparsebiasError, match="at least 1"):
        load_engine("onnxruntime", open_model(dense_bundle.path), 0)


def test_deepsparse_missing_is_one_line(dense_bundle):
    if not DEEPSPARSE:
        with pytest.raises(EngineUnavailable, match=r"DeepSparse is not installed \(pip install 'sparsebias\[deepsparse\]'"):
            load_engine("deepsparse", open_model(dense_bundle.path), 2)
    assert parse_engines("auto") == [DEEPSPARSE[0] if DEEPSPARSE else "onnxruntime"]
