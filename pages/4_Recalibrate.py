"""Recalibrate: refit a model's temperature and operating threshold on one site's labelled images.

Thin page: reading the uploads, scoring, the refit and the figures live in
:mod:`medcnn.app.recalibrate` (on :mod:`medcnn.evaluation.site`). The network weights are never
changed; the new card is a download, installed next to a byte-identical copy of the weights.
"""
import streamlit as st

from medcnn.app.nav import page_setup
from medcnn.app import batch as app_batch
from medcnn.app import cards as app_cards
from medcnn.app import recalibrate as app_recal
from medcnn.app import state as appstate
from medcnn.io import ArchiveBudgetError

page_setup("Recalibrate", ":material/tune:")


def fail(what: str, error: Exception) -> None:
    """Show a library error as a message (never a traceback) and stop the page."""
    st.error(appstate.error_message(what, error))
    st.stop()


multilabel = [c.name for c in appstate.list_models() if c.multilabel]
cards = [c for c in appstate.list_models() if not c.multilabel]  # one temperature and threshold per model
with st.sidebar:
    st.header("Options")
    model_name = st.selectbox("Model to recalibrate", [c.name for c in cards], key="recal_model")
    if multilabel:
        st.caption(f"Not offered here: {', '.join(multilabel)} (multi-label: each finding has its own "
                   "temperature and operating point, which this page does not refit).")
    min_per_class = st.number_input("Fewest images per class", min_value=5, max_value=100_000, value=20,
                                    step=5, key="recal_min_per_class",
                                    help="Fewer labelled images give an unreliable threshold.")
    n_boot = st.select_slider("Bootstrap resamples (95% CIs)", options=[200, 500, 1000, 2000], value=500,
                              key="recal_n_boot")

st.title("Per-site recalibration")
st.caption(appstate.DISCLAIMER)
appstate.require_models(cards)
st.markdown(
    "Scores drift between hospitals and scanner versions. With labelled images from your site, this page "
    "refits the model's **temperature** and its **operating threshold** (Youden's J, as for the shipped "
    "cards) and shows what changes. The network itself is never changed."
)

files = st.file_uploader(
    "A ZIP with one folder per class (e.g. NORMAL/, PNEUMONIA/), or a labels CSV "
    "(path,label[,split][,patient_id]) plus a ZIP of the images", type=None, accept_multiple_files=True,
    key="recal_upload")
if not files:
    st.info("Upload the site's labelled images to start. They stay in memory and are never written to disk. "
            f"ZIP limits: {app_batch.ZIP_MAX_MEMBERS} files, {app_batch.ZIP_MAX_TOTAL_BYTES // 2**20} MiB in total "
            "for all the ZIPs of one upload.")
    st.stop()

card = next(c for c in cards if c.name == model_name)
uploads = [(f.name, f.getvalue()) for f in files]
try:
    table = app_recal.read_site_csv(uploads)
except Exception as e:  # noqa: BLE001 - shown as a message, never a traceback
    fail("reading the labels CSV", e)
group_column = split = None
if table is not None:
    cols = st.columns(2)
    columns = ["(none: resample images)"] + [c for c in table.columns if c not in ("path", "label")]
    default = next((columns.index(c) for c in ("patient_id", "group_id") if c in columns), 0)
    group = cols[0].selectbox("Patient column (CIs resample whole patients)", columns, index=default,
                              key="recal_group_column")
    group_column = None if group == columns[0] else group
    if "split" in table.columns:
        choice = cols[1].selectbox("Rows", ["all"] + sorted(table["split"].dropna().str.lower().unique()),
                                   key="recal_split")
        split = None if choice == "all" else choice

try:
    site = app_recal.collect_site(uploads, card.labels, group_column, split, cache=app_batch.session_cache())
    with st.spinner(f"Scoring {len(site.data)} images with {card.name}..."):
        result = app_recal.recalibrate_site(site.key, site, str(card.path), app_cards.card_mtime(card),
                                            int(min_per_class), int(n_boot))
except ArchiveBudgetError as e:  # the same message as on the other pages that take ZIPs
    st.error(app_batch.refusal_message(e))
    st.stop()
except Exception as e:  # noqa: BLE001
    fail("recalibrating", e)

report = result.report
counts = ", ".join(f"{k}: {v}" for k, v in report["counts"].items())
st.markdown(f"**{report['n_images']} images used** ({counts}) of {result.n_listed} uploaded · "
            f"95% CIs from {report['n_boot']} bootstrap resamples over {report['n_groups']} "
            f"{'patients' if report['bootstrap'] == 'groups' else 'images'}")
for reason, n in sorted(result.skipped.items()):
    st.caption(f"Skipped {n}: {reason}")

st.subheader("Before and after")
st.dataframe(result.rows, hide_index=True, key="recal_table")
for note in report["notes"]:
    st.caption(f"Note: {note}")
cols = st.columns(3)
cols[0].image(result.figures["reliability_before"], width="stretch")
cols[1].image(result.figures["reliability_after"], width="stretch")
cols[2].image(result.figures["roc"], caption="Square: old operating point; circle: new", width="stretch")

st.subheader("Recalibrated model card")
name = st.text_input("Name of the new card", value=f"{card.name}_site", key="recal_name")
try:
    data = app_recal.card_json(card, result, name, site.key)
except Exception as e:  # noqa: BLE001
    fail("making the card", e)
st.download_button("Download recalibrated card (JSON)", data, file_name=f"{name}.json",
                   mime="application/json", key="recal_download", on_click="ignore")
st.markdown(app_recal.install_instructions(card, name, result.weights_sha256))
