"""``evaluate --relabel``: other classes of a labelled set counted as one of the model's labels."""
from __future__ import annotations

from pathlib import Path

import pytest

from medcnn.cli.evaluate import _relabel
from medcnn.evaluation.evaluate import score_dataset

REPO = Path(__file__).resolve().parents[2]
CT_HU = REPO.parent / "shared" / "data" / "ct_hu" / "labels.csv"
NON_COVID = {"CAP": "NonCOVID", "NORMAL": "NonCOVID", "LUNG_CANCER": "NonCOVID"}


def test_relabel_specs_are_parsed_and_bad_ones_refused():
    assert _relabel(["CAP=NonCOVID", " NORMAL = NonCOVID "]) == {"CAP": "NonCOVID", "NORMAL": "NonCOVID"}
    for bad in ("CAP", "=NonCOVID", "CAP="):
        with pytest.raises(ValueError, match="OLD=NEW"):
            _relabel([bad])


def test_relabelled_rows_are_scored_and_keep_their_original_label():
    if not CT_HU.exists():
        pytest.skip(f"{CT_HU} not found: needs ../shared/data (present in CI)")
    with pytest.raises(ValueError, match="CAP"):
        score_dataset(REPO / "weights" / "ct_covid.json", [CT_HU], split="test")
    scores = score_dataset(REPO / "weights" / "ct_covid.json", [CT_HU], split="test", relabel=NON_COVID)
    df = scores.df
    assert len(df) == 82 and set(df["label"]) == {"COVID", "NonCOVID"}
    assert df.groupby("label_original").size().to_dict() == {"CAP": 25, "COVID": 25, "LUNG_CANCER": 7, "NORMAL": 25}
    assert int(scores.y.sum()) == 25
