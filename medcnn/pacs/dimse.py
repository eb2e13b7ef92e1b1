"""DIMSE C-STORE (PS3.7 9.1.1) of the result objects to an AE title / host / port, with ``pynetdicom``.

One association per call, proposing exactly the SOP classes of the objects in their transfer
syntaxes (Explicit and Implicit VR Little Endian). A rejected or aborted association, a peer that
does not answer, or a non-success status becomes a :mod:`medcnn.pacs.errors` error.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from medcnn.pacs.config import DimseConfig
from medcnn.pacs.errors import PacsAuthError, PacsStoreError, PacsUnreachableError

__all__ = ["c_store"]


def c_store(peer: DimseConfig, datasets: Sequence[Any], timeout_s: float = 30.0) -> list[str]:
    """Send datasets by C-STORE; returns their SOP Instance UIDs once all were stored.

    Raises:
        PacsUnreachableError: no association (peer down, wrong host/port).
        PacsAuthError: the peer rejected the association (e.g. an unknown calling AE title).
        PacsStoreError: a store answered a failure status.
    """
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO/DEBUG lines would echo dataset contents
    ae = AE(ae_title=peer.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    where = f"{peer.ae_title}@{peer.host}:{peer.port}"
    assoc = ae.associate(peer.host, int(peer.port), ae_title=peer.ae_title)
    if assoc.is_rejected:
        raise PacsAuthError(f"the DICOM peer {where} rejected the association: check its AE title and that it "
                            f"accepts the calling AE title {peer.calling_ae_title}")
    if not assoc.is_established:
        raise PacsUnreachableError(f"no DICOM association with {where}: check the host, port and that the "
                                   "peer is running")
    stored: list[str] = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise PacsUnreachableError(f"the DICOM peer {where} did not answer the C-STORE (connection lost "
                                           "or time-out)")
            if code not in (0x0000, 0xB000, 0xB006, 0xB007):  # success and the three warnings (PS3.4 B.2.3)
                raise PacsStoreError(f"the DICOM peer {where} refused an object (C-STORE status 0x{code:04X})")
            stored.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.release()
    return stored
