"""PACS settings and transport errors without a server: secrets stay hidden, unsafe TLS is refused,
a silent server times out, a closed port is unreachable, multipart answers parse."""
from __future__ import annotations

import hashlib
import socket

import pytest

from medcnn.pacs.analysis import uid_hash
from medcnn.pacs.client import DicomWebClient, parse_multipart
from medcnn.pacs.config import DimseConfig, PacsConfig, PacsConfigError
from medcnn.pacs.errors import PacsProtocolError, PacsTimeoutError, PacsUnreachableError


def test_secrets_never_appear_in_repr_or_str():
    basic = PacsConfig.from_mapping({"url": "https://pacs.example/dicom-web/", "user": "u", "password": "S3cretPw"})
    token = PacsConfig.from_env({"MEDCNN_PACS_URL": "https://pacs.example/dw", "MEDCNN_PACS_TOKEN": "T0kenValue"})
    assert basic.auth == "basic" and token.auth == "bearer" and basic.url == "https://pacs.example/dicom-web"
    for text in (repr(basic), str(basic), repr(DicomWebClient(basic))):
        assert "S3cretPw" not in text
    assert "T0kenValue" not in repr(token) + str(token)
    assert PacsConfig.from_mapping({"url": "http://h/dw"}).auth == "none"


@pytest.mark.parametrize("settings, message", [
    ({}, "no PACS configured"),
    ({"url": "ftp://h/x"}, "http:// or https://"),
    ({"url": "https://u:p@h/x"}, "not in the url"),
    ({"url": "https://h/x", "user": "u"}, "both a user and a password"),
    ({"url": "https://h/x", "user": "u", "password": "p", "token": "t"}, "not both"),
    ({"url": "https://h/x", "verify_tls": "false"}, "refusing to turn TLS verification off"),
    ({"url": "https://h/x", "ca_bundle": "/no/such/ca.pem"}, "does not exist"),
    ({"url": "https://h/x", "timeout_s": "soon"}, "must be a number"),
    ({"url": "https://h/x", "dimse_host": "h"}, "needs dimse_host, dimse_port and dimse_ae_title"),
])
def test_bad_settings_are_refused_with_the_key(settings, message):
    with pytest.raises(PacsConfigError, match=message):
        PacsConfig.from_mapping(settings)


def test_tls_verification_off_only_when_said_explicitly(tmp_path):
    off = PacsConfig.from_mapping({"url": "https://h/x", "verify_tls": "false", "allow_insecure_tls": "yes"})
    assert off.verify is False and "TLS verify off" in str(off)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert PacsConfig.from_mapping({"url": "https://h/x", "ca_bundle": str(ca)}).verify == str(ca)
    assert PacsConfig.from_mapping({"url": "https://h/x"}).verify is True


def test_dimse_peer_parsing():
    peer = DimseConfig.parse("ORTHANC@127.0.0.1:4242")
    assert (peer.ae_title, peer.host, peer.port) == ("ORTHANC", "127.0.0.1", 4242)
    with pytest.raises(PacsConfigError, match="AE_TITLE@HOST:PORT"):
        DimseConfig.parse("127.0.0.1:4242")
    with pytest.raises(PacsConfigError, match="1 to 16 characters"):
        DimseConfig.parse("A_VERY_LONG_AE_TITLE_X@h:1")


def test_a_silent_server_times_out():
    with socket.socket() as server:  # accepts the connection, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        client = DicomWebClient(PacsConfig(f"http://127.0.0.1:{port}/dicom-web", timeout_s=0.5))
        with pytest.raises(PacsTimeoutError, match=r"did not answer within 0.5 s while searching studies"):
            client.search_studies(patient_id="SECRETID123")


def test_a_closed_port_is_unreachable_and_the_query_is_not_quoted():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = DicomWebClient(PacsConfig(f"http://127.0.0.1:{port}/dicom-web", timeout_s=2))
    with pytest.raises(PacsUnreachableError) as info:
        client.search_studies(patient_id="SECRETID123")
    assert "cannot be reached" in str(info.value) and "SECRETID123" not in str(info.value)


def test_multipart_parsing():
    body = b"--b1\r\nContent-Type: application/dicom\r\n\r\nAAA\r\n--b1\r\nContent-Type: application/dicom\r\n\r\nBB\r\n--b1--\r\n"
    assert parse_multipart(body, 'multipart/related; type="application/dicom"; boundary="b1"') == [b"AAA", b"BB"]
    with pytest.raises(PacsProtocolError, match="not a multipart"):
        parse_multipart(b"{}", "application/json")
    with pytest.raises(PacsProtocolError, match="empty or truncated"):
        parse_multipart(b"--b1--\r\n", "multipart/related; boundary=b1")


def test_uid_hash_is_the_sha256_of_the_uid():
    assert uid_hash(" 1.2.840.1 ") == hashlib.sha256(b"1.2.840.1").hexdigest()
