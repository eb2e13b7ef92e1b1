"""Sending confirmed results back into the source study, once.

A :class:`Sender` builds the objects of an analysis (:func:`medcnn.pacs.objects.build_results`) and
stores them through one transport: STOW-RS (:class:`medcnn.pacs.client.DicomWebClient`) or DIMSE
C-STORE (:func:`medcnn.pacs.dimse.c_store`). It refuses without a reviewer's name, and it sends each
(source image, model, method) at most once: a second click, or a second call while the first is
still sending, gets the first call's answer (``SendReceipt.repeated``) and sends nothing.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from medcnn.pacs.analysis import InstanceAnalysis
from medcnn.pacs.config import DimseConfig

__all__ = ["ConfirmationRequired", "SendReceipt", "Sender"]


class ConfirmationRequired(ValueError):
    """Nothing is sent without a reviewer's explicit confirmation naming them."""


@dataclass(frozen=True)
class SendReceipt:
    """What was stored: one ``{"sop_class_uid", "sop_instance_uid", "series_instance_uid"}`` per object."""

    objects: tuple[dict[str, str], ...]
    transport: str
    repeated: bool = False


class Sender:
    """Stores result objects into the source study through one transport, each analysis once.

    Args:
        client: A :class:`~medcnn.pacs.client.DicomWebClient` (STOW-RS), or None with ``dimse``.
        dimse: A C-STORE peer; when given, objects go by C-STORE instead of STOW-RS.
        timeout_s: C-STORE time-out.
    """

    def __init__(self, client: Any = None, dimse: DimseConfig | None = None, timeout_s: float = 30.0):
        if client is None and dimse is None:
            raise ValueError("sending needs a DICOMweb server (STOW-RS) or a C-STORE peer")
        self.client, self.dimse, self.timeout_s = client, dimse, timeout_s
        self._sent: dict[tuple[str, str, str], SendReceipt] = {}
        self._lock = threading.Lock()

    @property
    def transport(self) -> str:
        return "C-STORE" if self.dimse is not None else "STOW-RS"

    @staticmethod
    def key(analysis: InstanceAnalysis) -> tuple[str, str, str]:
        """(SHA-256 of the source SOP Instance UID, model, method): what "the same result" means."""
        return (analysis.key, analysis.card.name if analysis.card is not None else "", analysis.method)

    def already_sent(self, analysis: InstanceAnalysis) -> SendReceipt | None:
        return self._sent.get(self.key(analysis))

    def send(self, analysis: InstanceAnalysis, confirmed_by: str, created: datetime | None = None) -> SendReceipt:
        """Build, check and store the objects of ``analysis`` (once).

        Args:
            analysis: The analysis (its ``source`` gives the study).
            confirmed_by: The reviewer who confirmed the result (required, non-blank).
            created: Time of the confirmation (default now, UTC).

        Raises:
            ConfirmationRequired: no reviewer named.
            DicomObjectError: an object failed its check (nothing is sent).
            PacsError: the transport failed (nothing is recorded as sent; it may be tried again).
        """
        from medcnn.pacs.objects import build_results

        reviewer = " ".join(str(confirmed_by or "").split())
        if not reviewer:
            raise ConfirmationRequired("sending to the PACS needs the reviewer's confirmation: give the name of the "
                                       "clinician who reviewed this result")
        key = self.key(analysis)
        with self._lock:  # a second click waits here, then finds the first one's receipt
            if key in self._sent:
                first = self._sent[key]
                return SendReceipt(first.objects, first.transport, repeated=True)
            results = build_results(analysis, reviewer, created or datetime.now(timezone.utc))
            study_uid = str(analysis.source.StudyInstanceUID)
            if self.dimse is not None:
                from medcnn.pacs.dimse import c_store

                c_store(self.dimse, results.objects, timeout_s=self.timeout_s)
            else:
                self.client.store(study_uid, results.objects)
            receipt = SendReceipt(tuple(results.summary()), self.transport)
            self._sent[key] = receipt
            return receipt
