"""Installing a recalibrated card from the Recalibrate page (medcnn.app.install): refused when sign-in is
not configured, when signed out, when the held-out evidence does not show that a refit helps, and until
the box is ticked; otherwise written under its own name beside the untouched original, audited, listed
by the catalogue at once, and serving the recalibrated probabilities."""
from __future__ import annotations

import json

import numpy as np
import pytest

import test_recalibrate_page as recal
from test_pages import REPO, weights_env

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from medcnn.app import install  # noqa: E402
from medcnn.app.auth import AuthConfig  # noqa: E402
from medcnn.models.card import file_sha256  # noqa: E402

PASSWORD = "an app-test password"


@pytest.fixture()
def site_folder(tmp_path, monkeypatch):
    """A fresh weights folder (an install writes into it) whose model is off for the bright/dark site."""
    for key in ("MEDCNN_AUDIT_LOG", "MEDCNN_USERS", "MEDCNN_PASSWORD_HASH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MEDCNN_AUDIT_DB", str(tmp_path / "audit.sqlite"))
    with weights_env(recal.informative_folder(tmp_path / "weights")) as folder:
        yield folder


@pytest.fixture()
def sign_in_on(monkeypatch):
    from medcnn.privacy import hash_password

    monkeypatch.setenv("MEDCNN_PASSWORD_HASH", hash_password(PASSWORD, params=(10, 8, 1)))


def signed_in_page() -> AppTest:
    at = AppTest.from_file(str(REPO / recal.PAGE), default_timeout=120).run()
    at.text_input(key="medcnn_sign_in_password").input(PASSWORD)
    at.button[0].click()
    at = at.run()
    assert not at.exception, at.exception
    return at


def with_site(at: AppTest, zip_data: bytes) -> AppTest:
    at.selectbox(key="recal_model").set_value("cxr_pneumonia")
    at.number_input(key="recal_min_per_class").set_value(5)
    at.select_slider(key="recal_n_boot").set_value(200)
    at.run()
    return recal.upload(at, [("site.zip", zip_data, "application/zip")])


def install_widgets(at: AppTest) -> list:
    return [w for w in [*at.checkbox, *at.button] if w.key in ("recal_install_confirm", "recal_install")]


def files_of(folder) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


# --------------------------------------------------------------------------- the rule, without a page
def test_install_refusal_names_each_missing_condition():
    cfg = AuthConfig("password", password_hash="scrypt:hash")
    signed = {"medcnn_auth_user": "password user", "medcnn_auth_config": cfg.fingerprint}.get
    assert install.install_refusal(True, AuthConfig("off"), signed) == install.NOT_CONFIGURED
    assert install.install_refusal(True, cfg, {}.get) == install.SIGNED_OUT
    stale = {"medcnn_auth_user": "password user", "medcnn_auth_config": "an old hash's"}.get
    assert install.install_refusal(True, cfg, stale) == install.SIGNED_OUT  # signed in with a changed password
    assert install.install_refusal(True, cfg, signed, audited=False) == install.NO_TRAIL
    assert install.install_refusal(False, cfg, signed) == install.NO_EVIDENCE
    assert install.install_refusal(True, cfg, signed) is None
    assert "not configured" in install.NOT_CONFIGURED and "Sign in" in install.SIGNED_OUT
    assert "do not show that a refit helps" in install.NO_EVIDENCE and "MEDCNN_AUDIT_DB=off" in install.NO_TRAIL


# --------------------------------------------------------------------------- refusals on the page
def test_refused_while_sign_in_is_not_configured(site_folder):
    before = files_of(site_folder)
    at = recal.upload(recal.recal_page(site_folder), [("site.zip", recal.bright_dark_zip(), "application/zip")])
    assert not at.error, [e.value for e in at.error]
    assert [b.label for b in at.download_button] == ["Download recalibrated card (JSON)"]  # the download stays
    assert any(i.value == install.NOT_CONFIGURED for i in at.info)
    assert not install_widgets(at)
    assert files_of(site_folder) == before


def test_refused_while_signed_out(site_folder, sign_in_on):
    """With sign-in on, a visitor who has not signed in gets the sign-in form and nothing of the page."""
    at = AppTest.from_file(str(REPO / recal.PAGE), default_timeout=120).run()
    assert not at.exception
    assert at.text_input(key="medcnn_sign_in_password") is not None
    assert not at.file_uploader and not install_widgets(at)


def test_refused_when_the_held_out_evidence_does_not_show_a_refit_helps(site_folder, sign_in_on):
    before = files_of(site_folder)
    at = with_site(signed_in_page(), recal.class_zip(("NORMAL", "PNEUMONIA")))  # random scores: nothing helps
    assert not at.error, [e.value for e in at.error]
    assert any("Nothing to change" in s.value and "no new card to download or install" in s.value for s in at.success)
    assert not install_widgets(at) and not at.download_button
    assert files_of(site_folder) == before


def test_refused_without_an_audit_trail(site_folder, sign_in_on, monkeypatch):
    monkeypatch.setenv("MEDCNN_AUDIT_DB", "off")
    before = files_of(site_folder)
    at = with_site(signed_in_page(), recal.bright_dark_zip())
    assert any(i.value == install.NO_TRAIL for i in at.info)
    assert not install_widgets(at) and files_of(site_folder) == before


# --------------------------------------------------------------------------- the install
def test_signed_in_install_writes_a_site_card_beside_the_original_and_audits_it(site_folder, sign_in_on):
    from medcnn.models.catalogue import list_cards
    from medcnn.privacy.audit_db import read_audit

    before = files_of(site_folder)
    at = with_site(signed_in_page(), recal.bright_dark_zip())
    assert not at.error, [e.value for e in at.error]
    assert not at.info or all(i.value not in (install.NOT_CONFIGURED, install.SIGNED_OUT) for i in at.info)
    confirm = at.checkbox(key="recal_install_confirm")
    assert "for everyone using this server" in confirm.label and "cxr_pneumonia, which stays as it is" in confirm.label
    assert at.button(key="recal_install").disabled  # not before the box is ticked
    confirm.check().run()
    at.button(key="recal_install").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    written = site_folder / "cxr_pneumonia_site.json"
    sha = file_sha256(written)
    assert any("Installed **cxr_pneumonia_site**" in s.value and sha[:12] in s.value for s in at.success)
    after = files_of(site_folder)
    assert {k: v for k, v in after.items() if k in before} == before  # the original card and weights untouched
    assert set(after) - set(before) == {"cxr_pneumonia_site.json", "cxr_pneumonia_site.pt"}
    assert after["cxr_pneumonia_site.pt"] == before["cxr_pneumonia.pt"]  # a byte-identical copy
    card = json.loads(written.read_text())
    assert card["training"]["recalibrated_from"]["card"] == "cxr_pneumonia" and "DOE" not in written.read_text()

    rows = [r for r in read_audit(site_folder.parent / "audit.sqlite") if r["action"] == install.INSTALL_ACTION]
    assert len(rows) == 1 and rows[0]["user"] == "password user" and rows[0]["image"] == sha
    assert rows[0]["model"] == rows[0]["decision"] == ""  # nothing else: no file name, no patient data

    assert "cxr_pneumonia_site" in [c.name for c in list_cards(site_folder)]
    at.run()  # the next page run lists it, without a restart
    assert "cxr_pneumonia_site" in at.selectbox(key="recal_model").options
    at.checkbox(key="recal_install_confirm").check().run()
    at.button(key="recal_install").click().run()  # a second install of the same name is refused
    assert at.error and "already exists" in at.error[0].value
    assert files_of(site_folder)["cxr_pneumonia_site.json"] == sha


# --------------------------------------------------------------------------- library level
def test_installed_card_loads_through_the_catalogue_and_serves_the_recalibrated_probabilities(tmp_path):
    from medcnn.app import recalibrate as app_recal
    from medcnn.inference import Predictor
    from medcnn.io import read_image
    from medcnn.models.card import ModelCard
    from medcnn.models.catalogue import list_cards, resolve_card

    folder = recal.informative_folder(tmp_path / "weights")
    card = ModelCard.load(folder / "cxr_pneumonia.json")
    site = app_recal.collect_site([("site.zip", recal.bright_dark_zip())], card.labels)
    result = app_recal.recalibrate_site(site.key, site, str(card.path), 2.0, 5, 200)
    assert result.fields["changed"]
    new = app_recal.site_card(card, result, "cxr_site_x", site.key)
    installed = install.write_site_card(card, new, folder)

    assert installed.path == folder / "cxr_site_x.json" and installed.sha256 == file_sha256(installed.path)
    assert "cxr_site_x" in [c.name for c in list_cards(folder)]
    path = resolve_card(model="cxr_site_x", weights_dir=folder)
    assert path == installed.path
    predictor = Predictor(path, device="cpu")
    served = sorted((predictor.predict(read_image(data)).positive_prob for data in site.data), reverse=True)
    recalibrated = result.fields["metrics"]["site"]["scores"]["prob"]  # the refit's probabilities, sorted
    np.testing.assert_allclose(served, recalibrated, rtol=0, atol=1e-5)
    shipped = sorted((Predictor(card.path, device="cpu").predict(read_image(d)).positive_prob for d in site.data),
                     reverse=True)
    assert not np.allclose(shipped, recalibrated, atol=1e-3)  # the installed card is not the original
    with pytest.raises(install.RecalibrationError, match="already exists"):
        install.write_site_card(card, app_recal.site_card(card, result, "cxr_site_x", site.key), folder)
