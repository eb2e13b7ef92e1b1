"""Preprocessing: small callable steps chained by a :class:`Pipeline`.

This is the only place that windows, inverts, crops, resizes and normalises pixels.
The same pipeline (rebuilt from the JSON config stored in the model card) is used by
training, evaluation, the command line and the app, so they all see identical pixels.

Data flow::

    MedImage.pixels (modality values, e.g. HU)      float32 (H0, W0)
      -> Window   (VOI, PS3.3 C.11.2 / PS3.4 N.2)   float32 (H0, W0) in [0, 1]
      -> [Orient] (CT: standard axial view, header) float32 (H0, W0) in [0, 1]
      -> Invert   (MONOCHROME1 after VOI)           float32 (H0, W0) in [0, 1]
      -> [Denoise] [CLAHE]                          float32 (H0, W0) in [0, 1]
      -> [BodyCrop] (CT: body box, outside -> 0)    float32 (Hb, Wb) in [0, 1]
      -> [LungCrop] (CT: lungs' box + margin)       float32 (Hl, Wl) in [0, 1]
      -> CropOrPad (to the model's aspect)          float32 (H1, W1) in [0, 1]
      -> Resize    (to the model's input size)      float32 (H, W)   in [0, 1]  = ``display``
      -> Normalize ((x - mean) / std)               torch.float32 (1, 1, H, W)  = ``tensor``
         (or an imported model's pixel contract: ``normalize_imagenet`` / ``normalize_xrv`` /
         ``normalize_unit``; the tensor stays one-channel, an RGB stem repeats it, see
         :meth:`~medcnn.preprocess.steps.Normalize.channel_affine`)

Every step's output is returned with its name and parameters (``PipelineResult.steps``)
so the app can show exactly what the network receives. ``display`` is the image the
saliency overlay is drawn on: same geometry as the tensor, so no inverse mapping.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medcnn.preprocess.steps import (
    CLAHE, NORMALIZATIONS, STEPS, BodyCrop, CropOrPad, LungCrop, Orient, Denoise, ImageNetNormalize, Invert, Normalize, Resize,
    Step, UnitNormalize, Window, XRVNormalize,
)
from medcnn.preprocess.voi import (
    CT_PRESETS,
    WindowSpec,
    apply_window,
    auto_window,
    check_unit_range,
    resolve_window,
)
from medcnn.io import MedImage

__all__ = [
    "CT_PRESETS",
    "Step",
    "Window",
    "Invert",
    "Denoise",
    "CLAHE",
    "BodyCrop",
    "LungCrop",
    "Orient",
    "CropOrPad",
    "Resize",
    "Normalize",
    "ImageNetNormalize",
    "XRVNormalize",
    "UnitNormalize",
    "NORMALIZATIONS",
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
        params: every step's parameters by step name, kept also when the images are not (the
            facts a check after preprocessing reads, e.g. the ``body_crop`` edge contact).
    """

    tensor: torch.Tensor
    display: np.ndarray
    steps: list[StepOutput] = field(default_factory=list)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def window(self) -> dict[str, Any]:
        """The VOI actually applied (plain data): the ``window`` step's parameters (the first step)."""
        return self.params.get("window", {})


class Pipeline:
    """Chain of :class:`Step` objects; its config is plain JSON stored in the model card.

    The first step must be ``window`` and the last a normalisation (``normalize`` or a pixel
    contract's ``normalize_*``); exactly one ``resize`` fixes the model input size.
    """

    def __init__(self, steps: list[Step]):
        names = [s.name for s in steps]
        if (not steps or names[0] != "window" or not isinstance(steps[-1], Normalize)
                or names.count("resize") != 1):
            raise ValueError(
                f"a pipeline must start with 'window', contain exactly one 'resize' and end with "
                f"'normalize' (or one of {', '.join(c.name for c in NORMALIZATIONS.values())}); "
                f"got {names}"
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

    def upright_by_header(self, meta: Any) -> bool:
        """True when this pipeline's ``orient`` step turns the image to the standard view from its
        header (an axial CT slice with Image Orientation (Patient)); False for every other image."""
        from medcnn.preprocess.orient import upright_by_header

        return any(isinstance(s, Orient) for s in self.steps) and upright_by_header(meta)

    def __call__(self, image: MedImage, window: WindowSpec = None, keep_steps: bool = True) -> PipelineResult:
        """Run every step.

        Args:
            image: decoded image (``medcnn.io.read_image``).
            window: optional VOI override for this call (see :func:`resolve_window`).
            keep_steps: keep intermediate images (the app shows them); training passes False.
        """
        meta = image.meta
        steps = self.steps if window is None else [s.with_settings(window=window) for s in self.steps]
        x = image.pixels
        outputs: list[StepOutput] = []
        params_of: list[dict[str, Any]] = []
        for step in steps[:-1]:
            x, params = step.apply(x, meta)
            params_of.append(params)
            if keep_steps:
                outputs.append(StepOutput(step.name, params, x))
        display = np.ascontiguousarray(x, dtype=np.float32)
        # Every step maps [0, 1] to [0, 1] (window clips, resize clips), so the pixel contract
        # holds by construction here; to_tensor() checks it for images from outside.
        normalized, params = steps[-1].apply(display, meta)
        params_of.append(params)
        tensor = torch.from_numpy(normalized).unsqueeze(0).unsqueeze(0)
        if keep_steps:
            outputs.append(StepOutput(steps[-1].name, params, tensor[0, 0].numpy()))
        return PipelineResult(tensor=tensor, display=display, steps=outputs,
                              params={s.name: p for s, p in zip(steps, params_of)})

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
    resize. ``CT``: as CXR, but CT DICOM in HU gets the lung preset (-600/1500) even when
    the file has its own window, ``orient`` turns a prone or decubitus slice to the standard view
    from its header, ``body_crop`` cuts the slice to the patient's body (table and
    surrounding air removed, black outside the body) and ``lung_crop`` to the lungs' box plus a
    thin rim, so a scanner slice and an 8-bit lung crop reach the network at the same scale
    (:mod:`medcnn.preprocess.lungs`).
    """
    task = task.upper()
    if task not in ("CXR", "CT"):
        raise ValueError(f"task must be CXR or CT, got {task!r}")
    body = ([{"name": "body_crop", **BodyCrop().config()}, {"name": "lung_crop", **LungCrop().config()}]
            if task == "CT" else [])
    return {"steps": [
        {"name": "window", "window": "default", "ct_preset": "lung" if task == "CT" else None,
         **({"preset_first": True} if task == "CT" else {})},
        *([{"name": "orient"}] if task == "CT" else []),
        {"name": "invert", "mode": "monochrome1"},
        *body,
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
