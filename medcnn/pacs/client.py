"""A small DICOMweb client: QIDO-RS (search), WADO-RS (retrieve), STOW-RS (store), on ``requests``.

Written on ``requests`` rather than ``dicomweb-client`` for two things the clinic needs and that
library does not expose: a time-out on every request and one specific, actionable error per
failure (:mod:`medcnn.pacs.errors`). Endpoints (DICOM PS3.18):

* QIDO-RS ``GET {base}/studies?PatientID=..&AccessionNumber=..&StudyDate=A-B&ModalitiesInStudy=..``,
  ``{base}/studies/{study}/series``, ``{base}/studies/{study}/series/{series}/instances``
  (PS3.18 10.6, DICOM JSON answers, PS3.18 F.2).
* WADO-RS ``GET {base}/studies/{study}/series/{series}/instances/{sop}`` with
  ``Accept: multipart/related; type="application/dicom"; transfer-syntax=*`` (PS3.18 8.7.3.5.2):
  ``*`` asks for the stored original, so a compressed image the server cannot transcode still
  comes back; :mod:`medcnn.io` decodes it.
* STOW-RS ``POST {base}/studies/{study}`` with a ``multipart/related; type="application/dicom"``
  body (PS3.18 10.5); the answer's Failed SOP Sequence (0008,1198) is checked.

What the server says about patients (name, ID, accession) stays in the returned summaries, whose
``repr`` hides those fields; nothing here logs or writes anything.
"""
from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from medcnn.pacs.config import PacsConfig
from medcnn.pacs.errors import (PacsAuthError, PacsError, PacsNotFoundError, PacsProtocolError, PacsStoreError,
                                PacsTimeoutError, PacsUnreachableError)

__all__ = ["DicomWebClient", "InstanceSummary", "SeriesSummary", "StudySummary", "MODALITIES",
           "dataset_bytes", "parse_multipart"]

#: Modalities the search offers (the models read CR/DX chest films and CT slices).
MODALITIES = ("CR", "DX", "CT")
_ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_PART_TYPE = "application/dicom"


class _QueryRedactor(logging.Filter):
    """Drops the query of every URL urllib3 logs (its DEBUG line quotes ``?PatientID=...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(a.split("?", 1)[0] + "?<query withheld>" if isinstance(a, str) and "?" in a else a
                                for a in record.args)
        if isinstance(record.msg, str) and "?" in record.msg and not record.args:
            record.msg = record.msg.split("?", 1)[0] + "?<query withheld>"
        return True


for _name in ("urllib3.connectionpool", "requests"):  # once per process; a search query must never reach a log
    if not any(isinstance(f, _QueryRedactor) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_QueryRedactor())


def _value(item: Mapping[str, Any], tag: str, default: Any = "") -> Any:
    """First value of ``tag`` (8 hex digits) in a DICOM JSON object; a PN gives its alphabetic form."""
    values = (item.get(tag) or {}).get("Value") or []
    if not values:
        return default
    v = values[0]
    return v.get("Alphabetic", "") if isinstance(v, dict) else v


def _values(item: Mapping[str, Any], tag: str) -> tuple[str, ...]:
    return tuple(str(v) for v in (item.get(tag) or {}).get("Value") or [])


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class StudySummary:
    """One study of a search. Patient fields are for picking the study on screen only (hidden from repr)."""

    study_uid: str
    date: str
    modalities: tuple[str, ...]
    description: str
    n_series: int | None
    n_instances: int | None
    patient_id: str = field(default="", repr=False)
    patient_name: str = field(default="", repr=False)
    accession: str = field(default="", repr=False)

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> "StudySummary":
        d = str(_value(item, "00080020"))
        return cls(study_uid=str(_value(item, "0020000D")), date=f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 else d,
                   modalities=_values(item, "00080061"), description=str(_value(item, "00081030")),
                   n_series=_int(_value(item, "00201206", None)), n_instances=_int(_value(item, "00201208", None)),
                   patient_id=str(_value(item, "00100020")), patient_name=str(_value(item, "00100010")),
                   accession=str(_value(item, "00080050")))


@dataclass(frozen=True)
class SeriesSummary:
    """One series: non-identifying description only."""

    study_uid: str
    series_uid: str
    modality: str
    number: int | None
    description: str
    n_instances: int | None

    @classmethod
    def from_json(cls, study_uid: str, item: Mapping[str, Any]) -> "SeriesSummary":
        return cls(study_uid, str(_value(item, "0020000E")), str(_value(item, "00080060")),
                   _int(_value(item, "00200011", None)), str(_value(item, "0008103E")),
                   _int(_value(item, "00201209", None)))


@dataclass(frozen=True)
class InstanceSummary:
    """One instance: UIDs, SOP class, number and size (non-identifying)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    number: int | None
    rows: int | None
    columns: int | None

    @classmethod
    def from_json(cls, study_uid: str, series_uid: str, item: Mapping[str, Any]) -> "InstanceSummary":
        return cls(study_uid, str(_value(item, "0020000E", series_uid)), str(_value(item, "00080018")),
                   str(_value(item, "00080016")), _int(_value(item, "00200013", None)),
                   _int(_value(item, "00280010", None)), _int(_value(item, "00280011", None)))

    @property
    def has_pixels(self) -> bool:
        """Whether the server reports an image matrix (Rows/Columns) for it."""
        return bool(self.rows and self.columns)


def dataset_bytes(ds: Any) -> bytes:
    """A pydicom dataset as a Part 10 file (preamble, ``DICM``, file meta)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def parse_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The parts of a ``multipart/related`` body (RFC 2046 5.1), headers dropped.

    Raises:
        PacsProtocolError: no boundary in ``content_type`` or no part in the body.
    """
    boundary = None
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise PacsProtocolError(f"the PACS answered {content_type.split(';')[0] or 'no content type'}, "
                                "not a multipart message")
    delimiter = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        parts.append(content[:-2] if content.endswith(b"\r\n") else content)
    if not parts:
        raise PacsProtocolError("the PACS answered an empty or truncated multipart message")
    return parts


class DicomWebClient:
    """QIDO/WADO/STOW against one server (:class:`PacsConfig`); one HTTP session, reused.

    Every call raises a :class:`~medcnn.pacs.errors.PacsError` subclass on failure.
    """

    def __init__(self, config: PacsConfig, session: requests.Session | None = None):
        self.config = config
        self.session = session or requests.Session()
        self.session.verify = config.verify
        self.session.trust_env = False  # no proxy or netrc credentials picked up behind the user's back
        if config.auth == "basic":
            self.session.auth = (config.user, config.password)  # type: ignore[assignment]
        elif config.auth == "bearer":
            self.session.headers["Authorization"] = f"Bearer {config.token}"

    def __repr__(self) -> str:
        return f"DicomWebClient({self.config})"

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ transport
    def _request(self, method: str, path: str, what: str, **kw: Any) -> requests.Response:
        url = f"{self.config.url}/{path.lstrip('/')}"
        where = self.config.safe_url
        try:
            r = self.session.request(method, url, timeout=self.config.timeout_s, **kw)
        except requests.exceptions.SSLError:
            raise PacsUnreachableError(f"TLS verification of the PACS at {where} failed while {what}: give the "
                                       "CA bundle that signed its certificate (ca_bundle)") from None
        except requests.exceptions.Timeout:
            raise PacsTimeoutError(f"the PACS at {where} did not answer within {self.config.timeout_s:g} s "
                                   f"while {what}; try again, or raise timeout_s") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError):
            raise PacsUnreachableError(f"the PACS at {where} cannot be reached (or closed the connection) while "
                                       f"{what}: check the url and that the server is running") from None
        except requests.exceptions.RequestException as e:
            raise PacsError(f"request to the PACS at {where} failed while {what} ({type(e).__name__})") from None
        if r.status_code in (401, 403):
            raise PacsAuthError(f"the PACS at {where} refused the credentials (HTTP {r.status_code}) while {what}: "
                                "check the user and password or token")
        if r.status_code == 404:
            raise PacsNotFoundError(f"not found on the PACS at {where} while {what} (HTTP 404)")
        if r.status_code == 204:
            return r
        if r.status_code >= 400:
            raise PacsProtocolError(f"the PACS at {where} answered HTTP {r.status_code} while {what}")
        return r

    def _json(self, path: str, what: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        r = self._request("GET", path, what, params=params, headers={"Accept": "application/dicom+json"})
        if r.status_code == 204 or not r.content.strip():
            return []
        try:
            data = r.json()
        except ValueError:
            raise PacsProtocolError(f"the PACS at {self.config.safe_url} answered no DICOM JSON while {what}") from None
        if not isinstance(data, list):
            raise PacsProtocolError(f"the PACS at {self.config.safe_url} answered an unexpected JSON while {what}")
        return data

    # ------------------------------------------------------------------ QIDO-RS
    def search_studies(self, patient_id: str | None = None, accession: str | None = None,
                       date_from: str | None = None, date_to: str | None = None,
                       modality: str | None = None, limit: int = 100) -> list[StudySummary]:
        """Studies matching every given criterion (dates ``YYYY-MM-DD`` or ``YYYYMMDD``, inclusive).

        Raises:
            ValueError: a modality outside :data:`MODALITIES` or a malformed date.
            PacsError: the server could not be asked.
        """
        params: dict[str, Any] = {"limit": int(limit), "includefield": ["00081030", "00080061", "00201206",
                                                                        "00201208", "00080050"]}
        if patient_id:
            params["PatientID"] = patient_id
        if accession:
            params["AccessionNumber"] = accession
        if date_from or date_to:
            params["StudyDate"] = f"{_dicom_date(date_from)}-{_dicom_date(date_to)}"
        if modality:
            if modality.upper() not in MODALITIES:
                raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
            params["ModalitiesInStudy"] = modality.upper()
        items = self._json("studies", "searching studies", params)
        return sorted((StudySummary.from_json(i) for i in items), key=lambda s: s.date, reverse=True)

    def series(self, study_uid: str) -> list[SeriesSummary]:
        """The series of a study, by series number."""
        items = self._json(f"studies/{study_uid}/series", "listing the study's series",
                           {"includefield": ["0008103E", "00201209"]})
        return sorted((SeriesSummary.from_json(study_uid, i) for i in items), key=lambda s: (s.number or 0, s.series_uid))

    def instances(self, study_uid: str, series_uid: str | None = None) -> list[InstanceSummary]:
        """The instances of a series (or of every series of the study), by series then instance number."""
        series = [series_uid] if series_uid else [s.series_uid for s in self.series(study_uid)]
        out: list[InstanceSummary] = []
        for uid in series:
            items = self._json(f"studies/{study_uid}/series/{uid}/instances", "listing the series' instances",
                               {"includefield": ["00280010", "00280011"]})
            out.extend(sorted((InstanceSummary.from_json(study_uid, uid, i) for i in items),
                              key=lambda x: (x.number or 0, x.sop_uid)))
        return out

    # ------------------------------------------------------------------ WADO-RS
    def retrieve(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """One instance as Part 10 bytes, in the transfer syntax it is stored in (``transfer-syntax=*``).

        Raises:
            PacsNotFoundError: no such instance.
            PacsUnreachableError: the server went away during the transfer.
        """
        r = self._request("GET", f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
                          "retrieving the image", headers={"Accept": _ACCEPT_DICOM})
        parts = parse_multipart(r.content, r.headers.get("Content-Type", ""))
        return parts[0]

    # ------------------------------------------------------------------ STOW-RS
    def store(self, study_uid: str, datasets: Sequence[Any]) -> list[str]:
        """Store datasets into the study; returns the SOP Instance UIDs the server accepted.

        Raises:
            PacsStoreError: the server reported a failure for any of them, or accepted fewer.
        """
        boundary = uuid.uuid4().hex
        body = _multipart((dataset_bytes(ds) for ds in datasets), boundary)
        r = self._request("POST", f"studies/{study_uid}", "storing the results", data=body,
                          headers={"Content-Type": f'multipart/related; type="{_PART_TYPE}"; boundary={boundary}',
                                   "Accept": "application/dicom+json"})
        try:
            answer = r.json() if r.content.strip() else {}
        except ValueError:
            answer = {}
        answer = answer[0] if isinstance(answer, list) and answer else answer
        failed = ((answer or {}).get("00081198") or {}).get("Value") or []
        stored = [str(_value(item, "00081155")) for item in ((answer or {}).get("00081199") or {}).get("Value") or []]
        wanted = {str(ds.SOPInstanceUID) for ds in datasets}
        if failed or (stored and not wanted <= set(stored)):
            raise PacsStoreError(f"the PACS at {self.config.safe_url} did not store {len(failed) or len(wanted - set(stored))} "
                                 f"of {len(wanted)} object(s) (STOW-RS Failed SOP Sequence)")
        return stored or sorted(wanted)


def _multipart(payloads: Iterable[bytes], boundary: str) -> bytes:
    out = io.BytesIO()
    for data in payloads:
        out.write(f"--{boundary}\r\nContent-Type: {_PART_TYPE}\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def _dicom_date(text: str | None) -> str:
    if not text:
        return ""
    digits = str(text).replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        raise ValueError(f"dates are written YYYY-MM-DD, got {text!r}")
    return digits
