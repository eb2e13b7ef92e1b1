"""Model cards: data and citation, metrics with CIs, plots, intended use, limitations, audit.

Thin page: tables come from :mod:`medcnn.visualize.report`, figures from :mod:`medcnn.app.cards`
(cached PNGs of :mod:`medcnn.visualize.plots`).
"""
import json

import streamlit as st

from medcnn.app import cards as app_cards
from medcnn.app import state as appstate
from medcnn.visualize import report

st.set_page_config(page_title="Model cards · medcnn", page_icon="📋", layout="wide")

st.title("Model cards")
st.caption(appstate.DISCLAIMER)
cards = appstate.list_models()
appstate.require_models(cards)

for tab, card in zip(st.tabs([c.name for c in cards]), cards):
    with tab:
        card_path, mtime = str(card.path), app_cards.card_mtime(card)
        st.header(card.name)
        for line in report.card_summary(card):
            st.markdown(f"- {line}")

        st.subheader("Data and citation")
        training = card.training or {}
        for key, label in (("dataset", "Dataset"), ("citation", "Citation"), ("licence", "Licence"),
                           ("license", "Licence"), ("date", "Trained"), ("command", "Command"),
                           ("git_commit", "Commit")):
            if training.get(key):
                st.markdown(f"**{label}:** {training[key]}")
        for src in training.get("sources", []):
            st.markdown(f"- **{src.get('dataset', '?')}**: {src.get('description') or src.get('title', '')} "
                        f"(`{src.get('labels', '')}`)")
            for cite in src.get("citation", []):
                st.caption(f"Cite: {cite}")
            if src.get("licence"):
                st.caption(f"Licence: {src['licence']}")
        if training.get("split_counts"):
            st.markdown("**Images per split and class**")
            st.json(training["split_counts"], expanded=False)

        st.subheader("Metrics (95% bootstrap confidence intervals)")
        rows = report.metric_rows(card)
        if rows:
            st.dataframe(rows, hide_index=True, key=f"metrics_{card.name}")
        else:
            st.info("No metrics recorded in this card.")
        groups = report.group_metric_rows(card)
        if groups:
            st.markdown("**Per subgroup** (e.g. per view: AP films are a known shortcut)")
            st.dataframe(groups, hide_index=True, key=f"groups_{card.name}")

        st.subheader("Plots")
        splits = [name for name, m in card.metrics.items() if isinstance(m, dict) and "confusion_matrix" in m]
        if splits:
            split = st.selectbox("Set", splits, index=splits.index("test") if "test" in splits else 0,
                                 key=f"plot_split_{card.name}")
            cols = st.columns(4)
            cols[0].image(app_cards.card_figure_png("confusion", card_path, mtime, split), width="stretch")
            stored = app_cards.has_stored_scores(card, split)
            if stored:
                st.caption("All four figures come from the card: the confusion matrix from its counts, ROC, "
                           "precision-recall and reliability from the per-image scores stored with the "
                           "metrics (no images or identifiers).")
            else:
                st.caption("The confusion matrix comes from the counts stored in the card. This card holds no "
                           "per-image scores for this set, so ROC, precision-recall and reliability curves are "
                           "computed from the model's own data split when it is on this machine.")
                if st.button(f"Compute ROC / PR / reliability on {split}", key=f"curves_{card.name}"):
                    st.session_state[f"curves_{card.name}_split"] = split
            if stored or st.session_state.get(f"curves_{card.name}_split") == split:
                try:
                    with st.spinner("Scoring the split..."):
                        for col, kind in zip(cols[1:], ("roc", "pr", "reliability")):
                            col.image(app_cards.card_figure_png(kind, card_path, mtime, split), width="stretch")
                except Exception as e:  # noqa: BLE001
                    st.warning(appstate.error_message("computing the curves", e))
        else:
            st.info("No confusion matrix or scores stored in this card: plots are not available.")

        st.subheader("Intended use")
        st.markdown(card.intended_use or "_Not stated._")
        st.subheader("Limitations")
        st.markdown("\n".join(f"- {item}" for item in card.limitations) or "_None stated._")
        st.subheader("Experiments")
        if card.experiments:
            st.dataframe(card.experiments, hide_index=True, key=f"experiments_{card.name}")
        else:
            st.caption("No experiments recorded.")

        st.subheader("Out-of-distribution gate")
        title, rows = app_cards.ood_summary(card)
        st.markdown(title)
        if rows:
            st.dataframe(rows, hide_index=True, key=f"ood_{card.name}")

        # Shortcut / saliency-location audit results stored in ``card.audit`` by ``python -m medcnn audit``.
        st.subheader("Shortcut audit")
        if card.audit:
            for name, value in card.audit.items():
                if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                    st.markdown(f"**{name}**")
                    st.dataframe(value, hide_index=True, key=f"audit_{card.name}_{name}")
                elif isinstance(value, dict):
                    st.markdown(f"**{name}**")
                    st.json(json.loads(json.dumps(value, default=str)), expanded=False)
                else:
                    st.markdown(f"**{name}:** {value}")
        else:
            st.caption("No audit recorded for this model yet (`python -m medcnn audit --data LABELS.csv`).")
