"""Shared fixtures: a private data cache, tiny SynthFaces, and one tiny dense bundle per session."""

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one thread each (their subprocesses too),
    # or the thread pools of both fight over the cores and each runs several times slower
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

collect_ignore = ["sparseml_oracle.py", "profile_masks.py"]   # helpers: the equivalence tests (where sparseml is), test_profiles

TINY_DATA = "synthfaces:train=96,val=48,test=400,size=32"  # a test split big enough for BA
# Run settings that make any recipe a seconds-long run on TINY_DATA.
TINY_SETTINGS = ["image_size=32", "batch_size=32"]


def _deepsparse_missing():
    from sparsebias.engines import DeepSparseEngine

    return DeepSparseEngine.unavailable_reason()


DEEPSPARSE_MISSING = _deepsparse_missing()
# DeepSparse 1.8 installs on the Python 3.11 profile only; elsewhere its tests skip with the reason.
needs_deepsparse = pytest.mark.skipif(DEEPSPARSE_MISSING is not None, reason=str(DEEPSPARSE_MISSING))
DEEPSPARSE = [] if DEEPSPARSE_MISSING else ["deepsparse"]   # the engine where it runs


@pytest.hookimpl(tryfirst=True)   # xdist reads the marks in its own hook of this name
def pytest_collection_modifyitems(items):
    """Tests that share an expensive fixture run on one worker, which builds it once: the
    group bundles (a minute), and each file's own module-scoped fixtures (a sweep, bundles)."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        defs = defs.name2fixturedefs if defs else {}
        own = item.nodeid.split("::")[0]
        if "group_bundles" in defs:
            item.add_marker(pytest.mark.xdist_group("group_bundles"))
        elif any(d[-1].scope != "function" and d[-1].baseid == own for d in defs.values()):
            item.add_marker(pytest.mark.xdist_group(own))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Built data sets go to a temporary cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("SPARSEBIAS_CACHE")
    os.environ["SPARSEBIAS_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("SPARSEBIAS_CACHE", None)
    else:
        os.environ["SPARSEBIAS_CACHE"] = old


@pytest.fixture(scope="session")
def repo() -> Path:
    return Path(__file__).resolve().parents[1]


def tiny_compress(recipe, out_dir, *, name="tiny", epochs=2, extra=(), echo=lambda *a, **k: None, **kwargs):
    """compress() on tiny data; GMP recipes get a schedule that fits `epochs`."""
    from sparsebias.recipes import parse_overrides
    from sparsebias.training import compress

    overrides = parse_overrides([*TINY_SETTINGS, f"num_epochs={epochs}", *extra])
    return compress(recipe, data=TINY_DATA, overrides=overrides, name=name, out_dir=out_dir,
                    echo=echo, **kwargs)


def cli(*args):
    """A sparsebias command, in process."""
    from click.testing import CliRunner

    from sparsebias.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, message):
    """A user error as the CLI must give it: exit 2, one `error:` line holding `message`, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.output


@pytest.fixture(scope="session")
def dense_bundle(tmp_path_factory, repo):
    """A tiny dense resnet18 bundle, trained once for the whole session."""
    out = tmp_path_factory.mktemp("exported")
    return tiny_compress(repo / "recipes/resnet18_dense.yaml", out, name="dense")


@pytest.fixture(scope="session")
def sparse_bundle(tmp_path_factory, repo):
    """A tiny resnet18 pruned to 90% by the real recipe through the CLI, once per session."""
    from click.testing import CliRunner

    from sparsebias.bundle import load_bundle
    from sparsebias.cli import main

    out = tmp_path_factory.mktemp("gmp")
    settings = [*TINY_SETTINGS, "num_epochs=3", "pruning_start_epoch=0", "pruning_end_epoch=2"]
    result = CliRunner().invoke(main, ["compress", "--recipe", str(repo / "recipes/resnet18_90.yaml"),
                                       "--data", TINY_DATA, "--out", str(out),
                                       *[x for s in settings for x in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert "mean AUC" in result.output and "per-layer sparsity" in result.output
    return load_bundle(out / "resnet18_90")


GROUP_DATA = "synthfaces:train=160,val=40,test=300,size=32,groups=1"


@pytest.fixture(scope="session")
def group_bundles(tmp_path_factory, repo):
    """Tiny resnet18 gender + race classifiers: dense, and FairGRAPE-pruned to 80%, once per session."""
    from sparsebias.recipes import parse_overrides
    from sparsebias.training import compress

    out = tmp_path_factory.mktemp("groups")
    settings = [*TINY_SETTINGS, "arch=resnet18"]
    dense = compress(repo / "recipes/groups/dense.yaml", data=GROUP_DATA,
                     overrides=parse_overrides([*settings, "num_epochs=3"]),
                     attributes=["gender", "race"], name="dense", out_dir=out, echo=lambda *a, **k: None)
    fair = compress(repo / "recipes/groups/fairgrape.yaml", data=GROUP_DATA,
                    overrides=parse_overrides([*settings, "num_epochs=5", "final_sparsity=0.8"]),
                    attributes=["gender", "race"], name="fairgrape", out_dir=out, echo=lambda *a, **k: None)
    return dense, fair
