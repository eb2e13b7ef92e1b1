"""Model cards: a one-screen summary first (intended use and population, what each output means,
performance with CIs, operating points as sensitivity / specificity, what it must not be used for,
when last checked), then model and preprocessing, data and citation, metrics with CIs, plots,
training record, experiments, the out-of-distribution gate, audit.

Opens on the default chest X-ray model. Developer detail (commands, commit hashes, experiment
tables, field dumps) sits in expanders. Every field is a table or a chart (no JSON trees). Thin
page: the summary comes from :mod:`medcnn.app.card_summary`, metric tables from
:mod:`medcnn.visualize.report`, the other tables, charts and figures from :mod:`medcnn.app.cards`
(figures are cached PNGs of :mod:`medcnn.visualize.plots`).
"""
import streamlit as st

from medcnn.app import cards as app_cards
from medcnn.app.card_summary import default_card_name, ordered_cards, show_summary
from medcnn.app import findings as app_findings
from medcnn.app import state as appstate
from medcnn.app.nav import page_setup
from medcnn.visualize import report

page_setup("Model cards", ":material/description:")

#: Training fields shown in "Data and citation" (the rest are in the training record).
SHOWN = {"dataset", "citation", "licence", "license", "date", "command", "git_commit", "sources", "split_counts",
         "test_rows_excluded", "history", "finalize_commands"}
#: Metric fields shown in the metrics tables (the rest are in the evaluation details).
IN_TABLES = {"auc", "pr_auc", "recall", "specificity", "precision", "accuracy", "balanced_accuracy", "ece", "brier",
             "n", "ci", "auc_ci", "per_class", "scores", "confusion_matrix", "model", "findings", "mean_auc"}


def tables(value: object, root: str, heading: str | None = None) -> None:
    """``value`` as the titled tables of :func:`medcnn.app.cards.nested_tables` (static tables:
    long values wrap) under an optional bold ``heading``; a table of a nested part is
    captioned with its path below ``root``."""
    if heading:
        st.markdown(f"**{heading}**")
    for title, rows in app_cards.nested_tables(value, root):
        if title != root.replace("_", " "):
            st.caption(title)
        st.table(rows, border="horizontal", hide_index=True)


def chart(spec: dict | None, key: str) -> None:
    """A Vega-Lite chart, when there is data for one."""
    if spec:
        st.vega_lite_chart(spec, key=key)


st.title("Model cards")
st.caption(appstate.DISCLAIMER)
cards = ordered_cards(appstate.list_models())  # the default model first: the page opens on it
appstate.require_models(cards)

for tab, card in zip(st.tabs([c.name for c in cards], default=default_card_name(cards), key="card_tabs"), cards):
    with tab:
        card_path, mtime = str(card.path), app_cards.card_mtime(card)
        st.header(card.name)
        st.caption(" · ".join(report.card_summary(card)[:1]))
        show_summary(card)

        st.subheader("Model")
        c1, c2 = st.columns(2)
        with c1.expander("Model fields", key=f"model_fields_{card.name}"):
            st.dataframe(app_cards.model_fields(card), hide_index=True, key=f"model_{card.name}")
        with c2:
            st.markdown("**Preprocessing**, in order (the last step gives the network's input)")
            st.dataframe(app_cards.preprocessing_rows(card), hide_index=True, key=f"preprocessing_{card.name}")

        st.subheader("Data and citation")
        training = card.training or {}
        for key, label in (("dataset", "Dataset"), ("citation", "Citation"), ("licence", "Licence"),
                           ("license", "Licence"), ("date", "Trained")):
            if training.get(key):
                st.markdown(f"**{label}:** {training[key]}")
        for src in training.get("sources", []):
            st.markdown(f"- **{src.get('dataset', '?')}**: {src.get('description') or src.get('title', '')} "
                        f"(`{src.get('labels', '')}`)")
            for cite in src.get("citation", []):
                st.caption(f"Cite: {cite}")
            if src.get("licence"):
                st.caption(f"Licence: {src['licence']}")
        counts = app_cards.split_count_rows(card)
        if counts:
            st.markdown("**Images per split and class**")
            c1, c2 = st.columns(2)
            c1.dataframe(counts, hide_index=True, key=f"splits_{card.name}")
            with c2:
                chart(app_cards.split_count_chart(card), f"splits_chart_{card.name}")
            if training.get("test_rows_excluded"):
                st.caption(f"{training['test_rows_excluded']} test rows are held out of training and validation.")
        if training.get("command") or training.get("git_commit"):
            with st.expander("Training command and commit", key=f"command_{card.name}"):
                if training.get("git_commit"):
                    st.markdown(f"**Commit:** `{training['git_commit']}`")
                if training.get("command"):
                    st.code(training["command"], language="bash", wrap_lines=True)

        st.subheader("Metrics (95% bootstrap confidence intervals)")
        per_finding = card.head_rule.per_finding
        if per_finding:  # one row per finding instead of the single-label table
            app_findings.show_finding_metrics(card, key=f"finding_metrics_{card.name}")
        rows = [] if per_finding else report.metric_rows(card)
        if rows:
            st.dataframe(rows, hide_index=True, key=f"metrics_{card.name}")
            chart(app_cards.ci_chart(app_cards.ci_points(app_cards.metric_sets(card))), f"metrics_chart_{card.name}")
        elif not per_finding:
            st.info("No metrics recorded in this card.")
        per_class = app_cards.per_class_rows(card)
        if per_class:
            st.markdown("**Per class**")
            st.dataframe(per_class, hide_index=True, key=f"per_class_{card.name}")
        groups = report.group_metric_rows(card)
        if groups:
            st.markdown("**Per subgroup** (e.g. per view: AP films are a known shortcut)")
            st.dataframe(groups, hide_index=True, key=f"groups_{card.name}")
            chart(app_cards.ci_chart(app_cards.ci_points(app_cards.group_sets(card), label="group"), label="group"),
                  f"groups_chart_{card.name}")
        details = {name: {k: v for k, v in m.items() if k not in IN_TABLES}
                   for name, m in app_cards.metric_sets(card).items()}
        with st.expander("Evaluation details: counts, bootstrap, calibration, every subgroup metric",
                         key=f"eval_details_{card.name}"):
            tables({name: d for name, d in details.items() if d}, "evaluation")
            if isinstance(card.metrics.get("calibration"), dict):
                tables(card.metrics["calibration"], "calibration", "Calibration")
            for name, value in card.metrics.items():
                if "_by_" in name and isinstance(value, dict) and isinstance(value.get("groups"), dict):
                    tables(value["groups"], name, f"Per {value.get('column', 'group')} ({name.split('_by_')[0]})")

        st.subheader("Plots")
        splits = [name for name, m in card.metrics.items() if isinstance(m, dict) and "confusion_matrix" in m]
        finding_splits = app_cards.finding_score_splits(card) if per_finding else []
        if finding_splits:  # one finding at a time, from the scores stored with its metrics
            c1, c2 = st.columns(2)
            split = c1.selectbox("Set", finding_splits, key=f"plot_split_{card.name}")
            finding = c2.selectbox("Finding", card.labels, key=f"plot_finding_{card.name}")
            for col, kind in zip(st.columns(3), ("roc", "pr", "reliability")):
                col.image(app_cards.finding_figure_png(kind, card_path, mtime, split, finding), width="stretch")
            st.caption("ROC, precision-recall and reliability of the chosen finding, from the per-image scores "
                       "stored with the metrics (no images or identifiers); the marked point is its operating point.")
        elif splits:
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

        st.subheader("Training record")
        chart(app_cards.history_chart(card), f"history_{card.name}")
        record = {k: v for k, v in training.items() if k not in SHOWN}
        if record:
            with st.expander("Hyperparameters, augmentation, calibration and run details",
                             key=f"training_{card.name}"):
                tables(record, "training")
        if training.get("finalize_commands"):
            with st.expander("Commands that produced the shipped files", key=f"commands_{card.name}"):
                st.code("\n".join(training["finalize_commands"]), language="bash", wrap_lines=True)
        if not record and not training.get("history"):
            st.caption("No training record in this card.")

        st.subheader("Experiments")
        if card.experiments:
            with st.expander(f"{len(card.experiments)} experiments: settings, commands and results",
                             key=f"experiments_box_{card.name}"):
                st.dataframe(app_cards.experiment_rows(card), hide_index=True, key=f"experiments_{card.name}",
                             column_config={"command": st.column_config.TextColumn("command", width="large")})
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
            for name, value in card.audit.items():  # the warnings in view, the tables in expanders
                if isinstance(value, dict) and isinstance(value.get("warning"), str):
                    st.warning(value["warning"])
            with st.expander("Audit tables", key=f"audit_{card.name}"):
                for name, value in card.audit.items():
                    st.markdown(f"**{name.replace('_', ' ')}**")
                    if isinstance(value, (dict, list)):
                        tables(value, name)
                    else:
                        st.markdown(str(value))
        else:
            st.caption("No audit recorded for this model yet (`python -m medcnn audit --data LABELS.csv`).")
