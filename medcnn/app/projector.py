"""Case review on a projector: the probability chart, the page styles and the keyboard script.

Split from :mod:`medcnn.app.review` (which re-exports all three): what the Case review page needs to be
read from the back of a meeting room (large labels, the image seen whole at 1280x720) and stepped
through with the arrow keys or a presentation clicker.
"""
from __future__ import annotations

from typing import Any

__all__ = ["KEYBOARD_SCRIPT", "PRESENTATION_CSS", "findings_table", "probability_bars"]


def findings_table(prediction: Any) -> list[dict[str, str]]:
    """A multi-label result's findings for a projector's narrow side panel: finding, probability,
    operating point and call as text, for a static table whose cells wrap, so every column (the
    call included) stays on screen at 1280x720 (the Analyze page's grid scrolls sideways there).
    The same rows as :func:`medcnn.visualize.findings.finding_rows`, without the relative bar."""
    from medcnn.visualize.findings import finding_rows

    return [{"finding": r["finding"], "P": f"{r['probability']:.3f}", "operating point": f"{r['operating point']:.3f}",
             "call": r["call"]} for r in finding_rows(prediction)]


def probability_bars(prediction: Any) -> dict[str, Any]:
    """Vega-Lite spec for a projector: one bar per class with its value printed at the bar's
    end, large labels, the operating threshold as a dashed rule (its value is in the text
    above the chart, so no label is clipped in a narrow column)."""
    rows = [{"class": k, "p": float(v), "text": f"{float(v):.2f}",
             "kind": "predicted" if k == prediction.label else "other"} for k, v in prediction.probabilities.items()]
    y = {"field": "class", "type": "nominal", "sort": None, "title": None,
         "axis": {"labelFontSize": 15, "labelLimit": 160}}
    return {
        "data": {"values": rows},
        "height": {"step": 38},
        "encoding": {"y": y},
        "layer": [
            {"mark": {"type": "bar", "cornerRadiusEnd": 3},
             "encoding": {"x": {"field": "p", "type": "quantitative", "scale": {"domain": [0, 1]},
                                "axis": {"title": None, "labelFontSize": 12, "tickCount": 5}},
                          "color": {"field": "kind", "type": "nominal", "legend": None,
                                    "scale": {"domain": ["predicted", "other"], "range": ["#b03a2e", "#7f8c8d"]}}}},
            {"mark": {"type": "text", "align": "left", "dx": 4, "fontSize": 15, "fontWeight": "bold"},
             "encoding": {"x": {"field": "p", "type": "quantitative"}, "text": {"field": "text"}}},
            {"mark": {"type": "rule", "strokeDash": [5, 3], "size": 2, "color": "#1b2631"},
             "encoding": {"x": {"datum": float(prediction.threshold)}, "y": {}}},
        ],
    }


#: Page styles: less top padding, the case image capped to the viewport height (so it is
#: seen whole without scrolling at 1280x720), captions at full text contrast.
PRESENTATION_CSS = """<style>
[data-testid="stMainBlockContainer"] { padding: 4rem 1.5rem 2rem 1.5rem; max-width: 100%; }
.st-key-review_image img { width: 100% !important; height: auto; max-height: calc(100vh - 13rem);
  object-fit: contain; display: block; }
.st-key-review_image [data-testid="stCaptionContainer"], .st-key-review_panel [data-testid="stCaptionContainer"],
.st-key-review_nav [data-testid="stCaptionContainer"] { color: inherit; opacity: 1; font-size: 0.95rem; }
.st-key-review_counter h3 { padding: 0.1rem 0; margin: 0; white-space: normal; }
.st-key-review_decision h2 { padding: 0.2rem 0; font-size: 1.9rem; }
</style>"""

#: ArrowLeft / ArrowRight (and PageUp / PageDown, what presentation clickers send) press
#: the previous / next buttons, unless the key goes to a widget that uses it (slider,
#: select box, text field, table). Installed once per browser tab; reinstalling replaces it.
KEYBOARD_SCRIPT = """<script>
(() => {
  const doc = window.document;
  if (window.__medcnnReviewKeys) doc.removeEventListener("keydown", window.__medcnnReviewKeys);
  const roles = ["slider", "combobox", "listbox", "option", "textbox", "spinbutton", "grid", "menu", "tab"];
  const busy = (el) => {
    for (let e = el; e && e !== doc.body; e = e.parentElement) {
      const tag = e.tagName;
      if (tag === "TEXTAREA" || tag === "SELECT" || e.isContentEditable) return true;
      if (tag === "INPUT" && !["checkbox", "radio", "button"].includes(e.type)) return true;
      if (roles.includes(e.getAttribute && e.getAttribute("role"))) return true;
    }
    return false;
  };
  window.__medcnnReviewKeys = (ev) => {
    const dir = {ArrowRight: "next", PageDown: "next", ArrowLeft: "prev", PageUp: "prev"}[ev.key];
    if (!dir || ev.defaultPrevented || ev.altKey || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    if (busy(ev.target)) return;
    const button = doc.querySelector(".st-key-review_" + dir + " button");
    if (!button) return;
    ev.preventDefault();
    if (!button.disabled) button.click();
  };
  doc.addEventListener("keydown", window.__medcnnReviewKeys);
})();
</script>"""
