"""One analysis record per image in the app (:func:`medcnn.app.state.analyze_upload`): the bytes are
decoded once, the model runs once per card, each map is computed once per (method, target, objective),
and the Analyze page reads all of it from the record. Tiny seeded models (``test_pages.make_weights``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from test_pages import page, png_bytes, upload
from test_pages import weights  # noqa: F401 - the fixture: tiny seeded models in a temporary weights folder


@pytest.fixture
def calls(monkeypatch):
    """Counts of real work: decodes (``read_image`` as the app calls it), forward passes and maps;
    the per-image caches start empty."""
    import medcnn.explain as explain_mod
    from medcnn.app import state
    from medcnn.inference import Predictor

    state.read_upload.clear()
    state.analyze_upload.clear()
    counts = {"read": 0, "predict": 0, "explain": 0}
    for name, owner, attr in (("read", state, "read_image"), ("predict", Predictor, "predict"),
                              ("explain", explain_mod, "explain")):
        monkeypatch.setattr(owner, attr, counted(getattr(owner, attr), counts, name))
    return counts


def counted(function, counts: dict, name: str):
    """``function`` adding one to ``counts[name]`` per call."""
    def call(*args, **kwargs):
        counts[name] += 1
        return function(*args, **kwargs)

    return call


def test_one_record_per_image_and_card_and_one_decode(weights, calls):
    from medcnn.app import state

    data = png_bytes(80, seed=5101)
    key, card = state.digest(data), str(weights / "cxr_pneumonia.json")
    routed = state.route_upload(key, data)  # as Analyze and Case review ask: the record that answers
    record = routed.analysis
    assert Path(record.card_path).stem == "cxr_pneumonia" and record.stage == "prediction"
    assert (routed.card_path, routed.prediction) == (record.card_path, record.prediction)
    # the same record however it is asked for: defaults written out or not, by bytes or by route
    assert state.analyze_upload(key, data, card) is record
    assert state.analyze_upload(key, data, card, None, None) is record
    assert state.analyze_upload(key, data, card, frame=None, window=None) is record
    assert state.read_upload(key, data).meta is record.meta
    assert record.prediction.pipeline_result.steps == [] and record.steps[-1].shape == (1, 1, 64, 64)
    assert calls == {"read": 1, "predict": 1, "explain": 0}

    target = record.default_target
    first = state.explain_analysis(record, "gradcam", target)
    assert state.explain_analysis(record, "gradcam", target) is first
    assert state.explain_analysis(state.analyze_upload(key, data, card), "gradcam", target) is first
    assert first.called == (target in record.prediction.called)  # the prediction's own decision
    assert calls == {"read": 1, "predict": 1, "explain": 1}
    assert set(record.explanations) == {("gradcam", target, "auto")}
    state.explain_analysis(record, "gradcam", target, "logit")
    state.explain_analysis(record, "gradcam", [t for t in record.targets if t != target][0])
    assert calls == {"read": 1, "predict": 1, "explain": 3}

    state.analyze_upload(key, data, card, None, (128.0, 200.0))  # another window: another prediction, same decode
    assert calls == {"read": 1, "predict": 2, "explain": 3}


def test_the_sanity_check_is_memoised_on_the_record(weights, calls, monkeypatch):
    import medcnn.explain.sanity as sanity_mod
    from medcnn.app import state

    runs = []
    monkeypatch.setattr(sanity_mod, "randomisation_test", lambda *a, **kw: runs.append(a) or {"passes": True})
    data = png_bytes(80, seed=5102)
    record = state.route_upload(state.digest(data), data).analysis
    first = state.sanity_upload(record, "gradcam", record.default_target)
    assert state.sanity_upload(record, "gradcam", record.default_target) is first and len(runs) == 1
    assert runs[0][1] is record.prediction.pipeline_result.tensor  # the record's own tensor, not a new one


def test_forgetting_the_image_drops_its_record(weights, calls):
    from medcnn.app import forget, state

    data = png_bytes(80, seed=5103)
    key = state.digest(data)
    record = state.route_upload(key, data).analysis
    assert {"read_upload", "analyze_upload"} <= {name for name, _ in forget._caches()}
    for _, clear in forget._caches():
        clear()
    again = state.route_upload(key, data).analysis
    assert again is not record and calls["read"] == 2 and calls["predict"] == 2


def test_the_analyze_page_reads_everything_from_the_record(weights, calls):
    at = page("pages/1_Analyze.py")
    calls.update(read=0, predict=0, explain=0)  # the page warms the models up on first load
    upload(at, ("chest.png", png_bytes(96, seed=5104), "image/png"))
    assert not at.error and any("overlay" in c for i in at.image for c in i.captions)
    assert calls == {"read": 1, "predict": 1, "explain": 1}
    at.slider(key="opacity").set_value(0.3).run()  # redraw only
    at.selectbox(key="method").set_value("smoothgrad").run()
    at.selectbox(key="method").set_value("gradcam").run()  # back: the map kept on the record
    assert not at.exception and not at.error
    assert calls == {"read": 1, "predict": 1, "explain": 2}


def multiframe_dicom(frames: int = 3, size: int = 64) -> bytes:
    """A minimal uncompressed multi-frame DICOM (Modality OT: read like a PNG, by the chest X-ray model)."""
    import io

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "OT", size, size, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(5105).integers(0, 255, (frames, size, size), dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_a_multiframe_file_is_decoded_and_predicted_once_per_frame_shown(weights, calls):
    at = page("pages/1_Analyze.py")
    calls.update(read=0, predict=0, explain=0)
    upload(at, ("frames.dcm", multiframe_dicom(), "application/dicom"))
    assert not at.error and at.slider(key="frame").value == 1  # the middle of 3 frames
    assert (calls["read"], calls["predict"]) == (1, 1)  # the frame read to count the frames is the one shown
    at.slider(key="frame").set_value(2).run()
    assert (calls["read"], calls["predict"]) == (2, 2)
    at.slider(key="frame").set_value(1).run()
    assert not at.exception and not at.error
    assert (calls["read"], calls["predict"]) == (2, 2)


def test_a_card_rewritten_in_place_is_read_again(weights, calls):
    """A site's recalibrated card installed under the same name must not be served from an old record."""
    import os

    from medcnn.app import state

    data = png_bytes(80, seed=5107)
    key, card = state.digest(data), str(weights / "cxr_pneumonia.json")
    first = state.analyze_upload(key, data, card)
    assert state.analyze_upload(key, data, card) is first
    stat = os.stat(card)
    os.utime(card, (stat.st_atime, stat.st_mtime + 10))
    again = state.analyze_upload(key, data, card)
    assert again is not first and calls["predict"] == 2 and calls["read"] == 1
