"""The caption under each preprocessing step's image (medcnn.app.display.format_params)."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from medcnn.app.display import format_params  # noqa: E402


def test_step_parameters_read_as_short_text_nested_facts_included():
    text = format_params({"threshold": "otsu", "level": 0.378412, "from": [157, 256],
                          "edges": {"top": 1.0, "bottom": 0.917, "left": 0.0, "right": 0.0}})
    assert text == "threshold=otsu, level=0.3784, from=157x256, edges=(top 1 bottom 0.917 left 0 right 0)"
    assert format_params({}) == "no parameters"
