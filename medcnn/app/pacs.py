"""The app's PACS widgets: "Open from PACS" (Analyze, Case review) and "Send to PACS" (after a result).

The server comes from the ``[pacs]`` section of the Streamlit secrets, else the ``MEDCNN_PACS_*``
environment (:class:`medcnn.pacs.config.PacsConfig`); without either the panels say how to set one.

Privacy: what the PACS says about patients (ID, name, accession) is shown only in the list of found
studies, to pick one; it lives in this session's memory and is never written or logged. A PACS
image is named by the SHA-256 of its SOP Instance UID (:func:`medcnn.pacs.analysis.uid_hash`): that
is the image key the pages cache by and the audit trail records.

Sending: the result of the page (its prediction, map and overlay, nothing recomputed) is built into
a structured report, an overlay capture and the PDF (:mod:`medcnn.pacs.objects`) only after the
reviewer types their name and ticks the confirmation; one :class:`medcnn.pacs.send.Sender` per
session sends each result once, so a second click says it was already sent.
"""
from __future__ import annotations

import datetime as dt
import io
from typing import Any

import streamlit as st

from medcnn.app import review
from medcnn.app.auth import audit_event
from medcnn.app import state as appstate

__all__ = ["open_from_pacs", "pacs_config", "review_study_from_pacs", "send_to_pacs"]

_IMAGE = "pacs_image"  # session key: the opened PACS image (bytes, key, UIDs); "Forget this image" drops it


def pacs_config() -> Any:
    """The configured PACS, or None (with the reason shown) when there is none or it is unusable."""
    from medcnn.pacs.config import PacsConfig, PacsConfigError

    try:
        settings = dict(st.secrets.get("pacs", {}))
    except Exception:  # noqa: BLE001 - no secrets file at all: fall back to the environment
        settings = {}
    try:
        return PacsConfig.from_mapping(settings) if settings.get("url") else PacsConfig.from_env()
    except PacsConfigError as e:
        if "no PACS configured" in str(e):
            st.caption("No PACS configured: set `[pacs] url` (and user/password or token) in the Streamlit "
                       "secrets, or the MEDCNN_PACS_URL environment variable.")
        else:
            st.error(f"PACS settings: {e}")
        return None


def _client(config: Any) -> Any:
    from medcnn.pacs.client import DicomWebClient

    return DicomWebClient(config)


def _search_form(prefix: str, config: Any) -> Any:
    """Search fields + button; the found studies are kept in the session. Returns the chosen study or None."""
    from medcnn.pacs.client import MODALITIES

    c1, c2 = st.columns(2)
    patient_id = c1.text_input("Patient ID", key=f"{prefix}_pacs_patient")
    accession = c2.text_input("Accession number", key=f"{prefix}_pacs_accession")
    c3, c4, c5 = st.columns(3)
    date_from = c3.date_input("From", value=None, key=f"{prefix}_pacs_from")
    date_to = c4.date_input("To", value=None, key=f"{prefix}_pacs_to")
    modality = c5.selectbox("Modality", ["any", *MODALITIES], key=f"{prefix}_pacs_modality")
    if st.button("Search the PACS", key=f"{prefix}_pacs_search"):
        try:
            studies = _client(config).search_studies(
                patient_id=patient_id.strip() or None, accession=accession.strip() or None,
                date_from=date_from.isoformat() if date_from else None,
                date_to=date_to.isoformat() if date_to else None, modality=None if modality == "any" else modality)
        except ValueError as e:  # every PacsError is a ValueError with a message
            st.error(f"PACS search: {e}")
            studies = None
        st.session_state[f"{prefix}_pacs_studies"] = studies
    studies = st.session_state.get(f"{prefix}_pacs_studies")
    if studies is None:
        return None
    if not studies:
        st.info("No study matches: widen the dates or check the patient ID / accession number.")
        return None
    # patient fields only here, to pick the right study
    labels = {i: f"{s.date} · {'/'.join(s.modalities) or '?'} · {s.description or 'no description'} · "
                 f"patient {s.patient_id or '?'} {s.patient_name.replace('^', ' ')}".strip()
              for i, s in enumerate(studies)}
    index = st.selectbox("Study", list(labels), format_func=labels.get, key=f"{prefix}_pacs_study")
    return studies[index]


def _instance_label(i: Any, series: dict[str, Any]) -> str:
    s = series.get(i.series_uid)
    size = f"{i.rows}x{i.columns}" if i.has_pixels else "no image"
    where = f"series {s.number} {s.modality} {s.description}".strip() if s else "series ?"
    return f"{where} · image {i.number if i.number is not None else '?'} · {size}"


def open_from_pacs(prefix: str, upload: Any) -> tuple[bytes, str] | None:
    """The image to analyse: the upload's ``(bytes, SHA-256 of the bytes)``, else one opened from the PACS.

    Shows the "Open from PACS" panel while there is no upload. The opened image's key is the SHA-256
    of its SOP Instance UID. Returns None when there is nothing to analyse yet.
    """
    if upload is not None:
        data = upload.getvalue()
        return data, appstate.digest(data)
    with st.expander("Open from PACS", expanded=_IMAGE in st.session_state):
        config = pacs_config()
        if config is not None:
            _open_panel(prefix, config)
    opened = st.session_state.get(_IMAGE)
    return (opened["data"], opened["key"]) if opened else None


def _open_panel(prefix: str, config: Any) -> None:
    from medcnn.pacs.analysis import uid_hash

    study = _search_form(prefix, config)
    if study is None:
        return
    try:
        client = _client(config)
        series = {s.series_uid: s for s in client.series(study.study_uid)}
        instances = [i for i in client.instances(study.study_uid) if i.has_pixels]
    except ValueError as e:
        st.error(f"PACS: {e}")
        return
    if not instances:
        st.info("This study holds no image (only reports or other objects).")
        return
    pick = st.selectbox("Image", range(len(instances)), format_func=lambda n: _instance_label(instances[n], series),
                        key=f"{prefix}_pacs_instance")
    if st.button("Open this image", key=f"{prefix}_pacs_open", type="primary"):
        inst = instances[pick]
        try:
            data = client.retrieve(inst.study_uid, inst.series_uid, inst.sop_uid)
        except ValueError as e:
            st.error(f"PACS: {e}")
            return
        st.session_state[_IMAGE] = {"data": data, "key": uid_hash(inst.sop_uid), "sop_uid": inst.sop_uid}
        st.rerun()


def _sender(config: Any) -> Any:
    from medcnn.pacs.send import Sender

    stored = st.session_state.get("pacs_sender")
    if stored is None or stored[0] != config:
        stored = (config, Sender(_client(config), config.dimse, timeout_s=config.timeout_s))
        st.session_state["pacs_sender"] = stored
    return stored[1]


def send_to_pacs(key: str, data: bytes, *, card: Any, prediction: Any, display: Any, overlay: Any,
                 explanation: Any, method: str, method_label: str, target: str | None, meta: Any) -> None:
    """The "Send to PACS" panel of a result opened from the PACS (nothing for an upload).

    Needs the reviewer's name and a ticked confirmation; sends the page's own result (structured
    report, overlay capture, PDF) into a new series of the source study, once.
    """
    opened = st.session_state.get(_IMAGE)
    if not opened or opened["key"] != key:
        return
    _send_panel("analyze", key, data, card, prediction, display, overlay, explanation, method, method_label,
                target, meta)


def _send_panel(prefix: str, key: str, data: bytes, card: Any, prediction: Any, display: Any, overlay: Any,
                explanation: Any, method: str, method_label: str, target: str | None, meta: Any) -> None:
    import pydicom

    from medcnn.pacs.analysis import InstanceAnalysis

    st.subheader("Send to PACS")
    config = pacs_config()
    if config is None:
        return
    source = pydicom.dcmread(io.BytesIO(data))
    withheld = prediction.ood.withheld
    analysis = InstanceAnalysis(
        str(source.SOPInstanceUID), str(source.SOPClassUID), source=source, meta=meta, card=card,
        prediction=prediction, display=display, overlay=None if withheld else overlay,
        explanation=None if withheld else explanation, method=method, method_label=method_label,
        target=None if withheld else target, reason="; ".join(prediction.ood.reasons) if withheld else "")
    sender = _sender(config)
    done = sender.already_sent(analysis)
    what = ("a report that the image was not analysed, and why" if withheld else
            "a structured report of the findings, the overlay with its legend, and the PDF report")
    st.caption(f"Files {what} as a new series in the same study ({sender.transport}).")
    reviewer = st.text_input("Reviewer (your name, recorded in the report)", key=f"{prefix}_pacs_reviewer_{key[:12]}",
                             disabled=done is not None)
    confirmed = st.checkbox("I have reviewed this result and confirm sending it to the PACS",
                            key=f"{prefix}_pacs_confirm_{key[:12]}", disabled=done is not None)
    clicked = st.button("Send to PACS", key=f"{prefix}_pacs_send_{key[:12]}", type="primary",
                        disabled=done is not None or not (confirmed and reviewer.strip()))
    if clicked:
        try:
            with st.spinner("Building and sending the DICOM objects..."):
                done = sender.send(analysis, reviewer, dt.datetime.now(dt.timezone.utc))
        except ValueError as e:  # confirmation missing, object check, PACS error: a message, the page goes on
            st.error(f"Send to PACS: {e}")
            return
        if not done.repeated:
            audit_event("export to PACS", image_hash=key)  # who filed which image's result (hashes only)
            st.rerun()  # redraw the panel with the button off: it was sent
    if done is not None:
        kinds = ", ".join(_KINDS.get(o["sop_class_uid"], "object") for o in done.objects)
        st.success(f"{'Already sent' if done.repeated else 'Sent'} to the PACS: {kinds} "
                   f"(new series in the same study).")


_KINDS = {"1.2.840.10008.5.1.4.1.1.88.33": "structured report", "1.2.840.10008.5.1.4.1.1.7": "overlay capture",
          "1.2.840.10008.5.1.4.1.1.104.1": "PDF report"}


def review_study_from_pacs() -> None:
    """Case review's "Open from PACS": a study's images become the case set, or are added to it (so
    a list of studies can be reviewed in one set); cases are keyed by the SHA-256 of their UIDs."""
    from medcnn.pacs.analysis import uid_hash

    with st.expander("Open studies from PACS"):
        config = pacs_config()
        if config is None:
            return
        study = _search_form("review", config)
        if study is None:
            return
        c1, c2 = st.columns(2)
        replace = c1.button("Review this study", key="review_pacs_take", type="primary")
        append = c2.button("Add this study to the set", key="review_pacs_add",
                           help="Studies added one after the other are reviewed as one set.")
        if replace or append:
            try:
                client = _client(config)
                images = [i for i in client.instances(study.study_uid) if i.has_pixels][:review.MAX_CASES]
                cases = [review.Case(n, uid_hash(i.sop_uid), client.retrieve(i.study_uid, i.series_uid, i.sop_uid))
                         for n, i in enumerate(images, start=1)]
            except ValueError as e:
                st.error(f"PACS: {e}")
                return
            if not cases:
                st.info("This study holds no image (only reports or other objects).")
                return
            review.set_cases(cases, append=append)
            st.rerun()
