"""Training throughput (images/s) of resnet18 per device, precision, image size, batch and processes.

Each variant runs the training step `sparsebias compress` runs: batches from the loader
(`data.loader`: uint8 slices of a memory-mapped split, pinned and prefetched by workers
for a GPU), flipped and normalised on the device, channels_last (`--memory-formats` also
times NCHW, the layout before issue 14), autocast at the
precision asked, 40 BCE outputs, SGD with momentum (fused kernels where the device has them;
`--optimizer-kernels fused,loop` also times torch's per-tensor loop), and a global magnitude pruning
modifier holding 90% masks (masking the gradients before each step is part of the
cost), and on a CPU the convolutions on small maps as products over patches
(`training.small_maps`; `--small-maps both` times torch's convolutions beside them). The
images are random (decoding is the cache's job and is not timed). Single process variants
are interleaved round by round so that the machine's drift touches each alike; a variant
with several processes starts them as torchrun would (gloo on the CPU, NCCL on GPUs) and
reports the global images/s.

    python bench/training_speed.py                                   # CPU: fp32 and bf16, 64 px, batch 64
    python bench/training_speed.py --device cuda --precisions fp32,bf16,fp16 --sizes 64,128 --batches 256
    python bench/training_speed.py --processes 1,2                   # also 2 processes (DDP) on this machine
    python bench/training_speed.py --small-maps both                 # small maps: products, and torch's
    python bench/training_speed.py --memory-formats contiguous,channels_last   # also NCHW, the step before issue 14
    python bench/training_speed.py --optimizer-kernels loop,fused    # SGD's per-tensor loop beside its fused step

Writes bench/results/training_speed_<device>.json and prints a Markdown table, with, for a
GPU, the hours the paper's schedule (160,000 images x 100 epochs) would take at that speed.
Beside each variant: the step's arithmetic rate (3x the forward pass's FLOPs per image as
`bundle.flops` counts them: a backward pass costs about two forwards) and, measured in the same rounds, the rate
of a large matrix product at that precision, the most this device does with the step's
arithmetic. Their ratio says how much a faster step could still gain from the arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sparsebias.bundle.export import export_onnx
from sparsebias.bundle.flops import count_flops
from sparsebias.core.devices import autocast, describe, grad_scaler, prepare_device, resolve_device, resolve_precision
from sparsebias.core.distributed import Ranks
from sparsebias.core.files import markdown_table
from sparsebias.data.loader import augment, train_loader
from sparsebias.engines.benchmark import machine
from sparsebias.pruning import GlobalMagnitudePruningModifier
from sparsebias.recipes import RecipeManager
from sparsebias.training.loop import make_optimizer
from sparsebias.training.models import build_model
from sparsebias.training.small_maps import resolve_small_maps, small_maps_as_products

RESULTS = Path(__file__).parent / "results"
PAPER_IMAGES = 160_000 * 100      # CelebA's training split x the paper's 100 epochs
IMAGES = 4096                     # random training images per variant
MATMUL = 2048                     # the ceiling's square matrices


class RandomImages:
    """What the loader reads from a FaceImages: a uint8 (N, 3, S, S) split and its labels."""

    def __init__(self, n: int, size: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        self.labels = torch.randint(0, 2, (n, 40), generator=g).float()

    def __len__(self):
        return len(self.images)


class Trainer:
    """One variant's model, optimizer, masks and loader, ready to time steps."""

    def __init__(self, device, precision, size, batch, small_maps="product", memory_format="channels_last",
                 kernels="fused", ranks=Ranks.single()):
        self.device, self.precision, self.ranks = device, precision, ranks
        self.small_maps = small_maps
        self.memory_format = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        torch.manual_seed(0)
        self.model = build_model("resnet18", 40).to(device, memory_format=self.memory_format)
        optimizer = make_optimizer(self.model, {"optimizer": "sgd", "init_lr": 0.01, "momentum": 0.9,
                                                "weight_decay": 1e-4}, fused=None if kernels == "fused" else False)
        self.pruning = GlobalMagnitudePruningModifier(0.9, 0.9, 0.0, 0.0, -1.0,
                                                      params=["re:layer.*\\.(conv\\d|downsample\\.0)\\.weight"])
        self.loader = train_loader(RandomImages(IMAGES, size), batch, 0, device, ranks.rank, ranks.world)
        self.step_fn = RecipeManager([self.pruning]).modify(self.model, optimizer, steps_per_epoch=len(self.loader.sampler))
        self.net = ranks.replicate(self.model, device)
        self.scaler = grad_scaler(device, precision)
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.batches = iter(())

    def _next(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def time_steps(self, steps: int) -> float:
        """Seconds per step over `steps` steps, after 2 warm-up steps."""
        self.net.train()
        with small_maps_as_products(self.model, resolve_small_maps(self.small_maps, self.device) == "product"):
            return self._time_steps(steps)

    def _time_steps(self, steps: int) -> float:
        for i in range(steps + 2):
            if i == 2:
                _sync(self.device)
                started = time.perf_counter()
            images, labels, flip = self._next()
            x = augment(images, flip, self.device).contiguous(memory_format=self.memory_format)
            y = labels.to(self.device, non_blocking=True)
            with autocast(self.device, self.precision):
                loss = self.loss_fn(self.net(x).float(), y)
            self.step_fn.zero_grad()
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            self.step_fn.step(self.scaler)
        _sync(self.device)
        return (time.perf_counter() - started) / steps


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ways(description: str, out: Path, ways: dict, rounds: int, steps: int) -> tuple[argparse.Namespace, list[dict]]:
    """Time the training step (90% masks; at each --sizes, on the CPU) done each of `ways` in turn,
    round by round, so that the machine's drift falls on every way alike. A way sets itself up on
    the Trainer and returns what undoes it. Returns the options and one row per size; the caller
    adds what it compares and writes the record with `write_ways`."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; a sweep run has 1)")
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--out", type=Path, default=out)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device("cpu")
    args.precision = resolve_precision("auto", device)
    rows = []
    for size in map(int, args.sizes.split(",")):
        trainer = Trainer(device, args.precision, size, args.batch)
        trainer.time_steps(1)          # the masks are set and the state of pruned weights is zeroed
        seconds = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                undo = way(trainer)
                seconds[name].append(trainer.time_steps(args.steps))
                undo()
        rows.append({"size": size, "batch": args.batch, "seconds": seconds,
                     "images_per_s": {k: args.batch / statistics.median(v) for k, v in seconds.items()}})
        print(f"{size} px: " + ", ".join(f"{k} {v:.1f} images/s" for k, v in rows[-1]["images_per_s"].items()),
              flush=True)
    return args, rows


def write_ways(args: argparse.Namespace, rows: list[dict]) -> None:
    record = {"machine": {**machine(), "torch_threads": torch.get_num_threads()}, "precision": args.precision,
              "masks": "90% global magnitude over the residual blocks", "rounds": args.rounds, "steps": args.steps,
              "rows": rows}
    args.out.write_text(json.dumps(record, indent=2) + "\n")


def forward_flops(size: int) -> int:
    """FLOPs of one resnet18 forward pass at this image size, as a bundle's manifest counts
    them (its ONNX graph's multiply-adds, x 2)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(build_model("resnet18", 40).eval(), path, torch.zeros(1, 3, size, size))
        return 2 * count_flops(path).dense_macs


def matmul_seconds(device, precision, steps: int) -> float:
    """Seconds per MATMUL^3 matrix product, under the same autocast as the step."""
    a, b = (torch.randn(MATMUL, MATMUL, device=device) for _ in range(2))
    with autocast(device, precision):
        for i in range(steps + 2):
            if i == 2:
                _sync(device)
                started = time.perf_counter()
            a @ b
    _sync(device)
    return (time.perf_counter() - started) / steps


def _rank_main(local_rank, world, port, device_spec, precision, size, batch, small_maps, memory_format, kernels, steps,
               rounds, out):
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if device_spec == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    ranks = Ranks.from_env()
    device = resolve_device(device_spec, ranks.local_rank)
    ranks.start(device)
    trainer = Trainer(device, precision, size, batch, small_maps, memory_format, kernels, ranks)
    times = [trainer.time_steps(steps) for _ in range(rounds)]
    if ranks.main:
        Path(out).write_text(json.dumps(times))
    ranks.stop()


def multi_process(world, device, precision, size, batch, small_maps, memory_format, kernels, steps,
                  rounds) -> list[float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        torch.multiprocessing.spawn(_rank_main, args=(world, port, device.type, precision, size, batch, small_maps,
                                                      memory_format, kernels, steps, rounds, str(out)), nprocs=world)
        return json.loads(out.read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--sizes", default="64")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--processes", default="1", help="e.g. 1,2: processes (DDP ranks) per variant")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small-maps", choices=["product", "torch", "both"], default="product",
                    help="CPU convolutions on small maps: as products over patches (what compress runs), torch's, or both")
    ap.add_argument("--memory-formats", default="channels_last",
                    help="channels_last (what compress runs) and/or contiguous (NCHW), comma-separated")
    ap.add_argument("--optimizer-kernels", default="fused",
                    help="fused (what compress runs where the device has them) and/or loop (torch's per-tensor step)")
    ap.add_argument("--out", type=Path, help="default: bench/results/training_speed_<device type>.json")
    args = ap.parse_args()

    device = resolve_device(args.device)
    prepare_device(device)
    small_maps = ["torch", "product"] if args.small_maps == "both" else [args.small_maps]
    formats = args.memory_formats.split(",")
    if not set(formats) <= {"channels_last", "contiguous"}:
        ap.error(f"--memory-formats: channels_last and/or contiguous, not {args.memory_formats!r}")
    kernels = args.optimizer_kernels.split(",")
    if not set(kernels) <= {"fused", "loop"}:
        ap.error(f"--optimizer-kernels: fused and/or loop, not {args.optimizer_kernels!r}")
    variants = [(resolve_precision(p, device), int(s), int(b), int(w), m, f, k)
                for w in args.processes.split(",") for s in args.sizes.split(",")
                for b in args.batches.split(",") for p in args.precisions.split(",") for m in small_maps
                for f in formats for k in kernels]
    single = {v: Trainer(device, *v[:3], *v[4:]) for v in variants if v[3] == 1}
    times = {v: [] for v in variants}
    precisions = sorted({v[0] for v in variants})
    ceiling = {p: [] for p in precisions}
    for r in range(args.rounds):
        for v, trainer in single.items():
            times[v].append(trainer.time_steps(args.steps))
            print(f"round {r + 1}/{args.rounds}  {v[0]} {v[1]}px batch {v[2]} {v[4]} {v[5]} {v[6]}: "
                  f"{v[2] / times[v][-1]:8.1f} images/s", flush=True)
        for p in precisions:
            ceiling[p].append(matmul_seconds(device, p, args.steps))
    matmul_gflops = {p: 2 * MATMUL ** 3 / statistics.median(t) / 1e9 for p, t in ceiling.items()}
    step_flops = {size: 3 * forward_flops(size) for size in {v[1] for v in variants}}
    for v in variants:
        if v[3] > 1:
            times[v] = multi_process(v[3], device, *v[:3], *v[4:], args.steps, args.rounds)
            print(f"{v[3]} processes  {v[0]} {v[1]}px batch {v[2]} {v[4]} {v[5]} {v[6]}: "
                  f"{v[2] / statistics.median(times[v]):8.1f} images/s")

    rows, first = [], variants[0]
    for (precision, size, batch, world, maps, memory_format, kernel), t in times.items():
        per_s = batch / statistics.median(t)
        ratio = None
        if world == 1 == first[3]:   # against the first variant's images/s in the same round: those rounds interleave
            paired = [(batch / b) / (first[2] / a) for a, b in zip(times[first], t)]
            ratio = {"median": round(statistics.median(paired), 3),
                     "range": [round(min(paired), 3), round(max(paired), 3)]}
        step_gflops = per_s * step_flops[size] / 1e9
        rows.append({"device": describe(device), "precision": precision, "size": size, "batch": batch,
                     "processes": world, "small_maps": maps, "memory_format": memory_format,
                     "optimizer_kernels": kernel, "images_per_s": round(per_s, 1),
                     "paper_schedule_hours": round(PAPER_IMAGES / per_s / 3600, 2),
                     "step_gflops_per_s": round(step_gflops, 1),
                     "matmul_gflops_per_s": round(matmul_gflops[precision], 1),
                     "share_of_matmul": round(step_gflops / matmul_gflops[precision], 3),
                     "vs_first_variant": ratio})
    record = {"machine": {**machine(), "torch_threads": torch.get_num_threads(), "device": describe(device)},
              "settings": {"arch": "resnet18", "outputs": 40, "pruning": "global magnitude 90%, masks enforced",
                           "steps": args.steps, "rounds": args.rounds, "statistic": "median over rounds",
                           "vs_first_variant": "median over rounds of images/s / the first variant's in that round",
                           "step_flops_per_image": {str(k): v for k, v in step_flops.items()},
                           "step_flops": "3 x the forward pass's (bundle.flops: 2 x the ONNX graph's multiply-adds)",
                           "matmul": f"{MATMUL}x{MATMUL} @ {MATMUL}x{MATMUL} under the variant's autocast, "
                                     "one process, interleaved with the single-process variants"},
              "results": rows}
    out = args.out or RESULTS / f"training_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    def versus_first(ratio):
        return "{median} ({range[0]}-{range[1]})".format(**ratio) if ratio else "-"
    print(markdown_table(["device", "precision", "px", "batch", "processes", "small maps", "memory", "optimizer",
                          "images/s",
                          "paper schedule (h)", "step GFLOP/s", "matmul GFLOP/s", "share", "vs first (range)"],
                         [[r["device"], r["precision"], r["size"], r["batch"], r["processes"], r["small_maps"],
                           r["memory_format"], r["optimizer_kernels"], r["images_per_s"], r["paper_schedule_hours"], r["step_gflops_per_s"],
                           r["matmul_gflops_per_s"], r["share_of_matmul"], versus_first(r["vs_first_variant"])]
                          for r in rows]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
