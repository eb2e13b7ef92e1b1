"""Bring your own model: import checks, the card's pixel contract, serving and explaining an import.

A torchvision ResNet-18 with seeded random weights, saved as safetensors, imported at 64 px.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from medcnn.cli.import_model import check_explanations
from medcnn.explain import METHODS, explain
from medcnn.inference import Predictor
from medcnn.io import read_image
from medcnn.models.card import ModelCard
from medcnn.models.checkpoint import WeightsIntegrityError, file_sha256, load_model
from medcnn.models.importer import (ConstantOutputError, LabelCountError, PickledModelError, WeightsMismatchError,
                                    import_model)
from medcnn.models.registry import create_model
from medcnn.preprocess import Pipeline, default_config
from medcnn.preprocess.steps import ImageNetNormalize, UnitNormalize, XRVNormalize

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LABELS = ["NORMAL", "PNEUMONIA"]


def _resnet18(num_classes: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None, num_classes=num_classes).eval()


def png(tmp_path, size=96, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = (120 + 80 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 8, (size, size))).clip(0, 255)
    path = tmp_path / f"img{seed}.png"
    Image.fromarray(img.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("src")
    model = _resnet18()
    save_file(model.state_dict(), str(folder / "rn18.safetensors"))
    return folder / "rn18.safetensors", model


@pytest.fixture(scope="module")
def imported(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("weights") / "byo.json"
    torch.set_num_threads(1)
    return import_model("torchvision:resnet18", source[0], LABELS, out, input_size=64,
                        check_explanations=check_explanations)


# ----------------------------------------------------------------------------- the written card
def test_import_writes_safetensors_and_card_with_contract_provenance_unknown(imported, source):
    card = ModelCard.load(imported.path)
    assert card.weights_path == imported.path.with_name("byo.safetensors") and card.weights_path.is_file()
    assert card.weights_sha256 == file_sha256(card.weights_path)
    assert card.provenance["sha256"] == file_sha256(source[0])
    assert card.provenance["source"] == "rn18.safetensors" and card.provenance["licence"] == "not declared"
    assert card.provenance["format"] == "safetensors"
    assert card.pixel_contract == {"input_size": [64, 64], "channels": 3, "normalize": "normalize_imagenet"}
    assert card.architecture == "torchvision:resnet18" and card.target_layer == "layer4"
    assert "no test metrics until evaluate has run on labelled images" in card.unknown
    assert {"gradcam", "integrated_gradients"} <= set(card.explanations["passed"])
    assert set(card.explanations["passed"]) | set(card.explanations["failed"]) == set(METHODS)
    raw = json.loads(imported.path.read_text())
    assert raw["weights_file"] == "byo.safetensors" and raw["channels"] == 3


def test_shipped_cards_write_none_of_the_new_fields():
    for name in ("cxr_findings", "ct_covid"):
        card = ModelCard.load(f"weights/{name}.json")
        assert card.to_dict() == json.loads(card.path.read_text())
        assert card.weights_path == card.path.with_suffix(".pt") and card.channels == 1


# ----------------------------------------------------------------------------- serving
def test_predictor_gives_the_source_models_logits_under_the_imagenet_contract(imported, source, tmp_path):
    pred = Predictor(imported.path, device="cpu")
    p = pred.predict(read_image(png(tmp_path)))
    display = p.pipeline_result.display  # [0, 1] grey, 64 x 64
    mean, std = torch.tensor(ImageNetNormalize.MEAN), torch.tensor(ImageNetNormalize.STD)
    rgb = (torch.from_numpy(display)[None].repeat(3, 1, 1) - mean[:, None, None]) / std[:, None, None]
    with torch.no_grad():
        expected = source[1](rgb[None])[0]
    assert np.allclose(p.logits, expected.numpy(), atol=1e-4)
    assert set(p.probabilities) == set(LABELS) and abs(sum(p.probabilities.values()) - 1) < 1e-6
    assert [s.name for s in p.pipeline_result.steps][-1] == "normalize_imagenet"
    assert p.pipeline_result.steps[-1].params["channels"] == 3


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_explains_the_imported_model(imported, tmp_path, method):
    pred = Predictor(imported.path, device="cpu")
    p = pred.predict(read_image(png(tmp_path, seed=3)))
    e = explain(pred.model, p.pipeline_result.tensor, "PNEUMONIA", method, layer=imported.target_layer,
                head=imported.head_rule, pipeline=pred.pipeline)
    assert e.heatmap.shape == (64, 64) and np.isfinite(e.heatmap).all()
    assert 0.0 <= e.heatmap.min() and e.heatmap.max() <= 1.0
    if method == "integrated_gradients":
        assert e.params["rel_delta"] <= 0.05


def test_a_changed_weights_file_is_refused(imported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(imported.path.parent, folder)
    state = load_model(folder / "byo.json", device="cpu")[0].state_dict()
    state["fc.bias"] = state["fc.bias"] + 1.0
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "byo.safetensors"))
    with pytest.raises(WeightsIntegrityError, match="SHA-256"):
        load_model(folder / "byo.json", device="cpu")


# ----------------------------------------------------------------------------- refused imports
def _refused(tmp_path, exc, match, weights, labels=LABELS, **kw):
    out = tmp_path / "out" / "bad.json"
    with pytest.raises(exc, match=match):
        import_model(kw.pop("arch", "torchvision:resnet18"), weights, labels, out, input_size=64, **kw)
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing written


def test_wrong_shapes_are_refused_naming_the_keys(source, tmp_path):
    _refused(tmp_path, WeightsMismatchError, r"shape mismatch.*conv1\.weight \[64, 3, 7, 7\]", source[0], channels=1,
             normalize="unit")
    _refused(tmp_path, WeightsMismatchError, r"missing key.*layer1\.2", source[0], arch="torchvision:resnet34")


def test_a_wrong_label_count_is_refused(source, tmp_path):
    _refused(tmp_path, LabelCountError, "2 output.*3 labels", source[0], labels=["A", "B", "C"])


def test_a_constant_output_model_is_refused(tmp_path):
    model = _resnet18()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.3, -0.2]))
    save_file(model.state_dict(), str(tmp_path / "const.safetensors"))
    _refused(tmp_path, ConstantOutputError, "same outputs", tmp_path / "const.safetensors")


def test_unknown_architecture_lists_valid_ids(source, tmp_path):
    _refused(tmp_path, ValueError, "torchvision:resnet18", source[0], arch="torchvision:resnet_nope")


def test_pickled_model_refused_without_the_flag_and_converted_with_it(tmp_path):
    torch.save(_resnet18(seed=1), tmp_path / "whole.pt")
    _refused(tmp_path, PickledModelError, "--allow-pickle", tmp_path / "whole.pt")
    with pytest.warns(UserWarning, match="unpickling whole.pt"):
        card = import_model("torchvision:resnet18", tmp_path / "whole.pt", LABELS, tmp_path / "w" / "pk.json",
                            input_size=64, allow_pickle=True)
    assert card.weights_path.suffix == ".safetensors" and card.provenance["format"] == "pickled model"
    model = load_model(card.path, device="cpu")[0]
    assert torch.equal(model.state_dict()["fc.weight"], _resnet18(seed=1).state_dict()["fc.weight"])


def test_a_plain_state_dict_pt_is_accepted(tmp_path):
    torch.save(_resnet18(seed=2).state_dict(), tmp_path / "sd.pt")
    card = import_model("torchvision:resnet18", tmp_path / "sd.pt", LABELS, tmp_path / "w" / "sd.json", input_size=64)
    assert card.provenance["format"] == "state_dict" and card.weights_path.is_file()


# ----------------------------------------------------------------------------- pixel contracts
def test_pixel_contract_steps():
    x = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    assert np.array_equal(UnitNormalize()(x), x)
    assert np.allclose(XRVNormalize()(x), (2 * x - 1) * 1024)
    scale, shift = ImageNetNormalize().channel_affine(3)
    assert np.allclose(scale, [1 / 0.229, 1 / 0.224, 1 / 0.225]) and np.allclose(shift, [-0.485 / 0.229, -0.456 / 0.224,
                                                                                      -0.406 / 0.225])
    with pytest.raises(ValueError, match="needs 3 input channels"):
        ImageNetNormalize().channel_affine(1)


def test_rgb_stem_adapter_keeps_source_names_and_keys():
    model = create_model("torchvision:resnet18", 2, stem_chans=3)
    assert list(model.state_dict()) == list(torchvision.models.resnet18(num_classes=2).state_dict())
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 2)


# ----------------------------------------------------------------------------- optional families
def test_timm_model_imports_and_serves(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is an optional extra (requirements-models.txt)")
    torch.manual_seed(0)
    src = timm.create_model("resnet18", pretrained=False, num_classes=2).eval()
    for m in src.modules():  # timm zero-initialises each block's last BN scale: outputs barely move with
        if isinstance(m, torch.nn.BatchNorm2d):  # the image, too little for an IG completeness check
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    save_file(src.state_dict(), str(tmp_path / "t.safetensors"))
    card = import_model("timm:resnet18", tmp_path / "t.safetensors", LABELS, tmp_path / "w" / "t.json", input_size=64,
                        check_explanations=check_explanations)
    assert card.target_layer == "layer4" and "gradcam" in card.explanations["passed"]
    p = Predictor(card.path, device="cpu").predict(read_image(png(tmp_path)))
    rgb = (torch.from_numpy(p.pipeline_result.display)[None].repeat(3, 1, 1)
           - torch.tensor(ImageNetNormalize.MEAN)[:, None, None]) / torch.tensor(ImageNetNormalize.STD)[:, None, None]
    with torch.no_grad():
        assert np.allclose(p.logits, src(rgb[None])[0].numpy(), atol=1e-4)


def test_xrv_densenet_contract_and_operating_points(tmp_path):
    xrv = pytest.importorskip("torchxrayvision", reason="torchxrayvision is an optional extra "
                                                        "(requirements-models.txt)")
    torch.manual_seed(0)
    src = xrv.models.DenseNet(weights=None, num_classes=3).eval()
    ops = torch.tensor([0.3, float("nan"), 0.6])
    src.register_buffer("op_threshs", ops)  # as xrv's pretrained weights carry them
    torch.save(src.state_dict(), tmp_path / "x.pt")
    card = import_model("xrv:densenet121-res224", tmp_path / "x.pt", ["Effusion", "Hernia", "Mass"],
                        tmp_path / "w" / "x.json", input_size=64, check_explanations=check_explanations)
    assert card.head == "sigmoid" and card.pixel_contract["normalize"] == "normalize_xrv" and card.channels == 1
    assert card.findings["Effusion"]["threshold"] == pytest.approx(0.3)
    assert card.findings["Mass"]["threshold"] == pytest.approx(0.6)
    assert card.findings["Hernia"]["shown"] is False  # no operating point (NaN) in the source
    # pixel contract: our pipeline's tensor equals TorchXRayVision's normalize() of the same 8-bit image
    img8 = np.asarray(Image.open(png(tmp_path, size=64)), dtype=np.float32)
    res = Pipeline.from_config(card.preprocessing)(read_image(png(tmp_path, size=64)))
    assert np.allclose(res.tensor[0, 0].numpy(), xrv.datasets.normalize(img8, 255), atol=1e-3)
    # served logits are the source network's (its op_threshs scaling is the card's head instead)
    src.op_threshs = None
    p = Predictor(card.path, device="cpu").predict(read_image(png(tmp_path, size=64)))
    with torch.no_grad():
        assert np.allclose(p.logits, src(res.tensor)[0].numpy(), atol=1e-3)
    assert [f["name"] for f in p.findings] and "Hernia" not in [f["name"] for f in p.findings]


def test_xrv_pipeline_crops_to_the_centre_square_like_xrv():
    cfg_steps = [s["name"] for s in default_config("CXR", 64)["steps"]]
    assert cfg_steps[-1] == "normalize"  # the shipped default is unchanged
    pytest.importorskip("torchxrayvision", reason="torchxrayvision is an optional extra")
    from medcnn.models.importer import _contract  # noqa: PLC2701 - the importer's own helper

    config = _contract("xrv:densenet121-res224", "CXR", None, None, None)[3]
    crop = next(s for s in config["steps"] if s["name"] == "crop_or_pad")
    assert crop["mode"] == "crop" and config["steps"][-1]["name"] == "normalize_xrv"
    assert next(s for s in config["steps"] if s["name"] == "resize")["size"] == [224, 224]

