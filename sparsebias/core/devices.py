"""Where training and the torch engine run, and at which precision.

`--device auto` is CUDA where torch sees a GPU (the GPU a Ray task or a sweep worker was
given is the only one it sees), else the CPU. `--precision auto` is bf16 where the device
computes it natively (CUDA from Ampere on; CPUs with AVX-512 BF16 or AMX), fp16 on older
GPUs, fp32 elsewhere. Mixed precision is autocast: weights, optimizer state and stored
logits stay fp32, and fp16 adds a gradient scaler.
"""

from __future__ import annotations

import contextlib
import os

import torch

from .errors import SparsebiasError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str | None = "auto", local_rank: int = 0) -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N' -> a device that exists here, or one clear error.

    'auto' and 'cuda' give each process of a machine its own GPU (LOCAL_RANK under torchrun)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise SparsebiasError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise SparsebiasError(f"device {spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SparsebiasError(f"device {spec!r}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                                  f"CUDA {torch.version.cuda or 'not built in'})")
        index = local_rank % count if device.index is None else device.index
        if index >= count:
            raise SparsebiasError(f"device {spec!r}: torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}")
        device = torch.device("cuda", index)
    return device


def describe(device: torch.device) -> str:
    """'cpu (N threads)' or 'cuda:0 (NVIDIA H100 80GB HBM3)', for manifests and benchmarks."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> the fastest precision the device computes natively; others are checked."""
    if precision not in PRECISIONS:
        raise SparsebiasError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise SparsebiasError(f"{torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32")
        return precision
    if precision == "auto":
        return "bf16" if cpu_computes("bf16") else "fp32"
    return precision


def cpu_computes(precision: str) -> bool:
    """Whether this CPU has instructions for bf16 (AVX-512 BF16, AMX) or fp16 (AVX-512 FP16, AMX-FP16)."""
    if precision == "bf16":
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "fp16":
        return torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return True


def emulation_warning(precision: str, device: torch.device) -> str | None:
    """Why a CPU without the instructions for `precision` will train far slower than in fp32:
    oneDNN emulates it (bf16 at 2.5 against 55-91 images/s in fp32 on an AVX2-only EPYC,
    bench/results/training.md). None where there is nothing to say."""
    if device.type != "cpu" or cpu_computes(precision):
        return None
    return (f"this CPU has no {precision} instructions ({torch.backends.cpu.get_cpu_capability()}): {precision} "
            "autocast is emulated here and many times slower than fp32 (--precision auto picks fp32 on it)")


def autocast(device: torch.device, precision: str):
    """Autocast to bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def prepare_device(device: torch.device) -> None:
    """Same seed, device and precision: same model. cuDNN picks deterministic kernels, cuBLAS
    a fixed workspace (ops with no deterministic CUDA kernel warn rather than fail), and fp32
    means fp32: no TF32, so the logits a bundle stores match its ONNX graph on the CPU."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
