"""Property tests: mutated recipes, policies, attribute files, audit CSVs and bundle files.

Each test starts from real inputs of the kind users have, mutates them (lines deleted,
duplicated or truncated, values replaced with hostile ones, bytes flipped) and hands them
to the parser or reader and on to what consumes its result. The only exception allowed
out is SparsebiasError, the one-line user error; anything else is a traceback a user
would see, and fails the test.
"""

import copy
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsebias.core import SparsebiasError

# 30 examples per test in CI (minutes of the suite); SPARSEBIAS_FUZZ_EXAMPLES=1000 (and a random seed) for a deeper search by hand.
EXAMPLES = settings(max_examples=int(os.environ.get("SPARSEBIAS_FUZZ_EXAMPLES", 30)), deadline=None,
                    suppress_health_check=list(HealthCheck), derandomize="SPARSEBIAS_FUZZ_EXAMPLES" not in os.environ)
HOSTILE_SCALARS = ["", "-1", "0", "1", "0.5", "1.5", "1e309", "-1e309", ".nan", ".inf", "2:4", "4:8", "0:0", "1:0",
                   "[1, 2]", "[]", "{a: 1}", "{}", "null", "~", "true", "'x'", "\"\"", "!!binary aGVsbG8=",
                   "!!python/object/apply:os.system ['true']", "*nowhere", "eval(1/0)", "eval(num_epochs * 2)",
                   "eval(nope)", "__ALL__", "__ALL_PRUNABLE__", "re:(", "re:.*", "99999999999999999999", "-0",
                   "0x1F", "1_000", "2021-01-01", "ÿ\u00e9\u4e2d", "a" * 300, "NaN", "None", "../../etc/passwd"]
HOSTILE_TEXT = st.one_of(st.sampled_from(HOSTILE_SCALARS), st.text(max_size=12))


@st.composite
def mutated(draw, seeds: list[str]):
    """A seed text with one to four line-level mutations."""
    lines = draw(st.sampled_from(seeds)).splitlines(keepends=True) or ["\n"]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        op = draw(st.sampled_from(["delete", "duplicate", "value", "value", "value", "insert", "truncate", "swap"]))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "value":  # the value after a separator, or a field of a table row
            line = lines[i].rstrip("\n")
            for sep in (": ", ",", " ", "="):
                if sep in line:
                    parts = line.split(sep)
                    parts[draw(st.integers(0, len(parts) - 1))] = draw(HOSTILE_TEXT)
                    line = sep.join(parts)
                    break
            else:
                line = draw(HOSTILE_TEXT)
            lines[i] = line + "\n"
        elif op == "insert":
            lines.insert(i, draw(HOSTILE_TEXT) + "\n")
        elif op == "truncate":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


def only_user_errors(fn, *args, **kwargs):
    """Run fn; a SparsebiasError is a fine outcome, any other exception fails the test."""
    try:
        return fn(*args, **kwargs)
    except SparsebiasError as e:
        message = str(e)
        assert message and "\n" not in message.strip(), f"not one line: {message!r}"
        return None


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hostile-"))


# ---------------------------------------------------------------- recipes

REPO = Path(__file__).resolve().parents[1]
RECIPE_SEEDS = [p.read_text() for p in sorted((REPO / "recipes").rglob("*.yaml")) + sorted(
    (REPO / "tests/fixtures").rglob("*.yaml")) if "modifiers" in p.read_text()]


@pytest.fixture(scope="module")
def recipe_harness():
    """resnet18 on tiny SynthFaces, and the data its score-based pruning methods look at."""
    import torch

    from sparsebias.core import Outputs
    from sparsebias.data import open_data
    from sparsebias.data.loader import FaceImages
    from sparsebias.training.models import build_model

    table = open_data(TINY_DATA, echo=lambda *a, **k: None)
    images = FaceImages(table, "train", table.names, 32)
    torch.manual_seed(0)
    model = build_model("resnet18", len(table.names))
    return table, images, model, Outputs.from_table(table, table.names)


def run_recipe(path: Path, harness) -> None:
    """What compress does with a recipe, up to a few optimizer steps with random gradients."""
    import torch

    from sparsebias.pruning import ScoreData
    from sparsebias.recipes import check_recipe_against_data, check_recipe_against_model, load_recipe

    table, images, base, outputs = harness
    recipe = load_recipe(path, {"image_size": 32, "batch_size": 16})
    model = copy.deepcopy(base)
    check_recipe_against_model(recipe, model, "resnet18")
    check_recipe_against_data(recipe, table)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    recipe.manager.initialize(model, epoch=0.0, score_data=ScoreData(images, outputs.loss(), 16, 0))
    step = recipe.manager.modify(model, optimizer, steps_per_epoch=2)
    for _ in range(2 * min(recipe.epochs, 3)):
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        step.step()
    recipe.manager.finalize(model)


@settings(EXAMPLES, max_examples=max(EXAMPLES.max_examples // 2, 1))   # seconds each: resnet18 steps
@given(text=mutated(RECIPE_SEEDS))
def test_mutated_recipes(text, recipe_harness):
    folder = workdir()
    try:
        (folder / "recipe.yaml").write_text(text)
        only_user_errors(run_recipe, folder / "recipe.yaml", recipe_harness)
    finally:
        shutil.rmtree(folder)


# ---------------------------------------------------------------- policies

POLICY_SEEDS = [p.read_text() for p in sorted((REPO / "policies").glob("*.yaml"))]


@pytest.fixture(scope="module")
def small_report():
    """A real audit report of two synthetic models, with a group breakdown, to evaluate policies on."""
    from sparsebias.auditing import AuditInputs, ModelOutputs, audit
    from sparsebias.data import CELEBA_ATTRIBUTES
    from sparsebias.metrics import training_rates

    rng = np.random.default_rng(0)
    names = list(CELEBA_ATTRIBUTES)
    y = (rng.random((300, len(names))) < rng.uniform(0.1, 0.6, len(names))).astype(np.int8)
    identities = {i: y[:, names.index(i)] for i in ("Male", "Young", "Chubby", "Pale_Skin")}
    inputs = AuditInputs(
        attributes=names, ids=np.array([f"{i}.jpg" for i in range(300)]), labels=y, identities=identities,
        train_positive_rate=y.mean(axis=0), train_rates={i: training_rates(y, c) for i, c in identities.items()},
        model=ModelOutputs("pruned", rng.normal(size=y.shape) + 2 * y - 1, calibrated=np.zeros(len(names))),
        reference=ModelOutputs("dense", rng.normal(size=y.shape) + 3 * y - 1.5, calibrated=np.zeros(len(names))))
    return audit(inputs)


@EXAMPLES
@given(text=mutated(POLICY_SEEDS))
def test_mutated_policies(text, small_report):
    from sparsebias.policy import evaluate, load_policy

    folder = workdir()
    try:
        (folder / "policy.yaml").write_text(text)
        policy = only_user_errors(load_policy, folder / "policy.yaml")
        if policy is not None:
            only_user_errors(evaluate, small_report, policy)
    finally:
        shutil.rmtree(folder)


LAUGHS = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
MODIFIERS = "training_modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0.0\n    end_epoch: 2.0\n"


@pytest.mark.parametrize("which", ["recipe", "policy"])
@pytest.mark.parametrize("body, message", [
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + LAUGHS, r":6: YAML error: its aliases expand this value to more than 100,000"),
    ("x: " + "[" * 5000 + "]" * 5000 + "\n", r":1: YAML error: values nest deeper than 100 levels"),
    ("a: &a [1, *a]\n", r":1: YAML error: an alias makes this value contain itself"),
])
def test_yaml_that_expands_past_what_it_shows_is_refused(which, body, message, tmp_path):
    """A billion laughs, a stack-deep nesting and a value that contains itself: one line naming
    the file, at once, before anything trains (a self-contained variable only failed when the
    bundle was written, after training)."""
    from sparsebias.policy import load_policy
    from sparsebias.recipes import load_recipe

    path = tmp_path / f"{which}.yaml"
    path.write_text(body + (MODIFIERS if which == "recipe" else "rules: [{metric: accuracy, max_drop: 1}]\n"))
    with pytest.raises(SparsebiasError, match=re.escape(str(path)) + message):
        (load_recipe if which == "recipe" else load_policy)(path)


def test_a_manifest_nested_past_the_json_reader_is_refused(tmp_path):
    from sparsebias.bundle import load_bundle

    (tmp_path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SparsebiasError, match="manifest.json: unreadable manifest: maximum recursion depth"):
        load_bundle(tmp_path)


# ---------------------------------------------------------------- attribute files

@pytest.fixture(scope="module")
def data_folders(tmp_path_factory):
    """Small CelebA- and FairFace-format folders (SynthFaces writes both), to copy and mutate."""
    from sparsebias.data import cache_dir, open_data

    celeba = open_data("synthfaces:train=24,val=10,test=10,size=16", echo=lambda *a, **k: None).root
    fairface = open_data("synthfaces:train=24,val=10,test=10,size=16,groups=1", echo=lambda *a, **k: None).root
    assert celeba.is_relative_to(cache_dir())
    return celeba, fairface


def celeba_copy(source: Path, files: dict) -> Path:
    folder = workdir()
    (folder / "img_align_celeba").symlink_to(source / "img_align_celeba")
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        (folder / name).write_text(files.get(name, (source / name).read_text()))
    return folder


def read_and_decode(reader, folder):
    from sparsebias.data.loader import FaceImages

    table = only_user_errors(reader, folder)
    if table is not None:
        for split in ("train", "val", "test"):
            if len(table.split(split)):
                only_user_errors(FaceImages, table, split, table.names[:1], 16, cache=folder / "cache")


@EXAMPLES
@given(data=st.data(), which=st.sampled_from(["list_attr_celeba.txt", "list_eval_partition.txt"]))
def test_mutated_celeba_files(data, which, data_folders):
    from sparsebias.data import read_celeba

    source = data_folders[0]
    folder = celeba_copy(source, {which: data.draw(mutated([(source / which).read_text()]))})
    try:
        read_and_decode(read_celeba, folder)
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("image_id", ["../list_attr_celeba.txt", "/etc/hostname", "sub/../../x.jpg"])
def test_image_ids_that_leave_the_image_folder_are_refused(image_id, data_folders):
    from sparsebias.data import read_celeba

    source = data_folders[0]
    files = {name: (source / name).read_text().replace("000003.jpg", image_id)
             for name in ("list_attr_celeba.txt", "list_eval_partition.txt")}
    folder = celeba_copy(source, files)
    try:
        with pytest.raises(SparsebiasError, match=rf"list_attr_celeba.txt: image id '{re.escape(image_id)}' "
                                                  r"\(row 3\) is not a path inside .*img_align_celeba"):
            read_celeba(folder)
        (folder / "list_attr_celeba.txt").write_text(files["list_attr_celeba.txt"].replace(image_id, "3..b.jpg"))
        (folder / "list_eval_partition.txt").write_text(files["list_eval_partition.txt"].replace(image_id, "3..b.jpg"))
        assert read_celeba(folder).ids[2] == "3..b.jpg"   # two dots in a name are not a climb
    finally:
        shutil.rmtree(folder)


@EXAMPLES
@given(data=st.data(), which=st.sampled_from(["fairface_label_train.csv", "fairface_label_val.csv"]))
def test_mutated_fairface_files(data, which, data_folders):
    from sparsebias.data import read_fairface

    source = data_folders[1]
    folder = workdir()
    try:
        for sub in ("train", "val"):
            (folder / sub).symlink_to(source / sub)
        for name in ("fairface_label_train.csv", "fairface_label_val.csv"):
            text = (source / name).read_text()
            (folder / name).write_text(data.draw(mutated([text])) if name == which else text)
        read_and_decode(read_fairface, folder)
    finally:
        shutil.rmtree(folder)


@EXAMPLES
@given(names=st.lists(st.one_of(
    st.from_regex(r"\A\d{1,25}_\d{1,3}_\d{1,3}_[\w-]{0,12}\.jpg(\.chip\.jpg)?\Z"),
    st.sampled_from(["1_0_0.jpg", "_0_0_x.jpg", "25_0_9_x.jpg", "25_2_0_x.jpg", "x.jpg", "25_0_0_x.png"])),
    min_size=1, max_size=8, unique=True), broken=st.booleans())
def test_utkface_file_names(names, broken):
    from sparsebias.data import read_utkface

    folder = workdir()
    try:
        pixel = bytes([255, 216, 255]) + b"not really a jpeg" if broken else None
        for name in names:
            if broken:
                (folder / name).write_bytes(pixel)
            else:
                from PIL import Image
                Image.new("RGB", (20, 20), (120, 80, 60)).save(folder / name, format="JPEG")
        read_and_decode(lambda root: read_utkface(root, echo=lambda *a: None), folder)
    finally:
        shutil.rmtree(folder)


# ---------------------------------------------------------------- audit CSVs

@pytest.fixture(scope="module")
def audit_csvs():
    rng = np.random.default_rng(1)
    names = ["Smiling", "Male", "Young", "Big_Nose"]
    ids = [f"{i:06d}.jpg" for i in range(60)]
    y = (rng.random((60, 4)) < 0.4).astype(int)
    frames = {"labels": pd.DataFrame(2 * y - 1, columns=names).assign(id=ids)[["id", *names]],
              "train": pd.DataFrame(y, columns=names).assign(id=ids)[["id", *names]],
              "logits": pd.DataFrame(rng.normal(size=(60, 4)), columns=names).assign(id=ids)[["id", *names]],
              "reference": pd.DataFrame(rng.normal(size=(60, 4)), columns=names).assign(id=ids)[["id", *names]]}
    return {k: f.to_csv(index=False) for k, f in frames.items()}


@EXAMPLES
@given(data=st.data(), which=st.sampled_from(["labels", "train", "logits", "reference"]))
def test_mutated_audit_csvs(data, which, audit_csvs):
    from sparsebias.auditing import audit, inputs_from_files

    folder = workdir()
    try:
        for name, text in audit_csvs.items():
            (folder / f"{name}.csv").write_text(data.draw(mutated([text])) if name == which else text)
        inputs = only_user_errors(inputs_from_files, labels=folder / "labels.csv", logits=folder / "logits.csv",
                                  reference_logits=folder / "reference.csv", train_labels=folder / "train.csv",
                                  identities=["Male", "Young"])
        if inputs is not None:
            only_user_errors(audit, inputs)
    finally:
        shutil.rmtree(folder)


# ---------------------------------------------------------------- bundle files, hashes rewritten

def rehash(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in manifest["files"]
                         if (folder / n).is_file()}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def json_paths(value, prefix=()):
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from json_paths(v, (*prefix, i))


HOSTILE_JSON = st.one_of(st.sampled_from([None, True, 0, -1, 1e308, "", "x", [], {}, [None], {"a": None}, "../..",
                                          ["Male"], 3.5, "synthfaces:train=-1", "celeba:/nonexistent"]),
                         st.text(max_size=8), st.integers(-10, 10))


def use_bundle(folder: Path, reference) -> None:
    from sparsebias.auditing import audit, inputs_from_bundles
    from sparsebias.bundle import load_bundle
    from sparsebias.mitigate import read_overrides, read_thresholds
    from sparsebias.report import bundle_summary

    bundle = load_bundle(folder)
    bundle_summary(bundle)
    read_thresholds(bundle)
    read_overrides(bundle)
    audit(inputs_from_bundles(bundle, reference, split="test"))


@pytest.fixture(scope="module")
def mitigated_bundle(dense_bundle, tmp_path_factory):
    """The dense bundle with thresholds and an override table, as `calibrate` and `overrides` write them."""
    from sparsebias.auditing import calibrate, overrides

    folder = tmp_path_factory.mktemp("mitigated") / "bundle"
    shutil.copytree(dense_bundle.path, folder)
    calibrate(folder)
    overrides(folder, dense_bundle.path, budget=0.1, echo=lambda *a, **k: None)
    return folder


@EXAMPLES
@given(data=st.data())
def test_mutated_manifests(data, mitigated_bundle, dense_bundle):
    manifest = json.loads((mitigated_bundle / "manifest.json").read_text())
    paths = [p for p in json_paths(manifest) if p and p[0] not in ("files", "schema_version")]
    folder = workdir() / "bundle"
    try:
        shutil.copytree(mitigated_bundle, folder)
        for _ in range(data.draw(st.integers(1, 3))):
            path = data.draw(st.sampled_from(paths))
            target = manifest
            for key in path[:-1]:
                target = target[key]
            if data.draw(st.booleans()) and isinstance(target, dict):
                target.pop(path[-1], None)
            elif isinstance(target, (dict, list)):
                target[path[-1]] = data.draw(HOSTILE_JSON)
            paths = [p for p in json_paths(manifest) if p and p[0] not in ("files", "schema_version")]
        (folder / "manifest.json").write_text(json.dumps(manifest))
        rehash(folder)
        only_user_errors(use_bundle, folder, dense_bundle)
    finally:
        shutil.rmtree(folder.parent)


@EXAMPLES
@given(data=st.data(), which=st.sampled_from(["thresholds.json", "overrides.csv"]))
def test_mutated_mitigation_files(data, which, mitigated_bundle, dense_bundle):
    folder = workdir() / "bundle"
    try:
        shutil.copytree(mitigated_bundle, folder)
        (folder / which).write_text(data.draw(mutated([(mitigated_bundle / which).read_text()])))
        rehash(folder)
        only_user_errors(use_bundle, folder, dense_bundle)
    finally:
        shutil.rmtree(folder.parent)


@EXAMPLES
@given(data=st.data(), split=st.sampled_from(["train", "val", "test"]))
def test_mutated_split_arrays(data, split, mitigated_bundle, dense_bundle):
    folder = workdir() / "bundle"
    try:
        shutil.copytree(mitigated_bundle, folder)
        path = folder / f"splits/{split}.npz"
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        key = data.draw(st.sampled_from(sorted(arrays)))
        value = arrays[key]
        numeric = value.dtype.kind in "iufb"
        arrays[key] = data.draw(st.sampled_from([
            value[:-1], value.astype(str), np.zeros(0), value.T if value.ndim == 2 else value[:, None],
            *([value.astype(np.float64) * np.nan, value * 7, -value, value.astype(np.float16)] if numeric else
              [np.arange(len(value))])]))
        if data.draw(st.booleans()):
            del arrays[key]
        np.savez(path, **arrays)
        if data.draw(st.booleans()):
            path.write_bytes(path.read_bytes()[:data.draw(st.integers(0, 200))])
        rehash(folder)
        only_user_errors(use_bundle, folder, dense_bundle)
    finally:
        shutil.rmtree(folder.parent)


# ---------------------------------------------------------------- command-line values

@EXAMPLES
@given(spec=st.one_of(st.sampled_from(["synthfaces:train=-1", "synthfaces:size=8", "synthfaces:size=x",
                                       "synthfaces:backdoor=Smiling", "synthfaces:backdoor=Nope/square/1/0/0.5",
                                       "synthfaces:backdoor=Smiling/square/2/0/0.5", "synthfaces:groups=2",
                                       "synthfaces:,,,", "celeba:", "celeba:/nonexistent", "imagenet:/x", ":"]),
                      st.text(max_size=30).map(lambda t: "synthfaces:" + t)))
def test_data_specs(spec):
    from sparsebias.data import synthfaces_config

    kind, _, rest = spec.partition(":")
    if kind == "synthfaces":
        only_user_errors(synthfaces_config, rest)


@EXAMPLES
@given(items=st.lists(st.one_of(st.sampled_from(["num_epochs=x", "=1", "lr", "image_size=-3", "batch_size=0",
                                                 "arch=resnet999", "precision=fp8", "optimizer=lbfgs",
                                                 "image_size=1e9", "num_epochs=[1,2]"]),
                                 st.text(max_size=20)), max_size=4))
def test_set_overrides(items):
    from sparsebias.recipes import load_recipe, parse_overrides

    overrides = only_user_errors(parse_overrides, items)
    if overrides is not None:
        only_user_errors(load_recipe, REPO / "recipes/resnet18_90.yaml", overrides)


def test_the_mutations_reach_past_the_parsers(data_folders):
    """A guard on the strategies: most mutated CelebA files must still fail, some must still load."""
    from hypothesis import find

    from sparsebias.data import read_celeba

    source = data_folders[0]

    def loads(text):
        folder = celeba_copy(source, {"list_eval_partition.txt": text})
        try:
            return only_user_errors(read_celeba, folder) is not None
        finally:
            shutil.rmtree(folder)
    seed = (source / "list_eval_partition.txt").read_text()
    assert find(mutated([seed]), loads, settings=settings(deadline=None, database=None))
    assert len(RECIPE_SEEDS) >= 20 and len(POLICY_SEEDS) >= 2


# ---------------------------------------------------------------- HTTP requests to the viewer

@pytest.fixture(scope="module")
def viewer(sparse_bundle, dense_bundle):
    from sparsebias.viewer import create_app, load_viewer_data

    data = load_viewer_data(sparse_bundle.path, dense_bundle.path)
    return create_app(data).test_client(), data


SEGMENT = st.one_of(st.sampled_from(["labels", "outcomes", "exemplars", "image", "cie", "pie", "overridden", "Male",
                                     "Smiling", "..", "%2e%2e", "%00", "%ff", "/", "static", "000001.jpg",
                                     "../../../../etc/passwd", "img_align_celeba"]),
                    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=10))
QUERY = st.dictionaries(st.sampled_from(["seed", "n", "model", "identity", "kind"]),
                        st.one_of(st.sampled_from(["0", "-1", "201", "4294967296", "1e3", "model", "reference",
                                                   "Male=1", "Male=", "=1", "Nobody=1", "x" * 500, "٣"]),
                                  st.text(max_size=10)))


@EXAMPLES
@given(segments=st.lists(SEGMENT, min_size=1, max_size=4), query=QUERY)
def test_hostile_requests_get_pages_not_tracebacks(segments, query, viewer):
    from urllib.parse import quote

    client, data = viewer
    if segments[0] == "image" and len(segments) > 1 and segments[1] == "000001.jpg":
        segments[1] = str(data.ids[0])
    path = "/" + "/".join(quote(s, safe="%/.") for s in segments)
    response = client.get(path, query_string=query)
    assert response.status_code in (200, 308, 400, 404, 405), (path, query, response.status_code)
    assert b"Traceback" not in response.data


@pytest.mark.parametrize("text", ["", "{", "[]", '{"jobs": 3}', '{"jobs": [{"recipe": "r.yaml"}]}',
                                  '{"jobs": [{"recipe": "r", "seed": 0, "name": "../../etc", "overrides": {}, '
                                  '"attributes": null}]}', b"\xff\xfe"])
def test_a_sweep_plan_that_sparsebias_did_not_write(text, tmp_path):
    from sparsebias.study import read_plan

    path = tmp_path / "sweep.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SparsebiasError, match="not a sweep plan sparsebias wrote"):
        read_plan(tmp_path)
