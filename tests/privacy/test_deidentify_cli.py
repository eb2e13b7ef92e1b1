"""``deidentify`` on files and folders: atomic outputs, failures, the summary."""
from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medcnn.cli import deidentify as command
from medcnn.io import read_image
from medcnn.privacy import DeidentificationError, deidentify_path
from medcnn.privacy import files as files_module


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(list(argv)))


@pytest.fixture
def series(tmp_path: Path) -> Path:
    """in/: two CT images of one series (one in a subfolder) and a file that is not DICOM."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.save_as(root / "a.dcm")
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".2"
    ds.InstanceNumber = 2
    ds.save_as(root / "sub" / "b.dcm")
    (root / "notes.txt").write_text("this is not an image\n")
    return root


def test_folder_with_a_bad_file_fails_clearly_and_writes_only_complete_outputs(series, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(str(series), str(out)) == 1
    captured = capsys.readouterr()
    assert "notes.txt: not a DICOM file" in captured.err and "nothing was written" in captured.err
    assert "de-identified 2 of 3 file(s)" in captured.out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.dcm", "sub", "sub/b.dcm"]
    a, b = (pydicom.dcmread(out / name) for name in ("a.dcm", "sub/b.dcm"))
    assert a.SeriesInstanceUID == b.SeriesInstanceUID and a.StudyInstanceUID == b.StudyInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    original = pydicom.dcmread(series / "a.dcm")
    assert a.SeriesInstanceUID != original.SeriesInstanceUID
    assert str(original.PatientName) not in captured.out + captured.err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(read_image(series / "a.dcm").pixels, read_image(out / "a.dcm").pixels)


def test_summary_counts_actions_and_never_prints_values(series, tmp_path, capsys):
    (series / "notes.txt").unlink()
    assert cli(str(series), str(tmp_path / "out"), "--no-pixel-check") == 0
    out = capsys.readouterr().out
    assert "removed" in out and "(X)" in out and "UIDs replaced" in out and "private removed" in out
    assert "distinct UIDs mapped" in out and "rename them" in out
    ds = pydicom.dcmread(series / "a.dcm")
    for value in (str(ds.PatientName), ds.PatientID, ds.StudyInstanceUID, ds.InstitutionName):
        assert value and value not in out


def test_single_file_into_a_folder_or_to_a_name(tmp_path):
    src = get_testdata_file("MR_small.dcm")
    (tmp_path / "dest").mkdir()
    assert cli(src, str(tmp_path / "dest")) == 0
    assert (tmp_path / "dest" / "MR_small.dcm").is_file()
    assert cli(src, str(tmp_path / "clean.dcm"), "--no-pixel-check") == 0
    assert pydicom.dcmread(tmp_path / "clean.dcm").PatientIdentityRemoved == "YES"


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, capsys):
    src, dst = get_testdata_file("MR_small.dcm"), tmp_path / "x.dcm"
    dst.write_bytes(b"keep me")
    assert cli(src, str(dst)) == 1
    assert "exists (pass --overwrite" in capsys.readouterr().err and dst.read_bytes() == b"keep me"
    assert cli(src, str(dst), "--overwrite", "--no-pixel-check") == 0
    assert pydicom.dcmread(dst).PatientIdentityRemoved == "YES"


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_module.os, "replace", boom)
    outcomes = deidentify_path(get_testdata_file("CT_small.dcm"), tmp_path / "o.dcm", check_pixels=False)
    assert not outcomes[0].ok and "No space left on device" in outcomes[0].error
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary file


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_may_not_overwrite_or_nest_in_the_input(series, where):
    target = series if where == "same" else series / "out"
    with pytest.raises(DeidentificationError, match="differ from the input|inside the input"):
        deidentify_path(series, target)


def test_a_file_is_never_written_over_itself(tmp_path):
    src = tmp_path / "a.dcm"
    src.write_bytes(open(get_testdata_file("MR_small.dcm"), "rb").read())
    before = src.read_bytes()
    assert cli(str(src), str(tmp_path), "--overwrite") == 1
    assert src.read_bytes() == before


def test_an_empty_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli(str(tmp_path / "empty"), str(tmp_path / "out")) == 1
    assert "no files found" in capsys.readouterr().err


def test_missing_input_is_a_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        deidentify_path(tmp_path / "nope", tmp_path / "out")


def test_symlinks_are_not_followed(series, tmp_path):
    (series / "notes.txt").unlink()
    os.symlink(get_testdata_file("MR_small.dcm"), series / "link.dcm")
    outcomes = deidentify_path(series, tmp_path / "out", check_pixels=False)
    bad = [o for o in outcomes if not o.ok]
    assert [o.source.name for o in bad] == ["link.dcm"] and "symbolic link" in bad[0].error
    assert not (tmp_path / "out" / "link.dcm").exists()


def text_image_dicom(path: Path) -> Path:
    """An 8-bit secondary capture with a name burned into its top margin."""
    import cv2
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    y, x = np.mgrid[:256, :256] / 256
    pixels = (160 * np.exp(-(((x - 0.5) / 0.3) ** 2 + ((y - 0.55) / 0.35) ** 2))).astype(np.uint8)
    cv2.putText(pixels, "DOE JANE 01/02/1970", (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1, cv2.LINE_8)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Doe^Jane", "12345", "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 256, 256, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_pixel_check_warns_about_text_in_the_margins(tmp_path, capsys):
    src = text_image_dicom(tmp_path / "sc.dcm")
    assert cli(str(src), str(tmp_path / "out.dcm")) == 0
    err = capsys.readouterr().err
    assert "sc.dcm: bright text-like marks found in the image margins (top" in err
    assert "Doe" not in err and "12345" not in err
