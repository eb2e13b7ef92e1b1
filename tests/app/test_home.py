"""The Home page: a start-here path, every page, the scope and the gate, a models table that wraps;
navigation icons are Material icons (emoji render as empty boxes where no emoji font exists)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from medcnn.app.nav import PAGES
from test_pages import page, weights  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]
MATERIAL = re.compile(r":material/[a-z0-9_]+:")


def body(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.subheader])


def test_home_starts_here_lists_every_page_and_states_the_scope(weights):  # noqa: F811
    at = page("pages/0_Home.py")
    text = body(at)
    assert "Start here" in [s.value for s in at.subheader]
    for title in ("Analyze", "Batch", "Case review", "Model card", "Recalibrate"):
        assert title in text, title
    assert "Adult frontal chest X-rays" in text and "Axial chest CT slices" in text
    assert "out-of-distribution gate" in text and "not analysed" in text and "caution" in text
    # the page list names every page with what it is for
    assert all(p.title in text or p.script == "pages/0_Home.py" for p in PAGES)


def test_home_models_table_is_static_so_long_cells_wrap(weights):  # noqa: F811
    at = page("pages/0_Home.py")
    assert not at.dataframe  # an interactive grid cuts long cells off
    models = at.table[0].value
    assert set(models["model"]) == {"cxr_pneumonia", "ct_covid"}


def test_every_navigation_icon_is_a_material_icon():
    from streamlit.string_util import validate_material_icon

    for spec in PAGES:
        assert MATERIAL.fullmatch(spec.icon), spec
        validate_material_icon(spec.icon)  # raises on a name Streamlit does not know


@pytest.mark.parametrize("script", ["pages/0_Home.py", "pages/1_Analyze.py", "pages/3_Model_card.py",
                                    "pages/4_Recalibrate.py", "pages/5_Case_review.py"])
def test_page_setup_uses_a_material_icon(script):
    call = re.search(r'page_setup\("[^"]+", "([^"]+)"\)', (REPO / script).read_text())
    assert call and MATERIAL.fullmatch(call.group(1)), script
