"""Analyze one image: preprocessing, probabilities, saliency, PDF report.

Thin page: every computation is in :mod:`medcnn.app.state` (cached), :mod:`medcnn.app.display`
(charts, tables) and :mod:`medcnn.visualize.report`. The page keeps one analysis record
(:class:`medcnn.analysis.Analysis`) per image, card, frame and window: the prediction, the gate's
verdict, the maps and the sanity check are all read from it, never recomputed from the bytes.
"""
from datetime import datetime, timezone

import numpy as np
import streamlit as st

from medcnn.app.auth import audit_analysis, audit_event
from medcnn.app.forget import forget_button, forgotten_notice, uploader_key
from medcnn.app.nav import page_setup
from medcnn.app import display as app_display
from medcnn.app import findings as app_findings
from medcnn.app import pacs as app_pacs
from medcnn.app import state as appstate
from medcnn.visualize import presentation, report
from medcnn.preprocess import CT_PRESETS
from medcnn.visualize import heatmap_rgb, overlay, to_png_bytes

page_setup("Analyze", ":material/biotech:")


def fail(what: str, error: Exception) -> None:
    """Show a library error as a message (never a traceback) and stop the page."""
    st.error(appstate.error_message(what, error))
    st.stop()


cards = appstate.list_models()
methods = app_display.method_options()

# ----------------------------------------------------------------------------- sidebar
with st.sidebar:
    st.header("Model")
    model_choice = st.selectbox(
        "Model", [appstate.AUTO_MODEL] + [c.name for c in cards], key="model_choice",
        help="Auto: CT images go to the CT model; CR, DX, PNG and JPEG to the chest X-ray model.")
    st.header("Explanation")
    method = st.selectbox("Method", list(methods), format_func=lambda m: methods[m].label, key="method")
    target_slot = st.container()  # the target class box, filled once the model is known
    if not methods[method].passes_randomisation_check:
        st.warning(f"{methods[method].label} fails the model-randomisation sanity check "
                   "(Adebayo et al. 2018): its map barely depends on the learned weights.")
    st.caption(methods[method].description)
    alpha = st.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="opacity",
                      help="Opacity where the map is highest; it falls with the map, and no evidence stays clear.")
    cmap = st.selectbox("Colormap", app_display.COLORMAPS, key="cmap")
    contour = st.slider("Outline the top % of the map (0 = off)", 0, 50, 0, 5, key="contour")
    scale_by_prob = st.checkbox("Scale map by the class probability", value=True, key="scale_prob",
                                help="On: brightness × P(target), so a class the model does not call stays dim. "
                                     "Off: full contrast on every image.")
    st.caption(f"Device: {appstate.device_description()}")

st.title("Analyze an image")
st.caption(appstate.DISCLAIMER)

appstate.require_models(cards)
appstate.warm_up(cards)

forgotten_notice()
upload = st.file_uploader("Chest X-ray or CT slice: DICOM (any or no extension), PNG or JPEG",
                          type=None, key=uploader_key())
picked = app_pacs.open_from_pacs("analyze", upload)  # the upload, else an image opened from the PACS
if picked is None:
    st.info("Upload an image to start. It stays in memory and is never written to disk.")
    st.stop()

data, key = picked
if st.session_state.get("audited_upload") != key:  # one audit entry per new upload (hash only)
    audit_event("analyse", image_hash=key)
    st.session_state["audited_upload"] = key
try:
    image = appstate.read_upload(key, data, None)
except Exception as e:  # noqa: BLE001 - every library error becomes a message
    fail("reading the file", e)

# ----------------------------------------------------------------------------- frame + window
frame = None
if image.meta.n_frames > 1:
    if st.session_state.get("frame_of") != key:  # a new file starts on its middle frame
        st.session_state.pop("frame", None)
        st.session_state["frame_of"] = key
    frame = st.slider("Frame (0 = first)", 0, image.meta.n_frames - 1, image.meta.n_frames // 2, key="frame")
    if frame == image.meta.frame:  # the frame already read (the reader's default): not decoded again
        frame = None
    else:
        try:
            image = appstate.read_upload(key, data, frame)
        except Exception as e:  # noqa: BLE001
            fail("reading the frame", e)

window = None
if app_display.is_ct_dicom(image.meta):
    with st.sidebar:
        st.header("CT window")
        presets = ["model default", *CT_PRESETS, "custom"]
        st.session_state.setdefault("ct_level", -600)
        st.session_state.setdefault("ct_width", 1500)
        preset = st.selectbox("Preset", presets, key="ct_preset", on_change=app_display.sync_ct_sliders)
        level = st.slider("Level (HU)", -1500, 3000, step=10, key="ct_level", on_change=app_display.ct_custom)
        width = st.slider("Width (HU)", 10, 4000, step=10, key="ct_width", on_change=app_display.ct_custom)
    window = None if preset == "model default" else (float(level), float(width)) if preset == "custom" else preset

try:
    with st.spinner("Predicting..."):
        routed = appstate.route_upload(key, data, model_choice, frame, window)
except Exception as e:  # noqa: BLE001
    fail("predicting", e)
for message in image.meta.warnings:
    st.warning(message)

# ----------------------------------------------------------------------------- prediction
st.subheader("Prediction")
if routed.analysis is None:  # no model reads this image (e.g. MR): not analysed, with the reason
    st.warning(f"**Not analysed: no model here reads this image.**\n\n- {routed.reason[0].upper()}{routed.reason[1:]}.")
    st.markdown(f"**Decision: {presentation.NOT_ANALYSED}** · {routed.reason}")
    px = np.asarray(image.pixels, np.float32)
    st.image(app_display.to_uint8(appstate.thumbnail((px - px.min()) / max(float(np.ptp(px)), 1e-6))),
             caption="The image (not analysed)", width=480)
    st.subheader("Image")
    st.table(app_display.meta_rows(image.meta), border="horizontal", hide_index=True)
    forget_button(key)
    st.stop()
analysis, how = routed.analysis, routed.how  # this image's record: everything below reads it
card, pred = analysis.card, analysis.prediction
if routed.rerouted:
    st.info(f"Model {card.name}: {how}.")
gate_title, gate_reasons = app_display.ood_message(analysis.verdict)
if gate_title:
    (st.error if analysis.withheld else st.warning)(
        "\n\n".join([f"**{gate_title}**", *(f"- {r[0].upper()}{r[1:]}." for r in gate_reasons)]
                     + ([f"*{routed.reason[0].upper()}{routed.reason[1:]}.*"] if routed.reason else [])))
decision, detail = presentation.decision_parts(card, pred)
st.markdown(f"**Decision: {decision}** · {detail}")
said = presentation.caveat(card, pred, image.meta)
if said:
    st.warning(said)
if analysis.withheld:
    st.caption(f"Model **{card.name}** ({card.architecture}, {how}) · {pred.seconds:.2f} s")
    chart_slot = None
elif card.head_rule.per_finding:  # one row per presented finding, by probability relative to its operating point
    app_findings.show_findings(card, pred, key=f"findings_{card.name}")
    chart_slot = None
    st.caption(f"Model **{card.name}** ({card.architecture}, multi-label, {how}) · {pred.seconds:.2f} s")
else:
    metric_cols = st.columns([1] * len(pred.probabilities) + [5])
    for col, (label, p) in zip(metric_cols, pred.probabilities.items()):
        col.metric(f"P({label})", f"{p:.3f}")
    chart_slot = metric_cols[-1].empty()  # filled after the images: they are what the user waits for
    st.caption(f"Model **{card.name}** ({card.architecture}, {how}) · {pred.seconds:.2f} s")

audit_analysis(key, card.name, method, pred.decided, analysis.verdict.level, card.labels)

# ----------------------------------------------------------------------------- explanation
display = analysis.display
if analysis.withheld:  # a map of an image the model cannot read would only look like evidence
    st.subheader("Model input")
    st.image(app_display.to_uint8(display), caption="Model input (no explanation: image not analysed)",
             width=480)
    expl = over = None
    method_label = methods[method].label
else:
    st.subheader("Explanation")
    with target_slot:
        targets = analysis.targets  # the card's head orders them and names the default
        first = targets.index(analysis.default_target) if analysis.default_target in targets else 0
        if card.head_rule.per_finding:  # a new image starts on its top finding
            target = st.selectbox("Target finding", targets, index=first,
                                  key=f"target_{card.name}_{key[:12]}",
                                  help="Any row of the findings table; default: the top row.")
        else:
            target = st.selectbox("Target class", targets, index=first,
                                  key=f"target_{card.name}", help="Default: the predicted class.")
    try:
        with st.spinner(f"Computing {methods[method].label}..."):
            expl = appstate.explain_analysis(analysis, method, target)
    except Exception as e:  # noqa: BLE001
        fail("explaining", e)
    scale = presentation.map_scale(expl.probability, scale_by_prob)
    over = overlay(display, expl.heatmap, cmap=cmap, alpha=alpha, contour_top_percent=contour or None, scale=scale)
    heat = heatmap_rgb(expl.heatmap, cmap=cmap, scale=scale)
    c1, c2, c3 = st.columns([16, 16, 17])
    c1.image(app_display.to_uint8(display), caption="Model input", width="stretch")
    explained = (app_findings.target_caption(target, expl) if card.head_rule.per_finding
                 else f"target {target}: {expl.params['objective']}")
    c2.image(over, caption=f"{methods[method].label} overlay · {explained}"
             + f" · {presentation.scale_caption(scale)}",
             width="stretch")
    c3.image(app_display.with_colorbar(heat, cmap), caption="Heat map; colour bar: top 1 = most important, bottom 0",
             width="stretch")
    notice = presentation.map_notice(expl)
    if notice:
        st.info(notice)
    if chart_slot is not None:
        chart_slot.vega_lite_chart(app_display.probability_chart(pred, card.positive_label), key="prob_chart")
    detail = f"{methods[method].label} computed in {expl.seconds:.2f} s (image {key[:8]})"
    if expl.delta is not None:
        detail += app_display.ig_convergence_text(expl.params)
    if expl.params.get("display_smoothing"):  # a per-pixel map is shown smoothed (display only)
        detail += f" · map shown smoothed: {expl.params['display_smoothing']}"
    st.caption(detail + " · changing opacity, colormap or outline only redraws (the map is cached).")
    if card.modality == "CXR":
        location = app_display.attention_location(display, expl.heatmap)
        if location:
            st.caption(location, help="Saliency-location audit: attention outside the chest or on the "
                                      "margins suggests the model uses acquisition cues, not anatomy.")

if expl is not None:
    sanity_key = (key, analysis.card_path, frame, str(window), method, target)
    if st.button("Run sanity check (model randomisation)", key="sanity"):
        try:
            with st.spinner("Randomising layers and recomputing the map..."):
                st.session_state["sanity_result"] = (sanity_key, appstate.sanity_upload(analysis, method, target))
        except Exception as e:  # noqa: BLE001
            st.error(appstate.error_message("running the sanity check", e))
    stored = st.session_state.get("sanity_result")
    if stored and stored[0] == sanity_key:
        app_display.show_sanity(stored[1], key="sanity_table")


# ----------------------------------------------------------------------------- export
st.subheader("Export")
method_label = methods[method].label


def pdf_bytes() -> bytes:
    if expl is None:
        return report.build_report(card, pred, display, None, meta=image.meta, created=datetime.now(timezone.utc))
    return report.build_report(card, pred, display, over, method=method_label, method_params=expl.params,
                               explanation_seconds=expl.seconds, target=target, meta=image.meta,
                               notice=presentation.map_notice(expl), created=datetime.now(timezone.utc))


e1, e2, e3 = st.columns(3)
e1.download_button("Download PDF report", pdf_bytes, file_name="medcnn_report.pdf", mime="application/pdf",
                   key="download_pdf", on_click=audit_event, args=("export report", key))
if over is not None:
    e2.download_button("Download overlay PNG", to_png_bytes(over), file_name="medcnn_overlay.png",
                       mime="image/png", key="download_png", on_click=audit_event, args=("export overlay", key))
if image.meta.source_format == "dicom":
    try:
        clean_dicom, deid = appstate.deidentified_upload(key, data)
    except ValueError as e:  # unreadable or not de-identifiable: say why, keep the page
        e3.error(appstate.error_message("de-identifying the file", e))
    else:
        for message in deid.warnings:
            st.warning(message)
        e3.download_button("Download de-identified DICOM", clean_dicom, file_name="deidentified.dcm",
                           mime="application/dicom", key="download_deid", on_click=audit_event,
                           args=("export de-identified DICOM", key))
app_pacs.send_to_pacs(key, data, card=card, prediction=pred, display=display, overlay=over, explanation=expl,
                      method=method, method_label=method_label, target=None if expl is None else target, meta=image.meta)
forget_button(key)
st.caption("The report holds no patient identifiers and not the file name. The DICOM export is "
           "de-identified with the DICOM Basic Application Level Confidentiality Profile and its Clean "
           "Descriptors Option; attributes the profile does not list are removed unless the image needs "
           "them, and comments inside compressed images are removed (pixels unchanged).")

# ----------------------------------------------------------------------------- image details
st.subheader("Image")
m1, m2 = st.columns([2, 3])
with m1:
    st.markdown("**Metadata** (non-identifying fields only)")
    st.table(app_display.meta_rows(image.meta), border="horizontal", hide_index=True)
with m2:
    st.markdown("**Histogram** of the stored values (dashed: window applied)")
    st.vega_lite_chart(app_display.histogram_chart(image.pixels, pred.pipeline_result.window), key="histogram")

st.subheader("Preprocessing")
st.caption("Every step of the model's pipeline, ending with the exact tensor the network receives.")
step_cols = st.columns(len(analysis.steps))
for col, step in zip(step_cols, analysis.steps):
    col.image(app_display.to_uint8(step.image), width="stretch")
    col.markdown(f"**{step.name}** · {' x '.join(map(str, step.shape))}")
    col.caption(app_display.format_params(step.params))
