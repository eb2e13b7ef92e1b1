"""Architectures and the model registry.

One factory, :func:`create_model`, builds every network from its registry name (the
timm pattern). Every model takes a one-channel image batch ``(N, 1, H, W)`` of any size
>= 32 px and returns raw logits ``(N, num_classes)``; binary tasks use two logits and a
softmax.

Besides the built-in names (:data:`MODELS`), ids with a family prefix name imported
architectures: ``torchvision:<name>``, ``timm:<name>`` and ``xrv:<name>``
(:mod:`medcnn.models.families`; an RGB stem reads the grey tensor repeated to 3 channels).

Activations are never in-place in the returned models: attribution methods that hook
activation modules (Guided Backprop, DeepLift) and layer hooks (Grad-CAM) need the
layer output left untouched by later operations.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

__all__ = [
    "MODELS",
    "architecture_ids",
    "find_target_layer",
    "SimpleCNN",
    "SmallResNet",
    "create_model",
    "default_target_layer",
]


# --------------------------------------------------------------------------- custom nets
class SimpleCNN(nn.Module):
    """Textbook baseline: conv -> pool -> conv -> pool -> conv -> dense -> dense.

    BatchNorm after each convolution and a global average pool before the dense layers,
    so it trains from scratch and works at any input size.

    Shapes: ``(N, in_chans, H, W) -> (N, num_classes)``.
    """

    def __init__(self, num_classes: int = 2, in_chans: int = 1, width: int = 32, hidden: int = 128):
        super().__init__()
        w = width
        self.block1 = _conv_bn_relu(in_chans, w, stride=1)  # conv
        self.pool1 = nn.MaxPool2d(2)  # pool
        self.block2 = _conv_bn_relu(w, 2 * w, stride=1)  # conv
        self.pool2 = nn.MaxPool2d(2)  # pool
        self.block3 = _conv_bn_relu(2 * w, 4 * w, stride=1)  # conv  (Grad-CAM layer)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(4 * w, hidden)  # dense
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(hidden, num_classes)  # dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.pool(self.block3(x)).flatten(1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class _BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016, Fig. 2 left), non-in-place ReLUs."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        # zero-init the last BN of the residual branch: each block starts as identity,
        # which helps training from scratch (Goyal et al. 2017, sec. 5.1).
        nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """Small ResNet for training from scratch on a few hundred images on a CPU.

    Stem: 3x3 conv stride 2 + 3x3 conv, then four stages of basic blocks with widths
    ``widths`` at strides 2, 2, 2, 2 (total stride 32, like ResNet-18, but with 1/2 the
    channels in each stage and ~1/6 of the multiply-adds). Global average pool, dropout,
    linear classifier. About 2.8 M parameters with the defaults.

    Shapes: ``(N, in_chans, H, W) -> (N, num_classes)``; H, W >= 32.
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_chans: int = 1,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        dropout: float = 0.2,
    ):
        super().__init__()
        stem_w = widths[0]
        self.stem = nn.Sequential(
            _conv_bn_relu(in_chans, stem_w // 2, stride=2),
            _conv_bn_relu(stem_w // 2, stem_w, stride=1),
        )
        cin = stem_w
        for i, (w, d) in enumerate(zip(widths, depths), start=1):
            blocks = [_BasicBlock(cin if j == 0 else w, w, stride=2 if j == 0 else 1) for j in range(d)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            cin = w
        self.n_stages = len(widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.dropout(self.pool(x).flatten(1)))


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


# --------------------------------------------------------------------------- torchvision
class _DenseNet(torchvision.models.DenseNet):
    """torchvision DenseNet whose final ReLU is a module (``features.relu5``).

    torchvision applies ``F.relu(features, inplace=True)`` after ``features.norm5`` in
    ``forward``; that in-place op rewrites the tensor a hook on ``features.norm5`` saw,
    and it is invisible to module hooks. Here the ReLU is the module ``features.relu5``
    (no parameters, so the ``state_dict`` is identical to torchvision's) and the layer
    used for Grad-CAM is its output: the rectified last feature map that the classifier
    pools, as in Selvaraju et al. 2017 (sec. 3).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.features.add_module("relu5", nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        out = F.adaptive_avg_pool2d(out, (1, 1)).flatten(1)
        return self.classifier(out)


def _densenet121(num_classes: int) -> nn.Module:
    # same configuration as torchvision.models.densenet121
    return _DenseNet(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64,
                     num_classes=num_classes)


def _torchvision(builder: Callable[..., nn.Module]) -> Callable[[int, int], nn.Module]:
    def factory(num_classes: int = 2, in_chans: int = 1) -> nn.Module:
        if builder is _densenet121:
            model = builder(num_classes)
        else:
            model = builder(weights=None, num_classes=num_classes)
        _adapt_first_conv(model, in_chans)
        _no_inplace(model)
        return model

    factory.__doc__ = f"torchvision ``{getattr(builder, '__name__', builder)}`` (no pretrained weights), one-channel stem."
    return factory


def _adapt_first_conv(model: nn.Module, in_chans: int) -> None:
    """Replace the first 3-channel convolution by an ``in_chans`` one (fresh init)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            if in_chans == 3:
                return
            new = nn.Conv2d(
                in_chans, module.out_channels, module.kernel_size, module.stride,
                module.padding, module.dilation, module.groups, module.bias is not None,
            )
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
            return
    raise RuntimeError(f"no 3-channel input convolution found in {type(model).__name__}")


def _no_inplace(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "inplace") and not isinstance(m, nn.Dropout):
            m.inplace = False


def _simplecnn(num_classes: int = 2, in_chans: int = 1) -> nn.Module:
    return SimpleCNN(num_classes=num_classes, in_chans=in_chans)


def _smallresnet(num_classes: int = 2, in_chans: int = 1) -> nn.Module:
    return SmallResNet(num_classes=num_classes, in_chans=in_chans)


def _tinyresnet(num_classes: int = 2, in_chans: int = 1) -> nn.Module:
    return SmallResNet(num_classes=num_classes, in_chans=in_chans, depths=(1, 1, 1, 1))


#: name -> factory(num_classes, in_chans) -> nn.Module
MODELS: dict[str, Callable[..., nn.Module]] = {
    "simplecnn": _simplecnn,
    "smallresnet": _smallresnet,
    "tinyresnet": _tinyresnet,
    "resnet18": _torchvision(torchvision.models.resnet18),
    "resnet34": _torchvision(torchvision.models.resnet34),
    "densenet121": _torchvision(_densenet121),
    "efficientnet_b0": _torchvision(torchvision.models.efficientnet_b0),
    "mobilenet_v3_small": _torchvision(torchvision.models.mobilenet_v3_small),
}

# Grad-CAM layer per architecture (dotted names, resolved with ``get_submodule``): the
# last spatial feature map before global pooling, after its activation.
_TARGET_LAYERS: dict[str, str] = {
    "simplecnn": "block3",
    "smallresnet": "layer4",
    "tinyresnet": "layer4",
    "resnet18": "layer4",
    "resnet34": "layer4",
    "densenet121": "features.relu5",  # see _DenseNet
    "efficientnet_b0": "features",  # features.8: 1x1 conv + BN + SiLU, 1280 channels
    "mobilenet_v3_small": "features",  # features.12: 1x1 conv + BN + Hardswish, 576 channels
}


def architecture_ids() -> list[str]:
    """Every valid architecture id: the built-in names, then the family ids (in words for timm)."""
    from medcnn.models.families import family_ids

    return sorted(MODELS) + family_ids()


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(architecture_ids())}")


def create_model(name: str, num_classes: int = 2, in_chans: int = 1, *, stem_chans: int | None = None,
                 input_affine: tuple[list[float], list[float]] | None = None) -> nn.Module:
    """Build a registered architecture with random weights.

    Args:
        name: Registry name, one of ``MODELS``, or a family id (``torchvision:resnet50``,
            ``timm:convnext_tiny``, ``xrv:densenet121-res224``: :mod:`medcnn.models.families`).
        num_classes: Number of output logits.
        in_chans: Input channels (1 for radiographs and CT slices).
        stem_chans: Family ids: the stem's channels, 1 or 3 (default 3); the model still takes
            the one-channel tensor. Built-in names: must be ``None`` or ``in_chans``.
        input_affine: Family ids with an RGB stem: ``(scale, shift)`` per stem channel, the
            pixel contract's :meth:`~medcnn.preprocess.Normalize.channel_affine`.

    Returns:
        The model, in training mode, on the CPU. ``(N, in_chans, H, W) -> (N, num_classes)``.

    Raises:
        ValueError: unknown name (the message lists the valid names), or bad sizes.
    """
    if ":" in name:
        from medcnn.models.families import build

        if int(in_chans) != 1:
            raise ValueError(f"{name}: imported architectures take the one-channel tensor (in_chans=1), "
                             f"got {in_chans}")
        return build(name, num_classes, 3 if stem_chans is None else int(stem_chans), input_affine)
    _check_name(name)
    if stem_chans not in (None, in_chans) or input_affine is not None:
        raise ValueError(f"{name!r} is built for its input channels: stem_chans and input_affine are for "
                         f"imported (family:name) architectures")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2 (binary tasks use 2 logits), got {num_classes}")
    if int(in_chans) < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    return MODELS[name](num_classes=int(num_classes), in_chans=int(in_chans))


def default_target_layer(name: str) -> str:
    """Dotted name of the Grad-CAM layer of architecture ``name``.

    The layer is the last spatial feature map (after its activation) before global
    pooling; it works with ``captum.attr.LayerGradCam(model, model.get_submodule(name))``.

    Raises:
        ValueError: unknown architecture, or a family id (its layer is found per model:
            :func:`find_target_layer`).
    """
    if ":" in name:
        raise ValueError(f"{name}: the Grad-CAM layer of an imported architecture is found on the built model "
                         f"(find_target_layer(model, input_size)) and stored in its card")
    _check_name(name)
    return _TARGET_LAYERS[name]


def find_target_layer(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> str:
    """The last module with a spatial 4-D output before global pooling, found with forward hooks on
    a dummy one-channel input: :func:`medcnn.models.families.find_target_layer`."""
    from medcnn.models.families import find_target_layer as find

    return find(model, input_size)
