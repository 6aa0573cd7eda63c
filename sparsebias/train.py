"""The training loop: a recipe drives the schedule, we keep the best validation epoch.

Batches are sliced out of each split's decoded uint8 array (no per-item loading), the
model runs in channels_last, and the forward and backward passes use bf16 autocast where
the CPU computes bf16 natively (`precision: auto`, recorded in the manifest); weights,
optimizer state and the logits a bundle stores stay fp32.

Pruning modifiers only reach their final sparsity at the end of their schedule, so the
best checkpoint is chosen among the epochs from then on (the paper: "the models with the
best validation between epochs 80-100"); a dense recipe makes every epoch eligible.
Each completed epoch is checkpointed, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .data.images import FaceImages, normalize
from .errors import SparsebiasError
from .models import sparsity_report
from .pruning import ScoreData
from .recipes import Recipe
from .tasks import Outputs

EVAL_BATCH = 256


@dataclass
class TrainResult:
    best_state: dict
    best_epoch: int
    history: list = field(default_factory=list)
    precision: str = "fp32"


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' where the CPU has native bf16 arithmetic (AVX-512 BF16, AMX), else 'fp32'."""
    if precision == "auto":
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    return precision


def autocast_context(device_type: str, precision: str):
    """Autocast for 'bf16', nothing for 'fp32'."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def predict_logits(model: nn.Module, dataset: FaceImages, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """fp32 logits of the whole dataset in its order, in eval mode."""
    model.eval()
    with torch.no_grad():
        out = [model(_inputs(dataset.images[s:s + batch_size])) for s in range(0, len(dataset), batch_size)]
    return torch.cat(out).float().numpy()


def _inputs(images: torch.Tensor) -> torch.Tensor:
    return normalize(images).contiguous(memory_format=torch.channels_last)


def _make_optimizer(model: nn.Module, settings: dict) -> torch.optim.Optimizer:
    if str(settings["optimizer"]).lower() == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings["init_lr"], weight_decay=settings["weight_decay"])
    return torch.optim.SGD(model.parameters(), lr=settings["init_lr"], momentum=settings["momentum"],
                           weight_decay=settings["weight_decay"])


def train(model: nn.Module, recipe: Recipe, outputs: Outputs, train_set: FaceImages, val_set: FaceImages, *,
          work_dir: Path, seed: int, resume: bool = False, echo=print) -> TrainResult:
    settings, epochs = recipe.settings, recipe.epochs
    batch_size = settings["batch_size"]
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    eligible_from = min(int(math.ceil(recipe.pruning_end_epoch)), epochs - 1)
    precision = resolve_precision(settings["precision"])
    model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(model, settings)
    loss_fn = outputs.loss()
    last_path, best_path = work_dir / "last.pt", work_dir / "best.pt"

    start_epoch, history, best = 0, [], {"epoch": -1, "score": -math.inf}
    state = load_checkpoint(last_path) if resume and last_path.exists() else None
    if state:
        model.load_state_dict(state["model"])
        start_epoch = int(state["epoch"])
        history, best = json.loads(state["history"]), json.loads(state["best"])
        echo(f"Resuming from {last_path} after epoch {start_epoch}")

    score_data = ScoreData(train_set, loss_fn, batch_size, seed)
    recipe.manager.initialize(model, epoch=float(start_epoch), score_data=score_data)
    if state:
        recipe.manager.load_state_dict(state["manager"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
    wrapped = recipe.manager.modify(model, optimizer, steps_per_epoch=steps_per_epoch, epoch=float(start_epoch))

    for epoch in range(start_epoch, epochs):
        shuffle = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(train_set), generator=shuffle)
        epoch_started = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
        for step in bar:
            rows = order[step * batch_size:(step + 1) * batch_size]
            x, y = train_set.images[rows], train_set.labels[rows]
            flip = torch.rand(len(x), generator=shuffle) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            with autocast_context("cpu", precision):
                loss = loss_fn(model(_inputs(x)).float(), y)
            if not torch.isfinite(loss):
                raise SparsebiasError(
                    f"training diverged: the loss is {loss.item()} at epoch {epoch + 1}, step {step + 1} (sparsity "
                    f"{sparsity_report(model)[0]:.3f}); try a lower init_lr or a gentler pruning schedule")
            wrapped.zero_grad()
            loss.backward()
            wrapped.step()
            total += loss.item() * len(x)
            seen += len(x)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{total / seen:.4f}", sparsity=f"{sparsity_report(model)[0]:.3f}",
                                lr=f"{optimizer.param_groups[0]['lr']:.2g}")
        bar.close()
        train_seconds = time.perf_counter() - epoch_started

        val = outputs.score(val_set.labels.numpy(), predict_logits(model, val_set))
        sparsity = sparsity_report(model)[0]
        record = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "lr": optimizer.param_groups[0]["lr"],
                  "train_seconds": round(train_seconds, 2), "train_images_per_s": round(seen / train_seconds, 1),
                  "sparsity": sparsity, "val_accuracy": val["accuracy"], "val_auc": val["auc"]}
        score = val["auc"] if math.isfinite(val["auc"]) else val["accuracy"]
        if epoch >= eligible_from and score > best["score"]:
            best = {"epoch": epoch + 1, "score": score}
            save_checkpoint(best_path, {"model": model.state_dict()})
            record["best"] = True
        history.append(record)
        save_checkpoint(last_path, {
            "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "manager": recipe.manager.state_dict(), "history": json.dumps(history), "best": json.dumps(best),
            "rng": torch.get_rng_state()})
        echo(f"epoch {epoch + 1}/{epochs}  loss {record['train_loss']:.4f}  sparsity {sparsity:.4f}  "
             f"val acc {val['accuracy']:.4f}  val auc {val['auc']:.4f}" + ("  *" if record.get("best") else ""))

    recipe.manager.finalize(model)
    model.to(memory_format=torch.contiguous_format)
    return TrainResult(load_checkpoint(best_path)["model"], best["epoch"], history, precision)
