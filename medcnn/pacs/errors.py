"""The errors of the PACS path: one class per thing a user can act on.

All are :class:`ValueError` subclasses with a user-facing message (the command line prints them as
one ``error:`` line, the app as ``st.error``). Messages name the server by its base URL only: never
a query (it may hold a patient ID), a credential, or what the server said about a patient.
"""
from __future__ import annotations

__all__ = ["PacsAuthError", "PacsError", "PacsNotFoundError", "PacsProtocolError", "PacsTimeoutError",
           "PacsUnreachableError", "NotAnImageError", "PacsStoreError"]


class PacsError(ValueError):
    """Any failure talking to the PACS."""


class PacsAuthError(PacsError):
    """The server refused the credentials (HTTP 401/403, or a DIMSE association rejected)."""


class PacsUnreachableError(PacsError):
    """No connection: wrong host or port, server down, TLS failure, or it went away mid-transfer."""


class PacsTimeoutError(PacsError):
    """The server did not answer in time."""


class PacsNotFoundError(PacsError):
    """The study, series or instance is not on the server (or a search found nothing)."""


class PacsProtocolError(PacsError):
    """The server answered something this client cannot use (bad status, bad multipart)."""


class NotAnImageError(PacsError):
    """The instance holds no pixel data (a report, a presentation state, ...)."""


class PacsStoreError(PacsError):
    """The server did not store (all) the objects sent to it."""
