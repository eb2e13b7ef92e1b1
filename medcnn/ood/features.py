"""Intermediate features of a classifier, pooled for the out-of-distribution gate.

The gate scores an image by how far its *own model's* intermediate activations lie from those of
the training images (Lee et al., NeurIPS 2018, "A simple unified framework for detecting
out-of-distribution samples and adversarial attacks"; Çallı et al. 2019, FRODO, for chest
radiographs). Each stage's feature map ``(N, C, H, W)`` is reduced to a vector by average
pooling over a coarse ``grid x grid`` layout *and* taking the per-channel spatial standard
deviation: the layout keeps "lungs above the diaphragm" (a rotated or upside-down film moves it),
the standard deviation keeps texture (ultrasound speckle, MRI).

The extractor is a torch.fx graph built once per model (:func:`torchvision.models.feature_extraction.create_feature_extractor`):
one forward pass returns the logits *and* the stage outputs, without hooks on the shared model,
so it is safe to call from several threads at once.
"""
from __future__ import annotations

import threading
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureExtractor", "default_layers", "pool_features"]

#: Stage outputs used per architecture (dotted module names). Early stages see intensity and
#: texture, late ones anatomy; Lee et al. found the combination of several layers best.
_LAYERS: dict[str, tuple[str, ...]] = {
    "simplecnn": ("block1", "block2", "block3"),
    "smallresnet": ("layer1", "layer2", "layer3", "layer4"),
    "tinyresnet": ("layer1", "layer2", "layer3", "layer4"),
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "resnet34": ("layer1", "layer2", "layer3", "layer4"),
    "densenet121": ("features.denseblock2", "features.denseblock3", "features.relu5"),
    "efficientnet_b0": ("features.3", "features.5", "features.8"),
    "mobilenet_v3_small": ("features.3", "features.8", "features.12"),
}


def default_layers(architecture: str) -> tuple[str, ...]:
    """Stage outputs the gate pools for a registered architecture.

    Raises:
        ValueError: the architecture has no default (pass ``layers`` explicitly).
    """
    try:
        return _LAYERS[architecture]
    except KeyError:
        raise ValueError(
            f"no default out-of-distribution layers for architecture {architecture!r}; "
            f"known: {', '.join(sorted(_LAYERS))} (or pass layers=...)"
        ) from None


def pool_features(fmap: torch.Tensor, grid: int = 2) -> torch.Tensor:
    """Reduce a feature map to the gate's vector.

    Args:
        fmap: float (N, C, H, W).
        grid: Side of the average-pooling layout (2 -> 4 cells per channel).

    Returns:
        float32 (N, C * (grid * grid + 1)): the grid means, then the per-channel spatial std.
    """
    if fmap.ndim != 4:
        raise ValueError(f"expected a feature map of shape (N, C, H, W), got {tuple(fmap.shape)}")
    f = fmap.float()
    cells = F.adaptive_avg_pool2d(f, grid).flatten(1)
    std = f.flatten(2).std(dim=2, unbiased=False)
    return torch.cat([cells, std], dim=1)


class FeatureExtractor:
    """Logits and pooled stage features of a model in one forward pass.

    Args:
        model: The classifier, ``(N, 1, H, W) -> (N, K)`` logits; it is not modified.
        layers: Dotted names of the stage outputs to pool.
        grid: Pooling layout (see :func:`pool_features`).

    Raises:
        ValueError: a layer name does not exist in the model.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], grid: int = 2):
        names = dict(model.named_modules())
        missing = [name for name in layers if name not in names]
        if missing:
            raise ValueError(f"layers {missing} not found in the model; it has e.g. "
                             f"{', '.join(list(names)[1:8])}")
        self.model = model
        self.layers = tuple(layers)
        self.grid = int(grid)
        self._graph: nn.Module | None = None
        self._lock = threading.Lock()

    def _build(self) -> nn.Module:
        from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

        _, eval_nodes = get_graph_node_names(self.model)
        nodes = {name: name for name in self.layers}
        nodes[eval_nodes[-1]] = "logits"
        graph = create_feature_extractor(self.model, return_nodes=nodes)
        return graph.eval()

    def _get_graph(self) -> nn.Module:
        with self._lock:  # built once, shared afterwards (a pure forward, no hooks)
            if self._graph is None:
                self._graph = self._build()
            return self._graph

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the model.

        Args:
            x: float32 (N, 1, H, W) pipeline output, on any device.

        Returns:
            ``(logits, features)``: float32 (N, K) logits on the CPU, and one float32
            (N, D_l) CPU tensor per layer.
        """
        graph = self._get_graph()
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            x = x.to(device)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            out = graph(x)
            feats = [pool_features(out[name], self.grid).cpu() for name in self.layers]
            return out["logits"].float().cpu(), feats
