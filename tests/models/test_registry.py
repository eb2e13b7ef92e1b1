"""Tests of medcnn.models: registry, forward passes, Grad-CAM layers, checkpoints."""
from __future__ import annotations

import pytest
import torch

from medcnn.models.card import CardError, ModelCard
from medcnn.models import (
    MODELS,
    create_model,
    default_target_layer,
    get_device,
    load_model,
    save_checkpoint,
)

SMALL = ("simplecnn", "tinyresnet", "smallresnet")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape_finite(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SMALL)
def test_forward_card_size(name):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 224, 224))
    assert out.shape == (2, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_channel_stem_and_no_inplace_activations(name):
    model = create_model(name)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1
    inplace = [type(m).__name__ for m in model.modules()
               if getattr(m, "inplace", False) and not isinstance(m, torch.nn.Dropout)]
    assert inplace == []


@pytest.mark.parametrize("name", sorted(MODELS))
def test_target_layer_is_last_feature_map(name):
    """The Grad-CAM layer exists, and its output is the map the classifier pools."""
    model = create_model(name).eval()
    layer = model.get_submodule(default_target_layer(name))
    seen = {}
    h = layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    x = torch.randn(1, 1, 64, 64, requires_grad=True)
    try:
        logits = model(x)
    finally:
        h.remove()
    fmap = seen["out"]
    assert fmap.ndim == 4 and fmap.shape[0] == 1
    (grad,) = torch.autograd.grad(logits[0, 1], fmap)
    assert grad.abs().sum() > 0  # the logit depends on this map


def _hooked_output_changes(model: torch.nn.Module, layer: str) -> bool:
    """True when a later operation rewrites, in place, the output a hook on ``layer`` saw."""
    seen = {}

    def hook(module, inputs, output):
        seen["out"], seen["copy"] = output, output.detach().clone()

    h = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(torch.randn(2, 1, 64, 64))
    finally:
        h.remove()
    return not torch.equal(seen["out"], seen["copy"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradcam_layer_output_is_not_modified_in_place_later(name):
    """Grad-CAM reads the target layer's output from a hook: nothing after it may rewrite it.

    torchvision's DenseNet applies ``F.relu(features, inplace=True)`` after ``features.norm5``;
    a hook there would see the pre-ReLU map and then find it changed (see ``_DenseNet``).
    """
    torch.manual_seed(0)
    model = create_model(name).eval()
    assert not _hooked_output_changes(model, default_target_layer(name))


def test_the_in_place_check_detects_torchvisions_densenet_relu():
    import torchvision

    torch.manual_seed(0)
    stock = torchvision.models.densenet121(weights=None)  # F.relu(norm5 output, inplace=True)
    stock.features.conv0 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    assert _hooked_output_changes(stock.eval(), "features.norm5")


def test_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="resnet18") as e:
        create_model("resnet19")
    assert "smallresnet" in str(e.value)
    with pytest.raises(ValueError, match="valid names"):
        default_target_layer("nope")


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        create_model("simplecnn", num_classes=1)


def test_get_device(monkeypatch):
    monkeypatch.setenv("MEDCNN_DEVICE", "cpu")
    assert get_device().type == "cpu"
    monkeypatch.delenv("MEDCNN_DEVICE")
    assert get_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="invalid device"):
        get_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")


def _card(arch="simplecnn", labels=("NORMAL", "PNEUMONIA")):
    return ModelCard(name="x", architecture=arch, modality="CXR", labels=list(labels),
                     positive_label=labels[-1], input_size=(64, 64), preprocessing={"steps": []},
                     target_layer=default_target_layer(arch))


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = create_model("tinyresnet").eval()
    path = save_checkpoint(model, _card("tinyresnet"), tmp_path / "weights" / "demo.pt")
    assert path == tmp_path / "weights" / "demo.json"
    assert (tmp_path / "weights" / "demo.pt").is_file()
    loaded, card = load_model(path, device="cpu")
    assert card.name == "demo" and not loaded.training
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # the .pt path is accepted too, and is a plain state_dict
    state = torch.load(tmp_path / "weights" / "demo.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    load_model(tmp_path / "weights" / "demo.pt", device="cpu")


def test_load_mismatched_weights(tmp_path):
    save_checkpoint(create_model("simplecnn"), _card("simplecnn"), tmp_path / "a.pt")
    card = ModelCard.load(tmp_path / "a.json")
    card.architecture = "tinyresnet"
    card.target_layer = "layer4"
    card.save(tmp_path / "a.json")
    with pytest.raises(CardError, match="do not match architecture 'tinyresnet'"):
        load_model(tmp_path / "a.json")


def test_load_missing_weights(tmp_path):
    _card().save(tmp_path / "b.json")
    with pytest.raises(CardError, match="weights not found"):
        load_model(tmp_path / "b.json")
