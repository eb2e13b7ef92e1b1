"""Architecture families of imported models: ``torchvision:<name>``, ``timm:<name>``, ``xrv:<name>``.

:func:`medcnn.models.registry.create_model` is the one factory; it hands an id with a family
prefix to :func:`build`. Every network built here is random-initialised (``weights=None`` /
``pretrained=False``: nothing is ever downloaded), has ``num_classes`` outputs and takes the
project's one-channel tensor ``(N, 1, H, W)``:

* ``stem_chans=1``: the RGB stem is replaced by a one-channel convolution (the imported weights
  then carry a one-channel stem; timm does this itself with ``in_chans=1``);
* ``stem_chans=3``: the RGB stem is kept and fed the grey tensor repeated to three channels, each
  ``tensor * scale_c + shift_c`` (:class:`GreyInput`, the pixel contract's
  :meth:`~medcnn.preprocess.Normalize.channel_affine`). The adapter holds no weights and the
  network keeps its class's module names, so the state_dict keys and the Grad-CAM layer names
  are the source model's own.

``timm`` and ``torchxrayvision`` are optional (``requirements-models.txt``); their ids raise an
error naming the missing package when it is not installed.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from medcnn.models.registry import _adapt_first_conv, _DenseNet, _no_inplace

__all__ = ["FAMILIES", "XRV_MODELS", "GreyInput", "build", "family_ids", "find_target_layer", "is_family_id"]

#: Family prefix -> the Python package it needs.
FAMILIES: dict[str, str] = {"torchvision": "torchvision", "timm": "timm", "xrv": "torchxrayvision"}
#: TorchXRayVision architectures: id -> (input size, its own pathology list length).
XRV_MODELS: dict[str, int] = {"densenet121-res224": 224, "resnet50-res512": 512}


def is_family_id(name: str) -> bool:
    """True for ``family:name`` ids (as opposed to the built-in architecture names)."""
    return ":" in name


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def family_ids() -> list[str]:
    """Valid family ids in words, for error messages (timm's thousands of names are summarised)."""
    out = [f"torchvision:{n}" for n in _torchvision_names()]
    out.append("timm:<any timm.list_models() name>" if _installed("timm")
               else "timm:<name> (needs the optional package timm: pip install -r requirements-models.txt)")
    suffix = "" if _installed("torchxrayvision") else " (needs torchxrayvision: pip install -r requirements-models.txt)"
    out += [f"xrv:{n}{suffix}" for n in XRV_MODELS]
    return out


def _unknown(name: str, valid: Sequence[str]) -> ValueError:
    return ValueError(f"unknown architecture {name!r}; valid ids: {', '.join(valid)}")


# --------------------------------------------------------------------------- the grey -> RGB stem
class GreyInput(nn.Module):
    """The one-channel tensor as C input channels: channel ``c`` is ``x * scale[c] + shift[c]``.

    Shapes: ``(N, 1, H, W) -> (N, C, H, W)`` (broadcast, no copy of weights). Its buffers are not
    persistent: the state_dict of the network that owns it is the source model's.
    """

    def __init__(self, scale: Sequence[float], shift: Sequence[float]):
        super().__init__()
        if len(scale) != len(shift) or not scale:
            raise ValueError(f"scale and shift need one value per channel, got {list(scale)} and {list(shift)}")
        self.register_buffer("scale", torch.tensor([float(v) for v in scale]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor([float(v) for v in shift]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


_GREY_CLASSES: dict[type, type] = {}


def _grey_class(base: type) -> type:
    """Subclass of ``base`` whose ``forward`` first runs ``self.input_adapter`` (one per class)."""
    if base not in _GREY_CLASSES:
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return base.forward(self, self.input_adapter(x))

        _GREY_CLASSES[base] = type(f"Grey{base.__name__}", (base,), {
            "forward": forward, "__module__": __name__,
            "__doc__": f"{base.__name__} fed a one-channel tensor through ``input_adapter`` (GreyInput)."})
    return _GREY_CLASSES[base]


def _with_grey_input(model: nn.Module, scale: Sequence[float], shift: Sequence[float]) -> nn.Module:
    model.__class__ = _grey_class(type(model))
    model.input_adapter = GreyInput(scale, shift)
    return model


# --------------------------------------------------------------------------- builders
def _torchvision(name: str, num_classes: int, stem_chans: int) -> nn.Module:
    names = _torchvision_names()
    if name not in names:
        raise _unknown(f"torchvision:{name}", [f"torchvision:{n}" for n in names])
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if isinstance(model, torchvision.models.DenseNet):
        # its forward applies F.relu(inplace=True) after features.norm5; use the module ReLU
        # ``features.relu5`` of the registry's DenseNet (same state_dict), see _DenseNet.
        model.__class__ = _DenseNet
        model.features.add_module("relu5", nn.ReLU())
    if stem_chans == 1:
        _adapt_first_conv(model, 1)
    return model


def _timm(name: str, num_classes: int, stem_chans: int) -> nn.Module:
    if not _installed("timm"):
        raise ValueError(f"architecture 'timm:{name}' needs the optional package timm "
                         f"(pip install -r requirements-models.txt)")
    import timm

    if name not in timm.list_models():
        close = timm.list_models(f"*{name[:6]}*")[:12]
        raise ValueError(f"unknown architecture 'timm:{name}'; timm names like it: {', '.join(close) or 'none'} "
                         f"(all: timm.list_models())")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=stem_chans)


class _XRVResNet(nn.Module):
    """TorchXRayVision's ``ResNet`` layout (``model`` = a one-channel torchvision ResNet-50) without
    its download and without its output scaling: the logits; the card's head applies op_threshs."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
        self.model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _xrv(name: str, num_classes: int, stem_chans: int) -> nn.Module:
    if name not in XRV_MODELS:
        raise _unknown(f"xrv:{name}", [f"xrv:{n}" for n in XRV_MODELS])
    if not _installed("torchxrayvision"):
        raise ValueError(f"architecture 'xrv:{name}' needs the optional package torchxrayvision "
                         f"(pip install -r requirements-models.txt)")
    if stem_chans != 1:
        raise ValueError(f"TorchXRayVision models read one channel; got channels={stem_chans}")
    if name == "resnet50-res512":
        return _XRVResNet(num_classes)
    import torchxrayvision as xrv

    model = xrv.models.DenseNet(weights=None, num_classes=num_classes, in_channels=1)
    # same state_dict; the final ReLU as the module features.relu5 and logits out (see _DenseNet)
    model.__class__ = _DenseNet
    model.features.add_module("relu5", nn.ReLU())
    return model


_BUILDERS = {"torchvision": _torchvision, "timm": _timm, "xrv": _xrv}


def build(arch_id: str, num_classes: int, stem_chans: int = 3,
          input_affine: tuple[Sequence[float], Sequence[float]] | None = None) -> nn.Module:
    """Build ``family:name`` with random weights for the one-channel tensor (module docstring).

    Args:
        arch_id: ``torchvision:resnet18``, ``timm:resnet18``, ``xrv:densenet121-res224`` ...
        num_classes: Outputs (>= 1).
        stem_chans: 1 (one-channel stem) or 3 (RGB stem fed the repeated grey tensor).
        input_affine: ``(scale, shift)`` per stem channel (default: 1 and 0, a plain repeat).

    Returns:
        The model, training mode, CPU, activations not in place. ``(N, 1, H, W) -> (N, num_classes)``.

    Raises:
        ValueError: unknown family or name (the message lists valid ids), a missing optional
            package, or bad sizes.
    """
    family, _, name = arch_id.partition(":")
    if family not in _BUILDERS:
        raise _unknown(arch_id, family_ids())
    if stem_chans not in (1, 3):
        raise ValueError(f"stem channels must be 1 or 3, got {stem_chans}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = _BUILDERS[family](name, int(num_classes), int(stem_chans))
    _no_inplace(model)
    if stem_chans == 3:
        scale, shift = input_affine or ([1.0] * 3, [0.0] * 3)
        _with_grey_input(model, scale, shift)
    elif input_affine is not None and (list(input_affine[0]) != [1.0] or list(input_affine[1]) != [0.0]):
        raise ValueError(f"a one-channel stem reads the tensor as it is; got input_affine={input_affine}")
    return model


@torch.no_grad()
def find_target_layer(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> str:
    """Dotted name of the last module with a spatial 4-D output before global pooling.

    Found with forward hooks on one dummy ``(1, 1, H, W)`` pass (modules in the order their
    outputs are produced; a container's output comes after its children's, so a stage such as
    ``layer4`` wins over its last block). Outputs of 1 x 1 (global pooling) do not count.

    Raises:
        ValueError: no module gives a spatial 4-D output at this input size.
    """
    names = {id(m): n for n, m in model.named_modules() if n and n != "input_adapter"}
    order: list[str] = []

    def hook(module: nn.Module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
            order.append(names[id(module)])

    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) in names]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, 1, *input_size, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not order:
        raise ValueError(f"{type(model).__name__} has no module with a spatial 4-D output at input size "
                         f"{tuple(input_size)}; pass the Grad-CAM layer explicitly (--target-layer)")
    return order[-1]
