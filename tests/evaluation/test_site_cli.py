"""``python -m medcnn recalibrate`` on tiny models: a softmax card, and one finding of a multi-label card.

The tiny SimpleCNNs get a last layer that reads brightness (one output, the others nearly
constant), and the site's images are dark (negative) or bright (positive), so the site's labels
are informative; the shipped card's temperature and threshold are deliberately off for it.
"""
from __future__ import annotations

import argparse
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from medcnn.evaluation.site import DEFAULT_MIN_PER_CLASS, InsufficientSiteDataError
from medcnn.evaluation.site_card import file_sha256
from medcnn.models.card import ModelCard

LABELS = ["NORMAL", "PNEUMONIA"]
FINDINGS = ["Lung Opacity", "Effusion", "Nodule"]


def png(value: int, seed: int, size: int = 48) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.clip(value + 40 * np.sin(xx / 5.0) + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def reads_brightness(card_path: Path, output: int, scale: float = 4.0) -> Path:
    """Give the saved model a last layer whose ``output`` is about -scale on dark images and +scale on
    bright ones (fitted on images the site does not use); the other outputs nearly constant."""
    import torch

    from medcnn.inference import Predictor
    from medcnn.io import read_image
    from medcnn.models import save_checkpoint

    predictor = Predictor(card_path, device="cpu")
    model, feats = predictor.model, []
    hook = model.fc2.register_forward_hook(lambda m, i, o: feats.append(i[0].detach().clone()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for value, base in ((90, 500), (150, 600)):
            for s in range(6):
                predictor.predict(read_image(png(value, base + s)))
    hook.remove()
    h = torch.cat(feats)
    dark, bright = h[:6].mean(0), h[6:].mean(0)
    w = (bright - dark) / float((bright - dark) @ (bright - dark))
    with torch.no_grad():
        model.fc2.weight.mul_(0.01)
        model.fc2.weight[output] = 2 * scale * w
        model.fc2.bias[output] = -2 * scale * float((bright + dark) / 2 @ w)
    return save_checkpoint(model, ModelCard.load(card_path), card_path)


def _card(**kw) -> ModelCard:
    from medcnn.preprocess import default_config

    return ModelCard(name="tiny", architecture="simplecnn", modality="CXR", input_size=(64, 64),
                     preprocessing=default_config("CXR", 64), target_layer="block3", dicom_modalities=["CR", "DX"],
                     training={"dataset": "tiny synthetic", "date": "2024-05-06"}, **kw)


def _save(card: ModelCard, n_outputs: int, path: Path) -> Path:
    import torch

    from medcnn.models import create_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(create_model("simplecnn", num_classes=n_outputs).eval(), card, path)


@pytest.fixture
def tiny_model(tmp_path, one_torch_thread):
    """A softmax card whose threshold (0.9) at a flat temperature (5) calls almost nothing at the site."""
    card = _card(labels=LABELS, positive_label="PNEUMONIA", temperature=5.0, threshold=0.9)
    return reads_brightness(_save(card, 2, tmp_path / "weights" / "cxr_test.pt"), 1)


@pytest.fixture
def findings_model(tmp_path, one_torch_thread):
    """A multi-label card; 'Lung Opacity' reads brightness, its shipped point is off for the site."""
    findings = {n: {"temperature": 1.0 + i, "threshold": 0.3 + 0.1 * i, "shown": True} for i, n in enumerate(FINDINGS)}
    findings["Lung Opacity"].update(temperature=6.0, threshold=0.85)
    card = _card(labels=FINDINGS, positive_label="Lung Opacity", head="sigmoid", findings=findings)
    return reads_brightness(_save(card, 3, tmp_path / "weights" / "cxr_findings.pt"), 0)


def site_csv(root: Path, n_per_class: int, labels=("NORMAL", "PNEUMONIA")) -> Path:
    """``site/labels.csv``: PNGs named after (fake) patients, two images per patient, one unreadable file.
    The last label's images are bright, the others dark."""
    lines = ["path,label,patient_id"]
    for i in range(len(labels) * n_per_class):
        label = labels[i % len(labels)]
        name = f"img/SMITH_JOHN_{i:03d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png(150 if label == labels[-1] else 90, seed=i))
        lines.append(f"{name},{label},P{i // 4:03d}")
    (root / "img" / "SMITH_JANE_broken.png").write_bytes(b"not an image at all")
    lines.append(f"img/SMITH_JANE_broken.png,{labels[0]},P999")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def cli(argv: list[str]) -> int:
    from medcnn.cli import recalibrate as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


def test_the_command_and_the_library_share_the_minimum():
    from medcnn.cli import recalibrate as command

    assert command.DEFAULT_MIN_PER_CLASS == DEFAULT_MIN_PER_CLASS


def test_cli_writes_a_loadable_card_with_identical_weights(tiny_model, tmp_path, capsys):
    from medcnn.inference import Predictor
    from medcnn.io import read_image

    data = site_csv(tmp_path / "site", 20)
    out = tmp_path / "out" / "cxr_site.json"
    rc = cli(["--model", str(tiny_model), "--data", str(data), "--group-column", "patient_id",
              "--min-per-class", "10", "--n-boot", "200", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0
    printed = captured.out + captured.err
    assert "SMITH" not in printed and "JANE" not in printed  # counts only, no file names
    assert "41 images listed, 40 used" in printed and "1 unreadable" in printed
    assert "over 10 patients" in printed
    # the held-out table leads; the in-sample figures come last, marked as optimistic
    assert printed.index("held-out (5-fold") < printed.index("operating point") < printed.index("(in-sample")
    assert "refit" in printed and "wrote" in printed

    card = ModelCard.load(out)
    assert card.weights_path.read_bytes() == tiny_model.with_suffix(".pt").read_bytes()
    assert card.training["recalibrated_from"]["weights_sha256"] == file_sha256(card.weights_path)
    assert card.training["recalibrated_from"]["card"] == "cxr_test"
    assert card.training["dataset"] == "tiny synthetic"
    recal = card.training["recalibration"]
    assert recal["decisions"]["operating_point"].startswith("refit")
    assert "source" not in recal["site_data"] and len(recal["site_data"]["sha256"]) == 64
    assert "site/" not in json.dumps(card.to_dict()) and "labels.csv" not in json.dumps(card.to_dict())
    assert recal["site_data"]["counts"] == {"NORMAL": 20, "PNEUMONIA": 20}
    assert recal["command"].startswith("python -m medcnn recalibrate --model weights/cxr_test.json")
    assert str(tmp_path) not in json.dumps(card.training)  # no machine paths in the card
    assert card.metrics["recalibration"]["held_out"]["after"]["balanced_accuracy"] > 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = Predictor(out, device="cpu").predict(read_image(png(150, 1)))
    assert pred.model == "cxr_site" and pred.threshold == pytest.approx(card.threshold) and pred.label == "PNEUMONIA"


def test_cli_writes_nothing_when_nothing_helps(tiny_model, tmp_path, capsys):
    """Labels that do not follow the images (alternating by patient, not by brightness): nothing changes."""
    data = site_csv(tmp_path / "site", 20)
    text = data.read_text().splitlines()
    flipped = [text[0]] + [line.replace("NORMAL", "X").replace("PNEUMONIA", "NORMAL").replace("X", "PNEUMONIA")
                           if int(line.split(",")[2][1:]) % 2 else line for line in text[1:]]
    data.write_text("\n".join(flipped) + "\n")
    out = tmp_path / "out" / "cxr_site.json"
    assert cli(["--model", str(tiny_model), "--data", str(data), "--group-column", "patient_id",
                "--min-per-class", "10", "--n-boot", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no card written: nothing was refitted, so cxr_test stays as it is" in printed
    assert not out.exists() and not out.with_suffix(".pt").exists()


def test_cli_refuses_too_few_images_before_inference(tiny_model, tmp_path):
    data = site_csv(tmp_path / "site", 6)
    out = tmp_path / "out" / "cxr_site.json"
    with pytest.raises(InsufficientSiteDataError, match=r"at least 20 of each class.*NORMAL: 7 \(13 more.*chance"):
        cli(["--model", str(tiny_model), "--data", str(data), "--out", str(out)])
    assert not out.exists() and not out.with_suffix(".pt").exists()


def test_cli_refuses_to_overwrite_the_original_and_unknown_columns(tiny_model, tmp_path):
    data = site_csv(tmp_path / "site", 4)
    with pytest.raises(ValueError, match="is the original card"):
        cli(["--model", str(tiny_model), "--data", str(data), "--out", str(tiny_model)])
    with pytest.raises(ValueError, match="'ward' is not a column"):
        cli(["--model", str(tiny_model), "--data", str(data), "--group-column", "ward",
             "--out", str(tmp_path / "x.json")])


def test_multilabel_finding_round_trips_through_the_card(findings_model, tmp_path, capsys):
    from medcnn.inference import Predictor
    from medcnn.io import read_image

    data = site_csv(tmp_path / "site", 14, labels=("NORMAL", "OTHER", "PNEUMONIA"))
    out = tmp_path / "out" / "cxr_findings_site.json"
    with pytest.raises(ValueError, match="multi-label model.*--finding 'Lung Opacity' --positive LABEL"):
        cli(["--model", str(findings_model), "--data", str(data), "--out", str(out)])
    with pytest.raises(ValueError, match="--positive 'Pneumonia' matches no row"):
        cli(["--model", str(findings_model), "--data", str(data), "--finding", "Lung Opacity",
             "--positive", "Pneumonia", "--out", str(out)])
    rc = cli(["--model", str(findings_model), "--data", str(data), "--finding", "Lung Opacity",
              "--positive", "PNEUMONIA", "--group-column", "patient_id", "--min-per-class", "10",
              "--n-boot", "200", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and "'Lung Opacity'" in printed and "not PNEUMONIA: 28" in printed and "PNEUMONIA: 14" in printed

    original, card = ModelCard.load(findings_model), ModelCard.load(out)
    report = card.metrics["recalibration"]
    assert report["finding"] == "Lung Opacity" and report["components"]["operating_point"]["refit"]
    new = card.findings["Lung Opacity"]
    assert (new["temperature"], new["threshold"]) == (report["after"]["temperature"], report["after"]["threshold"])
    assert new["threshold"] != original.findings["Lung Opacity"]["threshold"]
    for other in ("Effusion", "Nodule"):  # only the named finding changes
        assert card.findings[other] == original.findings[other]
    assert (card.temperature, card.threshold) == (original.temperature, original.threshold)
    assert card.training["recalibrated_from"]["finding"] == "Lung Opacity"
    assert card.weights_path.read_bytes() == findings_model.with_suffix(".pt").read_bytes()
    # the written values are the ones the card's decision rule applies
    rule = card.head_rule
    assert rule.operating_point("Lung Opacity") == new["threshold"]
    assert rule.temperatures[0] == new["temperature"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bright = Predictor(out, device="cpu").predict(read_image(png(150, 3)))
        old = Predictor(findings_model, device="cpu").predict(read_image(png(150, 3)))
    assert "Lung Opacity" in bright.decided and "Lung Opacity" not in old.decided


def test_each_site_image_is_read_and_decoded_once(tiny_model, tmp_path, monkeypatch, capsys):
    """The engine decodes the bytes the command read; the card's site digest comes from those same bytes."""
    import medcnn.scoring
    from medcnn.evaluation.site_card import site_data_sha256

    data = site_csv(tmp_path / "site", 12)
    images = sorted((tmp_path / "site" / "img").glob("SMITH_JOHN_*.png"))
    reads: dict[str, int] = {}
    decoded: list[object] = []
    read_bytes, read_image = Path.read_bytes, medcnn.scoring.read_image

    def counting_read(self):
        reads[self.name] = reads.get(self.name, 0) + 1
        return read_bytes(self)

    def counting_decode(source, *args, **kwargs):
        decoded.append(source)
        return read_image(source, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", counting_read)
    monkeypatch.setattr(medcnn.scoring, "read_image", counting_decode)
    out = tmp_path / "out" / "cxr_site.json"
    assert cli(["--model", str(tiny_model), "--data", str(data), "--min-per-class", "10", "--n-boot", "50",
                "--out", str(out)]) == 0
    assert len(decoded) == len(images) + 1 and all(isinstance(d, bytes) for d in decoded)  # + the broken file
    assert {name: n for name, n in reads.items() if name.startswith("SMITH")} == {
        **{p.name: 1 for p in images}, "SMITH_JANE_broken.png": 1}
    monkeypatch.undo()
    labels = ["PNEUMONIA" if i % 2 else "NORMAL" for i in range(len(images))]
    recorded = ModelCard.load(out).training["recalibration"]["site_data"]["sha256"]
    assert recorded == site_data_sha256([p.read_bytes() for p in images], labels)
