"""Quantization-aware training from a recipe: the fake quantization sits where the INT8 graph
quantizes, exports as QDQ pairs that compute what torch computes, and `quantize` turns the
trained ranges into the INT8 bundle without calibrating; pruned weights stay zero."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import TINY_SETTINGS, cli, refused, tiny_compress
from onnx import numpy_helper

import sparsebias
from sparsebias.bundle.export import ExportError, export_qdq, qdq_agreement
from sparsebias.core.errors import SparsebiasError
from sparsebias.core.int8 import QParams
from sparsebias.modifiers import QuantizationModifier
from sparsebias.modifiers.quantization import quantization_aware, quantizers
from sparsebias.quantization.graph import fake_quant_graph, quantize_graph, read_qdq
from sparsebias.recipes import load_recipe, parse_overrides
from sparsebias.training.models import build_model

RECIPE = "recipes/resnet18_layerwise_95_qat.yaml"


def _unoptimized(model):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _observed(arch):
    """A model of `arch` whose quantizers have seen a few training batches, in eval mode."""
    torch.manual_seed(0)
    model = build_model(arch, 3)
    modifier = QuantizationModifier(start_epoch=0.0)
    modifier.initialize(model)
    modifier.update(model, None, 0.0, 1)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(16, 3, 32, 32) * 2)
    state = modifier.state_dict()
    modifier.finalize(model)
    return model, modifier, state


@pytest.mark.parametrize("arch, expected", [("resnet18", 29), ("mobilenet_v1", 28), ("mobilenet_v2", None)])
def test_the_fake_quantization_is_where_the_int8_graph_quantizes(arch, expected, tmp_path):
    model, modifier, state = _observed(arch)
    aware = modifier.quantization_aware_model(model, state)
    if expected is not None:   # resnet18: input, stem, 3 per block, 3 shortcuts; mobilenet_v1: input, 27 convs
        assert len(quantizers(aware)) == expected
    batch = torch.randn(4, 3, 32, 32)
    assert export_qdq(aware, model, tmp_path / "qdq.onnx", batch)["max_abs_diff_vs_torch"] <= 1e-4
    fp32, params = read_qdq(onnx.load(str(tmp_path / "qdq.onnx")))
    assert len(params) == len(quantizers(aware))
    assert not [n for n in fp32.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    int8 = quantize_graph(fp32, params)   # every tensor the INT8 graph quantizes has its trained range ...
    scales = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    for tensor, p in params.items():      # ... and every trained range is used, unchanged
        assert scales[f"{tensor}_scale"] == np.float32(p.scale) and scales[f"{tensor}_zp"] == p.zero_point


def test_the_qdq_check_tolerates_rounding_steps_but_not_a_wrong_grid():
    rng = np.random.default_rng(0)
    unquantized = rng.normal(0, 1, (64, 40)).astype(np.float32)
    step = 0.02                                   # the grid quantization rounds to
    fake_quant = unquantized + rng.uniform(-step / 2, step / 2, unquantized.shape).astype(np.float32)
    flipped = fake_quant.copy()                   # a rounding step on 15% of images moves their logits
    flipped[::7] += rng.normal(0, 0.01, flipped[::7].shape).astype(np.float32)
    agreement = qdq_agreement(flipped, fake_quant, unquantized)
    assert agreement["median_abs_diff_vs_torch"] == 0.0 and agreement["max_abs_diff_vs_torch"] > 0.02
    assert qdq_agreement(fake_quant, fake_quant, unquantized)["mean_abs_diff_vs_torch"] == 0.0
    with pytest.raises(ExportError, match="more than half of what quantization changes"):
        qdq_agreement(fake_quant + step, fake_quant, unquantized)   # a zero point one step off, everywhere


def test_quantizers_use_the_int8_graphs_grid():
    quantizer = quantizers(quantization_aware(build_model("mobilenet_v1", 2)))[0]
    quantizer.train()
    x = torch.linspace(-0.7, 3.1, 200).reshape(1, 1, 10, 20)
    y = quantizer(x)
    p = QParams.from_range(float(x.min()), float(x.max()))   # the first batch sets the range
    assert p == quantizer.params()
    steps = (y / p.scale).numpy() + p.zero_point
    assert np.allclose(steps, np.round(steps), atol=1e-3) and steps.min() >= 0 and steps.max() <= 255
    assert torch.equal(quantizer(torch.zeros(1, 1, 2, 2)), torch.zeros(1, 1, 2, 2))   # zero stays exact


@pytest.fixture(scope="module")
def qat_bundles(repo, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat")
    fp32 = tiny_compress(repo / RECIPE, out, name="qat", epochs=2, extra=["quantization_start_epoch=1"])
    return fp32, sparsebias.quantize(fp32, echo=lambda *a, **k: None)


def test_a_qat_recipe_writes_a_bundle_that_quantizes_with_its_trained_ranges(qat_bundles):
    fp32, int8 = qat_bundles
    aware = fp32.manifest["quantization_aware_training"]
    assert aware["start_epoch"] == 1 and aware["freeze_bn_stats_epoch"] == 1.5
    check = aware["export"]   # most logits exact; a rounding step moves a few images (max 0.016 here)
    assert check["median_abs_diff_vs_torch"] < 1e-5 and check["check_batch"] == 48
    assert check["mean_abs_diff_vs_torch"] <= check["mean_abs_change_by_quantization"] / 2
    assert fp32.manifest.sparsity == pytest.approx(0.9475, abs=1e-3)
    q = int8.manifest["quantization"]
    assert q["method"] == "quantization-aware training" and "calibration" not in q
    _, trained = read_qdq(onnx.load(str(fp32.file("model.qdq.onnx"))))
    graph = onnx.load(str(int8.file("model.onnx"))).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for tensor, p in trained.items():
        assert values[f"{tensor}_scale"] == np.float32(p.scale) and values[f"{tensor}_zp"] == p.zero_point
    # pruned weights are zero in the int8 graph, layer by layer
    plain = onnx.load(str(fp32.file("model.onnx")))
    fp32_values = {i.name: numpy_helper.to_array(i) for i in plain.graph.initializer}
    fp32_weights = [fp32_values[n.input[1]] for n in plain.graph.node if n.op_type == "Conv"]
    int8_weights = [values[n.input[3]] for n in graph.node if n.op_type == "QLinearConv"]
    assert len(fp32_weights) == len(int8_weights) == 20
    for w, q in zip(fp32_weights, int8_weights):
        assert np.all(q[w == 0] == 0)


def test_the_int8_bundle_computes_what_the_quantization_aware_model_computes(qat_bundles):
    """INT8 graph = its simulation in float (checked by quantize, recorded); the simulation with
    float biases = the QDQ export of the torch model, to float rounding: the INT8 graph is the
    quantization-aware model but for the int32 rounding of its biases."""
    fp32, int8 = qat_bundles
    verified = int8.manifest["quantization"]["verified"]
    # equal but for rounding ties, which float and integer arithmetic can break apart: a tie moves
    # one requantized value a step and the logits of its image (by up to 0.02 in some seeds here)
    assert verified["mean_abs_diff_vs_simulated"] < 1e-3 and verified["max_abs_diff_vs_simulated"] < 0.05
    assert verified["decisions_differ_vs_simulated"] < 0.01
    qdq = onnx.load(str(fp32.file("model.qdq.onnx")))
    stripped, _ = read_qdq(qdq)
    simulated = fake_quant_graph(stripped, onnx.load(str(int8.file("model.onnx"))))
    biases = {i.name: i for i in stripped.graph.initializer}
    for init in simulated.graph.initializer:
        if init.name in biases and any(n.op_type == "Conv" and n.input[2:] == [init.name] for n in stripped.graph.node):
            init.CopyFrom(biases[init.name])
    images = np.load(fp32.file("check.npz"))["inputs"]
    aware = _unoptimized(qdq).run(None, {"input": images})[0]
    got = _unoptimized(simulated).run(None, {"input": images})[0]
    assert np.abs(got - aware).max() < 1e-4


@pytest.mark.parametrize("arguments, message", [
    ("scheme: tensorrt", "symmetric activations"),
    ("scheme: {weights: {num_bits: 8, symmetric: false}, input_activations: {num_bits: 8, symmetric: false}}",
     "weights"),
    ("ignore: [classifier]", "ignore is not supported"),
    ("activation_bits: 4", "activation_bits must be 8"),
    ("freeze_bn_stats_epoch: 0.5", "before start_epoch"),
])
def test_quantization_modifier_arguments_it_cannot_honour_are_refused(tmp_path, arguments, message):
    recipe = tmp_path / "qat.yaml"
    recipe.write_text("modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: 2\n"
                      f"  - !QuantizationModifier\n    start_epoch: 1\n    {arguments}\n")
    with pytest.raises(SparsebiasError, match=message):
        load_recipe(recipe)


def test_start_epoch_minus_one_starts_quantization_at_once(tmp_path):
    """SparseML's default, and what its transfer recipes compute as `num_epochs - quantization_epochs`."""
    recipe = tmp_path / "qat.yaml"
    recipe.write_text("modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: 2\n"
                      "  - !QuantizationModifier\n    start_epoch: eval(2 - 3)\n")
    assert load_recipe(recipe).quantization_modifier.start_epoch == 0.0


def test_quantization_must_start_before_training_ends(repo):
    with pytest.raises(SparsebiasError, match="when training has ended"):
        load_recipe(repo / RECIPE, parse_overrides([*TINY_SETTINGS, "num_epochs=4", "quantization_start_epoch=4"]))


@pytest.mark.parametrize("submodules, message", [
    (None, None), (["input", "sections"], None), (["conv1", "layer1", "layer2", "layer3", "layer4"], None),
    ([""], None), (["sections"], "leave 1 convolution(s) in float (e.g. conv1)"),
    (["bert.encoder"], "submodules 'bert.encoder' names no module of resnet18"),
])
def test_submodules_must_cover_every_convolution(tmp_path, submodules, message):
    """SparseML's ResNet QAT recipes name `input` and `sections`; on torchvision's ResNets
    those are the stem and layer1-4, every convolution the INT8 graph quantizes."""
    from sparsebias.recipes.recipe import check_recipe_against_model

    recipe = tmp_path / "qat.yaml"
    listed = "" if submodules is None else f"\n    submodules: {submodules}"
    recipe.write_text("modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: 2\n"
                      f"  - !QuantizationModifier\n    start_epoch: 1{listed}\n")
    loaded, model = load_recipe(recipe), build_model("resnet18", 2)
    if message is None:
        check_recipe_against_model(loaded, model, "resnet18")
    else:
        with pytest.raises(SparsebiasError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_recipe_against_model(loaded, model, "resnet18")


@pytest.mark.parametrize("excluded, message", [
    (["LayerNorm", "Tanh"], None), (["SiLU", "Linear", "BatchNorm2d"], None), ([], None),
    (["Linear", "Conv2d"], "exclude_module_types 'Conv2d': resnet18 has such modules"),
    (["ReLU"], "exclude_module_types 'ReLU': resnet18 has such modules and sparsebias's INT8 graph quantizes"),
    ("Conv2d", "exclude_module_types must be a list of module type names"),
])
def test_excluded_module_types_must_change_nothing(tmp_path, excluded, message):
    """BERT and YOLO recipes exclude LayerNorm, Tanh or SiLU, types a ResNet lacks; the INT8 form
    keeps the classifier in float and folds batch norms; excluding anything else would change it."""
    from sparsebias.recipes.recipe import check_recipe_against_model

    recipe = tmp_path / "qat.yaml"
    recipe.write_text("modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: 2\n"
                      f"  - !QuantizationModifier\n    start_epoch: 1\n    exclude_module_types: {excluded}\n")
    if message is None:
        check_recipe_against_model(load_recipe(recipe), build_model("resnet18", 2), "resnet18")
    else:
        with pytest.raises(SparsebiasError, match=message):
            check_recipe_against_model(load_recipe(recipe), build_model("resnet18", 2), "resnet18")


def test_a_quantization_aware_phase_that_saw_no_batch_is_refused(repo, tmp_path):
    """It starts at an optimizer step and acts from the next batch: starting at the last step is too late."""
    with pytest.raises(SparsebiasError, match="saw a batch; start it earlier"):
        tiny_compress(repo / RECIPE, tmp_path, epochs=1, extra=["quantization_start_epoch=0.9"])


def test_the_best_epoch_is_chosen_among_the_quantization_aware_ones(repo, tmp_path):
    """Pruning ends at epoch 1, QAT starts at 3: epochs 2 and 3 trained in float are not candidates."""
    bundle = tiny_compress(repo / RECIPE, tmp_path, epochs=4,
                           extra=["pruning_end_epoch=1", "quantization_start_epoch=3"])
    assert bundle.manifest["training"]["best_epoch"] == 4
    assert bundle.manifest["quantization_aware_training"]["start_epoch"] == 3


def test_a_resumed_run_carries_on_with_the_same_fake_quantization():
    """What --resume restores: the ranges seen so far, which quantizers still observe, frozen BN."""
    model, _, _ = _observed("resnet18")
    modifier = QuantizationModifier(start_epoch=0.0, freeze_bn_stats_epoch=1.0, disable_quantization_observer_epoch=1.0)
    modifier.initialize(model)
    modifier.update(model, None, 0.0, 1)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
    modifier.update(model, None, 1.0, 1)             # BN frozen, observers stopped
    state, batch = modifier.state_dict(), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(batch)
    modifier.finalize(model)

    resumed = QuantizationModifier(start_epoch=0.0, freeze_bn_stats_epoch=1.0, disable_quantization_observer_epoch=1.0)
    resumed.initialize(model)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32) * 5)          # stopped observers do not move
        assert torch.equal(model.eval()(batch), expected)


def test_the_command_says_calibration_options_go_unused_on_a_qat_bundle(qat_bundles, tmp_path):
    from conftest import cli

    fp32, _ = qat_bundles
    result = cli("quantize", fp32.path, "--calibration", 16, "--out", tmp_path, "--name", "q")
    assert result.exit_code == 0, result.output
    assert "precision    int8 for deepsparse, quantization-aware training" in result.output
    assert "note: --calibration unused: the ranges come from the bundle's quantization-aware training" in result.output


def test_a_qat_bundle_is_not_quantized_for_tensorrt(qat_bundles, tmp_path):
    fp32, _ = qat_bundles
    refused(cli("quantize", fp32.path, "--target", "tensorrt", "--out", tmp_path), "trained quantization-aware on uint8")
    assert not any(tmp_path.iterdir())
