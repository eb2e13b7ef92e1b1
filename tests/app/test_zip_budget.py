"""One decompression budget per upload on every page that takes ZIPs, and no re-expansion on reruns.

Four ZIPs of 130 MiB of one repeated byte each (~130 KB compressed; each alone is under the
512 MiB that one ZIP was allowed before) are one over-budget upload: 520 MiB together. Member
expansions are counted by wrapping :meth:`zipfile.ZipFile.open` (every read of a member opens it).
"""
from __future__ import annotations

import io
import zipfile

import pytest

from test_pages import make_weights, page, png_bytes, table_with, upload, weights_env

MIB = 2**20
EXPECTED = ("Error while reading the uploads: these {n} ZIP archives together would expand to 520 MiB uncompressed, "
            "over the limit of 512 MiB for one upload (all its ZIP archives count together). Nothing was expanded: "
            "upload fewer or smaller archives.").format


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("zip_budget_weights"))
    with weights_env(folder):
        yield folder


@pytest.fixture(scope="module")
def big_zips():
    """Four distinct ZIPs of 2 x 65 MiB each (the big members are compressed once, then copied)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for j in range(2):
            zf.writestr(f"series/slice_{j}.dcm", b"\0" * (65 * MIB))
    out = []
    for i in range(4):
        copy = io.BytesIO(buf.getvalue())
        with zipfile.ZipFile(copy, "a") as zf:
            zf.writestr("series/id.txt", f"part {i}".encode())
        out.append((f"part{i}.zip", copy.getvalue(), "application/zip"))
    return out


def small_zip(seed: int = 0) -> tuple[str, bytes, str]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(2):
            zf.writestr(f"set/img{i}.png", png_bytes(64, seed=seed + i))
    return f"small{seed}.zip", buf.getvalue(), "application/zip"


@pytest.fixture
def expansions(monkeypatch):
    """Paths of the ZIP members opened for reading (every expansion opens its member) during the test."""
    seen: list[str] = []
    real = zipfile.ZipFile.open

    def counting(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            seen.append(getattr(name, "filename", name))
        return real(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", counting)
    return seen


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_batch_refuses_four_zips_over_one_budget_and_keeps_the_earlier_results(weights, big_zips, expansions):
    small = small_zip(10)
    at = upload(page("pages/2_Batch.py"), [small])
    assert not at.error and len(table_with(at, "decision")) == 2
    assert sorted(expansions) == ["set/img0.png", "set/img1.png"]
    at = upload(at, [small, *big_zips])
    assert errors(at) == [EXPECTED(n=5)]
    assert sorted(expansions) == ["set/img0.png", "set/img1.png"]  # nothing of the big ZIPs expanded
    rows = table_with(at, "decision")  # the earlier upload's results stay on the page
    assert list(rows["file"]) == ["small10.zip/set/img0.png", "small10.zip/set/img1.png"]
    assert any("previous upload" in c.value for c in at.caption)


def test_batch_alone_over_budget_is_an_error_not_a_traceback(weights, big_zips, expansions):
    at = upload(page("pages/2_Batch.py"), big_zips)
    assert errors(at) == [EXPECTED(n=4)] and not at.dataframe and expansions == []


def test_batch_rerun_does_not_expand_the_zip_again(weights, expansions):
    at = upload(page("pages/2_Batch.py"), [small_zip(20)])
    assert not at.error and sorted(expansions) == ["set/img0.png", "set/img1.png"]
    first = table_with(at, "decision")
    at.slider(key="batch_opacity").set_value(0.7).run()
    at.selectbox(key="batch_cmap").set_value("inferno").run()
    assert not at.exception and not at.error
    assert len(expansions) == 2  # reruns take the members from the session's cache
    assert table_with(at, "decision").equals(first)


def test_case_review_refuses_the_same_set_and_keeps_the_loaded_one(weights, big_zips, expansions):
    at = upload(page("pages/5_Case_review.py"), [small_zip(30)])
    assert not at.error and any(m.value.startswith("### Case 1 of 2") for m in at.markdown)
    expansions.clear()
    at = upload(at, big_zips)
    assert errors(at) == [EXPECTED(n=4)] and expansions == []
    assert any(m.value.startswith("### Case 1 of 2") for m in at.markdown)  # the loaded set stays
    assert not at.sidebar.file_uploader[0].value  # the uploader is emptied all the same (no file names)


def test_recalibrate_refuses_the_same_set(weights, big_zips, expansions):
    at = upload(page("pages/4_Recalibrate.py"), big_zips)
    assert errors(at) == [EXPECTED(n=4)] and expansions == [] and not at.download_button
