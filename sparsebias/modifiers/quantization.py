"""Quantization-aware training, scheduled by SparseML's QuantizationModifier, simulating the
INT8 graph sparsebias writes (sparsebias.quantization) and nothing else.

From `start_epoch`, the model's forward pass runs with the INT8 graph's rounding: each
convolution with the batch norm after it folded in and the folded weights fake-quantized to
int8 (symmetric, one scale per tensor, zero point 0, so pruned weights stay zero), and a
uint8 fake quantization wherever the INT8 graph quantizes a tensor: the input, each
convolution's and residual addition's output (after the ReLU that follows it, which the
graph folds in), and every other input of a convolution or addition. Max pooling keeps its
input's grid; everything else (pooling, the classifier) stays float. Gradients pass the
rounding straight through. Activation ranges are moving averages of each training batch's
minimum and maximum (averaging constant 0.01, as torch's and SparseML's default observer)
until `disable_quantization_observer_epoch`; batch norms learn their statistics until
`freeze_bn_stats_epoch` (until then a convolution runs on weights folded with the running
statistics and is corrected to the batch's, as in Krishnamoorthi 2018, section 3.2).

The model's parameters and state_dict stay as they were: the fake-quantized forward pass is
a traced copy of the model (torch.fx) sharing its modules, installed as its `forward`. At
the end it is exported as a QDQ graph (QuantizeLinear-DequantizeLinear pairs), from which
`sparsebias quantize` reads the ranges instead of calibrating.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..core.int8 import INT8_MAX, UINT8_MAX, QParams
from .base import Modifier, RecipeError, number

AVERAGING_CONSTANT = 0.01
SCHEME = {"input_activations": {"num_bits": 8, "symmetric": False},
          "weights": {"num_bits": 8, "symmetric": True}}
SCHEME_ALIASES = ("default", "deepsparse")


class ActivationQuantizer(nn.Module):
    """Fake-quantizes one tensor to uint8 over the range its observer has seen; until it has
    seen a training batch (quantization-aware training starts at an optimizer step, so takes
    effect from the next batch) it passes values through."""

    def __init__(self):
        super().__init__()
        self.register_buffer("low", torch.tensor(float("nan")))
        self.register_buffer("high", torch.tensor(float("nan")))
        self.observing = True

    def forward(self, x):
        if self.training and self.observing:
            with torch.no_grad():
                low, high = (v.float() for v in torch.aminmax(x.detach()))
                if torch.isnan(self.low):
                    self.low.copy_(low), self.high.copy_(high)
                else:
                    self.low.add_(AVERAGING_CONSTANT * (low - self.low))
                    self.high.add_(AVERAGING_CONSTANT * (high - self.high))
        if torch.isnan(self.low):
            return x
        params = self.params()
        y = torch.fake_quantize_per_tensor_affine(_float32(x), params.scale, params.zero_point, 0, UINT8_MAX)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def params(self) -> QParams:
        if torch.isnan(self.low):
            raise RuntimeError("a quantizer was used before it observed a training batch")
        return QParams.from_range(float(self.low), float(self.high))


def _float32(x: torch.Tensor) -> torch.Tensor:
    """fp32 for the fake quantization under autocast; no Cast in an export (fp32 already)."""
    return x if x.dtype == torch.float32 else x.float()


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """int8 symmetric per-tensor fake quantization; gradients pass straight through."""
    scale = (weight.detach().abs().max() / INT8_MAX).float().reshape(())
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.zeros((), dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_tensor_affine(weight, scale, zero, -INT8_MAX, INT8_MAX)


class QuantizedConv(nn.Module):
    """A convolution (and the batch norm after it, if any) as the INT8 graph computes it."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None):
        super().__init__()
        self.conv, self.bn = conv, bn
        self.bn_frozen = False

    def forward(self, x):
        conv, bn = self.conv, self.bn
        if self.training and bn is not None and bn.training and not self.bn_frozen:
            factor = self._factor()
            weight = fake_quantize_weight(conv.weight * factor.reshape(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            safe = torch.where(factor != 0, factor, torch.ones_like(factor)).reshape(1, -1, 1, 1)
            return bn(conv._conv_forward(x, weight, None) / safe + bias.reshape(1, -1, 1, 1))
        return conv._conv_forward(x, *self._folded())

    def _factor(self) -> torch.Tensor:
        bn = self.bn
        return (bn.weight if bn.affine else 1.0) / torch.sqrt(bn.running_var + bn.eps)

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fake-quantized weights and the bias of the convolution with the batch norm, at its
        running statistics, folded in."""
        conv, bn = self.conv, self.bn
        if bn is None:
            return fake_quantize_weight(conv.weight), conv.bias
        factor = self._factor()
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        return (fake_quantize_weight(conv.weight * factor.reshape(-1, 1, 1, 1)),
                (bias - bn.running_mean) * factor + (bn.bias if bn.affine else 0.0))

    @torch.no_grad()
    def folded(self) -> nn.Conv2d:
        """A plain convolution computing what this one computes in eval mode."""
        conv = self.conv
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                          device=conv.weight.device)
        weight, bias = self._folded()
        plain.weight.copy_(weight)
        plain.bias.copy_(bias if bias is not None else torch.zeros_like(plain.bias))
        return plain


_RELUS = (F.relu, torch.relu)
_ADDS = (operator.add, operator.iadd, torch.add)
_MAX_POOLS = (F.max_pool2d, torch.max_pool2d)


def quantization_aware(model: nn.Module) -> fx.GraphModule:
    """A traced copy of `model` that shares its modules and runs with the INT8 graph's fake
    quantization (the module docstring says where)."""
    try:
        traced = fx.symbolic_trace(model)
    except Exception as e:   # torch.fx raises many kinds for code it cannot trace
        raise RecipeError(f"QuantizationModifier: cannot trace {type(model).__name__} ({e})") from None
    _Rewriter(traced).run()
    return traced


class _Rewriter:
    """The INT8 graph's choice of quantized tensors (sparsebias.quantization.graph), on an fx graph."""

    def __init__(self, traced: fx.GraphModule):
        self.traced, self.graph = traced, traced.graph
        self.modules = dict(traced.named_modules())
        self.quantized: set[fx.Node] = set()        # nodes whose value is on a uint8 grid
        self.quantized_copy: dict[fx.Node, fx.Node] = {}
        self.count = 0

    def run(self):
        for node in list(self.graph.nodes):
            if node.graph is None:          # erased while folding
                continue
            if self._module(node, nn.Conv2d):
                self._conv(node)
            elif self._is_add(node):
                self._add(node)
            elif self._is_max_pool(node) and node.args[0] in self.quantized:
                self.quantized.add(node)
        self.graph.lint()
        self.traced.recompile()

    def _module(self, node, kind):
        return node.op == "call_module" and isinstance(self.modules.get(node.target), kind)

    def _is_relu(self, node):
        return (self._module(node, nn.ReLU) or node.op == "call_function" and node.target in _RELUS
                or node.op == "call_method" and node.target in ("relu", "relu_"))

    def _is_add(self, node):
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        is_add = (node.op == "call_function" and node.target in _ADDS
                  or node.op == "call_method" and node.target in ("add", "add_"))
        return is_add and len(node.args) == 2 and len(tensors) == 2 and all(a.op != "get_attr" for a in tensors)

    def _is_max_pool(self, node):
        return self._module(node, nn.MaxPool2d) or node.op == "call_function" and node.target in _MAX_POOLS

    def _conv(self, node):
        users = list(node.users)
        bn = users[0] if len(users) == 1 and self._module(users[0], nn.BatchNorm2d) else None
        wrapper = QuantizedConv(self.modules[node.target], self.modules[bn.target] if bn else None)
        name = self._add_module("conv", wrapper)
        last = bn or node
        with self.graph.inserting_after(last):
            replacement = self.graph.call_module(name, (self._quantized_input(node.args[0]),))
        last.replace_all_uses_with(replacement)
        for old in (bn, node):
            if old is not None:
                self.graph.erase_node(old)
        self._quantize_output(replacement)

    def _add(self, node):
        node.args = tuple(self._quantized_input(a) for a in node.args)
        self._quantize_output(node)

    def _quantized_input(self, value: fx.Node) -> fx.Node:
        """The value as the op reads it: itself when on a grid, else a quantized copy that only
        the quantized ops read (float consumers keep the float value)."""
        if value in self.quantized:
            return value
        if value not in self.quantized_copy:
            with self.graph.inserting_after(value):
                copy = self.graph.call_module(self._add_module("quantizer", ActivationQuantizer()), (value,))
            self.quantized.add(copy)
            self.quantized_copy[value] = copy
        return self.quantized_copy[value]

    def _quantize_output(self, node: fx.Node) -> None:
        """Quantize an op's output, or the ReLU's after it when that is its only reader (folded)."""
        users = list(node.users)
        if len(users) == 1 and self._is_relu(users[0]):
            node = users[0]
        with self.graph.inserting_after(node):
            quantizer = self.graph.call_module(self._add_module("quantizer", ActivationQuantizer()), (node,))
        node.replace_all_uses_with(quantizer, delete_user_cb=lambda user: user is not quantizer)
        self.quantized.add(quantizer)

    def _add_module(self, kind: str, module: nn.Module) -> str:
        name = f"qat_{kind}_{self.count}"
        self.count += 1
        self.traced.add_submodule(name, module)
        self.modules[name] = module
        return name


def quantizers(traced: fx.GraphModule) -> list[ActivationQuantizer]:
    return [m for _, m in sorted(traced.named_children()) if isinstance(m, ActivationQuantizer)]


class QuantizationModifier(Modifier):
    """Quantization-aware training from `start_epoch` to the end, with SparseML 1.8's arguments.

    sparsebias quantizes one way, the way its INT8 graph runs on DeepSparse and onnxruntime:
    int8 symmetric weights, uint8 asymmetric activations, per tensor, convolutions and
    residual additions, the classifier in float. A scheme asking for anything else, and the
    arguments that choose other modules to quantize, are refused with the reason.
    """

    end_comparator = None

    def __init__(self, start_epoch: float = -1.0, scheme=None, scheme_overrides: dict | None = None,
                 ignore: list | None = None, disable_quantization_observer_epoch: float | None = None,
                 freeze_bn_stats_epoch: float | None = None, model_fuse_fn_name: str | None = None,
                 model_fuse_fn_kwargs: dict | None = None, num_calibration_steps: int | None = None,
                 strict: bool = True, end_epoch: float = -1.0, submodules: list | None = None,
                 reduce_range: bool = False, activation_bits: int = 8, weight_bits: int = 8,
                 quantize_embeddings: bool = True, quantize_linear_activations: bool = True,
                 quantize_conv_activations: bool = True, quantize_embedding_activations: bool = True,
                 exclude_batchnorm: bool = True, exclude_module_types: list | None = None,
                 custom_quantizable_module_types: list | None = None, activation_qconfig_kwargs: dict | None = None,
                 weight_qconfig_kwargs: dict | None = None, tensorrt: bool = False):
        super().__init__(start_epoch, end_epoch)
        self.start_epoch = max(self.start_epoch, 0.0)   # SparseML's -1 (the default) starts it at once
        self.scheme = _check_scheme(scheme)
        self.observer_end = _optional_epoch(self, "disable_quantization_observer_epoch",
                                            disable_quantization_observer_epoch)
        self.bn_freeze = _optional_epoch(self, "freeze_bn_stats_epoch", freeze_bn_stats_epoch)
        refused = {"scheme_overrides": scheme_overrides, "ignore": ignore, "num_calibration_steps": num_calibration_steps,
                   "custom_quantizable_module_types": custom_quantizable_module_types,
                   "activation_qconfig_kwargs": activation_qconfig_kwargs, "weight_qconfig_kwargs": weight_qconfig_kwargs}
        for key, value in refused.items():
            if value:
                raise RecipeError(f"QuantizationModifier: {key} is not supported: sparsebias quantizes every "
                                  "convolution and residual addition (the classifier stays float), the form its "
                                  "INT8 graph takes")
        if model_fuse_fn_name not in (None, "no_fuse", "conv_bn_relus", "fuse_module"):
            raise RecipeError(f"QuantizationModifier: model_fuse_fn_name {model_fuse_fn_name!r}: sparsebias folds "
                              "each batch norm into the convolution before it, and each ReLU into the op before it")
        for key, value, wanted in (("reduce_range", reduce_range, False), ("tensorrt", tensorrt, False),
                                   ("activation_bits", activation_bits, 8), ("weight_bits", weight_bits, 8),
                                   ("quantize_conv_activations", quantize_conv_activations, True)):
            if value != wanted:
                raise RecipeError(f"QuantizationModifier: {key} must be {wanted} (got {value!r}): sparsebias "
                                  "quantizes to int8 weights and uint8 activations over the full range")
        if submodules is not None and (not isinstance(submodules, list)
                                       or not all(isinstance(name, str) for name in submodules)):
            raise RecipeError(f"QuantizationModifier: submodules must be a list of module names, got {submodules!r}")
        self.submodules = submodules   # checked against the model before training: they must cover every convolution
        if exclude_module_types is not None and (not isinstance(exclude_module_types, list)
                                                 or not all(isinstance(t, str) for t in exclude_module_types)):
            raise RecipeError("QuantizationModifier: exclude_module_types must be a list of module type names, "
                              f"got {exclude_module_types!r}")
        # checked against the model too: only types it lacks, or that the INT8 form keeps in float, may be named
        self.exclude_module_types = exclude_module_types or []
        self.traced: fx.GraphModule | None = None
        self._module = None

    def initialize(self, module, epoch: float = 0.0, **kwargs) -> None:
        super().initialize(module, epoch, **kwargs)
        self._module = module

    def update_ready(self, epoch: float, steps_per_epoch: int) -> bool:
        return super().update_ready(epoch, steps_per_epoch) or self.traced is not None and (
            self._due(self.observer_end, epoch) and any(q.observing for q in quantizers(self.traced))
            or self._due(self.bn_freeze, epoch) and not self._bn_frozen())

    def update(self, module, optimizer, epoch, steps_per_epoch):
        if self.traced is None and self.start_pending(epoch):
            self._install(module)
        if self.traced is not None:
            self._follow_schedule(epoch)

    def finalize(self, module=None) -> None:
        super().finalize(module)
        target = module if module is not None else self._module
        if target is not None and "forward" in vars(target):
            del target.forward
        self.traced = None

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.traced is not None:
            state["quantizers"] = [[float(q.low), float(q.high), q.observing] for q in quantizers(self.traced)]
            state["bn_frozen"] = self._bn_frozen()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "quantizers" in state:
            if self._module is None:
                raise RecipeError("QuantizationModifier: resumed before it was initialized")
            self._install(self._module)
            self._restore(state)

    def quantization_aware_model(self, module: nn.Module, state: dict) -> fx.GraphModule:
        """`module` (its trained weights) with this modifier's fake quantization in `state` (a
        state_dict() of it, e.g. the best epoch's) in eval mode, as it exports: each convolution
        a plain one with its batch norm folded in and its weights rounded, each quantizer a
        QuantizeLinear-DequantizeLinear pair."""
        if "quantizers" not in state or any(math.isnan(low) for low, _, _ in state["quantizers"]):
            raise RecipeError(f"QuantizationModifier: training ended before quantization-aware training (from epoch "
                              f"{self.start_epoch:g}) saw a batch; start it earlier")
        traced = quantization_aware(module)
        _restore_quantizers(traced, state)
        for name, child in list(traced.named_children()):
            if isinstance(child, QuantizedConv):
                setattr(traced, name, child.folded())
        return traced.eval()

    def _install(self, module):
        traced = self.traced = quantization_aware(module)
        traced.to(next(module.parameters()).device)

        def forward(*args, **kwargs):   # the quantizers follow the model into train and eval mode
            if traced.training != module.training:
                traced.train(module.training)
            return traced(*args, **kwargs)
        module.forward = forward        # the module, and DDP around it, now run fake-quantized

    def _restore(self, state):
        _restore_quantizers(self.traced, state)
        if state.get("bn_frozen"):
            self._freeze_bn()

    def _follow_schedule(self, epoch):
        if self._due(self.observer_end, epoch):
            for quantizer in quantizers(self.traced):
                quantizer.observing = False
        if self._due(self.bn_freeze, epoch):
            self._freeze_bn()

    @staticmethod
    def _due(at: float | None, epoch: float) -> bool:
        return at is not None and epoch >= at

    def _convs(self):
        return [m for m in self.traced.children() if isinstance(m, QuantizedConv)]

    def _bn_frozen(self) -> bool:
        return all(c.bn_frozen for c in self._convs())

    def _freeze_bn(self):
        for conv in self._convs():
            conv.bn_frozen = True

    def describe(self) -> dict:
        return {"start_epoch": self.start_epoch, "disable_quantization_observer_epoch": self.observer_end,
                "freeze_bn_stats_epoch": self.bn_freeze, "scheme": self.scheme,
                "activation_ranges": f"moving average of batch min and max (averaging constant {AVERAGING_CONSTANT})"}


def _restore_quantizers(traced: fx.GraphModule, state: dict) -> None:
    found = quantizers(traced)
    if len(found) != len(state["quantizers"]):
        raise RecipeError(f"QuantizationModifier: the state holds {len(state['quantizers'])} activation ranges, the "
                          f"model has {len(found)} quantized tensors")
    for quantizer, (low, high, observing) in zip(found, state["quantizers"]):
        quantizer.low.fill_(low), quantizer.high.fill_(high)
        quantizer.observing = bool(observing)


def _check_scheme(scheme) -> dict:
    if scheme is None or scheme in SCHEME_ALIASES:
        return SCHEME
    if scheme == "tensorrt":
        raise RecipeError("QuantizationModifier: scheme 'tensorrt' (symmetric activations) is not supported: "
                          "sparsebias's INT8 graph takes uint8 asymmetric activations (scheme 'deepsparse')")
    if not isinstance(scheme, dict) or set(scheme) - {"input_activations", "weights", "output_activations"}:
        raise RecipeError(f"QuantizationModifier: scheme must be one of {', '.join(SCHEME_ALIASES)} or a mapping of "
                          f"input_activations and weights, got {scheme!r}")
    if scheme.get("output_activations"):
        raise RecipeError("QuantizationModifier: output_activations are not supported (the INT8 graph quantizes "
                          "each op's inputs)")
    for part, wanted in SCHEME.items():
        given = scheme.get(part)
        if given is None:
            raise RecipeError(f"QuantizationModifier: scheme {part} must be quantized (8 bits)")
        if not isinstance(given, dict) or set(given) - {"num_bits", "symmetric", "strategy", "kwargs"}:
            raise RecipeError(f"QuantizationModifier: scheme {part} must be a mapping of num_bits, symmetric and "
                              f"strategy, got {given!r}")
        asked = {"num_bits": given.get("num_bits", 8), "symmetric": given.get("symmetric", wanted["symmetric"])}
        if asked != wanted or given.get("strategy", "tensor") != "tensor":
            raise RecipeError(f"QuantizationModifier: scheme {part} {given} is not supported; sparsebias quantizes "
                              f"{part} as {wanted}, per tensor")
    return SCHEME


def _optional_epoch(modifier, key: str, value) -> float | None:
    if value is None:
        return None
    epoch = number(modifier, key, value)
    if epoch < modifier.start_epoch:
        raise RecipeError(f"QuantizationModifier: {key} {epoch:g} is before start_epoch {modifier.start_epoch:g}")
    return epoch


__all__ = ["ActivationQuantizer", "QuantizationModifier", "QuantizedConv", "quantization_aware", "quantizers"]
