"""Safe YAML that stays the size it looks: a document may nest only so deep, and its aliases
may repeat a value but not multiply one into millions ("billion laughs") or make a value
contain itself. Either would otherwise surface far from the file, as a hang or a crash in
whatever walks the loaded value (a recipe's variables are written into every bundle)."""

from __future__ import annotations

import yaml

MAX_DEPTH = 100          # real recipes and policies nest 4-6 levels
MAX_VALUES = 100_000     # scalars and collections, each alias counted as the value it repeats


class LimitedSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that raises a ComposerError (with the line) past MAX_DEPTH or MAX_VALUES."""

    _depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"values nest deeper than {MAX_DEPTH} levels",
                                              self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        root = super().compose_document()
        if root is not None:
            _expanded_size(root, {}, set())
        return root


def _expanded_size(node, sizes: dict, open_nodes: set) -> int:
    """How many values `node` stands for once every alias is replaced by what it names."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise yaml.composer.ComposerError(None, None, "an alias makes this value contain itself", node.start_mark)
    open_nodes.add(id(node))
    children = node.value if isinstance(node, yaml.SequenceNode) else (
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
    size = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    if size > MAX_VALUES:
        raise yaml.composer.ComposerError(None, None, f"its aliases expand this value to more than {MAX_VALUES:,} "
                                          "values", node.start_mark)
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size
