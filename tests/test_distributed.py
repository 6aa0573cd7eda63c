"""Several processes (torchrun, gloo on the CPU): batches dealt out by rank, the same masks
on every rank for magnitude, N:M and data-driven pruning, and one bundle from rank 0."""

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_DATA, TINY_SETTINGS

from sparsebias.data.loader import EpochBatches

# the three data-driven methods in one run, each on its own layers
DATA_DRIVEN = """
num_epochs: 2
modifiers:
  - !EpochRangeModifier
    start_epoch: 0.0
    end_epoch: eval(num_epochs)
""" + "".join(f"""
  - !{method}
    params: ["re:{layers}.*conv.*"]
    init_sparsity: 0.5
    final_sparsity: 0.8
    start_epoch: 0.0
    end_epoch: 1.0
    update_frequency: 0.5
    {extra}
""" for method, layers, extra in [("SNIPPruningModifier", "layer[12]", "num_batches: 2"),
                                   ("GraSPPruningModifier", "layer3", "num_batches: 1"),
                                   ("FairGRAPEPruningModifier", "layer4", "sensitive: [Male, Young]")])


def test_one_process_draws_the_epoch_as_a_single_generator_would():
    sampler = EpochBatches(10, 4, seed=3)
    sampler.set_epoch(2)
    generator = torch.Generator().manual_seed(3 * 100_003 + 2)
    order = torch.randperm(10, generator=generator)
    steps = list(sampler)
    assert len(steps) == len(sampler) == 3
    for step, (rows, flip) in enumerate(steps):
        assert torch.equal(rows, order[step * 4:(step + 1) * 4])
        assert torch.equal(flip, torch.rand(len(rows), generator=generator) < 0.5)


def test_ranks_share_out_each_batch_and_drop_a_last_batch_too_small_for_them():
    per_rank = [list(EpochBatches(11, 4, seed=0, rank=r, world=3)) for r in range(3)]
    whole = list(EpochBatches(11, 4, seed=0))
    assert [len(steps) for steps in per_rank] == [3, 3, 3]   # the last batch has 3 rows: one for each
    for step in range(3):
        dealt = torch.cat([per_rank[r][step][0] for r in range(3)])
        assert sorted(dealt.tolist()) == sorted(whole[step][0].tolist())
        assert torch.equal(per_rank[1][step][0], whole[step][0][1::3])
        assert torch.equal(per_rank[1][step][1], whole[step][1][1::3])
    assert len(EpochBatches(10, 4, seed=0, world=3)) == 2     # 2 rows left for 3 ranks: dropped
    assert len(EpochBatches(11, 4, seed=0, world=3)) == 3


def _torchrun(args, cwd):
    """torchrun with 2 processes; on a timeout the launcher and its workers are killed together."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "NM_DISABLE_ANALYTICS": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 "2", *args], cwd=cwd, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        stdout, stderr = launcher.communicate()
    return subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr)


def _compress_args(repo, out, settings, *extra):
    """`python -m sparsebias compress` of the 90% recipe on the tiny data, as every rank runs it."""
    return ["-m", "sparsebias", "compress", "--recipe", str(repo / "recipes/resnet18_90.yaml"), "--data", TINY_DATA,
            "--name", "tiny", "--out", str(out), "--device", "cpu",
            *[a for s in [*TINY_SETTINGS, *settings] for a in ("--set", s)], *extra]


def _masks(state):
    return {k: v != 0 for k, v in state.items() if k.endswith("weight") and v.dim() > 1}


def test_every_rank_ends_with_the_same_weights_and_masks(repo, tmp_path):
    recipes = [repo / "recipes/resnet18_90.yaml", repo / "recipes/resnet18_nm_2_4.yaml"]
    runs = [str(recipes[0]), f"{recipes[1]}@pruning_start_epoch=0,num_epochs=3"]
    path = tmp_path / "data_driven.yaml"
    path.write_text(DATA_DRIVEN)
    recipes.append(path)
    runs.append(str(path))
    done = _torchrun([str(repo / "tests/distributed/train_ranks.py"), str(tmp_path / "out"), *runs], repo)
    assert done.returncode == 0, done.stderr[-3000:]
    for recipe in recipes:
        rank0, rank1 = (torch.load(tmp_path / "out" / recipe.stem / f"rank{r}.pt") for r in (0, 1))
        assert _masks(rank0).keys() == _masks(rank1).keys()
        for name, mask in _masks(rank0).items():
            assert torch.equal(mask, _masks(rank1)[name]), (recipe.stem, name)
        for name, value in rank0.items():
            assert torch.equal(value, rank1[name]), (recipe.stem, name)
        data_driven = recipe.stem == "data_driven"   # each method prunes its layers' convolutions only
        expected = {"resnet18_90": 0.9, "resnet18_nm_2_4": 0.5}.get(recipe.stem, 0.8)
        for layers in [("layer1", "layer2"), "layer3", "layer4"] if data_driven else ["layer"]:   # SNIP, GraSP, FairGRAPE
            convs = [m for k, m in _masks(rank0).items() if k.startswith(layers) and not (data_driven and "down" in k)]
            sparsity = 1 - sum(int(m.sum()) for m in convs) / sum(m.numel() for m in convs)
            assert sparsity == pytest.approx(expected, abs=0.002), (recipe.stem, layers)


def test_a_run_interrupted_alone_resumes_under_torchrun_into_one_bundle_at_the_recipes_sparsity(repo, tmp_path):
    from conftest import tiny_compress

    from sparsebias.bundle import load_bundle

    recipe, settings = repo / "recipes/resnet18_90.yaml", ["pruning_start_epoch=0", "pruning_end_epoch=2"]

    def interrupt_after_epoch_2(line="", **_):
        if line.startswith("epoch 2/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_compress(recipe, tmp_path, epochs=3, extra=settings, echo=interrupt_after_epoch_2)
    done = _torchrun(_compress_args(repo, tmp_path, ["num_epochs=3", *settings], "--resume"), repo)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resuming from" in done.stdout and "after epoch 2" in done.stdout
    assert done.stdout.count("bundle       ") == 1       # rank 0 alone reports
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["tiny"]
    bundle = load_bundle(tmp_path / "tiny")
    training = bundle.manifest["training"]
    assert training["processes"] == 2 and [e["epoch"] for e in training["history"]] == [1, 2, 3]
    assert training["masks_identical_on_every_rank"]
    per_layer = bundle.manifest["sparsity"]["per_layer"]
    convs = [k for k in per_layer if k.startswith("layer")]
    state = torch.load(tmp_path / "tiny" / "model.pt")["state_dict"]
    zeros = sum(int((state[k] == 0).sum()) for k in convs)
    assert zeros / sum(state[k].numel() for k in convs) == pytest.approx(0.9, abs=0.002)
    assert np.isfinite(bundle.split("test")["logits"]).all()


def test_a_bundle_rank_0_cannot_lock_stops_every_rank_with_its_reason(repo, tmp_path):
    import fcntl

    lock = tmp_path / ".tiny.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)   # another compress writing the same bundle
        done = _torchrun(_compress_args(repo, tmp_path, ["num_epochs=20"]), repo)
    assert done.returncode != 0
    refusal = f"{tmp_path / 'tiny'} is being written by another process"
    errors = sorted(line for line in done.stderr.splitlines() if line.startswith("error:"))
    assert len(errors) == 2 and errors[0].startswith(f"error: {refusal}")   # torchrun's own report follows
    assert errors[1].startswith(f"error: rank 0 failed: {refusal}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny.lock"]


def test_a_rank_that_loses_the_other_says_so_in_one_line_not_as_a_bug(repo, tmp_path):
    """Rank 0 killed mid-training (out of memory, a node lost): rank 1's collective fails."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "NM_DISABLE_ANALYTICS": "1", "WORLD_SIZE": "2",
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    ranks = [subprocess.Popen([sys.executable, *_compress_args(repo, tmp_path, ["num_epochs=20"])], cwd=repo, text=True,
                              env={**environment, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for r in (0, 1)]
    try:
        for line in ranks[0].stdout:
            if line.startswith("epoch 1/20"):
                break
        ranks[0].kill()
        _, stderr = ranks[1].communicate(timeout=120)
    finally:
        for process in ranks:
            process.kill()
            process.communicate()
    assert ranks[1].returncode == 2
    assert stderr.strip().splitlines()[-1].startswith(
        "error: rank 1 of 2: another process of this run stopped (its own message says why), so this one stops too")
