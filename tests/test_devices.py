"""Devices and precision: what --device and --precision resolve to, bf16 training on the CPU,
and, where there is a GPU, the same model from the same seed and exact masks in every precision."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_DATA, TINY_SETTINGS, tiny_compress

from sparsebias.bundle import load_bundle
from sparsebias.cli import main
from sparsebias.core import SparsebiasError, devices
from sparsebias.core.devices import resolve_device, resolve_precision

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def test_devices_resolve_or_fail_in_one_line():
    assert resolve_device("cpu") == CPU and resolve_device(" CPU ") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad, message in [("tpu", "unknown device 'tpu'"), ("mps", "not supported"), ("cuda:x", "unknown device")]:
        with pytest.raises(SparsebiasError, match=message):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(SparsebiasError, match="sees no CUDA GPU"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(SparsebiasError, match="GPU\\(s\\), cuda:0 to"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
        assert resolve_device("cuda", local_rank=torch.cuda.device_count() + 1).index == 1 % torch.cuda.device_count()


def test_precisions_resolve_per_device():
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision("auto", CPU) == ("bf16" if native_bf16 else "fp32")
    assert [resolve_precision(p, CPU) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with pytest.raises(SparsebiasError, match="precision 'fp8' is not one of auto, fp32, bf16, fp16"):
        resolve_precision("fp8", CPU)


def test_a_cpu_without_the_instructions_warns_of_emulated_half_precision(monkeypatch):
    monkeypatch.setattr(devices, "cpu_computes", lambda precision: precision == "fp32")
    assert resolve_precision("auto", CPU) == "fp32"
    assert devices.emulation_warning("bf16", CPU).startswith("this CPU has no bf16 instructions (")
    assert devices.emulation_warning("fp16", CPU).startswith("this CPU has no fp16 instructions (")
    assert devices.emulation_warning("fp32", CPU) is None
    assert devices.emulation_warning("bf16", torch.device("cuda", 0)) is None   # GPUs are checked at resolve time
    monkeypatch.setattr(devices, "cpu_computes", lambda precision: True)
    assert resolve_precision("auto", CPU) == "bf16" and devices.emulation_warning("bf16", CPU) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_that_is_not_there_is_one_line(tmp_path, repo):
    result = CliRunner().invoke(main, ["compress", "--recipe", str(repo / "recipes/resnet18_dense.yaml"),
                                       "--device", "cuda", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("error: device 'cuda': torch sees no CUDA GPU here")
    assert not (tmp_path / "out").exists()


def _pruned_weights_are_zero(bundle) -> float:
    """The share of zeros over the pruned layers of a resnet18_90 bundle, checked from model.pt."""
    state = torch.load(bundle.file("model.pt"))["state_dict"]
    pruned = [k for k in bundle.manifest["sparsity"]["per_layer"] if k.startswith("layer")]
    return sum(int((state[k] == 0).sum()) for k in pruned) / sum(state[k].numel() for k in pruned)


def test_bf16_training_on_the_cpu_keeps_masks_exact(repo, tmp_path):
    out = tmp_path / "out"
    settings = [*TINY_SETTINGS, "num_epochs=2", "pruning_start_epoch=0", "pruning_end_epoch=1"]
    result = CliRunner().invoke(main, ["compress", "--recipe", str(repo / "recipes/resnet18_90.yaml"), "--data",
                                       TINY_DATA, "--out", str(out), "--device", "cpu", "--precision", "bf16",
                                       *[x for s in settings for x in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert ("warning: this CPU has no bf16 instructions" in result.output) != devices.cpu_computes("bf16")
    bundle = load_bundle(out / "resnet18_90")
    training = bundle.manifest["training"]
    assert training["precision"] == "bf16" and training["device"].startswith("cpu")
    assert bundle.manifest["recipe"]["settings"]["precision"] == "bf16"
    assert _pruned_weights_are_zero(bundle) == pytest.approx(0.9, abs=0.002)
    assert np.isfinite(bundle.split("test")["logits"]).all()


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_on_a_gpu_the_same_seed_gives_the_same_model_and_exact_masks(repo, tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    extra = ["pruning_start_epoch=0", "pruning_end_epoch=1"]
    runs = [tiny_compress(repo / "recipes/resnet18_90.yaml", tmp_path, name=f"{precision}{i}", device="cuda",
                          precision=precision, extra=extra) for i in range(2)]
    assert runs[0].manifest["training"]["device"].startswith("cuda:")
    np.testing.assert_array_equal(runs[0].split("test")["logits"], runs[1].split("test")["logits"])
    assert _pruned_weights_are_zero(runs[0]) == pytest.approx(0.9, abs=0.002)


@needs_cuda
@pytest.mark.parametrize("method", ["fairgrape", "snip", "grasp", "lottery", "ws"])
def test_every_pruning_method_trains_on_a_gpu(repo, tmp_path, method):
    from conftest import GROUP_DATA

    from sparsebias.recipes import parse_overrides
    from sparsebias.training import compress

    bundle = compress(repo / f"recipes/groups/{method}.yaml", data=GROUP_DATA, device="cuda", precision="bf16"
                      if torch.cuda.is_bf16_supported() else "fp16",
                      overrides=parse_overrides([*TINY_SETTINGS, "arch=resnet18", "num_epochs=5", "final_sparsity=0.8"]),
                      attributes=["gender", "race"], name=method, out_dir=tmp_path, echo=lambda *a, **k: None)
    assert bundle.manifest["training"]["device"].startswith("cuda:")
    assert bundle.manifest["sparsity"]["overall"] > 0.5
    assert np.isfinite(bundle.split("test")["logits"]).all()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_fused_optimizer_step_is_the_loops(optimizer):
    """compress's optimizer runs fused kernels on the CPU, whose weights are the per-tensor
    loop's to rounding (bitwise for resnet18's SGD here, not for every shape)."""
    import copy

    from sparsebias.training.loop import make_optimizer

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    x, y = torch.randn(6, 3, 8, 8), torch.rand(6, 4).round()
    base(x)
    settings = {"optimizer": optimizer, "init_lr": 0.1 if optimizer == "sgd" else 1e-3, "momentum": 0.9,
                "weight_decay": 1e-4}
    weights = []
    for fused in (None, False):
        model = copy.deepcopy(base)
        opt = make_optimizer(model, settings, fused=fused)
        assert opt.defaults["fused"] is (fused is None)
        for _ in range(4):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
            opt.step()
        weights.append(list(model.parameters()))
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
