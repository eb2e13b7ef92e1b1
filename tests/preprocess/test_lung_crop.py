"""The ``lung_crop`` step and the one CT input contract for scanner DICOM and 8-bit lung crops.

Synthetic slices in lung-window display values first (exact boxes), then the real files of
../shared/data/ct_hu (RLE re-encoded and JPEG-lossless full-size originals, in HU) and an 8-bit
PNG of ``sarscov2_ct``: every kind must reach the network through the same steps, in the
training range, with the lungs filling the frame alike.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from medcnn.io import ImageMeta, read_image
from medcnn.preprocess import STEPS, LungCrop, Pipeline, default_config

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
LUNG, TISSUE, CONSOLIDATION = 0.33, 0.9, 0.85
META = ImageMeta(source_format="png", rows=1, columns=1)
CT_STEPS = ["window", "orient", "invert", "body_crop", "lung_crop", "crop_or_pad", "resize", "normalize"]


def _body(size: int = 300, lungs: tuple[bool, bool] = (True, True), lung_height: float = 0.7) -> np.ndarray:
    """A body ellipse (black outside, as after ``body_crop``) with the chosen lungs dark inside."""
    x = np.zeros((size, size), np.float32)
    centre, axes = (size // 2, size // 2), (int(size * 0.45), int(size * 0.3))
    cv2.ellipse(x, centre, axes, 0, 0, 360, TISSUE, -1)
    for present, dx in zip(lungs, (-1, 1)):
        cv2.ellipse(x, (centre[0] + dx * axes[0] // 2, centre[1]), (axes[0] // 3, int(axes[1] * lung_height)),
                    0, 0, 360, LUNG if present else CONSOLIDATION, -1)
    return x


def test_lung_crop_is_registered_and_rebuilds_from_its_config():
    step = LungCrop(margin=0.1, max_aspect=1.5)
    assert STEPS["lung_crop"] is LungCrop
    assert STEPS["lung_crop"](**step.config()).config() == step.config()


def test_crop_is_the_lung_box_plus_margin():
    x = _body()
    step = LungCrop(margin=0.05, max_aspect=3.0)  # this phantom's box is wide: no height growth
    out, params = step(x, META), step.apply(x, META)[1]
    lungs = np.argwhere(np.isclose(x, LUNG))
    (top, left), (bottom, right) = lungs.min(0), lungs.max(0) + 1
    h, w = bottom - top, right - left
    assert params["to"] == list(out.shape)
    assert out.shape[0] == h + 2 * round(0.05 * h)
    assert out.shape[1] == pytest.approx(w + 2 * round(0.05 * w), abs=1)  # made symmetric: +-1 px rounding
    assert params["offset"][0] == -(top - round(0.05 * h))
    assert params["offset"][1] == pytest.approx(-(left - round(0.05 * w)), abs=1)
    assert 0.3 < params["lung_fraction"] < 0.6 and "note" not in params
    assert out.base is not None or out is not x  # a view or a copy, never the input modified
    assert np.array_equal(x, _body())


def test_an_opaque_lung_does_not_cut_the_patient_in_half():
    """A lung that is all consolidation is not dark: the box is mirrored about the body's midline."""
    both = LungCrop().apply(_body(), META)[1]
    one = LungCrop().apply(_body(lungs=(True, False)), META)[1]
    assert one["to"][1] == pytest.approx(both["to"][1], abs=3)
    assert one["offset"][1] == pytest.approx(both["offset"][1], abs=2)


def test_a_slice_through_the_lung_bases_is_not_stretched_into_a_strip():
    flat = LungCrop(max_aspect=1.75).apply(_body(lung_height=0.15), META)[1]
    h, w = flat["to"]
    assert w / h == pytest.approx(1.75, abs=0.03)


def test_no_lungs_returns_the_input_unchanged_with_the_reason():
    x = _body(lungs=(False, False))
    out, params = LungCrop().apply(x, META)
    assert out is x and params["to"] == params["from"] == [300, 300] and params["offset"] == [0, 0]
    assert "no aerated lung" in params["note"]
    blank = np.zeros((64, 64), np.float32)
    out, params = LungCrop().apply(blank, META)
    assert out is blank and params["note"].startswith("no body found")


@pytest.mark.parametrize("bad", [{"margin": -0.1}, {"margin": 1.0}, {"min_lung": 0}, {"kernel": 0.6},
                                 {"max_aspect": 0.5}])
def test_bad_settings_are_refused_with_the_accepted_range(bad):
    with pytest.raises(ValueError, match="lung_crop"):
        LungCrop(**bad)


# ------------------------------------------------------------------------------ real files
def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: the CT contract is checked on ../shared/data (present in CI)")
    return path


def _png_of(path: Path, tmp_path: Path) -> Path:
    """The 8-bit slice as a PNG file (the training set's native format before its authors' JPEG)."""
    out = tmp_path / (path.stem + ".png")
    cv2.imwrite(str(out), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    return out


@pytest.mark.parametrize("kind", ["rle", "jpeg_lossless_original", "png"])
def test_every_ct_source_reaches_the_network_through_the_same_steps(kind, tmp_path):
    files = {
        "rle": DATA / "ct_hu" / "covid_ct_md" / "P001_s082.dcm",
        "jpeg_lossless_original": DATA / "ct_hu" / "original_dicom" / "P001_s081_98C14734-ASSH_113.dcm",
        "png": DATA / "sarscov2_ct" / "train" / "COVID" / "covid_0002.jpg",
    }
    path = _need(files[kind])
    if kind == "png":
        path = _png_of(path, tmp_path)
    image = read_image(str(path))
    result = Pipeline.from_config(default_config("CT", 128))(image)
    assert [s.name for s in result.steps] == CT_STEPS
    assert result.tensor.shape == (1, 1, 128, 128)
    assert -2.0 - 1e-5 <= float(result.tensor.min()) and float(result.tensor.max()) <= 2.0 + 1e-5  # (x - 0.5) / 0.25
    crop = next(s for s in result.steps if s.name == "lung_crop")
    assert "note" not in crop.params, crop.params
    # the lungs fill the frame alike whatever the source (training crops: 25-56% of the body)
    assert 0.15 < crop.params["lung_fraction"] < 0.7
    h, w = crop.params["to"]
    assert 1.0 <= w / h <= 1.76
    if kind != "png":
        assert image.meta.is_hounsfield
        # top-left corner: air outside the patient, about -1000 HU (exactly -1024 where clamped)
        assert -1030 <= float(image.pixels[0, 0]) <= -950
        window = result.window
        assert (window.get("center"), window.get("width")) == (-600.0, 1500.0)


def test_rle_copy_and_full_size_original_give_the_same_lung_scale():
    """The 256-px RLE re-encoding and a 512-px JPEG-lossless original of one patient reach the
    network with the lungs at the same size: the crop follows anatomy, not the pixel grid."""
    rle = _need(DATA / "ct_hu" / "covid_ct_md" / "P001_s082.dcm")
    orig = _need(DATA / "ct_hu" / "original_dicom" / "P001_s081_98C14734-ASSH_113.dcm")
    pipe = Pipeline.from_config(default_config("CT", 128))
    crops = [next(s for s in pipe(read_image(str(p))).steps if s.name == "lung_crop").params for p in (rle, orig)]
    assert crops[1]["from"][1] > 1.6 * crops[0]["from"][1]  # the original has twice the pixels
    aspect = [c["to"][1] / c["to"][0] for c in crops]
    assert aspect[0] == pytest.approx(aspect[1], abs=0.15)
    assert crops[0]["lung_fraction"] == pytest.approx(crops[1]["lung_fraction"], abs=0.1)
