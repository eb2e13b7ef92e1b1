"""Recalibrate: onboard a site, refitting a label's temperature and operating point only where held-out
images of the site show it helps.

Thin page: reading the uploads, scoring, the decision and the figures live in
:mod:`medcnn.app.recalibrate` (on :mod:`medcnn.evaluation.site`); who may install the new card, and
when, in :mod:`medcnn.app.install`. The network weights are never changed; the new card is a download,
installed by hand or, signed in, from the page, next to a byte-identical copy of the weights.
"""
import streamlit as st

from medcnn.app.nav import page_setup
from medcnn.app import batch as app_batch
from medcnn.app import cards as app_cards
from medcnn.app import install as app_install
from medcnn.app import recalibrate as app_recal
from medcnn.app import state as appstate
from medcnn.io import ArchiveBudgetError

page_setup("Recalibrate", ":material/tune:")


def fail(what: str, error: Exception) -> None:
    """Show a library error as a message (never a traceback) and stop the page."""
    st.error(appstate.error_message(what, error))
    st.stop()


cards = appstate.list_models()
with st.sidebar:
    st.header("Options")
    model_name = st.selectbox("Model to recalibrate", [c.name for c in cards], key="recal_model")
    card = next((c for c in cards if c.name == model_name), None)
    finding = None
    if card is not None and card.head_rule.per_finding:  # which finding the site's labels speak to
        finding = st.selectbox("Finding the site's labels speak to", card.labels,
                               index=card.labels.index(card.positive_label), key="recal_finding",
                               help="Only this finding's temperature and operating point can change.")
    min_per_class = st.number_input(
        "Fewest images per class", min_value=5, max_value=100_000, value=20, step=5, key="recal_min_per_class",
        help="With fewer, the held-out folds hold only a handful of images of a class: they cannot tell a real "
             "improvement from chance, and a refitted operating point would follow single images.")
    n_boot = st.select_slider("Bootstrap resamples (95% CIs)", options=[200, 500, 1000, 2000], value=500,
                              key="recal_n_boot")

st.title("Per-site recalibration")
st.caption(appstate.DISCLAIMER)
appstate.require_models(cards)
st.markdown(
    "Scores drift between hospitals and scanner versions. With labelled images from your site, this page checks "
    "whether refitting the model's **temperature** and its **operating point** would help *on images the refit "
    "has not seen* (grouped cross-validation), and refits only what is shown to help; everything else keeps "
    "its shipped value. The network itself is never changed."
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

uploads = [(f.name, f.getvalue()) for f in files]
try:
    table = app_recal.read_site_csv(uploads)
except Exception as e:  # noqa: BLE001 - shown as a message, never a traceback
    fail("reading the labels CSV", e)
group_column = split = positive = None
labels = card.labels
if card.head_rule.per_finding and table is None:
    st.info(f"{card.name} is a multi-label model: upload a labels CSV plus a ZIP of the images, then choose "
            "which label marks the finding.")
    st.stop()
if table is not None:
    cols = st.columns(3 if card.head_rule.per_finding else 2)
    columns = ["(none: resample images)"] + [c for c in table.columns if c not in ("path", "label")]
    default = next((columns.index(c) for c in ("patient_id", "group_id") if c in columns), 0)
    group = cols[0].selectbox("Patient column (CIs resample whole patients)", columns, index=default,
                              key="recal_group_column")
    group_column = None if group == columns[0] else group
    if "split" in table.columns:
        choice = cols[1].selectbox("Rows", ["all"] + sorted(table["split"].dropna().str.lower().unique()),
                                   key="recal_split")
        split = None if choice == "all" else choice
    if card.head_rule.per_finding:
        labels = sorted(table["label"].str.strip().unique())
        positive = cols[-1].selectbox(f"Label marking {finding} (all others: negatives)", labels,
                                      key="recal_positive")

try:
    site = app_recal.collect_site(uploads, labels, group_column, split, cache=app_batch.session_cache())
    with st.spinner(f"Scoring {len(site.data)} images with {card.name} and cross-validating..."):
        result = app_recal.recalibrate_site(site.key, site, str(card.path), app_cards.card_mtime(card),
                                            int(min_per_class), int(n_boot), finding, positive)
except ArchiveBudgetError as e:  # the same message as on the other pages that take ZIPs
    st.error(app_batch.refusal_message(e))
    st.stop()
except Exception as e:  # noqa: BLE001
    fail("recalibrating", e)

report = result.report
counts = ", ".join(f"{k}: {v}" for k, v in report["counts"].items())
st.markdown(f"**{report['n_images']} images used** ({counts}) of {result.n_listed} uploaded, for "
            f"**{report['finding']}** · 95% CIs from {report['n_boot']} bootstrap resamples over {report['n_groups']} "
            f"{'patients' if report['bootstrap'] == 'groups' else 'images'}")
st.dataframe(result.left_out, hide_index=True, key="recal_left_out")
for reason, n in sorted(site.skipped.items()):
    st.caption(f"Skipped {n}: {reason}")

st.subheader("Held-out before and after")
if result.rows:
    st.caption(f"Each image is scored by a refit made without it ({report['held_out']['folds']}-fold grouped "
               "cross-validation). Before: the shipped card. After: what the new card would do.")
    cols = st.columns([3, 2])
    cols[0].dataframe(result.rows, hide_index=True, key="recal_table")
    cols[1].image(result.figures["held_out"], width="stretch")
st.dataframe(result.components, hide_index=True, key="recal_components")
for note in report["notes"]:
    st.caption(f"Note: {note}")
if result.figures:
    cols = st.columns(2)
    cols[0].image(result.figures["reliability_before"], width="stretch")
    cols[1].image(result.figures["reliability_after"], width="stretch")
ins = report["in_sample"]["after"]
st.caption(f"In-sample (measured on the images it was fitted on, so optimistic): sensitivity {ins['recall']:.3f}, "
           f"specificity {ins['specificity']:.3f}, ECE {ins['ece']:.3f}.")

st.subheader("Recalibrated model card")
if not result.fields["changed"]:
    st.success(f"Nothing to change: the held-out folds do not show that a refit helps, so keep using {card.name}. "
               "There is no new card to download or install.")
    st.stop()
name = st.text_input("Name of the new card", value=f"{card.name}_site", key="recal_name")
try:
    new_card = app_recal.site_card(card, result, name, site.key)
except Exception as e:  # noqa: BLE001
    fail("making the card", e)
st.download_button("Download recalibrated card (JSON)", app_recal.card_bytes(new_card), file_name=f"{name}.json",
                   mime="application/json", key="recal_download", on_click="ignore")
st.markdown(app_recal.install_instructions(card, name, result.weights_sha256))

st.subheader("Install for this site")
refusal = app_install.refusal_now(result.fields["changed"])
if refusal:
    st.info(refusal)
    st.stop()
confirmed = st.checkbox(
    f"Install **{name}** for everyone using this server: from now on every page lists it as a model, beside "
    f"{card.name}, which stays as it is. The install is recorded under my sign-in.", key="recal_install_confirm")
if st.button("Install for this site", key="recal_install", disabled=not confirmed):
    try:
        installed = app_install.install_site_card(card, new_card, result.fields["changed"], confirmed,
                                                  appstate.weights_dir())
    except Exception as e:  # noqa: BLE001
        fail("installing the card", e)
    st.success(f"Installed **{new_card.name}** (card SHA-256 `{installed.sha256[:12]}`): choose it by name in the "
               f"model list of any page. {card.name} is unchanged.")
