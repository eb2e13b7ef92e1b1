"""Home page: what medcnn is and is not, the shipped models, the device, links to the pages.

Run through ``streamlit run app.py`` (the router); it also runs on its own.
"""
import streamlit as st

from medcnn.app.nav import link, page_setup
from medcnn.app import state as appstate
from medcnn.visualize import report

page_setup("medcnn", "🩻")

with st.sidebar:
    st.caption(f"Compute device: {appstate.device_description()}")
    st.caption(f"Weights folder: `{appstate.weights_dir()}`")

st.title("medcnn: chest X-ray and CT classification with saliency maps")
st.warning(appstate.DISCLAIMER, icon="⚠️")

left, right = st.columns(2)
with left:
    st.subheader("What it does")
    st.markdown(
        "- Reads a **chest X-ray** or a **CT slice** (DICOM with any or no extension, PNG, JPEG) "
        "in memory: nothing is written to disk, patient identifiers are never read or shown.\n"
        "- Shows **every preprocessing step**, ending with the exact tensor the network receives.\n"
        "- Runs a small CNN and shows **calibrated class probabilities** against the model's "
        "operating threshold.\n"
        "- Explains the decision with **Grad-CAM, Integrated Gradients, SmoothGrad or "
        "Occlusion** maps (Captum), with a randomisation sanity check.\n"
        "- Exports a **PDF report** for a clinical meeting."
    )
with right:
    st.subheader("What it does not do")
    st.markdown(
        "- It is **not a medical device** and gives no diagnosis.\n"
        "- Its models were trained from scratch on a few hundred public images; they can "
        "learn shortcuts (view, detector, text markers). Read the **Model card** page before "
        "trusting any number.\n"
        "- It does not store, send or log your images."
    )

st.subheader("Models")
cards = appstate.list_models()
if not cards:
    st.info(
        f"No model weights found in `{appstate.weights_dir()}` (expected `<name>.pt` + `<name>.json`). "
        "Train one with `python -m medcnn train ...` or point `MEDCNN_WEIGHTS_DIR` at a weights folder."
    )
else:
    st.dataframe(report.model_rows(cards), hide_index=True, key="landing_models")

st.caption(f"Compute device: **{appstate.device_description()}**")

st.subheader("Pages")
c1, c2, c3 = st.columns(3)
with c1:
    link("pages/1_Analyze.py", "Analyze an image", "🔬")
    st.caption("Upload one image: preprocessing, probabilities, saliency, PDF report.")
with c2:
    link("pages/2_Batch.py", "Batch", "🗂️")
    st.caption("Several files or a ZIP: table, CSV, thumbnails with overlays.")
with c3:
    link("pages/3_Model_card.py", "Model cards", "📋")
    st.caption("Data, metrics with confidence intervals, intended use, limitations, audit.")
