"""Home page: where to start, what medcnn reads and what it does not, every page, the shipped models.

Run through ``streamlit run app.py`` (the router); it also runs on its own.
"""
import streamlit as st

from medcnn.app import state as appstate
from medcnn.app.nav import PAGES, link, page_setup
from medcnn.visualize import report

page_setup("medcnn", ":material/radiology:")

#: What each page is for, by script (the titles and icons come from the navigation, PAGES).
PAGE_PURPOSE = {
    "pages/1_Analyze.py": "One image: preprocessing, calibrated probabilities against the operating point, "
                          "a saliency map with a sanity check, PDF report.",
    "pages/5_Case_review.py": "A set of cases for a meeting, one at a time on a projector; case-series PDF.",
    "pages/2_Batch.py": "Many files or a ZIP: one row per file, CSV, thumbnails with overlays.",
    "pages/3_Model_card.py": "What each model is for, how well it does (with confidence intervals), its "
                             "operating points and what it must not be used for.",
    "pages/4_Recalibrate.py": "Refit a model's temperature and threshold on your site's labelled images; "
                              "download the new card.",
}

with st.sidebar:
    st.caption(f"Compute device: {appstate.device_description()}")
    st.caption(f"Weights folder: `{appstate.weights_dir()}`")

st.title("medcnn: chest X-ray and CT classification with saliency maps")
st.warning(appstate.DISCLAIMER, icon=":material/warning:")

st.subheader("Start here")
st.markdown(
    "1. Read the **Model card** of the model you will use: what it was trained on, what it must not be "
    "used for, and how often it is right.\n"
    "2. Open **Analyze** and upload one image (DICOM, PNG or JPEG). The model is chosen from the image: "
    "CT slices go to the CT model, chest radiographs to the chest X-ray model.\n"
    "3. Read the result from the top: a caution (if any), the decision and its probability, then the map. "
    "Download the PDF report if you need one.\n"
    "4. For several images use **Case review** (one at a time, for a meeting) or **Batch** (a table)."
)
link("pages/1_Analyze.py", "Analyze an image", ":material/biotech:")

st.subheader("What it reads")
st.markdown(
    "- **Adult frontal chest X-rays** (PA or AP; DICOM modality CR or DX, or PNG / JPEG).\n"
    "- **Axial chest CT slices** (DICOM modality CT, one slice at a time, lung window).\n"
    "- Anything else (another body part, a lateral film, a child, another modality, a photo) is outside "
    "what the models were made for. An **out-of-distribution gate** checks every image before its result is "
    "shown: an image of another kind (other anatomy, modality or view), a turned or inverted film, or a DICOM "
    "header that says it is out of scope, is **not analysed** (no probability, no map); a film acquired more "
    "differently than the films the model was checked on is shown with a **caution** at the top of the result. "
    "The gate catches gross mismatches only: it does not make a result right."
)

left, right = st.columns(2)
with left:
    st.subheader("What it does")
    st.markdown(
        "- Reads the image in memory: nothing is written to disk, patient identifiers are never read or shown.\n"
        "- Shows **every preprocessing step**, ending with the exact tensor the network receives.\n"
        "- Gives **calibrated probabilities** against the model's operating point.\n"
        "- Explains the decision with **Grad-CAM, Integrated Gradients, SmoothGrad or Occlusion** maps, "
        "with a randomisation sanity check.\n"
        "- Exports a **PDF report** for a clinical meeting."
    )
with right:
    st.subheader("What it does not do")
    st.markdown(
        "- It is **not a medical device** and gives no diagnosis.\n"
        "- Its models were trained on public research images; they can learn shortcuts (view, detector, text "
        "markers). Read the **Model card** before trusting any number.\n"
        "- It does not store, send or log your images."
    )

st.subheader("Pages")
for spec in PAGES[1:]:
    c1, c2 = st.columns([1, 3], vertical_alignment="center")
    with c1:
        link(spec.script, spec.title, spec.icon)
    c2.caption(PAGE_PURPOSE.get(spec.script, ""))

st.subheader("Models")
cards = appstate.list_models()
if not cards:
    st.info(
        f"No model weights found in `{appstate.weights_dir()}` (expected `<name>.pt` + `<name>.json`). "
        "Train one with `python -m medcnn train ...` or point `MEDCNN_WEIGHTS_DIR` at a weights folder."
    )
else:  # a static table: long cells wrap instead of being cut off
    st.table(report.model_rows(cards), border="horizontal", hide_index=True)

st.caption(f"Compute device: **{appstate.device_description()}**")
