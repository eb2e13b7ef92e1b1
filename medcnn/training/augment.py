"""Training augmentation for radiographs and CT slices, in [0, 1] display space.

Applied to a batch ``(N, H, W)`` (or one image ``(H, W)``) of float32 tensors *after*
windowing/crop/resize and *before* normalisation (``Pipeline.to_tensor``). All random
draws come from the ``torch.Generator`` passed in, so a run is reproducible from its
seed. Geometric transforms use one batched ``affine_grid`` / ``grid_sample`` call.

Horizontal flips are off by default: chest anatomy is lateralised (heart on the left),
so a flipped film is not a plausible radiograph.

``acquisition`` draws another hospital's look for a share of the images: the in-frame changes of
:mod:`medcnn.ood.augment` (exposure and processing, histogram equalisation, detector noise, blur
and resolution, JPEG storage, collimation borders, burned-in text), the same family the gate's
kind question is fitted to ignore, so the model learns to expect them too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

__all__ = ["Augment"]


@dataclass
class Augment:
    """Random augmentation; every field 0 / False disables that transform.

    Attributes:
        rotate: Max rotation in degrees (uniform in [-rotate, rotate]).
        scale: Max relative zoom (factor uniform in [1 - scale, 1 + scale]).
        translate: Max shift as a fraction of the image side.
        hflip: Flip left-right with probability 0.5 (off by default, see module doc).
        brightness: Max additive brightness shift (uniform in [-b, b]).
        contrast: Max relative contrast change about the image mean.
        gamma: Max |log gamma|; gamma = exp(uniform(-g, g)).
        noise: Max standard deviation of additive Gaussian noise (sigma ~ U(0, noise)).
        blur: Max Gaussian blur sigma in pixels (sigma ~ U(0, blur)).
        acquisition: Share of images (probability, 0..1) given a random combination of
            in-frame acquisition changes (:data:`medcnn.ood.augment.IN_FRAME`) before the
            transforms above.
    """

    rotate: float = 0.0
    scale: float = 0.0
    translate: float = 0.0
    hflip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0
    noise: float = 0.0
    blur: float = 0.0
    acquisition: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "hflip" and (not math.isfinite(float(v)) or float(v) < 0):
                raise ValueError(f"augmentation {f.name} must be a finite number >= 0, got {v!r}")
        if self.scale >= 1:
            raise ValueError(f"augmentation scale must be < 1 (zoom factor 1 +/- scale), got {self.scale}")
        if self.acquisition > 1:
            raise ValueError(f"augmentation acquisition is a probability and must be <= 1, got {self.acquisition}")
        if self.gamma > 2:
            raise ValueError(f"augmentation gamma is |log gamma| and must be <= 2, got {self.gamma}")

    @property
    def config(self) -> dict:
        """Plain dict of the settings (stored in the model card)."""
        return asdict(self)

    @property
    def enabled(self) -> bool:
        return any(bool(v) for v in asdict(self).values())

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 masks: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Augment images.

        Args:
            x: float32 (N, H, W) or (H, W), values in [0, 1].
            generator: Source of randomness (CPU generator).
            masks: optional float (N, H, W) / (H, W) label masks (e.g. radiologists' boxes)
                that get the same geometric transform as ``x`` and no intensity change.

        Returns:
            Tensor of the same shape and dtype, values clipped to [0, 1]; with ``masks``,
            the pair ``(images, masks)``.
        """
        if x.ndim not in (2, 3):
            raise ValueError(f"expected (H, W) or (N, H, W) images, got shape {tuple(x.shape)}")
        single = x.ndim == 2
        out = x[None] if single else x
        out = out.float()
        mk = None if masks is None else (masks[None] if masks.ndim == 2 else masks).float()
        if mk is not None and mk.shape != out.shape:
            raise ValueError(f"masks shape {tuple(mk.shape)} does not match images {tuple(out.shape)}")
        if not self.enabled or out.shape[0] == 0:
            return x.clone() if masks is None else (x.clone(), masks.clone())
        g = generator
        n = out.shape[0]

        def u(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(n, generator=g) * (hi - lo) + lo

        if self.acquisition:
            out = _acquisition(out, self.acquisition, g)

        if self.rotate or self.scale or self.translate or self.hflip:
            if mk is None:
                out = self._affine(out, u, g)
            else:  # one grid for image and mask: channel 0 image, channel 1 mask
                both = self._affine(torch.stack([out, mk], 1).flatten(0, 1), u, g, repeat=2)
                both = both.view(-1, 2, *out.shape[1:])
                out, mk = both[:, 0].contiguous(), both[:, 1].contiguous()
        if self.blur:
            out = _gaussian_blur(out, u(0.0, self.blur))
        if self.contrast:
            c = u(1 - self.contrast, 1 + self.contrast)[:, None, None]
            mean = out.mean(dim=(1, 2), keepdim=True)
            out = (out - mean) * c + mean
        if self.brightness:
            out = out + u(-self.brightness, self.brightness)[:, None, None]
        if self.gamma:
            gam = torch.exp(u(-self.gamma, self.gamma))[:, None, None]
            out = out.clamp(0, 1) ** gam
        if self.noise:
            sigma = u(0.0, self.noise)[:, None, None]
            out = out + sigma * torch.randn(out.shape, generator=g)
        out = out.clamp_(0.0, 1.0)
        if mk is not None:
            return (out[0], mk[0]) if single else (out, mk)
        return out[0] if single else out

    def _affine(self, x: torch.Tensor, u, g, repeat: int = 1) -> torch.Tensor:
        """Random affine of (N * repeat, H, W); consecutive groups of ``repeat`` share one transform."""
        n = x.shape[0] // repeat
        ang = torch.deg2rad(u(-self.rotate, self.rotate)) if self.rotate else torch.zeros(n)
        s = u(1 - self.scale, 1 + self.scale) if self.scale else torch.ones(n)
        tx = u(-self.translate, self.translate) * 2 if self.translate else torch.zeros(n)
        ty = u(-self.translate, self.translate) * 2 if self.translate else torch.zeros(n)
        flip = (torch.rand(n, generator=g) < 0.5).float() * -2 + 1 if self.hflip else torch.ones(n)
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s  # output->input map: zoom in = s > 1
        theta = torch.stack([
            torch.stack([cos * flip, -sin, tx], 1),
            torch.stack([sin * flip, cos, ty], 1),
        ], 1)  # (N, 2, 3)
        if repeat > 1:
            theta = theta.repeat_interleave(repeat, 0)
        grid = F.affine_grid(theta, (n * repeat, 1, *x.shape[1:]), align_corners=False)
        # zeros padding: regions shifted in are black, like the film border / air around a CT.
        return F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)[:, 0]


def _acquisition(x: torch.Tensor, share: float, g: torch.Generator | None) -> torch.Tensor:
    """In-frame acquisition changes on a drawn ``share`` of the (N, H, W) images, seeded from ``g``."""
    import numpy as np

    from medcnn.ood.augment import IN_FRAME, acquisition_variant

    pick = torch.rand(x.shape[0], generator=g) < share
    seeds = torch.randint(0, 2**31 - 1, (x.shape[0],), generator=g)
    if not bool(pick.any()):
        return x
    out = x.clone()
    for i in torch.nonzero(pick)[:, 0].tolist():
        rng = np.random.default_rng(int(seeds[i]))
        out[i] = torch.from_numpy(acquisition_variant(x[i].numpy(), rng, changes=IN_FRAME))
    return out


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (pixels); (N, H, W) -> (N, H, W)."""
    n = x.shape[0]
    smax = float(sigma.max())
    if smax < 0.1:
        return x
    radius = max(1, math.ceil(3 * smax))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = sigma.clamp(min=1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)
    k[sigma < 0.1] = (t == 0).float()  # (almost) no blur: identity kernel
    y = x[None]  # (1, N, H, W): one group per image
    y = F.pad(y, (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=n)
    y = F.conv2d(y, k[:, None, :, None], groups=n)
    return y[0]
