"""medcnn.evaluation.predict: the one loop that turns a dataset into logits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medcnn.evaluation.predict import CardRows, predict_dataset
from medcnn.models import create_model
from medcnn.models.checkpoint import predict_logits
from medcnn.preprocess import Pipeline, default_config
from medcnn.training.data import ImageDataset, read_labels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Rows:
    """A TensorBatches of fixed tensors that records the batches it was asked for."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.asked: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.x)

    def tensor_batch(self, indices):
        self.asked.append(list(indices))
        return self.x[list(indices)]


class _Affine(nn.Module):
    """Logits (mean, -mean) of the image plus a train-mode-only offset (to see the mode)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        m = x.mean((1, 2, 3)) * self.w + (100.0 if self.training else 0.0)
        return torch.stack([m, -m], 1)


def test_rows_in_order_in_batches_in_eval_mode():
    x = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1).expand(5, 1, 4, 4).contiguous()
    rows, model = _Rows(x), _Affine().train()
    logits = predict_dataset(model, rows, batch_size=2)
    assert rows.asked == [[0, 1], [2, 3], [4]]
    assert logits.dtype == np.float32 and logits.shape == (5, 2)
    np.testing.assert_array_equal(logits[:, 0], np.arange(5, dtype=np.float32))  # eval mode: no offset
    assert not model.training
    np.testing.assert_array_equal(logits, predict_logits(model, x).numpy())  # the serving primitive


def test_empty_dataset_and_bad_batch_size_raise():
    with pytest.raises(ValueError, match="empty"):
        predict_dataset(_Affine(), _Rows(torch.zeros(0, 1, 4, 4)))
    with pytest.raises(ValueError, match="batch_size"):
        predict_dataset(_Affine(), _Rows(torch.zeros(2, 1, 4, 4)), batch_size=0)


def test_training_dataset_and_card_rows_give_the_same_logits(csv_set):
    # validation during training (cached display images) and evaluate (files through the card's
    # pipeline) feed the network the same tensors, up to the cache's uint16 rounding
    torch.manual_seed(0)
    model = create_model("simplecnn").eval()
    pipe = Pipeline.from_config(default_config("CXR", 32))
    df = read_labels(csv_set, classes=["NORMAL", "PNEUMONIA"])
    cached = predict_dataset(model, ImageDataset(df, pipe, ["NORMAL", "PNEUMONIA"]), batch_size=3)
    direct = predict_dataset(model, CardRows(df["path"].tolist(), pipe), batch_size=3)
    np.testing.assert_allclose(cached, direct, atol=1e-3)


def test_the_batch_primitive_lives_in_models_and_serving_re_exports_it():
    # evaluation takes it from models (below it), never from the serving path above it
    import medcnn.inference

    assert medcnn.inference.predict_logits is predict_logits
    assert "predict_logits" in medcnn.inference.__all__



def test_card_rows_record_which_slices_their_header_turned_upright(csv_set):
    """Evaluation judges a slice as serving does: one with an axial orientation header is not asked
    its orientation (``Pipeline.upright_by_header``); a PNG always is."""
    from pathlib import Path

    ct_hu = Path(__file__).resolve().parents[3] / "shared" / "data" / "ct_hu"
    dicoms = sorted((ct_hu / "covid_ct_md").glob("*.dcm"))[:2]
    if not dicoms:
        pytest.skip(f"needs the real CT DICOM of {ct_hu} (shared data absent)")
    pngs = read_labels(csv_set)["path"].tolist()[:2]
    rows = CardRows([*map(str, dicoms), *pngs], Pipeline.from_config(default_config("CT", 32)))
    assert rows.tensor_batch(range(4)).shape == (4, 1, 32, 32)
    assert rows.upright == {0: True, 1: True, 2: False, 3: False}
