"""One text for a withheld result: every place that writes or reads "not analysed" uses the one constant.

:data:`medcnn.models.head.NOT_ANALYSED` (re-exported by :mod:`medcnn.inference`) is what
:attr:`Prediction.decision` says when the out-of-distribution gate withholds a result. The scoring
engine's row (``predict --json``, Ray, recalibration), the PACS analysis, the command lines, the
pages' presentation and the audit database must say (and recognise) the same text.
"""
from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from types import SimpleNamespace

from medcnn.inference import NOT_ANALYSED, Prediction
from medcnn.models import head
from medcnn.ood import OODResult

REPO = Path(__file__).resolve().parents[1]


def _withheld() -> Prediction:
    ood = OODResult(level="outside", reasons=["not a chest radiograph"])
    return Prediction(probabilities={"NORMAL": 0.3, "PNEUMONIA": 0.7}, logits=[0.0, 1.0], label="PNEUMONIA",
                      positive_prob=0.7, above_threshold=True, threshold=0.5, model="m", seconds=0.0, ood=ood,
                      called=["PNEUMONIA"])


class _Withholding:
    """A stand-in predictor whose gate withholds every image."""

    card = SimpleNamespace(name="m", labels=["NORMAL", "PNEUMONIA"], dicom_modalities=[])

    def predict_batch(self, images, **_):
        return [_withheld() for _ in images]

    def predict(self, image, **_):
        return _withheld()


def test_the_constant_is_defined_once_and_shared():
    from medcnn.privacy import audit_db
    from medcnn.visualize import presentation

    assert NOT_ANALYSED is head.NOT_ANALYSED == "not analysed"
    assert presentation.NOT_ANALYSED is NOT_ANALYSED and audit_db.NOT_ANALYSED is NOT_ANALYSED
    # no module of the package spells the decision out as a literal again
    literals = [f"{path.relative_to(REPO)}:{node.lineno}" for path in sorted((REPO / "medcnn").rglob("*.py"))
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, ast.Constant) and node.value == "not analysed"
                and path != REPO / "medcnn" / "models" / "head.py"]
    assert not literals, "use medcnn.models.head.NOT_ANALYSED:\n" + "\n".join(literals)


def test_a_withheld_prediction_and_a_scoring_row_say_the_same(tmp_path, png):
    from medcnn.scoring import SKIP_REASONS, Scorer, analysed_logits

    pred = _withheld()
    assert pred.decision == NOT_ANALYSED and pred.to_dict()["decision"] == NOT_ANALYSED
    data = png(tmp_path / "a.png").read_bytes()
    row = Scorer(_Withholding()).rows([("a.png", data)])[0]
    assert row["ok"] and row["decision"] == pred.decision and row["called"] is None
    # recalibration recognises the row as withheld by that same text
    logits, kept, skipped = analysed_logits(Scorer(_Withholding()), [("a.png", data)])
    assert kept.tolist() == [] and skipped == {SKIP_REASONS["withheld"]: 1}


def test_pacs_and_command_line_rows_say_the_same(capsys):
    from medcnn.cli import dicomweb, explain
    from medcnn.pacs.analysis import InstanceAnalysis
    from medcnn.privacy.audit_db import decided_labels, decision_text
    from medcnn.visualize import presentation

    pred = _withheld()
    withheld = InstanceAnalysis("1.2.3", "1.2.840.10008.5.1.4.1.1.1", prediction=pred)
    unread = InstanceAnalysis("1.2.4", "1.2.840.10008.5.1.4.1.1.1", reason="no model reads MR")
    assert withheld.decision == unread.decision == pred.decision == NOT_ANALYSED
    assert withheld.to_dict()["decision"] == NOT_ANALYSED and withheld.to_dict()["probabilities"] is None
    # the PACS command prints a withheld entry as such (upper case, with its reason)
    line = dicomweb._line({**unread.to_dict(), "sent": []})
    assert line == f"1.2.4: {NOT_ANALYSED.upper()} - no model reads MR"
    # the explain command's JSON for an image the gate withholds
    args = argparse.Namespace(json=True, file="x.png", method="gradcam")
    assert explain._withheld(args, "m", pred.ood.to_dict()) == 1
    assert json.loads(capsys.readouterr().out)["decision"] == NOT_ANALYSED
    # pages and reports, and the audit database (written and read back)
    assert presentation.decision(pred) == NOT_ANALYSED
    assert decision_text(pred.decided, ["NORMAL", "PNEUMONIA"]) == NOT_ANALYSED
    assert decided_labels(pred.decision) is None


def test_an_analysed_prediction_is_not_mistaken_for_a_withheld_one():
    pred = _withheld()
    pred.ood = OODResult()
    assert pred.decision == "PNEUMONIA" != NOT_ANALYSED and pred.decided == ["PNEUMONIA"]
