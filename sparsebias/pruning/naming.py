"""Which parameters a recipe's `params` name, as SparseML finds them.

Parameters are visited in `named_modules()` order, each layer's own parameters only, and
a pattern matches a full name (`layer1.0.conv1.weight`) exactly, or from its start when it
is a `re:` regular expression. Every pattern must match something.

SparseML's model zoo names its ResNets differently from torchvision (`input.conv`,
`sections.S.B.convK`, `sections.S.B.identity.conv`, `classifier.fc`); its ResNet recipes
name those layers. On a torchvision ResNet each parameter also answers to its SparseML
name, so those recipes prune the same layers here.
"""

from __future__ import annotations

import difflib
import re

from torch import nn

from ..modifiers.base import RecipeError

PRUNABLE = (nn.Linear, nn.Embedding, nn.modules.conv._ConvNd)


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
    aliases = is_resnet(module)
    found, matched = [], set()
    for layer_name, layer in module.named_modules():
        for attr, _ in layer.named_parameters(recurse=False):
            name = f"{layer_name}.{attr}" if layer_name else attr
            names = [name] + ([sparseml_resnet_name(name)] if aliases and sparseml_resnet_name(name) else [])
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
