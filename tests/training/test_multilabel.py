"""Multi-label (findings) models: masked loss, labels, metrics, operating points, training and prediction."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

from medcnn.__main__ import main
from medcnn.evaluation.finding_labels import dedupe, exclude_rows, finding_targets, parse_findings, specs_from_card
from medcnn.evaluation.findings import finding_metrics, finding_visibility
from medcnn.models.card import CardError, ModelCard
from medcnn.evaluation.operating_points import MIN_POSITIVES, PURPOSE, choose_threshold
from medcnn.models.outputs import relative_to_threshold, sigmoid_t
from medcnn.training.multilabel import MaskedBCE, calibrate_findings, multilabel_val_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- loss and labels
def test_masked_bce_ignores_unknown_labels():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    target = torch.tensor([[1, 0, np.nan], [0, np.nan, np.nan], [1, 1, 0],
                           [np.nan, 0, 1], [0, 0, 0], [1, np.nan, 1]], dtype=torch.float32)
    loss = MaskedBCE()(logits, target)
    known = ~torch.isnan(target)
    expected = F.binary_cross_entropy_with_logits(logits[known], target[known])
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[~known] == 0) and torch.all(logits.grad[known] != 0)
    # changing a logit whose label is unknown does not change the loss
    moved = logits.detach().clone()
    moved[~known] += 5.0
    assert torch.allclose(MaskedBCE()(moved, target), expected.detach())
    # a batch with no known label gives a zero loss, not NaN
    empty = MaskedBCE()(logits, torch.full_like(target, float("nan")))
    assert empty.item() == 0.0


def test_masked_bce_positive_weights():
    logits, target = torch.zeros(2, 1), torch.tensor([[1.0], [0.0]])
    plain = MaskedBCE()(logits, target)
    weighted = MaskedBCE(torch.tensor([3.0]))(logits, target)
    assert weighted.item() == pytest.approx(plain.item() * 2)  # (3 + 1) / 2 times the unweighted mean


def test_finding_targets_from_list_and_binary_columns():
    df = pd.DataFrame({"findings": ["Effusion|Mass", "No Finding", None, "Mass"],
                       "target": ["1", "0", "", None]})
    specs = parse_findings(["Effusion", "Mass", "Opacity=target"])
    y = finding_targets(df, specs, "findings")
    np.testing.assert_array_equal(y[:, 0], [1, 0, np.nan, 0])
    np.testing.assert_array_equal(y[:, 1], [1, 0, np.nan, 1])
    np.testing.assert_array_equal(y[:, 2], [1, 0, np.nan, np.nan])
    with pytest.raises(ValueError, match="not 0/1"):
        finding_targets(pd.DataFrame({"target": ["maybe"]}), parse_findings(["A=target", "B=target"]), None)
    with pytest.raises(ValueError, match="findings column"):
        finding_targets(df, specs, "nope")
    with pytest.raises(ValueError, match="distinct"):
        parse_findings(["A", "A"])
    with pytest.raises(ValueError, match="NAME=COLUMN"):
        parse_findings(["A=", "B"])


def test_dedupe_and_exclude():
    df = pd.DataFrame({"path": ["/a/1.jpg", "/b/2.jpg", "/c/3.jpg", "/d/4.jpg"],
                       "index": ["00001_000.png", None, None, "x.png"],
                       "source_file": [None, "dir/00001_000.png", "dir/00002_000.png", None],
                       "split": ["train", "train", "val", "test"], "label": ["A", "B", "B", "A"],
                       "source": ["s1", "s2", "s2", "s1"]})
    out, n = dedupe(df, ["index", "source_file"])
    assert n == 1 and out["path"].tolist() == ["/a/1.jpg", "/c/3.jpg", "/d/4.jpg"]
    leak = df.assign(split=["train", "test", "val", "test"])
    with pytest.raises(ValueError, match="two splits"):
        dedupe(leak, ["index", "source_file"])
    kept, counts = exclude_rows(df, ["source=s2&label=B", "label=A&split=test"])
    assert kept["path"].tolist() == ["/a/1.jpg"] and counts == {"source=s2&label=B": 2, "label=A&split=test": 1}
    with pytest.raises(ValueError, match="column"):
        exclude_rows(df, ["nope=1"])


# --------------------------------------------------------------------------- metrics and operating points
def test_per_finding_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (80, 2)).astype(float)
    y[rng.random((80, 2)) < 0.25] = np.nan
    prob = np.clip(0.3 * np.nan_to_num(y, nan=0.5) + rng.random((80, 2)) * 0.7, 0, 1)
    m = finding_metrics(prob, y, ["A", "B"], [0.5, 0.4], groups=np.arange(80) // 2, n_boot=50)
    for j, name in enumerate(["A", "B"]):
        ok = ~np.isnan(y[:, j])
        assert m[name]["auc"] == pytest.approx(roc_auc_score(y[ok, j], prob[ok, j]))
        assert m[name]["n"] == ok.sum() and m[name]["threshold"] == [0.5, 0.4][j]
        assert m[name]["auc_ci"][0] <= m[name]["auc"] <= m[name]["auc_ci"][1]
    val = multilabel_val_metrics(np.log(prob / (1 - prob + 1e-9) + 1e-9), y, ["A", "B"])
    assert val["val_auc_findings"]["A"] == pytest.approx(m["A"]["auc"])
    shown = finding_visibility({"A": {"auc": 0.8, "auc_ci": [0.7, 0.9]}, "B": {"auc": 0.7, "auc_ci": [0.55, 0.8]}})
    assert shown["A"]["shown"] and not shown["B"]["shown"] and "below 0.6" in shown["B"]["reason"]
    # a finding that acquisition features predict as well as the model does is not shown either
    audit = {"A": {"confounded": True, "best": {"auc": 0.85}}}
    assert not finding_visibility({"A": {"auc": 0.8, "auc_ci": [0.7, 0.9]}}, shortcut=audit)["A"]["shown"]
    audit["A"]["best"]["auc"] = 0.7
    assert finding_visibility({"A": {"auc": 0.8, "auc_ci": [0.7, 0.9]}}, shortcut=audit)["A"]["shown"]


def test_relative_to_threshold():
    p = np.array([0.0, 0.1, 0.2, 0.6, 1.0])
    r = relative_to_threshold(p, 0.2)
    np.testing.assert_allclose(r, [0.0, 0.25, 0.5, 0.75, 1.0])
    assert np.all(np.diff(relative_to_threshold(np.linspace(0, 1, 50), 0.7)) > 0)


def test_calibrate_findings_fits_on_known_rows():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (200, 2)).astype(float)
    z = np.where(y == 1, 3.0, -3.0) + rng.normal(0, 2, y.shape)
    y[:50, 1] = np.nan
    cal = calibrate_findings(z, y, ["A", "B"])
    assert cal["A"]["fitted_on"] == "val" and 0 < cal["A"]["threshold"] < 1 and cal["A"]["temperature"] > 0
    assert cal["B"]["n_val_pos"] + cal["B"]["n_val_neg"] == 150
    one_class = calibrate_findings(z, np.zeros_like(y), ["A", "B"])
    assert one_class["A"]["threshold"] == 0.5 and "one class" in one_class["A"]["note"]


def test_calibrate_findings_picks_the_policy_point():
    """The operating point is the policy's (lowest threshold with validation specificity >= 0.85), not Youden's."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (300, 1)).astype(float)
    z = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.5, y.shape)
    cal = calibrate_findings(z, y, ["A"])["A"]
    p = sigmoid_t(z[:, 0], cal["temperature"])
    assert cal["threshold"] == choose_threshold(y[:, 0], p) and cal["rule"] == PURPOSE
    called = p >= cal["threshold"]
    spec = (~called[y[:, 0] == 0]).mean()
    assert spec >= 0.85 and (~(p >= p[p < cal["threshold"]].max())[y[:, 0] == 0]).mean() < 0.85


def test_sigmoid_card_round_trip(tmp_path):
    base = dict(name="f", architecture="simplecnn", modality="CXR", labels=["A", "B"], positive_label="A",
                input_size=(32, 32), preprocessing={}, target_layer="block3", head="sigmoid")
    card = ModelCard(**base, findings={"A": {"temperature": 1.5, "threshold": 0.3, "shown": True},
                                       "B": {"temperature": 0.8, "threshold": 0.6, "shown": False}})
    loaded = ModelCard.load(card.save(tmp_path / "f.json"))
    assert loaded.multilabel and loaded.findings == card.findings
    np.testing.assert_allclose(loaded.finding_thresholds(), [0.3, 0.6])
    np.testing.assert_allclose(loaded.finding_temperatures(), [1.5, 0.8])
    assert loaded.shown_findings() == ["A"]
    with pytest.raises(CardError, match="missing: B"):
        ModelCard(**base, findings={"A": {"threshold": 0.3}})
    with pytest.raises(CardError, match="threshold"):
        ModelCard(**base, findings={"A": {"threshold": 1.0}, "B": {}})
    with pytest.raises(CardError, match="head"):
        ModelCard(**{**base, "head": "relu"})


# --------------------------------------------------------------------------- a tiny model end to end
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """48 PNGs: finding 'Blob' (bright spot, in a findings list) and 'Bar' (vertical bar, a 0/1 column
    that is unknown for a third of the images)."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    rows = []
    for i in range(48):
        blob, bar = bool(i % 2), bool((i // 2) % 2)
        img = rng.normal(60, 10, (32, 32))
        if blob:
            cy, cx = rng.integers(8, 24, 2)
            img += 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 10)
        if bar:
            img[:, 4:8] += 120
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"{i}.png")
        split = "train" if i < 32 else ("val" if i < 40 else "test")
        rows.append({"path": f"{i}.png", "label": "X", "split": split, "patient_id": f"p{i:03d}",
                     "findings": "Blob" if blob else "No Finding",
                     "bar": "" if i % 3 == 0 and split == "train" else int(bar), "view_position": "PA"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def test_tiny_multilabel_model_trains_predicts_and_evaluates(shapes, tmp_path, capsys):
    out = tmp_path / "w" / "findings.pt"
    args = ["train", "--data", str(shapes), "--findings", "Blob,Bar=bar", "--findings-column", "findings",
            "--arch", "simplecnn", "--size", "32", "--epochs", "6", "--batch-size", "8", "--lr", "3e-3",
            "--schedule", "fixed", "--n-boot", "20", "--out", str(out), "--quiet", "--threads", "1"]
    assert main(args) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["head"] == "sigmoid" and card["labels"] == ["Blob", "Bar"] and card["positive_label"] == "Blob"
    assert set(card["findings"]) == {"Blob", "Bar"} and all(0 < f["threshold"] < 1 for f in card["findings"].values())
    assert card["training"]["findings"]["counts"]["Bar"]["train"]["unknown"] > 0
    assert card["metrics"]["val"]["findings"]["Blob"]["auc"] > 0.8  # the bright spot is easy
    for f in card["findings"].values():  # the policy's point; 4 validation positives are too few to present
        assert f["rule"] == PURPOSE and f["val"]["n_pos"] == 4 and f["val"]["specificity"] >= 0.85
        assert f["shown"] is False and f["reason"].startswith(f"only 4 validation images") and MIN_POSITIVES > 4
    spec_names = [s.name for s in specs_from_card(card["training"])[0]]
    assert spec_names == ["Blob", "Bar"] and specs_from_card(card["training"])[0][1].column == "bar"
    capsys.readouterr()
    # present both findings by hand, so that predict lists them (the policy's verdict is kept aside)
    for f in card["findings"].values():
        f["shown"] = True
    out.with_suffix(".json").write_text(json.dumps(card))

    # predict --json: probabilities keyed by finding, findings sorted by probability relative to the threshold
    assert main(["predict", str(shapes.parent / "40.png"), str(shapes.parent / "41.png"),
                 "--model", str(out.with_suffix(".json")), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    for r in results:
        assert set(r["probabilities"]) == {"Blob", "Bar"}
        rel = [f["relative"] for f in r["findings"]]
        assert rel == sorted(rel, reverse=True)
        for f in r["findings"]:
            assert f["above"] == (f["probability"] >= f["threshold"])
            assert f["probability"] == pytest.approx(r["probabilities"][f["name"]])
    assert results[1]["probabilities"]["Blob"] > results[0]["probabilities"]["Blob"]  # 41 has the blob

    # evaluate --write-card: test metrics, stored scores that reproduce the AUCs, presented findings
    assert main(["evaluate", "--model", str(out.with_suffix(".json")), "--data", str(shapes), "--write-card",
                 "--n-boot", "20"]) == 0
    card = ModelCard.load(out.with_suffix(".json"))
    test = card.metrics["test"]
    for name in ("Blob", "Bar"):
        s = test["scores"][name]
        assert len(s["y"]) == 8
        if len(set(s["y"])) == 2:
            assert roc_auc_score(s["y"], s["prob"]) == pytest.approx(test["findings"][name]["auc"])
        assert isinstance(card.findings[name]["shown"], bool) and card.findings[name]["reason"]
        # the test-AUC rule does not override the operating-point policy's verdict
        assert card.findings[name]["shown"] is False and "only 4 validation images" in card.findings[name]["reason"]


def test_per_finding_shortcut_audit(shapes, tmp_path, capsys):
    out = tmp_path / "f.pt"
    assert main(["train", "--data", str(shapes), "--findings", "Blob,Bar=bar", "--findings-column", "findings",
                 "--arch", "simplecnn", "--size", "32", "--epochs", "1", "--batch-size", "8", "--n-boot", "10",
                 "--out", str(out), "--quiet", "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["audit", "--model", str(out.with_suffix(".json")), "--data", str(shapes), "--folds", "3",
                 "--json", "--write-card"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["findings"]) == {"Blob", "Bar"} and report["n"] == 48
    bar = report["findings"]["Bar"]
    assert bar["n"] == 48 - 11 and 0 <= bar["best"]["auc"] <= 1  # the 11 unknown 'bar' labels are left out
    assert isinstance(bar["confounded"], bool) and bar["top_features"]
    card = ModelCard.load(out.with_suffix(".json"))
    assert card.audit["shortcut_findings"]["findings"]["Blob"]["n_positive"] == 24


def test_findings_runs_refuse_cross_validation(shapes):
    """--folds with --findings is refused by both entry points (cross_validate used to run a single-label
    cross-validation of the label column instead)."""
    from medcnn.training.loop import TrainConfig, cross_validate, train

    cfg = TrainConfig(data=[str(shapes)], findings=["Blob", "Bar=bar"], findings_column="findings",
                      arch="simplecnn", size=32, epochs=1, batch_size=8, folds=3, progress=False)
    for entry in (cross_validate, train):
        with pytest.raises(ValueError, match=r"cross-validation \(--folds\) is not available for multi-label"):
            entry(cfg)


def _train_tiny_resnet(shapes, out, capsys, *flags):
    """A 3-epoch tinyresnet findings model on the shapes set with extra ``flags``: (its card as JSON, Predictor)."""
    from medcnn.inference import Predictor

    assert main(["train", "--data", str(shapes), "--findings", "Blob,Bar=bar", "--findings-column", "findings",
                 "--arch", "tinyresnet", "--size", "32", "--epochs", "3", "--batch-size", "8", "--lr", "3e-3",
                 "--schedule", "fixed", *flags, "--n-boot", "10", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    capsys.readouterr()
    return json.loads(out.with_suffix(".json").read_text()), Predictor(out.with_suffix(".json"), check=False)


def test_head_bias_keeps_maps_of_positive_calls_non_empty(shapes, tmp_path, capsys):
    """--head-bias fixes the final bias and leaves it untrained; with a global-pool + linear head, every
    output whose logit exceeds that bias has a non-empty Grad-CAM map (its mean is logit - bias > 0), so
    no film above an operating point (whose logit is above the bias) can show an empty map."""
    from medcnn.explain import explain
    from medcnn.io import read_image

    card, pred = _train_tiny_resnet(shapes, tmp_path / "hb.pt", capsys, "--head-bias", "-3")
    assert "--head-bias -3" in card["training"]["command"]
    assert torch.equal(pred.model.fc.bias.detach(), torch.full((2,), -3.0))  # stayed where it was fixed
    checked = 0
    for i in range(0, 48, 3):
        tensor = pred.pipeline(read_image(shapes.parent / f"{i}.png")).tensor
        with torch.no_grad():
            logits = pred.model(tensor)[0]
        for k, name in enumerate(card["labels"]):
            exp = explain(pred.model, tensor, k, "gradcam", layer=card["target_layer"], head=pred.card.head_rule)
            if float(logits[k]) > -3.0:
                assert not exp.empty, f"image {i}, {name}: logit {float(logits[k]):.2f} above the bias, empty map"
                checked += 1
    assert checked > 0


def test_nonneg_head_makes_every_map_the_whole_evidence(shapes, tmp_path, capsys):
    """--nonneg-head keeps the final weights >= 0 through training; on post-ReLU features every class
    activation map is then >= 0, so Grad-CAM is empty only for a film whose logit sits at the bias."""
    from medcnn.explain import explain
    from medcnn.io import read_image

    card, pred = _train_tiny_resnet(shapes, tmp_path / "nn.pt", capsys, "--nonneg-head")
    assert "--nonneg-head" in card["training"]["command"]
    w, b = pred.model.fc.weight.detach(), pred.model.fc.bias.detach()
    assert (w >= 0).all() and (w > 0).any()  # projected, not collapsed to zero
    for i in range(0, 48, 4):
        tensor = pred.pipeline(read_image(shapes.parent / f"{i}.png")).tensor
        with torch.no_grad():
            logits = pred.model(tensor)[0]
        for k in range(2):
            exp = explain(pred.model, tensor, k, "gradcam", layer=card["target_layer"], head=pred.card.head_rule)
            assert exp.attribution.min() >= -1e-6  # no negative evidence anywhere
            assert exp.empty == bool(abs(float(logits[k] - b[k])) < 1e-5), (i, k)
