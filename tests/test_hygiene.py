"""Storage hygiene: output retention by age and size (favourites never go) and the
unused-models report."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

from studio.models import hygiene
from studio.clients.ollama import ModelInfo
from studio.errors import InvalidInput
from studio.models.hygiene import (ModelRecord, OutputFile, delete_outputs, model_records,
                            retention_plan, scan_outputs, unused_models)

DAY = 86_400.0
NOW = 100 * DAY


def f(name, days_old, size=10, favourite=False):
    return OutputFile(name, size, NOW - days_old * DAY, favourite)


def names(plan):
    return [x.path for x in plan.delete]


def test_retention_no_limits_deletes_nothing():
    plan = retention_plan([f("a", 400), f("b", 1)], now=NOW)
    assert plan.empty and plan.kept == 2
    assert "No retention limit" in plan.summary


def test_retention_by_days_deletes_older_files():
    plan = retention_plan([f("old", 31), f("edge", 29), f("new", 1)], keep_days=30, now=NOW)
    assert names(plan) == ["old"]
    assert plan.freed_bytes == 10 and plan.kept == 2


def test_retention_by_days_never_deletes_favourites():
    plan = retention_plan([f("loved", 300, favourite=True), f("old", 300)], keep_days=7, now=NOW)
    assert names(plan) == ["old"]
    assert "1 favourite(s) are kept" in plan.summary


def test_retention_by_size_deletes_oldest_first_until_under_limit():
    files = [f("a", 5, 40), f("b", 4, 40), f("c", 3, 40), f("d", 2, 40)]
    plan = retention_plan(files, keep_bytes=100, now=NOW)
    assert names(plan) == ["a", "b"]
    assert plan.kept_bytes == 80


def test_retention_by_size_skips_favourites_and_counts_them():
    files = [f("fav", 9, 60, favourite=True), f("a", 5, 30), f("b", 1, 30)]
    plan = retention_plan(files, keep_bytes=90, now=NOW)
    assert names(plan) == ["a"]
    assert plan.kept_bytes == 90


def test_retention_favourites_over_the_limit_are_said_not_deleted():
    plan = retention_plan([f("fav", 9, 500, favourite=True)], keep_bytes=100, now=NOW)
    assert plan.empty
    assert "Favourites alone take" in plan.summary


def test_retention_days_and_size_together():
    files = [f("ancient", 90, 10), f("a", 5, 50), f("b", 1, 50)]
    plan = retention_plan(files, keep_days=30, keep_bytes=60, now=NOW)
    assert names(plan) == ["ancient", "a"]


@pytest.mark.parametrize("kwargs", [{"keep_days": -1}, {"keep_bytes": -5}])
def test_retention_rejects_negative_limits(kwargs):
    with pytest.raises(InvalidInput):
        retention_plan([], now=NOW, **kwargs)


def test_scan_and_delete_outputs_only_inside_root(tmp_path):
    root = tmp_path / "outputs"
    (root / "2025-01").mkdir(parents=True)
    old = root / "2025-01" / "old.png"
    fav = root / "2025-01" / "fav.png"
    for p in (old, fav):
        p.write_bytes(b"x" * 20)
        os.utime(p, (NOW - 60 * DAY, NOW - 60 * DAY))
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")

    files = scan_outputs(root, favourites=["2025-01/fav.png"])
    assert {(os.path.basename(x.path), x.favourite) for x in files} == {("old.png", False),
                                                                       ("fav.png", True)}
    plan = retention_plan(files, keep_days=30, now=NOW)
    # A plan that somehow names a file outside the folder, or a favourite, is not obeyed.
    forged = hygiene.RetentionPlan(plan.delete + (OutputFile(str(outside), 7, 0.0),
                                                  OutputFile(str(fav), 20, 0.0, True)),
                                   0, 0, 0, "")
    deleted, freed, problems = delete_outputs(forged, root)

    assert (deleted, freed) == (1, 20)
    assert not old.exists() and fav.exists() and outside.exists()
    assert len(problems) == 2


def test_scan_outputs_missing_folder_is_empty(tmp_path):
    assert scan_outputs(tmp_path / "nope") == []


T0 = datetime(2025, 6, 1, tzinfo=timezone.utc)


def test_unused_models_reports_idle_largest_first():
    models = [
        ModelRecord("ollama", "small-idle", 1, T0 - timedelta(days=100), T0 - timedelta(days=40)),
        ModelRecord("ollama", "big-idle", 9, T0 - timedelta(days=100), None),
        ModelRecord("ollama", "busy", 5, T0 - timedelta(days=100), T0 - timedelta(days=2)),
        ModelRecord("comfyui", "checkpoints/new.safetensors", 7, T0 - timedelta(days=3), None),
        ModelRecord("comfyui", "loras/unknown.safetensors", 7, None, None),
    ]
    report = unused_models(models, 30, now=T0)
    assert [(u.name, u.idle_days) for u in report] == [("big-idle", 100), ("small-idle", 40)]
    assert "never used" in report[0].label and "last used" in report[1].label


def test_unused_models_rejects_zero_days():
    with pytest.raises(InvalidInput):
        unused_models([], 0, now=T0)


def test_model_records_join_last_use():
    ollama = [ModelInfo("llama3.2:latest", 100, modified_at="2025-01-01T00:00:00+00:00")]
    comfy = {"checkpoints/sdxl.safetensors": (50, T0.timestamp())}
    used = {("ollama", "llama3.2:latest"): "2025-05-01T00:00:00.000Z",
            ("comfyui", "sdxl.safetensors"): "2025-05-20T00:00:00.000Z"}

    records = {r.name: r for r in model_records(ollama, comfy, used)}

    assert records["llama3.2:latest"].last_used == datetime(2025, 5, 1, tzinfo=timezone.utc)
    assert records["checkpoints/sdxl.safetensors"].last_used.day == 20
    assert records["checkpoints/sdxl.safetensors"].installed_at == T0
