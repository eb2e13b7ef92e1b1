"""What a scoring run scores: folders (by content), globs, manifests and plain files."""
from __future__ import annotations

from pathlib import Path

import pytest

from medcnn.distributed.sources import expand_sources, is_image_file, read_manifest

IMAGES = ["CT_small.dcm", "MR_small.dcm", "broken.png", "g0.png", "g1.png", "g2.png", "g3.png", "g4.png",
          "g5.png", "photo.jpg", "scan.dat", "sub/s0.png", "sub/s1.png"]


def test_a_folder_is_searched_recursively_and_files_are_recognised_by_content(image_folder):
    found = expand_sources([image_folder])
    assert [Path(p).relative_to(image_folder).as_posix() for p in found] == IMAGES
    assert all(p.startswith(str(image_folder)) for p in found)  # the given spelling is kept
    assert is_image_file(image_folder / "scan.dat") and not is_image_file(image_folder / "notes.txt")
    assert not is_image_file(image_folder / "photo.jpg")  # found by its name, scored as an error row
    assert str(image_folder / "photo.jpg") in expand_sources([str(image_folder / "*.jpg")])


def test_glob_manifest_and_plain_files_in_order_each_once(image_folder, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,label\n{image_folder / 'g2.png'},x\nmissing.png,y\n,z\n")
    found = expand_sources([str(image_folder / "sub" / "*.png"), manifest, image_folder / "notes.txt",
                            str(image_folder / "**" / "s0.png")])
    assert found == [str(image_folder / "sub" / "s0.png"), str(image_folder / "sub" / "s1.png"),
                     str(image_folder / "g2.png"), str(tmp_path / "missing.png"), str(image_folder / "notes.txt")]
    assert read_manifest(image_folder / "g0.png") is None  # an image is never a manifest
    assert read_manifest(image_folder / "notes.txt") is None  # no path column


def test_a_glob_that_matches_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no file matches"):
        expand_sources([str(tmp_path / "*.dcm")])
