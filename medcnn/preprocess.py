"""Preprocessing: small callable steps chained by a :class:`Pipeline`.

This is the only place that windows, inverts, crops, resizes and normalises pixels.
The same pipeline (rebuilt from the JSON config stored in the model card) is used by
training, evaluation, the command line and the app, so they all see identical pixels.

Data flow::

    MedImage.pixels (modality values, e.g. HU)      float32 (H0, W0)
      -> Window   (VOI, PS3.3 C.11.2 / PS3.4 N.2)   float32 (H0, W0) in [0, 1]
      -> Invert   (MONOCHROME1 after VOI)           float32 (H0, W0) in [0, 1]
      -> [Denoise] [CLAHE]                          float32 (H0, W0) in [0, 1]
      -> CropOrPad (to the model's aspect)          float32 (H1, W1) in [0, 1]
      -> Resize    (to the model's input size)      float32 (H, W)   in [0, 1]  = ``display``
      -> Normalize ((x - mean) / std)               torch.float32 (1, 1, H, W)  = ``tensor``

Every step's output is returned with its name and parameters (``PipelineResult.steps``)
so the app can show exactly what the network receives. ``display`` is the image the
saliency overlay is drawn on: same geometry as the tensor, so no inverse mapping.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import cv2
import numpy as np
import torch

from medcnn._voi import (
    CT_PRESETS,
    WindowSpec,
    _apply_voi_lut,
    apply_window,
    auto_window,
    check_unit_range,
    resolve_window,
)
from medcnn.io import ImageMeta, MedImage

__all__ = [
    "CT_PRESETS",
    "Step",
    "Window",
    "Invert",
    "Denoise",
    "CLAHE",
    "CropOrPad",
    "Resize",
    "Normalize",
    "STEPS",
    "StepOutput",
    "PipelineResult",
    "Pipeline",
    "default_config",
    "render",
    "resolve_window",
    "apply_window",
    "auto_window",
    "check_unit_range",
]

# ------------------------------------------------------------------------- steps


class Step:
    """A preprocessing step: settings in ``__init__``, the work in ``__call__``.

    ``__call__(x, meta)`` takes a float32 (H, W) image and returns a new one; it never
    modifies ``x`` in place (the pipeline keeps every intermediate for display).
    """

    name: ClassVar[str] = ""

    def __call__(self, x: np.ndarray, meta: ImageMeta) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Plain-data settings (JSON); ``STEPS[name](**config)`` rebuilds the step."""
        return {}

    def apply(self, x: np.ndarray, meta: ImageMeta) -> tuple[np.ndarray, dict[str, Any]]:
        """Run the step and also return the parameters actually used (for display).

        Steps keep no per-call state, so one pipeline can serve concurrent requests.
        """
        return self(x, meta), self.config()


class Window(Step):
    """VOI transform to [0, 1]: file window / VOI LUT, CT preset, manual or automatic."""

    name = "window"

    def __init__(self, window: WindowSpec = "default", ct_preset: str | None = None):
        if isinstance(window, list):
            window = tuple(window)
        self.window = window
        self.ct_preset = ct_preset
        if ct_preset is not None and ct_preset not in CT_PRESETS:
            raise ValueError(f"unknown CT preset {ct_preset!r}; accepted: {', '.join(CT_PRESETS)}")

    def config(self) -> dict[str, Any]:
        w = list(self.window) if isinstance(self.window, tuple) else self.window
        return {"window": w, "ct_preset": self.ct_preset}

    def __call__(self, x: np.ndarray, meta: ImageMeta, window: WindowSpec = None) -> np.ndarray:
        return self.apply(x, meta, window)[0]

    def apply(self, x: np.ndarray, meta: ImageMeta,
              window: WindowSpec = None) -> tuple[np.ndarray, dict[str, Any]]:
        spec = resolve_window(meta, x, self.window if window is None else window, self.ct_preset)
        if spec.get("lut"):
            out = _apply_voi_lut(x, meta.voi_lut)  # type: ignore[arg-type]
        else:
            out = apply_window(x, spec["center"], spec["width"], spec["function"])
        return out, spec


class Invert(Step):
    """Invert after VOI (PS3.4 N.2): MONOCHROME1 shows low values bright, we want bone bright."""

    name = "invert"

    def __init__(self, mode: str = "monochrome1"):
        if mode not in ("monochrome1", "always", "never"):
            raise ValueError(f"invert mode must be monochrome1, always or never; got {mode!r}")
        self.mode = mode

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def __call__(self, x: np.ndarray, meta: ImageMeta) -> np.ndarray:
        return self.apply(x, meta)[0]

    def apply(self, x: np.ndarray, meta: ImageMeta) -> tuple[np.ndarray, dict[str, Any]]:
        do = self.mode == "always" or (
            self.mode == "monochrome1" and meta.photometric_interpretation == "MONOCHROME1")
        return ((np.float32(1.0) - x) if do else x), {"mode": self.mode, "inverted": bool(do)}


class Denoise(Step):
    """Optional edge-preserving denoising (median or bilateral, OpenCV)."""

    name = "denoise"

    def __init__(self, method: str = "median", ksize: int = 3, sigma: float = 0.05):
        if method not in ("median", "bilateral", "gaussian"):
            raise ValueError(f"denoise method must be median, bilateral or gaussian; got {method!r}")
        if ksize < 1 or ksize % 2 == 0:
            raise ValueError(f"denoise ksize must be a positive odd integer, got {ksize}")
        self.method, self.ksize, self.sigma = method, int(ksize), float(sigma)

    def config(self) -> dict[str, Any]:
        return {"method": self.method, "ksize": self.ksize, "sigma": self.sigma}

    def __call__(self, x: np.ndarray, meta: ImageMeta) -> np.ndarray:
        if self.method == "median":
            # cv2.medianBlur on float32 supports ksize 3 and 5 only.
            if self.ksize <= 5:
                return cv2.medianBlur(np.ascontiguousarray(x), self.ksize)
            u16 = (x * 65535.0 + 0.5).astype(np.uint16)
            return cv2.medianBlur(u16, self.ksize).astype(np.float32) / np.float32(65535.0)
        if self.method == "bilateral":
            return cv2.bilateralFilter(np.ascontiguousarray(x), self.ksize, self.sigma, self.ksize)
        return cv2.GaussianBlur(x, (self.ksize, self.ksize), 0)


class CLAHE(Step):
    """Contrast-limited adaptive histogram equalisation (Zuiderveld 1994), on 16-bit levels."""

    name = "clahe"

    def __init__(self, clip_limit: float = 2.0, tile_grid: int = 8):
        if clip_limit <= 0 or tile_grid < 1:
            raise ValueError(f"CLAHE needs clip_limit > 0 and tile_grid >= 1, got {clip_limit}, {tile_grid}")
        self.clip_limit, self.tile_grid = float(clip_limit), int(tile_grid)

    def config(self) -> dict[str, Any]:
        return {"clip_limit": self.clip_limit, "tile_grid": self.tile_grid}

    def __call__(self, x: np.ndarray, meta: ImageMeta) -> np.ndarray:
        u16 = (x * 65535.0 + 0.5).astype(np.uint16)
        eq = cv2.createCLAHE(self.clip_limit, (self.tile_grid, self.tile_grid)).apply(u16)
        return eq.astype(np.float32) * np.float32(1.0 / 65535.0)


class CropOrPad(Step):
    """Bring the image to the model's aspect (W / H) by centred padding or cropping."""

    name = "crop_or_pad"

    def __init__(self, aspect: float = 1.0, mode: str = "pad", fill: float = 0.0):
        if aspect <= 0:
            raise ValueError(f"aspect must be > 0, got {aspect}")
        if mode not in ("pad", "crop"):
            raise ValueError(f"crop_or_pad mode must be pad or crop, got {mode!r}")
        self.aspect, self.mode, self.fill = float(aspect), mode, float(fill)

    def config(self) -> dict[str, Any]:
        return {"aspect": self.aspect, "mode": self.mode, "fill": self.fill}

    def __call__(self, x: np.ndarray, meta: ImageMeta) -> np.ndarray:
        return self.apply(x, meta)[0]

    def apply(self, x: np.ndarray, meta: ImageMeta) -> tuple[np.ndarray, dict[str, Any]]:
        h, w = x.shape
        if self.mode == "pad":
            th, tw = max(h, int(round(w / self.aspect))), max(w, int(round(h * self.aspect)))
        else:
            th, tw = min(h, int(round(w / self.aspect))), min(w, int(round(h * self.aspect)))
        top, left = (th - h) // 2, (tw - w) // 2
        params = {**self.config(), "from": [h, w], "to": [th, tw], "offset": [top, left]}
        if (th, tw) == (h, w):
            return x, params
        if self.mode == "crop":
            return x[-top:-top + th, -left:-left + tw], params
        return cv2.copyMakeBorder(x, top, th - h - top, left, tw - w - left,
                                  cv2.BORDER_CONSTANT, value=self.fill), params


class Resize(Step):
    """Resize to the model input (H, W): area averaging when shrinking, bilinear when enlarging."""

    name = "resize"

    def __init__(self, size: int | tuple[int, int] | list[int] = 256):
        size = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"resize size must be (H, W) with both >= 8, got {size!r}")
        self.size = size

    def config(self) -> dict[str, Any]:
        return {"size": list(self.size)}

    def __call__(self, x: np.ndarray, meta: ImageMeta) -> np.ndarray:
        h, w = self.size
        if x.shape == (h, w):
            return x
        shrink = x.shape[0] >= h and x.shape[1] >= w
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        # Area averaging and bilinear interpolation are convex combinations: [0, 1] stays [0, 1].
        return cv2.resize(np.ascontiguousarray(x), (w, h), interpolation=interp)


class Normalize(Step):
    """``(x - mean) / std`` on the [0, 1] display image: the last step, produces the tensor."""

    name = "normalize"

    def __init__(self, mean: float = 0.5, std: float = 0.25):
        if std <= 0:
            raise ValueError(f"normalize std must be > 0, got {std}")
        self.mean, self.std = float(mean), float(std)

    def config(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def __call__(self, x: np.ndarray, meta: ImageMeta | None = None) -> np.ndarray:
        return (x - np.float32(self.mean)) * np.float32(1.0 / self.std)


#: Step registry: config ``name`` -> class.
STEPS: dict[str, Callable[..., Step]] = {
    cls.name: cls for cls in (Window, Invert, Denoise, CLAHE, CropOrPad, Resize, Normalize)
}


# ---------------------------------------------------------------------- pipeline


@dataclass
class StepOutput:
    """One step's result for display: name, parameters used and the image (H, W) float32."""

    name: str
    params: dict[str, Any]
    image: np.ndarray


@dataclass
class PipelineResult:
    """What the network receives and how it got there.

    Attributes:
        tensor: torch.float32 (1, 1, H, W), the exact model input.
        display: float32 (H, W) in [0, 1], the image before normalisation (overlay target).
        steps: every step's output, in order, ending with ``normalize``.
        window: the VOI actually applied (plain data).
    """

    tensor: torch.Tensor
    display: np.ndarray
    steps: list[StepOutput] = field(default_factory=list)
    window: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Chain of :class:`Step` objects; its config is plain JSON stored in the model card.

    The first step must be ``window`` and the last ``normalize``; exactly one ``resize``
    fixes the model input size.
    """

    def __init__(self, steps: list[Step]):
        names = [s.name for s in steps]
        if not steps or names[0] != "window" or names[-1] != "normalize" or names.count("resize") != 1:
            raise ValueError(
                f"a pipeline must start with 'window', contain exactly one 'resize' and end with "
                f"'normalize'; got {names}"
            )
        self.steps = steps

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Pipeline":
        """Rebuild a pipeline from ``{"steps": [{"name": ..., **params}, ...]}``.

        Raises:
            ValueError: unknown step name or bad parameters (the message lists valid names).
        """
        if not isinstance(config, dict) or not isinstance(config.get("steps"), list):
            raise ValueError("pipeline config must be a dict with a 'steps' list")
        steps = []
        for item in config["steps"]:
            item = dict(item)
            name = item.pop("name", None)
            if name not in STEPS:
                raise ValueError(f"unknown preprocessing step {name!r}; valid: {', '.join(STEPS)}")
            try:
                steps.append(STEPS[name](**item))
            except TypeError as e:
                raise ValueError(f"bad parameters for step {name!r}: {e}") from None
        return cls(steps)

    @property
    def config(self) -> dict[str, Any]:
        return {"steps": [{"name": s.name, **s.config()} for s in self.steps]}

    @property
    def input_size(self) -> tuple[int, int]:
        return next(s for s in self.steps if isinstance(s, Resize)).size

    @property
    def normalizer(self) -> Normalize:
        return self.steps[-1]  # type: ignore[return-value]

    def __call__(self, image: MedImage, window: WindowSpec = None, keep_steps: bool = True) -> PipelineResult:
        """Run every step.

        Args:
            image: decoded image (``medcnn.io.read_image``).
            window: optional VOI override for this call (see :func:`resolve_window`).
            keep_steps: keep intermediate images (the app shows them); training passes False.
        """
        meta = image.meta
        x = image.pixels
        outputs: list[StepOutput] = []
        window_used: dict[str, Any] = {}
        for step in self.steps[:-1]:
            if isinstance(step, Window):
                x, params = step.apply(x, meta, window)
                window_used = params
            else:
                x, params = step.apply(x, meta)
            if keep_steps:
                outputs.append(StepOutput(step.name, params, x))
        display = np.ascontiguousarray(x, dtype=np.float32)
        # Every step maps [0, 1] to [0, 1] (window clips, resize clips), so the pixel contract
        # holds by construction here; to_tensor() checks it for images from outside.
        tensor = torch.from_numpy(self.normalizer(display)).unsqueeze(0).unsqueeze(0)
        if keep_steps:
            outputs.append(StepOutput("normalize", self.normalizer.config(), tensor[0, 0].numpy()))
        return PipelineResult(tensor=tensor, display=display, steps=outputs, window=window_used)

    def to_tensor(self, display: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalise [0, 1] image(s) (H, W) or (N, H, W) into a (1|N, 1, H, W) float32 tensor.

        Raises:
            ValueError: values outside [0, 1] or the wrong spatial size.
        """
        arr = display.detach().cpu().numpy() if isinstance(display, torch.Tensor) else np.asarray(display)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or tuple(arr.shape[1:]) != tuple(self.input_size):
            raise ValueError(f"expected image(s) of shape (H, W) or (N, H, W) with (H, W) = "
                             f"{self.input_size}, got {arr.shape}")
        check_unit_range(arr, "the preprocessed image")
        out = self.normalizer(arr.astype(np.float32, copy=False))
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).unsqueeze(1)


def default_config(task: str = "CXR", size: int = 256) -> dict[str, Any]:
    """Default pipeline config for a task.

    ``CXR``: file window (or full range / auto), MONOCHROME1 inversion, pad to square,
    resize. ``CT``: as CXR, but CT DICOM in HU gets the lung preset (-600/1500), matching
    the lung-windowed 8-bit slices the CT model is trained on.
    """
    task = task.upper()
    if task not in ("CXR", "CT"):
        raise ValueError(f"task must be CXR or CT, got {task!r}")
    return {"steps": [
        {"name": "window", "window": "default", "ct_preset": "lung" if task == "CT" else None},
        {"name": "invert", "mode": "monochrome1"},
        {"name": "crop_or_pad", "aspect": 1.0, "mode": "pad", "fill": 0.0},
        {"name": "resize", "size": [size, size]},
        {"name": "normalize", "mean": 0.5, "std": 0.25},
    ]}


def render(image: MedImage, window: WindowSpec = None, ct_preset: str | None = None) -> np.ndarray:
    """Full-resolution display rendering as a radiology viewer shows it.

    Modality LUT (already in ``image.pixels``) -> VOI -> MONOCHROME1 inversion.

    Returns:
        float32 (H, W) in [0, 1], bone bright.
    """
    x = Window(window or "default", ct_preset)(image.pixels, image.meta)
    return Invert("monochrome1")(x, image.meta)
