"""The two install profiles (Python 3.11 with DeepSparse and sparseml; Python 3.12/3.13 with
numpy 2 and the newest onnx) prune the same: the same recipe and seed give the same masks.

Runs on the current-stack profile, against the 3.11 profile's interpreter (`.venv`, made by
`make setup`; `SPARSEBIAS_OTHER_PYTHON` names another); skipped where that is absent.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OTHER = Path(os.environ.get("SPARSEBIAS_OTHER_PYTHON", ROOT / ".venv/bin/python"))

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12) or not OTHER.is_file(),
    reason="runs on the current-stack profile (Python 3.12+) where the 3.11 profile's interpreter (.venv) exists")


def _masks(python, recipe, epochs) -> dict:
    env = {**os.environ, "NM_DISABLE_ANALYTICS": "1"}
    done = subprocess.run([str(python), str(ROOT / "tests/profile_masks.py"), str(ROOT / recipe), str(epochs)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("recipe, epochs", [("recipes/resnet18_90.yaml", 2), ("recipes/resnet18_nm_2_4.yaml", 6)])
def test_both_profiles_give_the_same_masks(recipe, epochs):
    here, there = _masks(sys.executable, recipe, epochs), _masks(OTHER, recipe, epochs)
    assert here.keys() == there.keys()
    assert max(m["sparsity"] for m in here.values()) >= 0.5   # the run did prune
    assert {n: m["mask"] for n, m in here.items()} == {n: m["mask"] for n, m in there.items()}
    assert {n: m["sparsity"] for n, m in here.items()} == {n: m["sparsity"] for n, m in there.items()}
