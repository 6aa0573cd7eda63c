"""`compress`: recipe + data -> trained, pruned model -> verified bundle."""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .._version import __version__
from ..bundle.export import export_onnx, export_qdq
from ..bundle.flops import SPARSITY_TOLERANCE, count_flops, sparsity_mismatch
from ..bundle.format import Bundle, BundleWriter, bundle_lock, ensure_replaceable, load_bundle
from ..core.devices import describe, resolve_device, resolve_precision
from ..core.distributed import Ranks
from ..core.errors import SparsebiasError, check_seed
from ..core.outputs import Outputs
from ..data import open_data
from ..data.attributes import DEFAULT_IDENTITIES
from ..data.celeba import SPLITS
from ..data.groups import SENSITIVE_COLUMNS
from ..data.images import MEAN, STD
from ..data.loader import FaceImages, normalize
from ..modifiers import RecipeError
from ..recipes.recipe import RUN_DEFAULTS, check_recipe_against_data, check_recipe_against_model, load_recipe
from .checkpoint import save_checkpoint, state_dict_from
from .loop import predict_logits, train
from .models import build_model, sparsity_report

CHECK_BATCH = 8
QDQ_CHECK_BATCH = 64   # its check is statistical (export_qdq): more images than the FP32 graph's
NEAR_CHANCE_AUC = 0.6  # a kept model's mean validation AUC under this gets a warning


def compress(recipe_path, *, data: str | None = None, attributes: list[str] | None = None,
             overrides: dict | None = None, name: str | None = None, out_dir="exported",
             from_path=None, seed: int = 0, resume: bool = False, device: str = "auto",
             precision: str | None = None, echo=print) -> Bundle | None:
    """Train and prune a model as the recipe says, and write its bundle to out_dir/name.

    `device`: auto (CUDA when present), cpu, cuda or cuda:N; `precision` (auto, fp32,
    bf16, fp16) overrides the recipe's. Started by torchrun, every process trains its share
    and rank 0 writes the bundle; the other ranks return None.

    >>> compress("recipes/resnet18_99.yaml", overrides={"num_epochs": 8}).manifest.sparsity  # doctest: +SKIP
    """
    started = time.time()
    check_seed(seed)
    ranks = Ranks.from_env()
    if not ranks.main:
        echo = _quiet
    overrides = dict(overrides or {})
    if data:
        overrides["data"] = data
    if precision:
        overrides["precision"] = precision
    recipe = load_recipe(recipe_path, overrides)
    source = load_bundle(Path(from_path)) if from_path and Path(from_path).is_dir() else None
    inherited = source.manifest["architecture"] if source and "arch" not in recipe.variables else None
    if inherited and inherited != recipe.settings["arch"]:   # SparseML's cards name no model: the weights do
        echo(f"Training {inherited}, the architecture of --from {from_path} (the recipe names none)")
        recipe = load_recipe(recipe_path, {**overrides, "arch": inherited})
    name = name or Path(recipe_path).stem
    out_dir = Path(out_dir)
    device = resolve_device(device, ranks.local_rank)
    ranks.start(device)
    try:
        with contextlib.ExitStack() as held:
            # one process at a time trains a bundle name: they would share its checkpoints and its folder;
            # rank 0 holds the lock, and its refusal stops every rank
            ranks.main_first(lambda: held.enter_context(bundle_lock(out_dir / name)) if ranks.main else None)
            return _compress(recipe, recipe_path, ranks, device, attributes, name, out_dir, from_path, source, seed,
                             resume, started, echo)
    except RuntimeError as e:
        raise ranks.lost_peer(e) or e
    finally:
        ranks.stop()


def _compress(recipe, recipe_path, ranks, device, attributes, name, out_dir, from_path, source, seed, resume,
              started, echo) -> Bundle | None:
    settings = recipe.settings

    def open_table():
        if ranks.main:
            ensure_replaceable(out_dir / name)
        return open_data(settings["data"], echo=echo)
    table = ranks.main_first(open_table)
    attributes = list(attributes or table.names)
    table.columns(attributes)
    outputs = Outputs.from_table(table, attributes)
    torch.manual_seed(seed)
    model = build_model(settings["arch"], outputs.size)
    check_recipe_against_model(recipe, model, settings["arch"])
    check_recipe_against_data(recipe, table)
    if from_path:
        _load_pretrained(model, Path(from_path), source, settings["arch"], attributes, echo)

    work_dir = out_dir / ".work" / name
    run = {"recipe": recipe.text, "settings": settings, "attributes": attributes, "seed": seed,
           "from": str(from_path) if from_path else None, "data_root": str(table.root)}
    size = settings["image_size"]

    def prepare_and_decode():
        if ranks.main:
            _prepare_work_dir(work_dir, run, resume, echo)
        return {split: _decoded(table, split, attributes, size, ranks.main) for split in ("train", "val", "test")}
    sets = ranks.main_first(prepare_and_decode)
    for split, ds in sets.items():
        if len(ds) == 0:
            raise SparsebiasError(f"{table.root}: the {split} split is empty")
    precision = resolve_precision(settings["precision"], device)
    echo(f"Training {settings['arch']} on {len(sets['train'])} images ({size}px), {len(attributes)} attribute(s), "
         f"{recipe.epochs} epochs, seed {seed}, on {describe(device)}, {precision}"
         + (f" x {ranks.world} processes" if ranks.distributed else ""))
    result = train(model, recipe, outputs, sets["train"], sets["val"], work_dir=work_dir, seed=seed, resume=resume,
                   device=device, ranks=ranks, started=started, echo=echo)
    if not ranks.main:
        return None
    model.load_state_dict(result.best_state)
    model.eval()

    overall, per_layer = sparsity_report(model, as_exported=True)
    pruned = sparsity_report(model)[0]
    if overall > pruned + SPARSITY_TOLERANCE:
        echo(f"note: the exported weights are {overall:.2%} zero, the pruned ones {pruned:.2%}: the recipe pruned "
             "batch-norm scales, and a zero scale empties its convolution's output channel when folded into it")
    emptied = [layer for layer, share in per_layer.items() if share == 1.0]
    if emptied:
        echo(f"warning: {len(emptied)} layer(s) entirely pruned, their outputs no longer depend on the input: "
             + ", ".join(emptied))
    logits = {split: predict_logits(model, sets[split], device) for split in ("val", "test")}
    metrics = {split: outputs.score(sets[split].labels.numpy(), logits[split]) for split in logits}
    if warning := near_chance(metrics["val"]["auc"], outputs.size):
        echo(warning)
    model.cpu()
    with BundleWriter(out_dir / name) as bundle:
        check = normalize(sets["val"].images[:CHECK_BATCH])
        export = export_onnx(model, bundle.file("model.onnx"), check)
        flops = count_flops(bundle.file("model.onnx"))
        problem = sparsity_mismatch(flops, overall, per_layer)
        if problem:   # caught here, not by the first command that loads the bundle
            raise SparsebiasError(f"the export changed the pruned weights: {problem}")
        qat = recipe.quantization_modifier
        if qat is not None:
            try:
                aware = qat.quantization_aware_model(model, recipe.manager.state_of(qat, result.best_manager_state))
            except RecipeError as e:
                raise SparsebiasError(f"{recipe.path}: {e}") from None
            qdq_export = export_qdq(aware, model, bundle.file("model.qdq.onnx"),
                                    normalize(sets["val"].images[:QDQ_CHECK_BATCH]))
        with torch.no_grad():
            np.savez_compressed(bundle.file("check.npz"), inputs=check.numpy(), logits=model(check).numpy())
        save_checkpoint(bundle.file("model.pt"), {"state_dict": model.state_dict()})
        bundle.file("recipe.yaml").write_text(recipe.text)
        for split in ("train", "val", "test"):
            rows = table.split(split)
            arrays = {"ids": table.ids[rows], "labels": table.labels[rows]}
            if split in logits:
                arrays["logits"] = logits[split].astype(np.float32)
            if table.backdoor is not None:
                arrays["backdoor"] = table.backdoor[rows]
            np.savez_compressed(bundle.file(f"splits/{split}.npz"), **arrays)
        manifest = {
            "sparsebias_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "name": name,
            "architecture": settings["arch"],
            "input": {"name": export["input"], "shape": [None, 3, size, size], "layout": "NCHW",
                      "dtype": "float32", "resize": f"shorter side to {size}, centre crop {size}x{size}",
                      "scale": 1 / 255, "mean": list(MEAN), "std": list(STD)},
            "output": outputs.manifest(export["output"]),
            "attributes": attributes,
            "label_names": list(table.names),
            "label_classes": None if table.binary else {n: list(c) for n, c in zip(table.names, table.classes)},
            "identities": [i for i in (DEFAULT_IDENTITIES if table.binary else SENSITIVE_COLUMNS) if i in table.names],
            "data": {"spec": settings["data"], "root": str(table.root),
                     "sizes": {s: len(ds) for s, ds in sets.items()}},
            "recipe": {"file": "recipe.yaml", "source": str(recipe.path), "variables": recipe.variables,
                       "settings": settings},
            "training": {"seed": seed, "epochs": recipe.epochs, "best_epoch": result.best_epoch,
                         "selected_on": "mean validation AUC (one-vs-rest for class heads), epochs at final sparsity",
                         "from": str(from_path) if from_path else None, "history": result.history,
                         # wall time, the processes' before a resume included (up to the epoch it kept)
                         "seconds": round(result.earlier_seconds + time.time() - started, 1),
                         "threads": torch.get_num_threads(),
                         "device": describe(device), "processes": ranks.world,
                         # checked before this bundle was written (train refuses ranks that disagree)
                         "masks_identical_on_every_rank": True if ranks.distributed else None,
                         "precision": result.precision, "memory_format": "channels_last",
                         "small_maps": result.small_maps,
                         "versions": _versions()},
            **({"quantization_aware_training": {
                **qat.describe(), "graph": "model.qdq.onnx", "export": qdq_export,
                "note": "model.onnx and the stored logits are the trained weights in FP32; `sparsebias quantize` "
                        "writes the INT8 bundle with the ranges observed in training"}} if qat else {}),
            "sparsity": {"overall": overall, "per_layer": per_layer},
            "flops": flops.to_dict(),
            "metrics": metrics,
            "export": export,
        }
        written = bundle.commit(manifest)
    shutil.rmtree(work_dir, ignore_errors=True)
    with contextlib.suppress(OSError):   # left while another run works there, or gone when one ended at once
        work_dir.parent.rmdir()
    return written


def _decoded(table, split: str, attributes, size: int, show: bool = True) -> FaceImages:
    """A split's images, decoded into the image cache on first use (with a progress bar)."""
    with tqdm(total=int((table.partition == SPLITS[split]).sum()), desc=f"decoding {split}", unit="img",
              leave=False, disable=not show) as bar:
        return FaceImages(table, split, attributes, size, progress=bar.update)


def near_chance(val_auc: float, n_outputs: int) -> str | None:
    """A warning for a model that learned little, which nothing else would flag: its bundle
    is as well-formed as any, and a model answering the base rate can even look accurate."""
    if not val_auc < NEAR_CHANCE_AUC:   # NaN (no AUC defined) says nothing either way
        return None
    return (f"warning: the kept model's mean validation AUC is {val_auc:.3f}, near chance (0.5): it learned "
            f"little; if its loss rose in the first epoch, try a lower init_lr (the loss is the mean over its "
            f"{n_outputs} output(s): the fewer outputs, the larger the step at a given rate)")


def _quiet(*_, **__) -> None:
    """echo for ranks other than 0: one process speaks for the run."""


def _prepare_work_dir(work_dir: Path, run: dict, resume: bool, echo) -> None:
    run_file = work_dir / "run.json"
    if resume:
        if not run_file.exists():
            raise SparsebiasError(f"nothing to resume: no interrupted run in {work_dir}")
        started, now = json.loads(run_file.read_text()), json.loads(json.dumps(run))
        # run settings a later sparsebias added: the run continues with their values
        added = [k for k in now["settings"] if k in RUN_DEFAULTS and k not in started.get("settings", {})]
        started.get("settings", {}).update({k: now["settings"][k] for k in added})
        if started != now:
            raise SparsebiasError(f"cannot resume: {run_file} was started with a different recipe, data or settings")
        if added:
            echo(f"Resuming a run started before the setting(s) {', '.join(added)} existed; from here on "
                 + ", ".join(f"{k}={now['settings'][k]}" for k in added))
        return
    if run_file.exists():
        echo(f"Starting over; an interrupted run in {work_dir} is discarded (--resume continues it)")
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    run_file.write_text(json.dumps(run, indent=2))


def _load_pretrained(model, path: Path, source: Bundle | None, arch: str, attributes: list[str], echo) -> None:
    """GMP-PT: start from a bundle (`source`, loaded from `path`: its model.pt) or a checkpoint file."""
    if source is not None:
        if source.manifest["architecture"] != arch:
            raise SparsebiasError(f"--from {path}: a {source.manifest['architecture']} bundle, "
                                  f"the recipe trains {arch}")
        if not source.has("model.pt"):
            parent = source.manifest.get("quantization", {}).get("parent", {}).get("path")
            raise SparsebiasError(f"--from {path}: the bundle has no torch weights"
                                  + (f" (an INT8 bundle: start from its FP32 parent, {parent})" if parent else ""))
        state = state_dict_from(source.file("model.pt"))
        same_outputs = source.attributes == attributes
    else:
        state = state_dict_from(path)
        same_outputs = True
    own = model.state_dict()
    state = _without_wrapper_prefix(state, own)
    unknown = [k for k in state if k not in own]
    if unknown:
        raise SparsebiasError(f"--from {path}: weights do not fit {arch} (e.g. {unknown[0]!r})")
    head_keys = _head_keys(model)
    head = {k for k, v in state.items() if v.shape != own[k].shape or not same_outputs and k in head_keys}
    body_mismatch = [k for k in head if k not in head_keys]
    if body_mismatch:
        raise SparsebiasError(f"--from {path}: weight {body_mismatch[0]!r} has the wrong shape for {arch}")
    model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    echo(f"Starting from {path}" + (" (output layer re-initialised: different attributes)" if head else ""))


def _without_wrapper_prefix(state: dict, own: dict) -> dict:
    """Weights saved through a wrapper (Lightning's `model.`, torch.compile's `_orig_mod.`)
    carry its attribute name before every key: drop it while no key fits and one name leads all."""
    while state and not any(k in own for k in state):
        leading = {k.split(".", 1)[0] for k in state}
        if len(leading) != 1 or not all("." in k for k in state):
            break
        state = {k.split(".", 1)[1]: v for k, v in state.items()}
    return state


def _head_keys(model) -> set[str]:
    last = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    return {f"{last}.weight", f"{last}.bias"}


def _versions() -> dict:
    import onnx
    import torchvision
    return {"sparsebias": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "onnx": onnx.__version__, "python": platform.python_version()}
