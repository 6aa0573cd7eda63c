"""FLOPs from the ONNX graph against hand counts and the published resnet18 figure."""

import warnings

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper, numpy_helper

from sparsebias.bundle.flops import count_flops


def tiny_graph(conv_w, fc_w):
    """x (N,1,4,4) -> Conv 3x3 (no padding) -> Relu -> Flatten -> Gemm (transB): hand-countable."""
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[3, 3], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fw"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(conv_w, "cw"), numpy_helper.from_array(fc_w, "fw")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_hand_counted_dense_and_sparse():
    conv_w = np.ones((2, 1, 3, 3), np.float32)
    fc_w = np.ones((3, 8), np.float32)
    conv_w[0] = 0            # half the conv weights
    fc_w[:, :2] = 0          # 6 of 24 fc weights
    report = count_flops(tiny_graph(conv_w, fc_w))
    conv, fc = report.layers
    # conv: output 2x2 positions x (2 out x 1 in x 3 x 3) weights = 72 MACs; half non-zero
    assert (conv.dense_macs, conv.sparse_macs, conv.weight_sparsity) == (72, 36, 0.5)
    # fc: one row x 24 weights
    assert (fc.dense_macs, fc.sparse_macs, fc.weight_sparsity) == (24, 18, 0.25)
    assert report.other_ops == 8  # Relu over 2x2x2 outputs; Flatten is free
    assert (report.dense_macs, report.sparse_macs) == (104, 62)
    assert report.weight_sparsity == pytest.approx((9 + 6) / (18 + 24))
    d = report.to_dict()
    assert d["dense_flops"] == 208 and d["reduction"] == pytest.approx(104 / 62)


def test_batch_size_does_not_change_the_per_image_count():
    model = tiny_graph(np.ones((2, 1, 3, 3), np.float32), np.ones((3, 8), np.float32))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 32
    assert count_flops(model).dense_macs == 104


@pytest.fixture(scope="module")
def resnet18_224(tmp_path_factory):
    path = tmp_path_factory.mktemp("r18") / "resnet18.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torchvision.models.resnet18().eval(), torch.zeros(1, 3, 224, 224), str(path),
                          dynamo=False, opset_version=13, dynamic_axes={"input": {0: "b"}}, input_names=["input"])
    return path


def test_resnet18_matches_the_published_figure(resnet18_224):
    report = count_flops(resnet18_224)
    weighted = sum(layer.dense_macs for layer in report.layers)
    assert weighted == 1_814_073_344            # conv + fc multiply-adds, counted by hand from the architecture
    assert report.dense_macs / 1e9 == pytest.approx(1.82, abs=0.01)   # "1.8 GMACs"; 3.64 GFLOPs in the paper
    assert report.sparse_macs == pytest.approx(report.dense_macs, rel=1e-6)  # random init: a stray exact zero at most
    assert len(report.layers) == 21  # 20 convolutions and the fc layer


def test_sparse_count_scales_each_layer_by_its_nonzero_share(resnet18_224, tmp_path):
    model = onnx.load(str(resnet18_224))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 4 and w.shape[1] > 3:      # every conv but the first
            w = np.where(rng.random(w.shape) < 0.9, 0, w).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    report = count_flops(model)
    for layer in report.layers:
        assert layer.sparse_macs == pytest.approx(layer.dense_macs * (1 - layer.weight_sparsity), rel=1e-9)
    assert 6 < report.dense_macs / report.sparse_macs < 7


def test_layers_whose_weights_the_exporter_shares_are_counted(tmp_path):
    """torch's exporter keeps one copy of equal weights (here two emptied layers) and reads it
    through an Identity: both layers are still there, and both are empty."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    with torch.no_grad():
        model.layer4[1].conv1.weight.zero_()
        model.layer4[1].conv2.weight.zero_()
    path = tmp_path / "shared.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, 64, 64), str(path), dynamo=False, opset_version=13)
    assert "Identity" in {node.op_type for node in onnx.load(str(path)).graph.node}
    report = count_flops(path)
    assert len(report.layers) == 21
    assert sorted(layer.weight_sparsity for layer in report.layers)[-2:] == [1.0, 1.0]
