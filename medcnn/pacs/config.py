"""Where the PACS is and how to sign in to it: one :class:`PacsConfig`, read from settings.

Settings come from a mapping (the app passes its ``[pacs]`` Streamlit secrets) or from the
environment (``MEDCNN_PACS_*``, the command line's default); the keys are the same without
the prefix, lower case:

=================== ========================= ==============================================
key                 environment variable      meaning
=================== ========================= ==============================================
url                 MEDCNN_PACS_URL           DICOMweb base URL (QIDO/WADO/STOW root)
user                MEDCNN_PACS_USER          HTTP basic user (with ``password``)
password            MEDCNN_PACS_PASSWORD      HTTP basic password
token               MEDCNN_PACS_TOKEN         bearer token (instead of user/password)
ca_bundle           MEDCNN_PACS_CA_BUNDLE     PEM file of the CA(s) that signed the server
verify_tls          MEDCNN_PACS_VERIFY_TLS    ``false`` turns verification off, only with ...
allow_insecure_tls  MEDCNN_PACS_ALLOW_INSECURE ``yes``: the explicit consent to that
timeout_s           MEDCNN_PACS_TIMEOUT_S     seconds per request (default 30)
dimse_host          MEDCNN_PACS_DIMSE_HOST    C-STORE peer (optional transport)
dimse_port          MEDCNN_PACS_DIMSE_PORT
dimse_ae_title      MEDCNN_PACS_DIMSE_AE      the peer's AE title
calling_ae_title    MEDCNN_PACS_CALLING_AE    ours (default ``MEDCNN``)
=================== ========================= ==============================================

The secrets (password, token) are kept out of ``repr``/``str`` and never appear in a message:
a config printed, logged or shown by mistake says ``auth='basic'`` and nothing more.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ENV_PREFIX", "PacsConfig", "PacsConfigError", "DimseConfig"]

ENV_PREFIX = "MEDCNN_PACS_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class PacsConfigError(ValueError):
    """The PACS settings are missing, contradictory or unsafe; the message says which key."""


@dataclass(frozen=True)
class DimseConfig:
    """A DIMSE peer for C-STORE: AE title, host, port, and our calling AE title."""

    host: str
    port: int
    ae_title: str
    calling_ae_title: str = "MEDCNN"

    def __post_init__(self) -> None:
        for name in ("ae_title", "calling_ae_title"):
            value = getattr(self, name)
            if not value or len(value) > 16 or "\\" in value:
                raise PacsConfigError(f"{name} must be 1 to 16 characters without backslash, got {value!r}")
        if not 0 < int(self.port) < 65536:
            raise PacsConfigError(f"dimse_port must be 1..65535, got {self.port}")

    @classmethod
    def parse(cls, text: str, calling_ae_title: str = "MEDCNN") -> "DimseConfig":
        """``AE@HOST:PORT`` -> config.

        Raises:
            PacsConfigError: not of that form.
        """
        ae, sep, rest = text.partition("@")
        host, colon, port = rest.rpartition(":")
        if not (sep and colon and ae and host and port.isdigit()):
            raise PacsConfigError(f"a C-STORE peer is written AE_TITLE@HOST:PORT, got {text!r}")
        return cls(host=host, port=int(port), ae_title=ae, calling_ae_title=calling_ae_title)


@dataclass(frozen=True)
class PacsConfig:
    """A DICOMweb server and its credentials.

    Attributes:
        url: DICOMweb base URL, without a trailing slash.
        user: HTTP basic user (``auth == "basic"``).
        verify: True (system CAs), a CA bundle path, or False (only with explicit consent).
        timeout_s: Seconds per request (connect and read).
        dimse: Optional C-STORE peer.
    """

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True
    timeout_s: float = 30.0
    dimse: DimseConfig | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PacsConfigError("the PACS url must be an http:// or https:// DICOMweb base URL "
                                  f"(got {self.safe_url or 'nothing'!r})")
        if parts.username or parts.password:
            raise PacsConfigError("put the PACS credentials in user/password or token, not in the url")
        if self.token and (self.user or self.password):
            raise PacsConfigError("give either a bearer token or a user and password, not both")
        if bool(self.user) != bool(self.password):
            raise PacsConfigError("HTTP basic authentication needs both a user and a password")
        if isinstance(self.verify, str) and not Path(self.verify).is_file():
            raise PacsConfigError(f"the CA bundle {self.verify} does not exist")
        if not self.timeout_s > 0:
            raise PacsConfigError(f"timeout_s must be > 0, got {self.timeout_s}")
        object.__setattr__(self, "url", self.url.rstrip("/"))

    @property
    def auth(self) -> str:
        """``"none"``, ``"basic"`` or ``"bearer"``."""
        return "bearer" if self.token else "basic" if self.user else "none"

    @property
    def safe_url(self) -> str:
        """The URL without query or fragment (what messages may show)."""
        parts = urlsplit(self.url or "")
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}" \
            if parts.scheme else ""

    def __str__(self) -> str:
        return f"PACS {self.safe_url} (auth {self.auth}, TLS verify {'off' if self.verify is False else 'on'})"

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> "PacsConfig":
        """Config from a mapping with the keys of the module table (e.g. ``st.secrets["pacs"]``).

        Raises:
            PacsConfigError: missing url, contradictory credentials, TLS verification turned
                off without ``allow_insecure_tls``, a missing CA bundle, a bad number.
        """
        def get(key: str) -> str | None:
            value = settings.get(key)
            return None if value is None or str(value).strip() == "" else str(value).strip()

        if not get("url"):
            raise PacsConfigError("no PACS configured: set url (MEDCNN_PACS_URL, or [pacs] url in the "
                                  "Streamlit secrets)")
        verify: bool | str = True
        flag = (get("verify_tls") or "true").lower()
        if flag in _FALSE:
            if (get("allow_insecure_tls") or "").lower() not in _TRUE:
                raise PacsConfigError("refusing to turn TLS verification off: give a ca_bundle instead, or "
                                      "set allow_insecure_tls = yes to accept an unverified server explicitly")
            verify = False
        elif flag not in _TRUE:
            raise PacsConfigError(f"verify_tls must be true or false, got {flag!r}")
        if get("ca_bundle"):
            if verify is False:
                raise PacsConfigError("give a ca_bundle or verify_tls = false, not both")
            verify = get("ca_bundle")  # type: ignore[assignment]
        dimse = None
        if get("dimse_host") or get("dimse_port") or get("dimse_ae_title"):
            if not (get("dimse_host") and get("dimse_port") and get("dimse_ae_title")):
                raise PacsConfigError("a C-STORE peer needs dimse_host, dimse_port and dimse_ae_title")
            dimse = DimseConfig(get("dimse_host"), _number("dimse_port", get("dimse_port"), int),  # type: ignore[arg-type]
                                get("dimse_ae_title"), get("calling_ae_title") or "MEDCNN")  # type: ignore[arg-type]
        return cls(url=get("url"), user=get("user"), password=get("password"),  # type: ignore[arg-type]
                   token=get("token"), verify=verify,
                   timeout_s=_number("timeout_s", get("timeout_s") or "30", float), dimse=dimse)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "PacsConfig":
        """Config from ``MEDCNN_PACS_*`` environment variables (see the module table)."""
        env = os.environ if environ is None else environ
        names = {"url": "URL", "user": "USER", "password": "PASSWORD", "token": "TOKEN", "ca_bundle": "CA_BUNDLE",
                 "verify_tls": "VERIFY_TLS", "allow_insecure_tls": "ALLOW_INSECURE", "timeout_s": "TIMEOUT_S",
                 "dimse_host": "DIMSE_HOST", "dimse_port": "DIMSE_PORT", "dimse_ae_title": "DIMSE_AE",
                 "calling_ae_title": "CALLING_AE"}
        return cls.from_mapping({key: env.get(ENV_PREFIX + name) for key, name in names.items()})


def _number(key: str, text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise PacsConfigError(f"{key} must be a number, got {text!r}") from None
