"""Which parameters a recipe's `params` name, as SparseML finds them.

Parameters are visited in `named_modules()` order, each layer's own parameters only, and
a pattern matches a full name (`layer1.0.conv1.weight`) exactly, or from its start when it
is a `re:` regular expression. Every pattern must match something.

SparseML's model zoo names its ResNets and its MobileNetV1 differently from torchvision
and from sparsebias's MobileNetV1 (`input.conv`, `sections.S.B.convK`,
`sections.S.B.identity.conv`, `sections.S.B.point.conv`, `classifier.fc`); its recipes
name those layers. On those architectures each parameter also answers to its SparseML
name, so SparseML's recipes prune the same layers here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from functools import partial

from torch import nn

from ..modifiers.base import RecipeError

PRUNABLE = (nn.Linear, nn.Embedding, nn.modules.conv._ConvNd)


def sparseml_namer(module: nn.Module) -> Callable[[str], str | None] | None:
    """The parameter name -> SparseML name map of this architecture (None where a name is the
    same), or None for a model SparseML's zoo does not name differently."""
    if is_resnet(module):
        return sparseml_resnet_name
    sections = _mobilenet_v1_sections(module)
    return partial(_sparseml_mobilenet_v1_name, sections) if sections else None


def sparseml_resnet_name(name: str) -> str | None:
    """torchvision's ResNet parameter name -> SparseML's; None where the names agree."""
    match = re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", name)
    if match:
        section, block, rest = int(match.group(1)) - 1, match.group(2), match.group(3)
        rest = re.sub(r"^downsample\.0\.", "identity.conv.", rest)
        rest = re.sub(r"^downsample\.1\.", "identity.bn.", rest)
        return f"sections.{section}.{block}.{rest}"
    for ours, theirs in (("conv1.", "input.conv."), ("bn1.", "input.bn."), ("fc.", "classifier.fc.")):
        if name.startswith(ours):
            return theirs + name[len(ours):]
    return None


def is_resnet(module: nn.Module) -> bool:
    return all(hasattr(module, a) for a in ("conv1", "bn1", "layer1", "layer4", "fc"))


def _mobilenet_v1_sections(module: nn.Module) -> dict[int, tuple[int, int]] | None:
    """For a MobileNetV1 (`features`: a stem, then depthwise-separable blocks; a Linear
    `classifier`), block index -> (section, index in section), where SparseML starts a
    section at each change of output width; None for other models."""
    features, classifier = getattr(module, "features", None), getattr(module, "classifier", None)
    if not isinstance(features, nn.Sequential) or not isinstance(classifier, nn.Linear) or len(features) < 2:
        return None
    widths = []
    for block in list(features)[1:]:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        if len(block) != 2 or len(convs) != 2 or convs[0].groups != convs[0].in_channels or convs[1].groups != 1:
            return None
        widths.append(convs[1].out_channels)
    sections, section, index = {}, 0, 0
    for k, width in enumerate(widths, start=1):
        if k > 1 and width != widths[k - 2]:
            section, index = section + 1, 0
        sections[k] = (section, index)
        index += 1
    return sections


def _sparseml_mobilenet_v1_name(sections: dict[int, tuple[int, int]], name: str) -> str | None:
    match = re.fullmatch(r"features\.(\d+)\.(\d+)(?:\.(\d+))?\.(\w+)", name)
    if match:
        k, part, layer, attr = int(match.group(1)), match.group(2), match.group(3), match.group(4)
        if k == 0 and layer is None:
            return f"input.{'conv' if part == '0' else 'bn'}.{attr}"
        if k in sections and layer is not None:
            section, index = sections[k]
            return (f"sections.{section}.{index}.{'depth' if part == '0' else 'point'}."
                    f"{'conv' if layer == '0' else 'bn'}.{attr}")
        return None
    return f"classifier.fc.{name.removeprefix('classifier.')}" if name.startswith("classifier.") else None


def find_parameters(module: nn.Module, patterns: list[str], who: str) -> list[tuple[str, nn.Module, str]]:
    """(full name, layer, attribute) of every parameter the patterns name, in model order."""
    if "__ALL__" in patterns:
        patterns = ["re:.*"]
    elif "__ALL_PRUNABLE__" in patterns:
        patterns = [f"{name}.weight" for name, layer in module.named_modules() if isinstance(layer, PRUNABLE)]
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as e:
                raise RecipeError(f"{who}: params {pattern!r} is not a valid regular expression: {e}") from None
    namer = sparseml_namer(module)
    found, matched = [], set()
    for layer_name, layer in module.named_modules():
        for attr, _ in layer.named_parameters(recurse=False):
            name = f"{layer_name}.{attr}" if layer_name else attr
            alias = namer(name) if namer else None
            names = [name] + ([alias] if alias else [])
            hits = [p for p in patterns if any(_matches(p, n) for n in names)]
            if hits:
                found.append((name, layer, attr))
                matched.update(hits)
    for pattern in patterns:
        if pattern not in matched:
            raise RecipeError(f"{who}: params {pattern!r} matches no parameter of the model; "
                              f"nearest: {', '.join(nearest(module, pattern)) or 'none'}")
    return found


def _matches(pattern: str, name: str) -> bool:
    return bool(re.match(pattern[3:], name)) if pattern.startswith("re:") else name == pattern


def nearest(module: nn.Module, pattern: str, count: int = 4) -> list[str]:
    """The model's parameter names that start most like a pattern (a regex: its literal start)."""
    text = re.split(r"[\\^$.*+?()\[\]{}|]", pattern[3:])[0] if pattern.startswith("re:") else pattern
    names = [n for n, _ in module.named_parameters()]
    ranked = sorted(names, key=lambda n: -difflib.SequenceMatcher(None, text, n[:len(text)]).ratio())
    return ranked[:count]
