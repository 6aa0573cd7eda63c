"""Architectures by name: torchvision's ResNets and MobileNetV2, and MobileNetV1.

Every model maps a (N, 3, H, W) image batch to (N, k) logits, one per attribute,
and keeps torchvision's parameter names so that recipes written for torchvision
models (params such as "re:layer1.*conv.*weight") apply unchanged.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ..core.errors import SparsebiasError


class MobileNetV1(nn.Module):
    """MobileNetV1 (Howard et al., 2017): a stem, then 13 depthwise-separable blocks.

    The paper sparsebias follows prunes it too; torchvision does not ship it.
    """

    # (output channels, stride) of each depthwise-separable block
    BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
              (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

    def __init__(self, num_classes: int = 1000, width: float = 1.0):
        super().__init__()
        ch = lambda c: max(8, int(c * width))  # noqa: E731
        layers = [_conv_bn(3, ch(32), 3, 2)]
        c_in = ch(32)
        for c_out, stride in self.BLOCKS:
            layers.append(nn.Sequential(
                _conv_bn(c_in, c_in, 3, stride, groups=c_in),   # depthwise
                _conv_bn(c_in, ch(c_out), 1, 1),                # pointwise
            ))
            c_in = ch(c_out)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _conv_bn(c_in, c_out, k, stride, groups=1):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


ARCHITECTURES = {
    "resnet18": lambda k: torchvision.models.resnet18(num_classes=k),
    "resnet34": lambda k: torchvision.models.resnet34(num_classes=k),
    "resnet50": lambda k: torchvision.models.resnet50(num_classes=k),
    "mobilenet_v2": lambda k: torchvision.models.mobilenet_v2(num_classes=k),
    "mobilenet_v1": lambda k: MobileNetV1(num_classes=k),
}


def build_model(arch: str, num_outputs: int) -> nn.Module:
    """A freshly initialised model with one logit per output."""
    if arch not in ARCHITECTURES:
        raise SparsebiasError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_outputs)


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of Conv2d and Linear layers, by parameter name: what sparsity is measured over."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def sparsity_report(model: nn.Module, as_exported: bool = False) -> tuple[float, dict[str, float]]:
    """Overall share of zero weights across prunable layers, and each layer's share.

    `as_exported`: as model.onnx holds them, each batch norm folded into the convolution it
    follows, so that a scale pruned to zero (SparseML prunes whatever a recipe's params match,
    batch norms included) empties its convolution's output channel."""
    zero = {name: w == 0 for name, w in prunable_weights(model).items()}
    if as_exported:
        for name, norm in _folded_batch_norms(model).items():
            zero[name] = zero[name] | (norm.weight == 0).view(-1, *[1] * (zero[name].dim() - 1))
    per_layer = {name: float(z.float().mean()) for name, z in zero.items()}
    total = sum(z.numel() for z in zero.values())
    return sum(int(z.sum()) for z in zero.values()) / total, per_layer


def _folded_batch_norms(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """Convolution weight name -> the batch norm that alone reads its output: the pairs the ONNX
    export folds into one convolution. None found where the model cannot be traced."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:   # tracing raises whatever the model's Python control flow does
        return {}
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        norm = modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if isinstance(norm, nn.BatchNorm2d) and norm.affine else None
        if isinstance(source, torch.fx.Node) and source.op == "call_module" and len(source.users) == 1 \
                and isinstance(modules.get(source.target), nn.Conv2d):
            pairs[f"{source.target}.weight"] = norm
    return pairs
