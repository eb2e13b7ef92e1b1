"""Site onboarding (medcnn.evaluation.site) on synthetic logits: refit only what held-out folds show helps."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medcnn.evaluation import expected_calibration_error, fit_temperature, softmax_t, youden_threshold
from medcnn.evaluation.site import (InsufficientSiteDataError, RecalibrationError, component_rows, left_out_rows,
                                   recalibrate, summary_rows)
from medcnn.evaluation.site_card import file_sha256, recalibrated_card, write_recalibrated
from medcnn.models.card import ModelCard

LABELS = ["NORMAL", "PNEUMONIA"]


def make_card(temperature: float = 1.0, threshold: float = 0.5, **kw) -> ModelCard:
    return ModelCard(name="cxr_test", architecture="simplecnn", modality="CXR", labels=LABELS,
                     positive_label="PNEUMONIA", input_size=(64, 64), preprocessing={}, target_layer="block3",
                     temperature=temperature, threshold=threshold, **kw)


def fixed_model_logits(n: int, rng: np.random.Generator, mean: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) logits of a fixed model: logit difference ~ N(+-mean, 1) by class, equal priors."""
    y = rng.integers(0, 2, n)
    diff = rng.normal(np.where(y == 1, mean, -mean), 1.0)
    return np.stack([np.zeros(n), diff], axis=1), y


def shipped_card(rng: np.random.Generator, mean: float = 2.0) -> ModelCard:
    """The card as shipped: temperature and Youden threshold fitted on the original site's val rows."""
    z, y = fixed_model_logits(400, rng, mean)
    temperature = fit_temperature(z, y)
    return make_card(temperature, youden_threshold(y, softmax_t(z, temperature)[:, 1]))


def site_card_and_logits(seed: int, n: int = 300) -> tuple[ModelCard, np.ndarray, np.ndarray]:
    """A shipped card (temperature, Youden threshold fitted on the original site) and new-site logits."""
    rng = np.random.default_rng(seed)
    card = shipped_card(rng, 1.0)
    z, y = fixed_model_logits(n, rng, 1.0)
    return card, z, y


def shifted(z: np.ndarray) -> np.ndarray:
    """The site's logits: 3 times as confident, and its positives' logit difference shifted down by 2."""
    return 3 * z + np.array([0.0, -2.0])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pure_noise_labels_keep_every_component(seed):
    """Shuffled labels carry no information about the scores: nothing may change."""
    card, z, y = site_card_and_logits(seed)
    noise = np.random.default_rng(100 + seed).permutation(y)
    fields, report = recalibrate(card, z, noise, n_boot=300)
    assert not fields["changed"]
    assert (fields["temperature"], fields["threshold"]) == (card.temperature, card.threshold)
    assert {k: c["refit"] for k, c in report["components"].items()} == {"temperature": False,
                                                                         "operating_point": False}
    assert "do not rank the site's labels well enough" in report["components"]["temperature"]["reason"]
    assert report["held_out"]["change"]["balanced_accuracy"] == 0.0
    assert report["notes"][0].startswith("nothing is refitted")
    with pytest.raises(RecalibrationError, match="nothing was refitted"):
        recalibrated_card(card, fields, report, "cxr_site", weights_sha256="0", data_sha256="0", command="c")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_real_shift_refits_both_and_lowers_held_out_ece(seed):
    card, z, y = site_card_and_logits(seed, 600)
    z = shifted(z)
    fit, held = slice(0, 300), slice(300, None)

    fields, report = recalibrate(card, z[fit], y[fit], n_boot=300)

    assert fields["changed"] and all(c["refit"] for c in report["components"].values())
    assert fields["temperature"] > 2 * card.temperature  # the site is ~3x as confident
    h = report["held_out"]  # the headline: cross-validated before / after, with CIs
    assert h["after"]["ece"] < h["before"]["ece"] and h["change"]["balanced_accuracy_ci"][0] > 0
    for side in ("before", "after"):
        for key in ("sensitivity", "balanced_accuracy", "ece"):
            lo, hi = h[side][f"{key}_ci"]
            assert lo <= h[side][key] <= hi, (side, key)
    # and on images it never saw
    ece = lambda t: expected_calibration_error(y[held], softmax_t(z[held], t)[:, 1])  # noqa: E731
    assert ece(fields["temperature"]) < ece(card.temperature) - 0.02
    ba = lambda t, thr: (np.mean(softmax_t(z[held], t)[y[held] == 1, 1] >= thr)  # noqa: E731
                         + np.mean(softmax_t(z[held], t)[y[held] == 0, 1] < thr)) / 2
    assert ba(fields["temperature"], fields["threshold"]) > ba(card.temperature, card.threshold)


def test_a_kept_operating_point_calls_the_same_images_at_a_new_temperature():
    from medcnn.evaluation.site_task import SiteTask, carry_threshold

    card, z, _ = site_card_and_logits(7)
    task = SiteTask(card)
    new_t = 3.1 * card.temperature
    thr = carry_threshold(card.threshold, card.temperature, new_t)
    old = softmax_t(z, card.temperature)[:, 1] >= card.threshold
    assert np.array_equal(softmax_t(z, new_t)[:, 1] >= thr, old)
    point = task.fit(3 * z, np.zeros(len(z), dtype=int) + (z[:, 1] > 0), temperature=True, threshold=False)
    assert point.threshold == pytest.approx(carry_threshold(card.threshold, card.temperature, point.temperature))


def test_withheld_images_are_reported_per_class():
    card, z, y = site_card_and_logits(8, 200)
    left = {"PNEUMONIA": {"withheld by the out-of-distribution gate": 30, "unreadable (not DICOM / PNG / JPEG, "
                          "or missing)": 2}, "NORMAL": {"withheld by the out-of-distribution gate": 5}}
    _, report = recalibrate(card, z, y, left_out=left, n_boot=50)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    pos = report["left_out"]["PNEUMONIA"]
    assert (pos["listed"], pos["used"], pos["withheld"]) == (n_pos + 32, n_pos, 30)
    assert pos["withheld_share"] == pytest.approx(30 / (n_pos + 32))
    assert report["left_out"]["NORMAL"]["withheld_share"] == pytest.approx(5 / (n_neg + 5))
    assert any("PNEUMONIA: 30 of" in n for n in report["notes"])
    rows = {r["class"]: r for r in left_out_rows(report)}
    assert rows["PNEUMONIA"]["withheld by the gate"].startswith("30 (") and "2 unreadable" in rows["PNEUMONIA"][
        "other left out"]


def test_report_rows_cis_and_cluster_bootstrap():
    rng = np.random.default_rng(3)
    z, y = fixed_model_logits(120, rng)
    groups = np.repeat([f"p{i}" for i in range(60)], 2)
    fields, report = recalibrate(make_card(), z, y, groups=groups, min_per_class=20, n_boot=50)
    assert report["bootstrap"] == "groups" and report["n_groups"] == 60 and report["n_images"] == 120
    assert report["counts"] == {"NORMAL": int((y == 0).sum()), "PNEUMONIA": int((y == 1).sum())}
    assert report["held_out"]["folds"] == 5
    rows = {r["quantity"]: r for r in summary_rows(report)}
    assert set(rows) == {"sensitivity", "specificity", "balanced accuracy", "flagged share",
                         "ECE (calibration error)", "NLL (log loss)"}
    assert "[" in rows["sensitivity"]["before (held-out)"] and "[" in rows["specificity"]["after (held-out)"]
    assert {r["component"] for r in component_rows(report)} == {"temperature", "operating point"}
    site = fields["metrics"]["site"]
    assert site["threshold"] == fields["threshold"] and len(site["scores"]["prob"]) == 120
    json.dumps(report)  # JSON-ready


def test_too_few_images_of_a_class_is_a_clear_error():
    rng = np.random.default_rng(4)
    z, y = fixed_model_logits(60, rng)
    y[:] = 1
    y[:5] = 0
    with pytest.raises(InsufficientSiteDataError) as err:
        recalibrate(make_card(), z, y, min_per_class=20,
                    left_out={"NORMAL": {"withheld by the out-of-distribution gate": 4}})
    msg = str(err.value)
    assert "at least 20 of each class" in msg and "NORMAL: 5 (15 more needed)" in msg and "PNEUMONIA: 55" in msg
    assert "cannot tell a real improvement from chance" in msg  # why the minimum exists
    assert "NORMAL: 4 of 9 left out (4 withheld by the out-of-distribution gate)" in msg
    assert err.value.counts == {"NORMAL": 5, "PNEUMONIA": 55} and isinstance(err.value, ValueError)


@pytest.mark.parametrize("logits, y, match", [
    (np.zeros((4, 3)), [0, 1, 0, 1], r"must be \(N, 2\)"),
    (np.zeros((4, 2)), [0, 1, 0], "4 rows but y has 3"),
    (np.full((4, 2), np.nan), [0, 1, 0, 1], "finite"),
    (np.zeros((4, 2)), [0, 1, 2, 1], "must be 0/1"),
])
def test_malformed_inputs_are_refused(logits, y, match):
    with pytest.raises(RecalibrationError, match=match):
        recalibrate(make_card(), logits, y, min_per_class=1)


def test_a_label_without_its_own_operating_point_is_refused():
    with pytest.raises(RecalibrationError, match="no operating point of its own for 'NORMAL'"):
        recalibrate(make_card(), np.zeros((4, 2)), [0, 1, 0, 1], min_per_class=1, finding="NORMAL")


def _fitted(seed: int = 5) -> tuple[ModelCard, dict, dict]:
    rng = np.random.default_rng(seed)
    z, y = fixed_model_logits(160, rng, 1.0)
    card = make_card(training={"dataset": "original data", "date": "2024-01-01", "command": "train ..."},
                     metrics={"test": {"n": 10, "auc": 0.8}})
    fields, report = recalibrate(card, shifted(z), y, n_boot=200)
    assert fields["changed"]
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
    assert origin == {"card": "cxr_test", "finding": "PNEUMONIA", "temperature": 1.0, "threshold": 0.5,
                      "weights_sha256": "ab" * 32}
    decisions = new.training["recalibration"]["decisions"]
    assert decisions["temperature"].startswith("refit: held-out NLL falls")
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


def test_an_imported_models_safetensors_weights_are_copied_and_named_by_the_new_card(tmp_path):
    card, fields, report = _fitted()
    orig = tmp_path / "weights"
    orig.mkdir()
    payload = b"safetensors bytes " * 500
    (orig / "cxr_test.safetensors").write_bytes(payload)
    card.weights_file, card.weights_sha256 = "cxr_test.safetensors", file_sha256(orig / "cxr_test.safetensors")
    card.save(orig / "cxr_test.json")
    new = recalibrated_card(card, fields, report, "cxr_site", weights_sha256=card.weights_sha256,
                            data_sha256="0", command="c")
    out = write_recalibrated(card, new, tmp_path / "site" / "cxr_site.json")  # another folder
    loaded = ModelCard.load(out)
    assert loaded.weights_file == "cxr_site.safetensors" and not (tmp_path / "site" / "cxr_site.pt").exists()
    assert loaded.weights_path.read_bytes() == payload and file_sha256(loaded.weights_path) == loaded.weights_sha256
