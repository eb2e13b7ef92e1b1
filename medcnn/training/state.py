"""Training-run helpers: rank-0 progress lines and warnings, resumable training state.

Used by the modules of :mod:`medcnn.training` (not part of the package's public API). In a
data-parallel run only rank 0 prints and warns (:func:`say`, :func:`warn`). A training state
(``<out>.state.pt``) holds the model, optimiser, scheduler, epoch counters, best checkpoint and
every random generator, so a resumed run continues exactly where it stopped. It is loaded with
``weights_only=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["init_weights", "print_epoch", "resume_state", "save_state", "say", "warn"]


def print_epoch(tag: str, r: dict[str, Any], epochs: int, improved: bool, progress: bool) -> None:
    """One epoch's history record as a progress line (``*``: the best epoch so far)."""
    f = lambda v: "  n/a" if v is None else f"{v:.3f}"  # noqa: E731
    groups = ""
    if r.get("val_auc_by"):
        groups = " [" + " ".join(f"{k} {f(v)}" for k, v in r["val_auc_by"].items()) + "]"
    say(f"{tag}epoch {r['epoch']:3d}/{epochs} train_loss {r['train_loss']:.4f} val_loss {r['val_loss']:.4f} "
           f"val_auc {f(r['val_auc'])}{groups} lr {r['lr']:.2e} {r['seconds']:.1f}s "
           f"{r['train_images_per_s']:.0f} img/s{' *' if improved else ''}")


def say(msg: str) -> None:
    """Write a progress line (rank 0 only; above any progress bar)."""
    from tqdm.auto import tqdm

    from medcnn.distributed.ddp import current_world

    if not current_world().is_main:  # one voice in a data-parallel run
        return
    tqdm.write(msg)


def warn(msg: str) -> None:
    """Warn about a soft problem of the run (rank 0 only), attributed to the caller's caller."""
    import warnings

    from medcnn.distributed.ddp import current_world

    if not current_world().is_main:
        return
    warnings.warn(msg, stacklevel=3)


# --------------------------------------------------------------------------- state
def save_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
                g_sample: torch.Generator, g_aug: torch.Generator, epoch: int, bad: int,
                history: list[dict[str, Any]], best: dict[str, Any], cfg: Any) -> None:
    """Write the resumable state after ``epoch`` atomically (a temporary file, then a rename)."""
    state = {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "epoch": epoch, "bad_epochs": bad, "history": history,
        "best_state": best["state"], "best_score": float(best["score"]), "best_epoch": best["epoch"],
        "best_logits": None if best["logits"] is None else torch.from_numpy(best["logits"]),
        "rng": {"torch": torch.get_rng_state(), "sample": g_sample.get_state(), "aug": g_aug.get_state()},
        "arch": cfg.arch,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def resume_state(path: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
            g_sample: torch.Generator, g_aug: torch.Generator,
            best: dict[str, Any]) -> tuple[int, int, list[dict[str, Any]], dict[str, Any]]:
    """Restore a ``.state.pt``; a plain state_dict ``.pt`` only initialises the weights.

    Returns:
        ``(first epoch to run, epochs without improvement, history, best)``.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "optimizer" not in state:
        model.load_state_dict(state)
        warn(f"{path} is a weights file, not a training state: starting from its weights at epoch 1")
        return 1, 0, [], best
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    g_sample.set_state(state["rng"]["sample"])
    g_aug.set_state(state["rng"]["aug"])
    logits = state.get("best_logits")
    best = {"score": state["best_score"], "epoch": state["best_epoch"], "state": state["best_state"],
            "logits": None if logits is None else logits.numpy()}
    say(f"resumed from {path} after epoch {state['epoch']}")
    return state["epoch"] + 1, state["bad_epochs"], list(state["history"]), best


def init_weights(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Start from another checkpoint's weights (``--init``): every tensor whose name and shape match.

    The classifier of a model with another number of outputs keeps its fresh initialisation.

    Returns:
        Names of the tensors left as initialised.

    Raises:
        ValueError: nothing matches (another architecture).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "optimizer" in state:
        state = state["model"]
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not take:
        raise ValueError(f"--init {path}: no weights match this architecture")
    model.load_state_dict(take, strict=False)
    left = sorted(set(own) - set(take))
    say(f"initialised {len(take)} of {len(own)} tensors from {path}"
           + (f" (fresh: {', '.join(left)})" if left else ""))
    return left
