"""studio.access.exposure and the real `python app.py`: no studio reachable from other
machines without sign-in, unless the owner says so loudly."""

from __future__ import annotations

import pytest

from studio.access.exposure import OPEN_WARNING, exposure
from studio.errors import ConfigError
from tests.test_app_start import run_app_expecting_exit


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_exposure_loopback_without_users_runs_open_for_one_person(host):
    assert exposure(host=host, share=False, users=0, no_auth=False).sign_in is False


@pytest.mark.parametrize("host, share", [("0.0.0.0", False), ("192.168.1.5", False),
                                         ("127.0.0.1", True)])
def test_exposure_reachable_without_users_refuses_with_what_to_run(host, share):
    with pytest.raises(ConfigError, match=r"studio users add NAME --admin"):
        exposure(host=host, share=share, users=0, no_auth=False)


def test_exposure_with_users_always_signs_in():
    assert exposure(host="127.0.0.1", share=False, users=1, no_auth=False).sign_in
    assert exposure(host="0.0.0.0", share=True, users=3, no_auth=False).sign_in


def test_exposure_no_auth_runs_open_and_warns_only_when_reachable():
    open_lan = exposure(host="0.0.0.0", share=False, users=0, no_auth=True)
    assert (open_lan.sign_in, open_lan.warning) == (False, OPEN_WARNING)
    assert exposure(host="127.0.0.1", share=False, users=0, no_auth=True).warning == ""


def test_exposure_app_on_the_lan_without_users_does_not_start(tmp_path):
    result = run_app_expecting_exit({"STUDIO_DATA_DIR": str(tmp_path),
                                     "GRADIO_SERVER_NAME": "0.0.0.0"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "studio users add NAME --admin" in result.stderr
    assert "STUDIO_NO_AUTH" in result.stderr


def test_exposure_no_auth_on_the_lan_shows_a_banner_in_the_page(tmp_path):
    """Built, not launched: tests never listen beyond 127.0.0.1."""
    import json

    from studio.config import Settings
    from studio.services import build_services
    from studio.ui.app import build_app

    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(tmp_path), "GRADIO_SERVER_NAME": "0.0.0.0",
         "STUDIO_NO_AUTH": "true"}, dotenv_path=None))
    try:
        assert services.exposure.warning == OPEN_WARNING
        assert "Sign-in is OFF" in json.dumps(build_app(services).config, default=str)
    finally:
        services.images.close()


def test_exposure_loopback_page_has_no_banner(tmp_path):
    import json

    from studio.config import Settings
    from studio.services import build_services
    from studio.ui.app import build_app

    services = build_services(Settings.from_env({"STUDIO_DATA_DIR": str(tmp_path)},
                                                dotenv_path=None))
    try:
        assert "Sign-in is OFF" not in json.dumps(build_app(services).config, default=str)
    finally:
        services.images.close()
