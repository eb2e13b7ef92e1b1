"""Preprocessing steps (MONAI-style small callables) behind :class:`medcnn.preprocess.Pipeline`.

Each step takes a float32 (H, W) image and its :class:`~medcnn.io.ImageMeta` and returns a
new image with the parameters actually used, which the app shows: one hook,
:meth:`Step.apply`. Per-call settings (the app's window override) are not a hook: the pipeline
rebuilds the steps that have such a setting (:meth:`Step.with_settings`).
``STEPS`` maps a config ``name`` to its class so a pipeline can be rebuilt from the JSON
stored in a model card. Import them from :mod:`medcnn.preprocess`.
"""
from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np

from medcnn.preprocess.base import Step
from medcnn.preprocess.body import body_mask
from medcnn.preprocess.lungs import LungCrop
from medcnn.preprocess.orient import Orient
from medcnn.preprocess.voi import CT_PRESETS, WindowSpec, _apply_voi_lut, apply_window, resolve_window
from medcnn.io import ImageMeta

__all__ = ["Step", "Window", "Invert", "Denoise", "CLAHE", "Orient", "BodyCrop", "LungCrop", "CropOrPad", "Resize", "Normalize",
           "ImageNetNormalize", "XRVNormalize", "UnitNormalize", "NORMALIZATIONS", "STEPS"]


class Window(Step):
    """VOI transform to [0, 1]: file window / VOI LUT, CT preset, manual or automatic.

    ``preset_first`` (see :func:`~medcnn.preprocess.resolve_window`) makes the default window
    of CT DICOM the ``ct_preset`` even where the file has a window; it is only written to the
    config when set, so pipelines stored without it rebuild with the same config.
    """

    name = "window"
    input_range = None

    def __init__(self, window: WindowSpec = "default", ct_preset: str | None = None,
                 preset_first: bool = False):
        if isinstance(window, list):
            window = tuple(window)
        self.window = window
        self.ct_preset = ct_preset
        self.preset_first = bool(preset_first)
        if ct_preset is not None and ct_preset not in CT_PRESETS:
            raise ValueError(f"unknown CT preset {ct_preset!r}; accepted: {', '.join(CT_PRESETS)}")

    def config(self) -> dict[str, Any]:
        w = list(self.window) if isinstance(self.window, tuple) else self.window
        extra = {"preset_first": True} if self.preset_first else {}
        return {"window": w, "ct_preset": self.ct_preset, **extra}

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        """Returns the [0, 1] image and the window used (:func:`resolve_window`'s spec)."""
        spec = resolve_window(meta, x, self.window, self.ct_preset, self.preset_first)
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

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        do = self.mode == "always" or (self.mode == "monochrome1" and meta is not None
                                       and meta.photometric_interpretation == "MONOCHROME1")
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

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        return self._denoise(x), self.config()

    def _denoise(self, x: np.ndarray) -> np.ndarray:
        if self.method == "median":
            # cv2.medianBlur on float32 supports ksize 3 and 5 only (and on 8-bit only beyond):
            # larger kernels take the exact float median, edges replicated as OpenCV does.
            if self.ksize <= 5:
                return cv2.medianBlur(np.ascontiguousarray(x), self.ksize)
            from scipy.ndimage import median_filter

            return median_filter(x, size=self.ksize, mode="nearest").astype(np.float32, copy=False)
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

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        u16 = (x * 65535.0 + 0.5).astype(np.uint16)
        eq = cv2.createCLAHE(self.clip_limit, (self.tile_grid, self.tile_grid)).apply(u16)
        return eq.astype(np.float32) * np.float32(1.0 / 65535.0), self.config()


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

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
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


class BodyCrop(Step):
    """Crop a CT slice to the patient's body (table and surrounding air removed).

    Runs on the windowed [0, 1] image; returns the body's bounding box plus a margin, with the
    pixels outside the body set to 0 when ``mask_outside`` (the training slices are black there).
    Deterministic; a few milliseconds at 512 x 512. Never raises on a valid image: when no
    plausible body is found the input is returned unchanged and ``note`` in the parameters says
    why. Algorithm and safeguards: :func:`medcnn.preprocess.body.body_mask`.
    """

    name = "body_crop"

    def __init__(self, threshold: str | float = "otsu", margin: float = 0.02, mask_outside: bool = True,
                 kernel: float = 0.02, min_area: float = 0.05):
        if threshold != "otsu" and not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
            raise ValueError(f"body_crop threshold must be 'otsu' or a level in (0, 1), got {threshold!r}")
        if not 0 <= margin < 0.5:
            raise ValueError(f"body_crop margin must be a fraction in [0, 0.5), got {margin}")
        if not 0 < kernel < 0.5 or not 0 < min_area < 1:
            raise ValueError(f"body_crop needs kernel in (0, 0.5) and min_area in (0, 1), "
                             f"got {kernel} and {min_area}")
        self.threshold = threshold if threshold == "otsu" else float(threshold)
        self.margin, self.mask_outside = float(margin), bool(mask_outside)
        self.kernel, self.min_area = float(kernel), float(min_area)

    def config(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "margin": self.margin, "mask_outside": self.mask_outside,
                "kernel": self.kernel, "min_area": self.min_area}

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        """Returns the crop and ``{settings, level, body_fraction, from, to, offset[, note]}``.

        ``level`` is the threshold used (on [0, 1]), ``body_fraction`` the body mask's share of
        the input (absent when no body was found), ``offset`` where the input's (0, 0) lands
        in the output, as in ``crop_or_pad`` (so it is <= 0 here: minus the crop's top, left).
        """
        h, w = x.shape
        mask, info = body_mask(x, self.threshold, self.kernel, self.min_area)
        params = {**self.config(), **info, "from": [h, w]}
        if mask is None:
            return x, {**params, "to": [h, w], "offset": [0, 0]}
        left, top, bw, bh = cv2.boundingRect(mask)
        pad = int(round(self.margin * max(h, w)))
        y0, x0 = max(0, top - pad), max(0, left - pad)
        y1, x1 = min(h, top + bh + pad), min(w, left + bw + pad)
        out = x[y0:y1, x0:x1]
        if self.mask_outside:
            out = np.where(mask[y0:y1, x0:x1] > 0, out, np.float32(0.0)).astype(np.float32, copy=False)
        return out, {**params, "to": [y1 - y0, x1 - x0], "offset": [-y0, -x0]}


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

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        h, w = self.size
        if x.shape == (h, w):
            return x, self.config()
        shrink = x.shape[0] >= h and x.shape[1] >= w
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        # Area averaging and bilinear interpolation are convex combinations: [0, 1] stays [0, 1].
        return cv2.resize(np.ascontiguousarray(x), (w, h), interpolation=interp), self.config()


class Normalize(Step):
    """``(x - mean) / std`` on the [0, 1] display image: the last step, produces the tensor."""

    name = "normalize"

    def __init__(self, mean: float = 0.5, std: float = 0.25):
        if std <= 0:
            raise ValueError(f"normalize std must be > 0, got {std}")
        self.mean, self.std = float(mean), float(std)

    def config(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        return (x - np.float32(self.mean)) * np.float32(1.0 / self.std), self.config()

    def output_range(self) -> tuple[float, float]:
        return (0.0 - self.mean) / self.std, (1.0 - self.mean) / self.std

    def channel_affine(self, channels: int = 1) -> tuple[list[float], list[float]]:
        """How the network's ``channels`` input channels are made from this step's one-channel tensor.

        Input channel ``c`` is ``tensor * scale[c] + shift[c]``. A one-channel contract feeds the
        tensor as it is; an RGB stem reads the grey tensor repeated (``scale = 1``, ``shift = 0``).
        The network applies it (:func:`medcnn.models.registry.create_model`, ``input_affine``), so
        the tensor, the explanations' baselines and the gate all stay one-channel.

        Returns:
            ``(scale, shift)``, each a list of ``channels`` floats.
        """
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        return [1.0] * channels, [0.0] * channels


# ---------------------------------------------------------------------- pixel contracts of imported models
class ImageNetNormalize(Normalize):
    """ImageNet pixel contract: the grey image repeated to R, G, B, each ``(x - mean_c) / std_c`` on [0, 1].

    The tensor is the [0, 1] image itself (one channel); the per-channel ``(x - mean_c) / std_c`` is
    the :meth:`channel_affine` the network's RGB stem applies to it, exactly (also at the zero-padded
    borders, which a folded one-channel convolution would get wrong). Means and standard deviations
    are torchvision's (``torchvision.transforms.Normalize`` in its ImageNet recipes).
    """

    name = "normalize_imagenet"
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, mean: list[float] | tuple[float, ...] = MEAN, std: list[float] | tuple[float, ...] = STD):
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"normalize_imagenet needs 3 means and 3 standard deviations > 0, got {mean}, {std}")
        super().__init__(0.0, 1.0)
        self.mean_rgb, self.std_rgb = mean, std

    def config(self) -> dict[str, Any]:
        return {"mean": list(self.mean_rgb), "std": list(self.std_rgb)}

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        return super().apply(x, meta)[0], {**self.config(), "channels": 3, "applied": "grey repeated to "
                                           "R, G, B; (x - mean_c) / std_c in the network's RGB stem"}

    def channel_affine(self, channels: int = 3) -> tuple[list[float], list[float]]:
        if channels != 3:
            raise ValueError(f"the imagenet normalisation is per R, G, B channel: it needs 3 input channels, "
                             f"got {channels} (use the 'unit' or 'xrv' normalisation for a one-channel stem)")
        return [1.0 / s for s in self.std_rgb], [-m / s for m, s in zip(self.mean_rgb, self.std_rgb)]


class XRVNormalize(Normalize):
    """TorchXRayVision's pixel contract: [0, 1] -> [-1024, 1024] (``xrv.datasets.normalize``:
    ``(2 * x / maxval - 1) * 1024``), one channel, black = -1024."""

    name = "normalize_xrv"

    def __init__(self, scale: float = 1024.0):
        if scale <= 0:
            raise ValueError(f"normalize_xrv scale must be > 0, got {scale}")
        super().__init__(0.5, 0.5 / float(scale))
        self.scale = float(scale)

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        return (np.float32(2.0) * x - np.float32(1.0)) * np.float32(self.scale), self.config()


class UnitNormalize(Normalize):
    """Unit pixel contract: the network reads the [0, 1] image as it is (black 0, white 1)."""

    name = "normalize_unit"

    def __init__(self):
        super().__init__(0.0, 1.0)

    def config(self) -> dict[str, Any]:
        return {}

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        return np.array(x, dtype=np.float32, copy=True), self.config()


#: Pixel contract name (``import-model --normalize``) -> its final step.
NORMALIZATIONS: dict[str, Callable[..., Normalize]] = {
    "imagenet": ImageNetNormalize, "xrv": XRVNormalize, "unit": UnitNormalize,
}

#: Step registry: config ``name`` -> class.
STEPS: dict[str, Callable[..., Step]] = {
    cls.name: cls for cls in (Window, Orient, Invert, Denoise, CLAHE, BodyCrop, LungCrop, CropOrPad, Resize, Normalize,
                              ImageNetNormalize, XRVNormalize, UnitNormalize)
}
