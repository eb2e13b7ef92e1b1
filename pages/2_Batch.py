"""Batch: several files or a ZIP -> table, CSV and thumbnails with saliency overlays.

Thin page: reading ZIPs (in memory, with zip-bomb guards and one decompression budget for all the
ZIPs of an upload, expanded once per session) and scoring the files (the one scoring engine, in
batches) live in :mod:`medcnn.app.batch`, and so do the table's columns (the CSV's are the same,
:data:`medcnn.app.batch.BATCH_COLUMNS`); this page only heads them. One bad file only fills the
``error`` column of its row.
"""
import streamlit as st

from medcnn.app.nav import page_setup
from medcnn.app import batch as app_batch
from medcnn.app import display as app_display
from medcnn.app import state as appstate
from medcnn.visualize import overlay
from medcnn.visualize.presentation import map_scale

page_setup("Batch", ":material/stacks:")

cards = appstate.list_models()
with st.sidebar:
    st.header("Options")
    model_choice = st.selectbox("Model", [appstate.AUTO_MODEL] + [c.name for c in cards],
                                key="batch_model_choice")
    alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="batch_opacity")
    cmap = st.selectbox("Colormap", app_display.COLORMAPS, key="batch_cmap")
    n_cols = st.slider("Thumbnails per row", 2, 8, 4, key="batch_columns")

st.title("Batch analysis")
st.caption(appstate.DISCLAIMER)
appstate.require_models(cards)

files = st.file_uploader(
    "Several DICOM / PNG / JPEG files, or ZIP archives of them (read in memory, never extracted)",
    type=None, accept_multiple_files=True, key="batch_upload")
if not files:
    st.info("Upload files to start. Each file gets a row; a file that cannot be read only fills "
            f"its error column. ZIP limits: {app_batch.ZIP_MAX_MEMBERS} files, "
            f"{app_batch.ZIP_MAX_MEMBER_BYTES // 2**20} MiB per file, "
            f"{app_batch.ZIP_MAX_TOTAL_BYTES // 2**20} MiB in total for all the ZIPs of one upload.")
    st.stop()

appstate.warm_up(cards)
items, refused = app_batch.batch_items([(f.name, f.getvalue()) for f in files])
if refused:  # the whole upload is refused; the previously accepted files (if any) stay shown
    st.error(refused)
    if not items:
        st.stop()
    st.caption(f"Showing the {len(items)} files of the previous upload.")
progress = st.progress(0.0, text=f"Analysing {len(items)} files...")
results = app_batch.analyze_batch(
    items, model_choice, progress=lambda done, total, name: progress.progress(done / total,
                                                                             text=f"{done} / {total}: {name}"))
progress.empty()

rows = [app_batch.table_row(r) for r in results]
n_err = sum(bool(r["error"]) for r in rows)
n_flag = sum("⚑" in r["flag"] for r in rows)
st.markdown(f"**{len(rows)} files** · {n_flag} with a positive finding · {n_err} with errors")
st.dataframe(
    rows, hide_index=True, key="batch_table",
    column_config={  # headings: the one place where the page names a column otherwise than its key
        **{key: st.column_config.NumberColumn(label, format="%.3f")
           for key, label in app_batch.column_labels(results).items()},
        "file": st.column_config.TextColumn("file", width="medium"),
        "error": st.column_config.TextColumn("error", width="large"),
        "probability": st.column_config.TextColumn(
            "probability", width="large", help="The positive label's calibrated probability and its threshold; "
                                                "for a multi-label model, the findings at or above their operating "
                                                "points and the top one"),
        "flag": st.column_config.TextColumn(
            "flag", width="small", help="The decision calls the model's positive label or, for a multi-label "
                                        "model, a finding at or above its operating point"),
        "caution": st.column_config.TextColumn("caution", width="medium"),
        "routed": st.column_config.TextColumn("routed", width="medium", help="How the model was chosen"),
    },
)
st.download_button("Download CSV", app_batch.rows_to_csv(rows), file_name="medcnn_batch.csv",
                   mime="text/csv", key="batch_csv", on_click="ignore")

st.subheader("Thumbnails (Grad-CAM for the decided class; multi-label models: the top finding)")
shown = [r for r in results if r.heatmap is not None]
for start in range(0, len(shown), n_cols):
    cols = st.columns(n_cols)
    for col, r in zip(cols, shown[start:start + n_cols]):
        img = overlay(r.display, r.heatmap, cmap=cmap, alpha=alpha, scale=map_scale(r.probability))
        col.image(img, caption=r.caption, width="stretch")
