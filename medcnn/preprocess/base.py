"""The :class:`Step` base class of every preprocessing step (its own module, so that steps kept in
other modules, such as :mod:`medcnn.preprocess.lungs`, subclass it without an import circle)."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from medcnn.io import ImageMeta

__all__ = ["Step"]


class Step:
    """A preprocessing step: settings in ``__init__``, the work in the one hook :meth:`apply`.

    ``apply(x, meta)`` takes a float32 (H, W) image and returns a new one with the parameters
    used; it never modifies ``x`` in place (the pipeline keeps every intermediate for display).
    Steps keep no per-call state, so one pipeline can serve concurrent requests.

    Attributes:
        name: The step's name in a pipeline config (:data:`STEPS`).
        input_range: The values the step reads, ``None`` for any (modality values such as HU).
    """

    name: ClassVar[str] = ""
    input_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        """Run the step: the new image and the parameters actually used (plain data, for display)."""
        raise NotImplementedError  # pragma: no cover - every step implements it

    def __call__(self, x: np.ndarray, meta: ImageMeta | None = None) -> np.ndarray:
        """The image of :meth:`apply`."""
        return self.apply(x, meta)[0]

    def config(self) -> dict[str, Any]:
        """Plain-data settings (JSON); ``STEPS[name](**config)`` rebuilds the step."""
        return {}

    def output_range(self) -> tuple[float, float]:
        """The values the step's output takes for an input in :attr:`input_range`."""
        return 0.0, 1.0

    def with_settings(self, **settings: Any) -> "Step":
        """This step with the given settings replaced where it has them (``window=...`` for a
        per-call window); the step itself when it has none of them."""
        config = self.config()
        if not set(settings) & set(config):
            return self
        return type(self)(**{**config, **{k: v for k, v in settings.items() if k in config}})
