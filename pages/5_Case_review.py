"""Case review: step through a set of cases one at a time, for a projector in a meeting.

Thin page: loading the set, per-case results (computed once) and the keyboard script are in
:mod:`medcnn.app.review`; the case-series PDF in :mod:`medcnn.visualize.series`. Cases are
named by position and a short image hash, never by file name.
"""
from datetime import datetime, timezone

import streamlit as st

from medcnn.app import display as app_display
from medcnn.app import findings as app_findings
from medcnn.app import pacs as app_pacs
from medcnn.app import review
from medcnn.app import state as appstate
from medcnn.app.auth import audit_event
from medcnn.app.nav import page_setup
from medcnn.app.projector import findings_table
from medcnn.visualize import presentation
from medcnn.visualize.series import build_series_report, summary_row

page_setup("Case review", ":material/co_present:")
st.html(review.PRESENTATION_CSS)

cards = appstate.list_models()
methods = app_display.method_options()

# ----------------------------------------------------------------------------- sidebar
with st.sidebar:
    st.header("Case set")
    uploads = st.file_uploader("Several DICOM / PNG / JPEG files, or ZIP archives of them (read in memory, "
                               "never extracted)", type=None, accept_multiple_files=True, key=review.uploader_key())
    if uploads:  # take the set, then empty the uploader: its file names must not stay on screen
        review.take_uploads(uploads)  # an upload over the ZIP budget is refused; the set loaded stays
        st.rerun()
    app_pacs.review_study_from_pacs()  # or a whole study from the PACS
    if review.refusal():
        st.error(review.refusal())
    cases = review.loaded_cases()
    if cases:
        st.caption(f"{len(cases)} case{'s' if len(cases) != 1 else ''} loaded. Uploading again replaces the set.")
        st.button("Clear the set", key="review_clear", on_click=review.clear_set)
    model_choice = st.selectbox("Model", [appstate.AUTO_MODEL] + [c.name for c in cards],
                                key="review_model_choice")
    cmap = st.selectbox("Colormap", app_display.COLORMAPS, key="review_cmap")
    st.caption("Keyboard: ← / → (or Page Up / Page Down, as sent by presentation clickers) step "
               "through the cases.")
    st.caption(f"Device: {appstate.device_description()}")
    st.html(review.KEYBOARD_SCRIPT, unsafe_allow_javascript=True)

if not cases:
    st.title("Case review")
    st.caption(appstate.DISCLAIMER)
    appstate.require_models(cards)
    appstate.warm_up(cards)
    if review.empty_set_loaded():
        st.warning("The upload held no files to review (ZIP folders, hidden files and __MACOSX entries are "
                   "skipped).")
    st.info("Load a set of cases in the sidebar: several files or a ZIP. They are shown one at a time, "
            "numbered in order and named by a short image hash, never by file name. Files stay in memory.")
    st.stop()

appstate.require_models(cards)
appstate.warm_up(cards)
pending = [c for c in cases if not review.has_result(c, model_choice)]
if pending:  # every prediction once, up front: the summary needs them and stepping is then instant
    progress = st.progress(0.0, text=f"Analysing {len(pending)} cases...")
    for i, case in enumerate(pending, start=1):
        review.case_result(case, model_choice)
        audit_event("analyse", image_hash=case.key)  # the image's hash only, never a name
        progress.progress(i / len(pending), text=f"Analysed {i} of {len(pending)}")
    progress.empty()

total = len(cases)
index = review.current_index(total)
case = cases[index]
result = review.case_result(case, model_choice)

# ----------------------------------------------------------------------------- navigation
with st.container(key="review_nav"):
    nav = st.columns([1.1, 6, 1.1], vertical_alignment="center")
    nav[0].button("◀ Previous", key="review_prev", on_click=review.step, args=(-1, total), disabled=index == 0,
                  width="stretch")
    with nav[1].container(key="review_counter"):
        st.markdown(f"### {case.title(total)}")
    nav[2].button("Next ▶", key="review_next", on_click=review.step, args=(1, total), disabled=index == total - 1,
                  width="stretch")

image_area, panel = st.columns([1.7, 1], gap="medium")

# ----------------------------------------------------------------------------- decision and controls
with panel.container(key="review_panel"):
    if result.error:
        with st.container(key="review_decision"):
            st.markdown("## Could not be analysed")
    elif result.prediction is None:  # no model reads this image (e.g. MR): not analysed, with the reason
        with st.container(key="review_decision"):
            st.markdown(f"## Decision: {presentation.NOT_ANALYSED}")
        st.warning(f"**Not analysed: no model here reads this image.** {result.reason[0].upper()}{result.reason[1:]}.")
    else:
        pred, card = result.prediction, result.card
        gate_title, gate_reasons = app_display.ood_message(pred.ood)
        if gate_title:  # the caution first: it changes how everything below is read
            (st.error if pred.ood.withheld else st.warning)(
                "\n\n".join([f"**{gate_title}**", *(f"- {r[0].upper()}{r[1:]}." for r in gate_reasons)]))
        decision, detail = presentation.decision_parts(card, pred)
        with st.container(key="review_decision"):
            st.markdown(f"## Decision: {decision}")
        st.markdown(detail if pred.ood.withheld else f"**{detail}**")
        said = presentation.caveat(card, pred, result.meta)
        if said:
            st.warning(said)
        if pred.ood.withheld:
            st.markdown("The saliency map is not shown for this image.")
        elif card.head_rule.per_finding:  # the findings, by probability relative to each operating point; cells wrap
            with st.container(key="review_findings"):
                st.table(findings_table(pred), border="horizontal", hide_index=True)
            note = app_findings.hidden_note(card)
            if note:
                st.caption(note)
        else:
            st.caption("Dashed line: the threshold.")
            st.vega_lite_chart(review.probability_bars(pred), key="review_prob_chart")
        if result.reason:
            st.markdown(f"*{result.reason[0].upper()}{result.reason[1:]}.*")
        how = result.how
        explained = f"the {card.head_rule.default_target_text}"
        st.caption(f"Model **{card.name}** ({card.architecture}, {how}) · target of the map: {explained}.")

    show_map = result.explainable
    method = st.selectbox("Explanation method", list(methods), format_func=lambda m: methods[m].label,
                          key="review_method", disabled=not show_map)
    if not methods[method].passes_randomisation_check:
        st.warning(f"{methods[method].label} fails the model-randomisation sanity check: its map barely "
                   "depends on the learned weights.")
    c1, c2 = st.columns(2)
    show_overlay = c1.toggle("Overlay", value=True, key="review_overlay", disabled=not show_map)
    compare = c2.toggle("Compare", value=False, key="review_compare", disabled=not show_map)
    alpha = st.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="review_opacity", disabled=not (show_map and show_overlay))
    method2 = st.selectbox("Second method", list(methods), index=1, format_func=lambda m: methods[m].label,
                           key="review_method2", disabled=not (show_map and compare))
    st.caption(appstate.DISCLAIMER)

# ----------------------------------------------------------------------------- image
with image_area.container(key="review_image"):
    if result.error:
        st.error(result.error)
    elif result.display is None:
        st.info("No model input: no model here reads this image.")
    elif not show_map:
        st.image(app_display.to_uint8(result.display), caption="Model input (no explanation: image not analysed)",
                 width="stretch")
    elif not show_overlay:
        st.image(app_display.to_uint8(result.display), caption="Model input (overlay off)", width="stretch")
    else:
        shown = [method, method2] if compare and method2 != method else [method]
        views = []
        for m in shown:
            with st.spinner(f"Computing {methods[m].label}..."):
                views.append((m, review.case_explanation(case, result, m)))
        cols = st.columns(len(views)) if len(views) > 1 else [st.container()]
        for col, (m, expl) in zip(cols, views):
            if expl.error:
                col.error(expl.error)
            else:
                col.image(review.case_overlay(result, expl, cmap, alpha), width="stretch",
                          caption=f"{methods[m].label} overlay · target {expl.target} "
                                  f"({result.card.head_rule.default_target_text}) · "
                                  f"{presentation.scale_caption(presentation.map_scale(expl.probability))}"
                                  + (f" · smoothed: {expl.params['display_smoothing']}"
                                     if expl.params.get("display_smoothing") else ""))
                if expl.notice:
                    col.info(expl.notice)

if not result.error and result.steps:
    with st.expander("Preprocessing: every step up to the model's input", key="review_steps"):
        step_cols = st.columns(len(result.steps))
        for col, view in zip(step_cols, result.steps):
            col.image(view.image, width="stretch")
            col.markdown(f"**{view.name}** · {' x '.join(map(str, view.shape))}")
            col.caption(app_display.format_params(view.params))
        st.table(app_display.meta_rows(result.meta), border="horizontal", hide_index=True)

# ----------------------------------------------------------------------------- the whole set
with st.expander(f"All {total} cases · case-series PDF", key="review_all"):
    series = review.series_cases(cases, model_choice, None, "")
    st.dataframe([summary_row(c) for c in series], hide_index=True, key="review_table")
    pdf_key = (tuple(c.key for c in cases), model_choice, method, cmap, round(alpha, 2))
    if st.button("Prepare case-series PDF", key="review_pdf_prepare",
                 help="Summary table, the model cards in full, then one page per case with the "
                      f"{methods[method].label} overlay."):
        try:
            with st.spinner("Computing the explanations and laying out the report..."):
                report = build_series_report(
                    review.series_cases(cases, model_choice, method, methods[method].label, cmap, alpha),
                    created=datetime.now(timezone.utc))
            st.session_state["review_pdf"] = (pdf_key, report)
        except Exception as e:  # noqa: BLE001 - a library error is a message, never a traceback
            st.error(appstate.error_message("building the PDF", e))
    stored = st.session_state.get("review_pdf")
    if stored and stored[0] == pdf_key:
        st.download_button("Download case-series PDF", stored[1], file_name="medcnn_case_review.pdf",
                           mime="application/pdf", key="review_pdf_download", on_click=audit_event,
                           args=("export case series",))
    st.caption("The PDF holds no file names and no patient identifiers: cases are numbered and named by a "
               "short image hash.")

# Warm the next case's map while the presenter talks about this one (computed once, then reused).
if index + 1 < total:
    upcoming = cases[index + 1]
    upcoming_result = review.case_result(upcoming, model_choice)
    if upcoming_result.explainable:
        review.case_explanation(upcoming, upcoming_result, method)
