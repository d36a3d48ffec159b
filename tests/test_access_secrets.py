"""Secrets never reach a page: the ComfyUI address (ComfyUI has no sign-in) and the
OpenRouter key are in no part of the app's config, no Settings row and no message."""

from __future__ import annotations

import json

import pytest

from studio.config import Settings
from tests.conftest import free_port
from tests.lazy_tabs import page_config

COMFY = f"http://127.0.0.1:{free_port()}"  # nothing listens: every ComfyUI call fails
KEY = "sk-or-v1-distinctive-secret-key-0123456789"


@pytest.fixture
def services(tmp_path):
    from studio.services import build_services

    services = build_services(Settings.from_env(
        {"STUDIO_DATA_DIR": str(tmp_path), "COMFYUI_URL": COMFY, "OPENROUTER_API_KEY": KEY,
         "OPENROUTER_BASE_URL": f"http://127.0.0.1:{free_port()}/api/v1"}, dotenv_path=None))
    yield services
    services.images.close()


def test_secrets_are_not_in_the_page(services):
    from studio.ui.app import build_app
    from studio.ui.settings import settings_rows

    demo = build_app(services)
    page = json.dumps(demo.config, default=str)
    assert COMFY not in page and KEY not in page
    # The tabs a page builds when it opens them (studio/ui/lazy.py), as their renders send
    # them to the page.
    built = page_config(demo)
    for renderable in built.renderables:
        rendered = json.dumps(built.get_config(renderable), default=str)
        assert "components" in rendered
        assert COMFY not in rendered and KEY not in rendered
    rows = json.dumps(settings_rows(services.settings))
    assert COMFY not in rows and KEY not in rows


def test_secrets_comfyui_errors_name_the_setting_not_the_address(services, caplog):
    from studio.errors import StudioError
    from studio.ui import models_data

    with pytest.raises(StudioError) as failure:
        services.comfyui.system_stats()
    assert COMFY not in str(failure.value) and "COMFYUI_URL" in str(failure.value)
    _frame, _names, note = models_data.folder_files(services.comfyui, "", "checkpoints")
    assert COMFY not in str(note)
    coordination = services.gpu_coordinator.free_comfyui()
    assert COMFY not in coordination.message
    assert COMFY not in caplog.text and KEY not in caplog.text
