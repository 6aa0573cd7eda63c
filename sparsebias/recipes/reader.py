"""Read a SparseML recipe as SparseML 1.8 does, without SparseML.

A recipe is YAML (a `.md` recipe card: its front matter, found as SparseML finds it, so a
licence comment before the first `---` is fine). Root keys are variables; root keys whose
name contains "modifiers" hold lists of `!ModifierName` entries. Variables may be numbers,
other values, or `eval(...)` expressions of numeric variables (SparseML's restricted
arithmetic: + - * / // % **, abs, float, int, min, max, round); `eval(name)` of a
non-numeric variable is that variable's value. Modifier arguments may use the same
expressions.

Where we differ from SparseML 1.8, on purpose:
- YAML 1.1 sexagesimal numbers are off, so `mask_type: 2:4` is the string "2:4", not 124;
- an override of an anchored variable (`num_epochs: &n 90` ... `end_epoch: *n`) reaches
  every alias too; SparseML changed only the root key and the aliases kept 90;
- unary minus works in expressions (SparseML 1.8 raised AttributeError);
- in a staged recipe, a stage's variables may be expressions of the recipe's;
- YAML that expands past what it shows is refused (`core.yaml_limits`).

A staged recipe (root keys mapping to stages that hold `*modifiers*` lists) runs all its
stages' modifiers on their own epochs, as SparseML runs one it loads.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass, field

import yaml

from ..core.errors import SparsebiasError, yaml_error
from ..core.yaml_limits import LimitedSafeLoader

FRONT_MATTER = re.compile(r"^\s*(?:---|\+\+\+)(.*?)(?:---|\+\+\+)", re.S | re.M)  # SparseML's own pattern


@dataclass
class ModifierEntry:
    """One `!Name` entry of a modifier list: its arguments, still unevaluated until `evaluate`."""
    name: str
    args: dict
    line: int              # in the recipe file, 1-based
    stage: str = ""        # its stage, in a staged recipe


@dataclass
class RecipeDocument:
    variables: dict                      # root variables, evaluated
    modifiers: list[ModifierEntry] = field(default_factory=list)
    declared: set = field(default_factory=set)   # names of the variables (root and stages)


class _Loader(LimitedSafeLoader):
    """Safe YAML (of a bounded size) without sexagesimal numbers; `!Name` and `!pytorch.Name` become ModifierEntry."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X), list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def _modifier(loader, suffix, node):
    args = loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode) else {}
    return ModifierEntry(suffix.split(".")[-1], dict(args), node.start_mark.line + 1)


_Loader.add_multi_constructor("!", _modifier)


def load_value(text: str):
    """A `--set` value as a recipe would read it (so `2:4` stays a string)."""
    return yaml.load(text, Loader=_Loader)


def recipe_yaml(path, text: str) -> tuple[str, int]:
    """The YAML of a recipe file and the number of lines before it (front matter of a card)."""
    if str(path).lower().endswith(".md"):
        match = FRONT_MATTER.search(text)
        if not match:
            raise SparsebiasError(f"{path}: a Markdown recipe card needs YAML front matter between '---' lines")
        return match.group(1), text[:match.start(1)].count("\n")
    return text, 0


def read_recipe(path, text: str, overrides: dict) -> RecipeDocument:
    """Parse, apply `overrides` to the variables they name (and their aliases; others are left
    to the caller), and evaluate."""
    body, offset = recipe_yaml(path, text)
    try:
        root = yaml.compose(body, Loader=_Loader)
    except yaml.YAMLError as e:
        raise yaml_error(path, e, offset) from None
    if not isinstance(root, yaml.MappingNode):
        raise SparsebiasError(f"{path}: a recipe is a YAML mapping of variables and modifier lists")
    _apply_overrides(path, root, overrides)
    try:
        doc = _Loader(body).construct_document(root) if root is not None else None
    except yaml.YAMLError as e:
        raise yaml_error(path, e, offset) from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise SparsebiasError(f"{path}: a recipe is a YAML mapping of variables and modifier lists")
    stages = {k: v for k, v in doc.items() if _is_stage(v)}
    top = {k: v for k, v in doc.items() if k not in stages}
    variables = _variables(path, top)
    numeric, others = _evaluate_variables(path, variables)
    entries, declared = _entries(path, top, numeric, others, offset, ""), set(variables)
    for name, stage in stages.items():   # a stage's own variables hide the recipe's
        stage_variables = _variables(path, stage)
        declared |= set(stage_variables)
        stage_numeric, stage_others = _evaluate_variables(path, {**variables, **stage_variables})
        entries += _entries(path, stage, stage_numeric, stage_others, offset, name)
    if not entries:
        raise SparsebiasError(f"{path}: Unable to find any modifiers: list them under a root key whose name "
                              "contains 'modifiers' (e.g. training_modifiers), or in stages of such keys")
    return RecipeDocument({**variables, **numeric}, entries, declared)


def _is_stage(value) -> bool:
    """SparseML's staged recipes: a root key mapping to a dict with `*modifiers*` keys."""
    return isinstance(value, dict) and any(isinstance(k, str) and "modifiers" in k for k in value)


def _variables(path, container: dict) -> dict:
    variables = {k: v for k, v in container.items() if "modifiers" not in k}
    for key, value in variables.items():
        if isinstance(value, ModifierEntry) or isinstance(value, list) and any(
                isinstance(v, ModifierEntry) for v in value):
            raise SparsebiasError(f"{path}: {key!r} holds modifiers, but only keys whose name contains "
                                  "'modifiers' may (SparseML's rule)")
    return variables


def _entries(path, container: dict, numeric: dict, others: dict, offset: int, stage: str) -> list[ModifierEntry]:
    entries = []
    for group, items in container.items():
        if "modifiers" not in group:
            continue
        for item in items if isinstance(items, list) else [items]:
            if isinstance(item, dict) and any(str(key).endswith("Modifier") for key in item):
                raise SparsebiasError(f"{path}: {group!r} names {', '.join(map(str, item))} as a plain key, the "
                                      "SparseML 2 / llm-compressor form; sparsebias reads SparseML 1.x recipes, "
                                      "where each modifier is a tagged list item (- !GMPruningModifier)")
            if not isinstance(item, ModifierEntry):
                shown = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
                raise SparsebiasError(f"{path}: {group!r} lists {shown}, which is not a !Modifier")
            item.line += offset
            item.stage = stage
            try:
                item.args = {k: _evaluate_value(v, numeric, others) for k, v in item.args.items()}
            except _Unknown as e:
                raise SparsebiasError(f"{path}:{item.line}: {item.name}: unknown variable {e} in an eval()") from None
            except SparsebiasError as e:
                raise SparsebiasError(f"{path}:{item.line}: {item.name}: {e}") from None
            entries.append(item)
    return entries


def _apply_overrides(path, root: yaml.MappingNode, overrides: dict) -> None:
    """Replace each overridden variable's value node (at the root and in every stage), everywhere
    the node occurs (its aliases)."""
    containers = [root] + [v for _, v in root.value if isinstance(v, yaml.MappingNode)]
    for key, value in overrides.items():
        new = yaml.compose(yaml.safe_dump(value), Loader=_Loader)
        for container in containers:
            for k, old in list(container.value):
                if isinstance(k, yaml.ScalarNode) and k.value == key and not isinstance(old, yaml.MappingNode):
                    _replace_node(root, old, new, set())


def _replace_node(node, old, new, seen: set) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        node.value = [(k, new if v is old else v) for k, v in node.value]
        for _, v in node.value:
            _replace_node(v, old, new, seen)
    elif isinstance(node, yaml.SequenceNode):
        node.value = [new if v is old else v for v in node.value]
        for v in node.value:
            _replace_node(v, old, new, seen)


def _is_eval(value) -> bool:
    return isinstance(value, str) and value.startswith("eval(") and value.endswith(")")


def _evaluate_variables(path, variables: dict) -> tuple[dict, dict]:
    """SparseML's fixed point: numbers and eval()s that resolve become numeric variables."""
    numeric, others = {}, {}
    changed = True
    while changed:
        changed = False
        for name, value in variables.items():
            if name in numeric:
                continue
            if isinstance(value, (int, float)):
                numeric[name] = value
                changed = True
                continue
            if not _is_eval(value):
                others[name] = value
                continue
            try:
                result = _evaluate_value(value, numeric, others)
            except _Unknown:
                continue
            except SparsebiasError as e:
                raise SparsebiasError(f"{path}: variable {name}: {e}") from None
            if isinstance(result, (int, float)):
                numeric[name] = result
                changed = True
    for name, value in variables.items():
        if name not in numeric and _is_eval(value):
            raise SparsebiasError(f"{path}: variable {name}: cannot evaluate {value}: "
                                  + _why_unresolved(name, variables, numeric))
    return numeric, others


def _why_unresolved(name: str, variables: dict, numeric: dict, chain: tuple = ()) -> str:
    """What keeps a variable's eval() from a number: a name down its chain of uses that is
    undefined or not a number, or a cycle."""
    if name in chain:
        return "the variables form a cycle: " + " -> ".join((*chain[chain.index(name):], name))
    expression = ast.parse(variables[name][5:-1].strip(), mode="eval")
    unresolved = sorted({n.id for n in ast.walk(expression) if isinstance(n, ast.Name)} - set(numeric))
    if not unresolved:
        return "it is not a number"
    used = unresolved[0]
    if used not in variables:
        return f"{used} is not defined"
    if not _is_eval(variables[used]):
        return f"{used} is {variables[used]!r}, not a number"
    return _why_unresolved(used, variables, numeric, (*chain, name))


def _evaluate_value(value, numeric: dict, others: dict):
    """Evaluate eval() strings inside a modifier argument (lists and mappings included)."""
    if isinstance(value, list):
        return [_evaluate_value(v, numeric, others) for v in value]
    if isinstance(value, dict):
        return {k: _evaluate_value(v, numeric, others) for k, v in value.items()}
    if not _is_eval(value):
        return value
    expression = value[5:-1].strip()
    if expression in others:
        return others[expression]
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise SparsebiasError(f"cannot parse {value}") from None
    result = _eval_node(tree.body, numeric)
    if not isinstance(result, (int, float)):
        raise SparsebiasError(f"{value} is not a number")
    return result


class _Unknown(Exception):
    pass


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.Mod: operator.mod}
_FUNCTIONS = {"abs": abs, "float": float, "int": int, "min": min, "max": max, "round": round}
MAX_INT_BITS = 1024   # past float's range: no epoch, rate or sparsity; bounds the work of ** and of x*x chains


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_bits(value) -> int:
    return abs(value).bit_length() - 1 if _is_int(value) and abs(value) > 1 else 0


def _checked(node, compute):
    """`compute()`, with Python's arithmetic and argument errors, and integers past
    MAX_INT_BITS, as one line naming the expression."""
    try:
        result = compute()
    except (ZeroDivisionError, OverflowError, TypeError, ValueError) as e:
        raise SparsebiasError(f"arithmetic error in {ast.unparse(node)}: {e}") from None
    if _is_int(result) and _int_bits(result) >= MAX_INT_BITS:
        raise SparsebiasError(f"arithmetic error: {ast.unparse(node)} is larger than 2**{MAX_INT_BITS}")
    return result


def _eval_node(node, variables: dict):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in variables:
            raise _Unknown(node.id)
        return variables[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval_node(node.left, variables), _eval_node(node.right, variables)
        if isinstance(node.op, ast.Pow) and _int_bits(left) * (right if _is_int(right) else 0) > MAX_INT_BITS:
            raise SparsebiasError(f"arithmetic error: {ast.unparse(node)} is larger than 2**{MAX_INT_BITS}")
        return _checked(node, lambda: _BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _eval_node(node.operand, variables)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        args = [_eval_node(a, variables) for a in node.args]
        kwargs = {k.arg: _eval_node(k.value, variables) for k in node.keywords}
        return _checked(node, lambda: _FUNCTIONS[node.func.id](*args, **kwargs))
    raise SparsebiasError(f"unsupported expression {ast.unparse(node)!r} (numbers, variables, + - * / // % **, "
                          f"{', '.join(_FUNCTIONS)})")
