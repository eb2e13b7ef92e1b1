"""The epoch loop of one training run: batches, validation, early stopping, resumable state.

:func:`fit` trains a fresh model on ``train_ds`` and keeps the weights of the epoch that
scored best on ``val_ds`` (``TrainConfig.monitor``). It owns the model, optimiser, schedule,
sampler and augmentation streams, mixed precision on CUDA, the data-parallel wrapper under
``torchrun`` and the resumable ``.state.pt`` (written by rank 0 only); the loss, the validation
metrics, the box-mask targets and the final-layer options come from the run's
:class:`medcnn.training.heads.HeadStrategy`. Validation logits come from
:func:`medcnn.evaluation.predict.predict_dataset`, the loop shared with ``evaluate``.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medcnn.distributed.ddp import World, all_sum, current_world, gather_rows, share_scale, RowSubset
from medcnn.distributed.layers import ShardPlan, make_data_parallel, make_single_process
from medcnn.evaluation.predict import predict_dataset
from medcnn.models import create_model, default_target_layer, prepare_for_device
from medcnn.training import losses
from medcnn.training.augment import Augment
from medcnn.training.boxsup import BoxSupervision, box_masks
from medcnn.training.config import TrainConfig
from medcnn.training.data import ImageDataset
from medcnn.training.heads import HeadStrategy, project_nonneg
from medcnn.training.state import init_weights, print_epoch, resume_state, save_state, say

__all__ = ["fit"]

# On CPU (oneDNN), channels_last measured 1.3-2x faster training for our own ResNets and
# slightly slower for torchvision resnet18 (benchmarks/bench_models.py).
_CPU_CHANNELS_LAST = ("smallresnet", "tinyresnet", "simplecnn")
_VAL_BATCH = 64


@dataclass
class _Run:
    """What one run trains with and updates: the model, its optimiser and every random stream."""

    head: HeadStrategy
    model: nn.Module
    channels_last: bool  # the model's weights are channels-last; training batches follow
    loss_fn: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    augment: Augment
    g_sample: torch.Generator  # batch order / weighted sampling
    g_aug: torch.Generator  # augmentation draws
    batch_size: int
    steps: int  # batches per epoch
    weights: torch.Tensor | None  # per-row sampling weights, or None for a permutation per epoch
    scaler: Any  # GradScaler for float16 autocast on CUDA, else None
    bsup: BoxSupervision | None = None
    masks: torch.Tensor | None = None  # (N, H, W) box masks of the training rows
    world: World = World()
    net: nn.Module | None = None  # what the training forward pass calls: the DDP wrapper, or None for `model`
    plan: ShardPlan | None = None  # this rank's rows of the global batch (data-parallel runs)
    nonneg: nn.Linear | None = None  # final layer whose weights are projected onto >= 0 after every step


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the run trains in channels-last memory format (``cfg.channels_last``: auto / on / off).

    Raises:
        ValueError: another value.
    """
    if cfg.channels_last == "auto":
        return device.type == "cuda" or cfg.arch in _CPU_CHANNELS_LAST
    if cfg.channels_last not in ("on", "off"):
        raise ValueError(f"channels_last must be auto, on or off, got {cfg.channels_last!r}")
    return cfg.channels_last == "on"


def _box_supervision(cfg: TrainConfig, head: HeadStrategy, model: nn.Module, train_ds: ImageDataset, pos: int,
                     tag: str) -> tuple[BoxSupervision | None, torch.Tensor | None]:
    if not cfg.box_column:
        return None, None
    layer = default_target_layer(cfg.arch)
    masks = torch.from_numpy(box_masks(train_ds.df, cfg.box_column, train_ds.pipeline, cfg.box_ref_size))
    masks = head.box_masks(masks, train_ds, pos)
    bsup = BoxSupervision(model, layer, cfg.box_weight, cfg.box_mode, target=pos)
    say(f"{tag}box supervision on {layer}: "
        f"{int((masks.flatten(1).max(1).values > 0).sum())} of {len(masks)} training images have boxes")
    return bsup, masks


def _build_run(cfg: TrainConfig, head: HeadStrategy, train_ds: ImageDataset, pos: int, device: torch.device,
               tag: str) -> _Run:
    """Seeded model, loss, optimiser, schedule, sampler and augmentation of one run."""
    torch.manual_seed(cfg.seed)
    world = current_world()
    if world.distributed and cfg.box_column:
        raise ValueError("box supervision (--box-column) trains in one process only: run it without torchrun")
    model = create_model(cfg.arch, len(train_ds.labels))
    if cfg.init:
        init_weights(model, cfg.init)
    nonneg = head.shape_model(model, cfg)
    model = prepare_for_device(model, device)  # in place: ``nonneg`` stays the model's layer
    channels_last = use_channels_last(cfg, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    plan = make_data_parallel(model, device) if world.distributed else None
    loss_fn = head.loss(cfg, train_ds).to(device)
    bsup, masks = _box_supervision(cfg, head, model, train_ds, pos, tag)
    params = [q for q in model.parameters() if q.requires_grad] + (list(bsup.parameters()) if bsup is not None else [])
    opt = losses.make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay, cfg.momentum)
    n = len(train_ds)
    bs = min(cfg.batch_size, n)
    # a last batch of 1 breaks BatchNorm, and every rank needs a row: drop it
    steps = n // bs if n % bs < max(2, world.size) else n // bs + 1
    sched = losses.make_scheduler(opt, cfg.schedule, cfg.epochs, steps, cfg.lr_decay,
                                  cfg.restart_epochs, cfg.warmup_epochs)
    weights = losses.sample_weights(train_ds.df, cfg.imbalance == "oversample", cfg.balance_by)
    net = None
    if world.distributed:  # gradients averaged over ranks; BatchNorm statistics are already global
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      forward_sync_buffers=False)
    # every rank draws the same batch order; augmentation draws differ per rank (rank 0: as one process)
    aug_seed = cfg.seed + 1 + 7919 * world.rank
    return _Run(
        head=head, model=model, channels_last=channels_last, loss_fn=loss_fn, opt=opt, sched=sched,
        augment=Augment(**cfg.augment), g_sample=torch.Generator().manual_seed(cfg.seed),
        g_aug=torch.Generator().manual_seed(aug_seed), batch_size=bs, steps=steps,
        weights=None if weights is None else torch.as_tensor(weights),
        scaler=(torch.amp.GradScaler("cuda") if device.type == "cuda" and not torch.cuda.is_bf16_supported()
                else None),
        bsup=bsup, masks=masks, world=world, net=net, plan=plan,
        nonneg=nonneg,
    )


def _forward(run: _Run, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Training forward pass: channels-last input when the model is, mixed precision on CUDA."""
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" or run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast("cuda", dtype=dtype):
            return (run.net or run.model)(x)
    return (run.net or run.model)(x)


def _step(run: _Run, loss: torch.Tensor) -> None:
    """Backward pass, optimiser step (through the gradient scaler for float16) and schedule step."""
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
    else:
        loss.backward()
        run.opt.step()
    if run.nonneg is not None:  # projected gradient step: the head's weights stay >= 0
        project_nonneg(run.nonneg)
    run.sched.step()


def _train_epoch(cfg: TrainConfig, run: _Run, train_ds: ImageDataset, device: torch.device, epoch: int,
                 tag: str) -> tuple[float, int]:
    """One pass over the training rows; returns (summed loss, images seen)."""
    from tqdm.auto import tqdm

    n = len(train_ds)
    run.model.train()
    order = (torch.multinomial(run.weights, n, replacement=True, generator=run.g_sample)
             if run.weights is not None else torch.randperm(n, generator=run.g_sample))
    total, seen = 0.0, 0
    bar = tqdm(range(run.steps), desc=f"{tag}epoch {epoch}/{cfg.epochs}", leave=False,
               disable=not (cfg.progress and sys.stderr.isatty() and run.world.is_main), unit="batch")
    for b in bar:
        idx = order[b * run.batch_size:(b + 1) * run.batch_size].tolist()
        scale, n_global = 1.0, len(idx)
        if run.plan is not None:  # this rank's share of the global batch
            start, stop = run.world.share(n_global)
            scale = share_scale(run.loss_fn, train_ds.targets[idx], start, stop, run.world)
            run.plan.rows = (n_global, start)
            idx = idx[start:stop]
        x = train_ds.display_batch(idx)
        mb = run.masks[idx] if run.masks is not None else None
        if run.augment.enabled:
            if mb is not None:
                x, mb = run.augment(x, run.g_aug, masks=mb)
            else:
                x = run.augment(x, run.g_aug)
        y = torch.as_tensor(train_ds.targets[idx]).to(device)
        run.opt.zero_grad(set_to_none=True)
        loss = run.loss_fn(_forward(run, train_ds.pipeline.to_tensor(x), device).float(), y)
        if run.bsup is not None:
            loss = loss + run.bsup.loss(mb)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}; lower --lr")
        loss = loss * scale
        _step(run, loss)
        total += loss.item() * n_global / run.world.size
        seen += n_global / run.world.size
        bar.set_postfix(loss=f"{total / seen:.4f}")
    bar.close()
    if run.plan is not None:
        run.plan.rows = None
    total, seen = all_sum([total, seen])  # the global batch's loss, as one process sums it
    return total, round(seen)


def _score(m: dict[str, Any], monitor: str) -> float:
    """Early-stopping score of one epoch's validation metrics (higher is better; ``last``: the latest epoch)."""
    if monitor == "last":
        return float(m["epoch"])
    if monitor == "loss":
        return -m["val_loss"]
    if monitor == "min_group_auc" and m.get("val_auc_by"):
        vals = [v for v in m["val_auc_by"].values() if v is not None]
        if vals:
            return min(vals)
    return m["val_auc"] if m["val_auc"] is not None else -m["val_loss"]


def _epoch(cfg: TrainConfig, run: _Run, train_ds: ImageDataset, val_ds: ImageDataset, pos: int,
           device: torch.device, epoch: int, tag: str) -> tuple[dict[str, Any], np.ndarray]:
    """Train one epoch and validate: the history record and the validation logits."""
    t0 = time.perf_counter()
    total, seen = _train_epoch(cfg, run, train_ds, device, epoch, tag)
    train_s = time.perf_counter() - t0
    logits = _val_logits(run.model, val_ds, device)
    m = run.head.val_metrics(logits, val_ds, pos, cfg.val_by)
    rec = {"epoch": epoch, "lr": run.opt.param_groups[0]["lr"], "train_loss": total / max(seen, 1), **m,
           "seconds": round(time.perf_counter() - t0, 2), "train_images_per_s": round(seen / train_s, 1)}
    return rec, logits


def fit(cfg: TrainConfig, head: HeadStrategy, train_ds: ImageDataset, val_ds: ImageDataset, pos: int,
        device: torch.device, state_path: Path | None, tag: str = "") -> dict[str, Any]:
    """Train with early stopping on validation; resume from ``cfg.resume`` when set.

    Args:
        cfg: Run settings.
        head: The run's head strategy (loss, validation metrics, box targets, final-layer options).
        train_ds, val_ds: Training and validation rows (cached display images).
        pos: Index of the positive label (AUC, box supervision in ``"cam"`` mode).
        device: Where to train.
        state_path: Write a resumable ``.state.pt`` here after every epoch (None: never).
        tag: Prefix of progress lines (``"[fold 2] "``).

    Returns:
        ``{"model" (best weights, eval mode, default memory format), "history",
        "best_epoch", "best_score", "val_logits" (of the best weights), "epochs_run"}``.

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
    """
    run = _build_run(cfg, head, train_ds, pos, device, tag)
    history: list[dict[str, Any]] = []
    best = {"score": -float("inf"), "epoch": 0, "state": None, "logits": None}
    bad, start = 0, 1
    if cfg.resume:
        start, bad, history, best = resume_state(cfg.resume, run.model, run.opt, run.sched, run.g_sample,
                                                 run.g_aug, best)
    # the box-supervision hook lives exactly as long as the training loop
    with run.bsup if run.bsup is not None else contextlib.nullcontext():
        for epoch in range(start, cfg.epochs + 1):
            rec, logits = _epoch(cfg, run, train_ds, val_ds, pos, device, epoch, tag)
            score = _score(rec, cfg.monitor)
            improved = score > best["score"]
            if improved:
                best = {"score": score, "epoch": epoch, "logits": logits,
                        "state": {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}}
                bad = 0
            else:
                bad += 1
            history.append(rec)
            print_epoch(tag, rec, cfg.epochs, improved, cfg.progress)
            if state_path is not None and run.world.is_main:
                save_state(state_path, run.model, run.opt, run.sched, run.g_sample, run.g_aug, epoch, bad,
                           history, best, cfg)
            if cfg.patience and bad >= cfg.patience:
                say(f"{tag}early stop: no improvement of val {cfg.monitor} for {cfg.patience} epochs")
                break
    return _finish(run, val_ds, device, history, best)


def _finish(run: _Run, val_ds: ImageDataset, device: torch.device, history: list[dict[str, Any]],
            best: dict[str, Any]) -> dict[str, Any]:
    """Load the best weights, in the memory format :func:`medcnn.models.load_model` rebuilds."""
    model = run.model
    if run.plan is not None:  # the registry's plain layers back, trained weights kept
        model = make_single_process(model, run.plan)
    if best["state"] is None:  # resumed past the last epoch: keep the current weights
        best["state"] = model.state_dict()
        best["logits"] = _val_logits(model, val_ds, device)
    model.load_state_dict(best["state"])
    # hand back the model as load_model() rebuilds it (default memory format), so the
    # returned model and the reloaded checkpoint give bit-identical logits
    model = model.to(memory_format=torch.contiguous_format)
    if run.channels_last:
        best["logits"] = _val_logits(model, val_ds, device)
    model.eval()
    return {"model": model, "history": history, "best_epoch": best["epoch"], "best_score": best["score"],
            "val_logits": best["logits"], "epochs_run": len(history)}


def _val_logits(model: nn.Module, val_ds: ImageDataset, device: torch.device) -> np.ndarray:
    """Validation logits (N, C); in a data-parallel run each rank scores its share and all get all."""
    return gather_rows(lambda rows: predict_dataset(model, RowSubset(val_ds, rows), batch_size=_VAL_BATCH,
                                                    device=device), len(val_ds))
