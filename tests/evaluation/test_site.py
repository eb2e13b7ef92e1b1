"""Per-site recalibration (medcnn.evaluation.site) on synthetic logits, and the CLI on a tiny model."""
from __future__ import annotations

import argparse
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from medcnn.evaluation import expected_calibration_error, fit_temperature, softmax_t, youden_threshold
from medcnn.evaluation.site import InsufficientSiteDataError, RecalibrationError, recalibrate, summary_rows
from medcnn.evaluation.site_card import file_sha256, recalibrated_card, write_recalibrated
from medcnn.models.card import ModelCard

LABELS = ["NORMAL", "PNEUMONIA"]
SCALE, SHIFT = 0.5, 2.0  # the site's logit difference = SCALE * original + SHIFT


def make_card(temperature: float = 1.0, threshold: float = 0.5, **kw) -> ModelCard:
    return ModelCard(name="cxr_test", architecture="simplecnn", modality="CXR", labels=LABELS,
                     positive_label="PNEUMONIA", input_size=(64, 64), preprocessing={}, target_layer="block3",
                     temperature=temperature, threshold=threshold, **kw)


def fixed_model_logits(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) logits of a fixed model: logit difference ~ N(+-2, 1) by class, equal priors."""
    y = rng.integers(0, 2, n)
    diff = rng.normal(np.where(y == 1, 2.0, -2.0), 1.0)
    return np.stack([np.zeros(n), diff], axis=1), y


def boundary(temperature: float, threshold: float) -> float:
    """Logit difference at which P(positive) = threshold: the decision boundary in logit space."""
    return temperature * math.log(threshold / (1 - threshold))


def shipped_card(rng: np.random.Generator) -> ModelCard:
    """The card as shipped: temperature and Youden threshold fitted on the original site's val rows."""
    z, y = fixed_model_logits(400, rng)
    temperature = fit_temperature(z, y)
    return make_card(temperature, youden_threshold(y, softmax_t(z, temperature)[:, 1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recalibration_follows_a_shifted_site_and_lowers_held_out_ece(seed):
    rng = np.random.default_rng(seed)
    card = shipped_card(rng)
    z, y = fixed_model_logits(800, rng)
    z = SCALE * z + np.array([0.7, 0.7 + SHIFT])  # a common constant changes nothing; SHIFT does
    fit, held = slice(0, 400), slice(400, None)

    fields, report = recalibrate(card, z[fit], y[fit], n_boot=0)

    old = boundary(card.temperature, card.threshold)
    optimum = SCALE * old + SHIFT  # where the old boundary lands on the site's scores
    new = boundary(fields["temperature"], fields["threshold"])
    assert abs(new - optimum) < 0.25 * abs(old - optimum), (old, new, optimum)
    ece_before = expected_calibration_error(y[held], softmax_t(z[held], card.temperature)[:, 1])
    ece_after = expected_calibration_error(y[held], softmax_t(z[held], fields["temperature"])[:, 1])
    assert ece_after < ece_before - 0.03, (ece_before, ece_after)
    # the report tells the same story in-sample, and the refit recovers the lost specificity
    assert report["before"]["specificity"] < 0.2 < 0.9 < report["after"]["specificity"]
    assert report["after"]["ece"] < report["before"]["ece"]
    assert report["before"]["auc"] == pytest.approx(report["after"]["auc"])  # same ranking
    assert report["cross_validated"]["specificity"] > 0.85


def test_report_rows_cis_and_cluster_bootstrap():
    rng = np.random.default_rng(3)
    z, y = fixed_model_logits(120, rng)
    groups = np.repeat([f"p{i}" for i in range(60)], 2)
    fields, report = recalibrate(make_card(), z, y, groups=groups, min_per_class=20, n_boot=50)
    assert report["bootstrap"] == "groups" and report["n_groups"] == 60 and report["n_images"] == 120
    assert report["counts"] == {"NORMAL": int((y == 0).sum()), "PNEUMONIA": int((y == 1).sum())}
    for side in ("before", "after"):
        lo, hi = report[side]["sensitivity_ci"]
        assert lo <= report[side]["sensitivity"] <= hi
    assert report["cross_validated"]["folds"] == 5
    rows = {r["quantity"]: r for r in summary_rows(report)}
    assert set(rows) >= {"sensitivity", "specificity", "ECE (calibration error)", "temperature", "threshold"}
    assert "[" in rows["sensitivity"]["before"] and "[" in rows["specificity"]["after"]
    site = fields["metrics"]["site"]
    assert site["threshold"] == fields["threshold"] and len(site["scores"]["prob"]) == 120
    json.dumps(report)  # JSON-ready


def test_too_few_images_of_a_class_is_a_clear_error():
    rng = np.random.default_rng(4)
    z, y = fixed_model_logits(60, rng)
    y[:] = 1
    y[:5] = 0
    with pytest.raises(InsufficientSiteDataError) as err:
        recalibrate(make_card(), z, y, min_per_class=20)
    msg = str(err.value)
    assert "at least 20 of each class" in msg and "NORMAL: 5 (15 more needed)" in msg and "PNEUMONIA: 55" in msg
    assert err.value.counts == {"NORMAL": 5, "PNEUMONIA": 55} and isinstance(err.value, ValueError)


@pytest.mark.parametrize("logits, y, match", [
    (np.zeros((4, 3)), [0, 1, 0, 1], r"must be \(N, 2\)"),
    (np.zeros((4, 2)), [0, 1, 0], "4 rows but y has 3"),
    (np.full((4, 2), np.nan), [0, 1, 0, 1], "finite"),
    (np.zeros((4, 2)), [0, 1, 2, 1], "label indices"),
])
def test_malformed_inputs_are_refused(logits, y, match):
    with pytest.raises(RecalibrationError, match=match):
        recalibrate(make_card(), logits, y, min_per_class=1)


def _fitted(seed: int = 5) -> tuple[ModelCard, dict, dict]:
    rng = np.random.default_rng(seed)
    z, y = fixed_model_logits(80, rng)
    card = make_card(training={"dataset": "original data", "date": "2024-01-01", "command": "train ..."},
                     metrics={"test": {"n": 10, "auc": 0.8}})
    fields, report = recalibrate(card, z, y, n_boot=0)
    return card, fields, report


def test_new_card_keeps_provenance_and_records_the_site():
    card, fields, report = _fitted()
    new = recalibrated_card(card, fields, report, "cxr_site_a", weights_sha256="ab" * 32,
                            data_sha256="cd" * 32, command="python -m medcnn recalibrate ...",
                            skipped={"unreadable": 2}, date="2025-02-03T04:05:06+00:00")
    assert (new.name, new.temperature, new.threshold) == ("cxr_site_a", fields["temperature"], fields["threshold"])
    assert (card.temperature, card.threshold) == (1.0, 0.5)  # the original is untouched
    assert new.training["dataset"] == "original data" and new.training["date"] == "2024-01-01"
    origin = new.training["recalibrated_from"]
    assert origin == {"card": "cxr_test", "temperature": 1.0, "threshold": 0.5, "weights_sha256": "ab" * 32}
    site = new.training["recalibration"]["site_data"]
    assert site["sha256"] == "cd" * 32 and site["counts"] == report["counts"] and "source" not in site
    assert "site data SHA-256 cdcdcdcdcdcd" in new.limitations[-1]
    assert site["skipped"] == {"unreadable": 2}
    assert new.training["recalibration"]["date"].startswith("2025-02-03")
    assert new.metrics["original_test"] == {"n": 10, "auc": 0.8} and "site" in new.metrics
    again = recalibrated_card(new, fields, report, "cxr_site_a2", weights_sha256="ab" * 32, data_sha256="ef" * 32,
                              command="c")
    assert again.training["recalibrated_from"]["previous"]["recalibrated_from"]["card"] == "cxr_test"
    with pytest.raises(RecalibrationError, match="new name"):
        recalibrated_card(card, fields, report, "cxr_test", weights_sha256="0", data_sha256="0", command="c")


def test_written_card_points_at_byte_identical_weights_and_gate(tmp_path):
    card, fields, report = _fitted()
    card.ood = {"file": "cxr_test.ood.pt", "sha256": None, "layers": ["block2"]}
    orig = tmp_path / "weights"
    orig.mkdir()
    payload = bytes(range(256)) * 999
    (orig / "cxr_test.pt").write_bytes(payload)
    (orig / "cxr_test.ood.pt").write_bytes(b"gate statistics")
    card.ood["sha256"] = file_sha256(orig / "cxr_test.ood.pt")
    card.save(orig / "cxr_test.json")
    sha = file_sha256(orig / "cxr_test.pt")

    new = recalibrated_card(card, fields, report, "cxr_site", weights_sha256=sha, data_sha256="0", command="c")
    out = write_recalibrated(card, new, tmp_path / "site" / "cxr_site.json")
    assert (tmp_path / "site" / "cxr_site.pt").read_bytes() == payload
    assert (tmp_path / "site" / "cxr_site.ood.pt").read_bytes() == b"gate statistics"
    loaded = ModelCard.load(out)
    assert loaded.weights_path == tmp_path / "site" / "cxr_site.pt"
    assert loaded.training["recalibrated_from"]["weights_sha256"] == sha == file_sha256(loaded.weights_path)
    assert loaded.ood_path.read_bytes() == b"gate statistics" and loaded.ood["sha256"] == card.ood["sha256"]
    assert not list((tmp_path / "site").glob("*.part"))

    with pytest.raises(RecalibrationError, match="already exists"):
        write_recalibrated(card, new, out)
    with pytest.raises(RecalibrationError, match="overwrite the original"):
        other = recalibrated_card(card, fields, report, "cxr_test2", weights_sha256=sha, data_sha256="0", command="c")
        other.name = "cxr_test"
        write_recalibrated(card, other, orig / "cxr_test.json", overwrite=True)
    (orig / "cxr_test.pt").write_bytes(payload + b"changed")
    with pytest.raises(RecalibrationError, match="SHA-256"):
        write_recalibrated(card, new, tmp_path / "site" / "cxr_site.json", overwrite=True)
    assert (tmp_path / "site" / "cxr_site.pt").read_bytes() == payload  # the good copy is kept


# ----------------------------------------------------------------------------- CLI, tiny model
def png(value: int, seed: int, size: int = 48) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.clip(value + 40 * np.sin(xx / 5.0) + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def tiny_model(tmp_path):
    """A seeded simplecnn (64 px) card + weights in tmp_path/weights."""
    import torch

    from medcnn.models import create_model, save_checkpoint
    from medcnn.preprocess import default_config

    torch.manual_seed(0)
    model = create_model("simplecnn", num_classes=2).eval()
    card = make_card(0.9, 0.45, training={"dataset": "tiny synthetic", "date": "2024-05-06"})
    card.preprocessing, card.dicom_modalities = default_config("CXR", 64), ["CR", "DX"]
    return save_checkpoint(model, card, tmp_path / "weights" / "cxr_test.pt")


def site_csv(root: Path, n_per_class: int) -> Path:
    """``site/labels.csv``: PNGs named after (fake) patients, two images per patient, one unreadable file."""
    lines = ["path,label,patient_id"]
    for i in range(2 * n_per_class):
        label = LABELS[i % 2]
        name = f"img/SMITH_JOHN_{i:03d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png(90 + 60 * (i % 2), seed=i))
        lines.append(f"{name},{label},P{i // 4:03d}")
    (root / "img" / "SMITH_JANE_broken.png").write_bytes(b"not an image at all")
    lines.append("img/SMITH_JANE_broken.png,NORMAL,P999")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def cli(argv: list[str]) -> int:
    from medcnn.cli import recalibrate as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


def test_cli_writes_a_loadable_card_with_identical_weights(tiny_model, tmp_path, capsys, one_torch_thread):
    from medcnn.inference import Predictor
    from medcnn.io import read_image

    data = site_csv(tmp_path / "site", 12)
    out = tmp_path / "out" / "cxr_site.json"
    rc = cli(["--model", str(tiny_model), "--data", str(data), "--group-column", "patient_id",
              "--min-per-class", "8", "--n-boot", "30", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0
    printed = captured.out + captured.err
    assert "SMITH" not in printed and "JANE" not in printed  # counts only, no file names
    assert "25 images listed, 24 used" in printed and "skipped 1: unreadable" in printed
    assert "before" in printed and "after" in printed and "over 6 patients" in printed

    card = ModelCard.load(out)
    assert card.weights_path.read_bytes() == tiny_model.with_suffix(".pt").read_bytes()
    assert card.training["recalibrated_from"]["weights_sha256"] == file_sha256(card.weights_path)
    assert card.training["recalibrated_from"]["card"] == "cxr_test"
    assert card.training["dataset"] == "tiny synthetic"
    recal = card.training["recalibration"]
    assert "source" not in recal["site_data"] and len(recal["site_data"]["sha256"]) == 64
    assert "site/" not in json.dumps(card.to_dict()) and "labels.csv" not in json.dumps(card.to_dict())
    assert recal["site_data"]["counts"] == {"NORMAL": 12, "PNEUMONIA": 12}
    assert recal["command"].startswith("python -m medcnn recalibrate --model weights/cxr_test.json")
    assert str(tmp_path) not in json.dumps(card.training)  # no machine paths in the card
    assert card.metrics["recalibration"]["bootstrap"] == "groups"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = Predictor(out, device="cpu").predict(read_image(png(100, 1)))
    assert pred.model == "cxr_site" and pred.threshold == pytest.approx(card.threshold)


def test_cli_refuses_too_few_images_before_inference(tiny_model, tmp_path):
    data = site_csv(tmp_path / "site", 6)
    out = tmp_path / "out" / "cxr_site.json"
    with pytest.raises(InsufficientSiteDataError, match=r"at least 20 of each class.*NORMAL: 7 \(13 more"):
        cli(["--model", str(tiny_model), "--data", str(data), "--out", str(out)])
    assert not out.exists() and not out.with_suffix(".pt").exists()


def test_cli_refuses_to_overwrite_the_original_and_unknown_columns(tiny_model, tmp_path):
    data = site_csv(tmp_path / "site", 4)
    with pytest.raises(ValueError, match="is the original card"):
        cli(["--model", str(tiny_model), "--data", str(data), "--out", str(tiny_model)])
    with pytest.raises(ValueError, match="'ward' is not a column"):
        cli(["--model", str(tiny_model), "--data", str(data), "--group-column", "ward",
             "--out", str(tmp_path / "x.json")])
