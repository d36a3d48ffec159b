"""Chat presets: every shipped file loads; bad files are refused with a clear message."""

from pathlib import Path

import pytest

from studio.errors import StudioError
from studio.presets import ChatPreset, apply_preset, load_chat_presets, parse_preset

PRESETS = Path(__file__).resolve().parent.parent / "presets" / "chat"


def test_presets_shipped_files_all_load():
    presets = load_chat_presets(PRESETS)
    assert len(presets) >= 4
    assert all(p.system_prompt for p in presets)


@pytest.mark.parametrize("data, message", [
    ({"temperature": "hot"}, "temperature must be a float"),
    ({"colour": "red"}, "unknown keys: colour"),
    (["not", "a", "dict"], "must be a JSON object"),
])
def test_presets_bad_preset_is_refused(data, message):
    with pytest.raises(StudioError, match=message):
        parse_preset("x", data)


def test_presets_broken_json_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(StudioError, match="bad.json is not valid JSON"):
        load_chat_presets(tmp_path)


def test_presets_apply_is_sparse_and_pure():
    defaults = {"temperature": 0.8, "top_p": 0.9}
    merged = apply_preset(defaults, ChatPreset("k", "K", params={"temperature": 0.1}))
    assert merged == {"temperature": 0.1, "top_p": 0.9}
    assert defaults == {"temperature": 0.8, "top_p": 0.9}
