"""What the Analyze page says of a randomisation-test result (medcnn.app.display)."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from medcnn.app.display import sanity_summary  # noqa: E402

NOT_TESTABLE = {"method": "gradcam", "testable": False, "passes": None, "steps": [], "final_spearman": None,
                "final_ssim": None, "threshold": 0.5, "reason": "the original map is empty: no region raises it"}


def test_not_testable_is_neither_a_pass_nor_a_fail():
    verdict, rows = sanity_summary(NOT_TESTABLE)
    assert verdict.startswith("Not testable: the original map is empty")
    assert "Passes" not in verdict and "Fails" not in verdict and "SSIM" not in verdict
    assert rows == []


@pytest.mark.parametrize("passes, word", [(True, "Passes"), (False, "Fails")])
def test_a_testable_result_keeps_its_verdict_and_numbers(passes, word):
    steps = [{"layer": "fc", "spearman": 0.1, "ssim": 0.2}]
    verdict, rows = sanity_summary({"testable": True, "passes": passes, "steps": steps, "final_spearman": 0.1,
                                    "final_ssim": 0.2, "threshold": 0.5})
    assert verdict.startswith(word) and "SSIM 0.20" in verdict and rows == steps
