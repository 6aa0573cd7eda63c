"""The training loop: a recipe drives the schedule, we keep the best validation epoch.

Batches are sliced out of each split's decoded uint8 array (`data.loader`), flipped and
normalised on the device; the model runs in channels_last (on a CPU, convolutions on
maps of a few positions as products over their patches: `small_maps`), the forward and backward
passes in the precision `devices` resolves (autocast; fp16 with a gradient scaler);
weights, optimizer state and the logits a bundle stores stay fp32. Under torchrun each
process trains a DistributedDataParallel replica on its share of every batch
(`distributed`), and rank 0 alone checkpoints.

Pruning modifiers only reach their final sparsity at the end of their schedule, so the
best checkpoint is chosen among the epochs from then on (the paper: "the models with the
best validation between epochs 80-100"), and, with a QuantizationModifier, among the
epochs trained quantization-aware from start to end (the model the bundle exports); a
dense recipe makes every epoch eligible.
Each completed epoch is checkpointed, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..core.devices import autocast, emulation_warning, grad_scaler, prepare_device, resolve_precision
from ..core.distributed import Ranks, all_reduce_mean, disagreeing_ranks, gather_rows
from ..core.errors import SparsebiasError
from ..core.outputs import Outputs
from ..data.loader import FaceImages, augment, normalize, train_loader
from ..pruning.score_data import ScoreData
from ..recipes.recipe import Recipe
from .checkpoint import load_checkpoint, save_checkpoint
from .models import prunable_weights, sparsity_report
from .small_maps import resolve_small_maps, small_maps_as_products

EVAL_BATCH = 256
CHECK_EVERY = 20  # steps between progress updates and loss checks (each waits for the device)


@dataclass
class TrainResult:
    best_state: dict
    best_epoch: int
    history: list = field(default_factory=list)
    precision: str = "fp32"
    small_maps: str = "torch"
    best_manager_state: dict = field(default_factory=dict)   # the recipe's state at the best epoch
    earlier_seconds: float = 0.0   # wall time the processes before a resume spent up to its checkpoint


def predict_logits(model: nn.Module, dataset: FaceImages, device: torch.device = torch.device("cpu"),
                   ranks: Ranks = Ranks.single(), batch_size: int = EVAL_BATCH) -> np.ndarray:
    """fp32 logits of the whole dataset in its order, in eval mode; with several ranks each
    computes every world-th row and all get the whole."""
    model.eval()
    rows = torch.arange(ranks.rank, len(dataset), ranks.world)
    out = []
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            x = dataset.images[rows[s:s + batch_size]].to(device, non_blocking=True)
            out.append(model(normalize(x).contiguous(memory_format=torch.channels_last)).float())
    part = torch.cat(out) if out else torch.empty((0, 0), device=device)
    return gather_rows(part, ranks).cpu().numpy()


def make_optimizer(model: nn.Module, settings: dict, fused: bool | None = None) -> torch.optim.Optimizer:
    """The run's SGD (with momentum) or Adam. `fused` (default: where the device has the kernels)
    updates every weight in one pass instead of one per tensor: the loop's weights to rounding,
    the optimizer step 3-4x faster on a CPU (`bench/results/training.md`)."""
    params = list(model.parameters())
    if fused is None:
        fused = params[0].device.type in ("cpu", "cuda")
    if str(settings["optimizer"]).lower() == "adam":
        return torch.optim.Adam(params, lr=settings["init_lr"], weight_decay=settings["weight_decay"], fused=fused)
    return torch.optim.SGD(params, lr=settings["init_lr"], momentum=settings["momentum"],
                           weight_decay=settings["weight_decay"], fused=fused)


def train(model: nn.Module, recipe: Recipe, outputs: Outputs, train_set: FaceImages, val_set: FaceImages, *,
          work_dir: Path, seed: int, resume: bool = False, device: torch.device = torch.device("cpu"),
          ranks: Ranks = Ranks.single(), started: float | None = None, echo=print) -> TrainResult:
    """Train `model` on `device` as the recipe says; rank 0 returns the best epoch's state.

    `started` (time.time(), default now) is when this process took up the run: each
    checkpoint adds its wall time to the earlier processes', so a resumed run's time
    counts the epochs it kept from before."""
    started = time.time() if started is None else started
    settings, epochs = recipe.settings, recipe.epochs
    batch_size = settings["batch_size"]
    if ranks.world > batch_size:
        raise SparsebiasError(f"{ranks.world} processes cannot share batches of {batch_size} images; "
                              "raise batch_size or use fewer processes")
    precision = resolve_precision(settings["precision"], device)
    if ranks.main and (slow := emulation_warning(precision, device)):
        echo(f"warning: {slow}")
    small_maps = resolve_small_maps(settings["small_maps"], device)
    prepare_device(device)
    loader = train_loader(train_set, batch_size, seed, device, ranks.rank, ranks.world)
    steps_per_epoch = len(loader.sampler)
    qat = recipe.quantization_modifier
    final_form = max(recipe.pruning_end_epoch, qat.start_epoch if qat else 0.0)
    eligible_from = min(int(math.ceil(final_form)), epochs - 1)
    model.to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, settings)
    scaler = grad_scaler(device, precision)
    loss_fn = outputs.loss()
    last_path, best_path = work_dir / "last.pt", work_dir / "best.pt"

    start_epoch, history, best, earlier_seconds = 0, [], {"epoch": -1, "score": -math.inf}, 0.0
    state = load_checkpoint(last_path) if resume and last_path.exists() else None
    if state:
        model.load_state_dict(state["model"])
        start_epoch = int(state["epoch"])
        history, best = json.loads(state["history"]), json.loads(state["best"])
        earlier_seconds = float(state.get("seconds", 0.0))   # 0: written before checkpoints kept time
        echo(f"Resuming from {last_path} after epoch {start_epoch}")

    score_data = ScoreData(train_set, loss_fn, batch_size, seed, device=device, ranks=ranks)
    recipe.manager.initialize(model, epoch=float(start_epoch), score_data=score_data)
    if state:
        recipe.manager.load_state_dict(state["manager"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
    wrapped = recipe.manager.modify(model, optimizer, steps_per_epoch=steps_per_epoch, epoch=float(start_epoch))
    net = ranks.replicate(model, device)

    for epoch in range(start_epoch, epochs):
        loader.sampler.set_epoch(epoch)
        epoch_started = time.perf_counter()
        net.train()
        total, seen = torch.zeros((), device=device), 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False, disable=not ranks.main)
        for step, (images, labels, flip) in enumerate(bar):
            x, y = augment(images, flip, device), labels.to(device, non_blocking=True)
            with autocast(device, precision), small_maps_as_products(model, small_maps == "product"):
                loss = loss_fn(net(x).float(), y)   # autograd records the backward pass of the path taken
            wrapped.zero_grad()
            (scaler.scale(loss) if scaler else loss).backward()
            wrapped.step(scaler)
            total += loss.detach() * len(x)
            seen += len(x)
            if step % CHECK_EVERY == 0 or step == steps_per_epoch - 1:
                _check_finite(total, model, epoch, step)
                bar.set_postfix(loss=f"{total.item() / seen:.4f}", sparsity=f"{sparsity_report(model)[0]:.3f}",
                                lr=f"{optimizer.param_groups[0]['lr']:.2g}")
        bar.close()
        train_seconds = time.perf_counter() - epoch_started
        total, seen_all = all_reduce_mean([total, torch.tensor(float(seen), device=device)])
        ranks.share_buffers(model)

        val = outputs.score(val_set.labels.numpy(), predict_logits(model, val_set, device, ranks))
        sparsity = sparsity_report(model)[0]
        record = {"epoch": epoch + 1, "train_loss": float(total / seen_all), "lr": optimizer.param_groups[0]["lr"],
                  "train_seconds": round(train_seconds, 2),
                  "train_images_per_s": round(float(seen_all) * ranks.world / train_seconds, 1),
                  "sparsity": sparsity, "val_accuracy": val["accuracy"], "val_auc": val["auc"]}
        score = val["auc"] if math.isfinite(val["auc"]) else val["accuracy"]
        if epoch >= eligible_from and score > best["score"]:
            best = {"epoch": epoch + 1, "score": score}
            if ranks.main:
                save_checkpoint(best_path, {"model": model.state_dict(), "manager": recipe.manager.state_dict()})
            record["best"] = True
        history.append(record)
        if ranks.main:
            save_checkpoint(last_path, {
                "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "manager": recipe.manager.state_dict(), "history": json.dumps(history), "best": json.dumps(best),
                "scaler": scaler.state_dict() if scaler else {}, "rng": torch.get_rng_state(),
                "seconds": earlier_seconds + time.time() - started})
        echo(f"epoch {epoch + 1}/{epochs}  loss {record['train_loss']:.4f}  sparsity {sparsity:.4f}  "
             f"val acc {val['accuracy']:.4f}  val auc {val['auc']:.4f}" + ("  *" if record.get("best") else ""))

    recipe.manager.finalize(model)
    model.to(memory_format=torch.contiguous_format)
    _check_same_masks(model, ranks, device)
    best_saved = load_checkpoint(best_path) if ranks.main else {}
    return TrainResult(best_saved.get("model", {}), best["epoch"], history, precision, small_maps,
                       best_saved.get("manager", {}), earlier_seconds)


def _check_same_masks(model: nn.Module, ranks: Ranks, device: torch.device) -> None:
    """Every rank must end with rank 0's masks: a bundle is only as good as that promise."""
    pattern = torch.cat([(w != 0).flatten().cpu() for w in prunable_weights(model).values()])
    bits = torch.from_numpy(np.packbits(pattern.numpy())).to(device)
    differ = disagreeing_ranks(bits, ranks)
    if differ:
        raise SparsebiasError(f"the masks of rank(s) {', '.join(map(str, differ))} differ from rank 0's; "
                              "no bundle was written")


def _check_finite(total: torch.Tensor, model: nn.Module, epoch: int, step: int) -> None:
    if not torch.isfinite(total):
        raise SparsebiasError(
            f"training diverged: the loss is not finite at epoch {epoch + 1}, by step {step + 1} (sparsity "
            f"{sparsity_report(model)[0]:.3f}); try a lower init_lr or a gentler pruning schedule")
