"""store_images: image jobs with their ComfyUI prompt ids, and the gallery (search, filters,
paging) on the real schema in an in-memory SQLite."""

from __future__ import annotations

import pytest
from sqlite_utils import Database

from studio.store.migrations import migrations
from studio.store.db import Store
from studio.store.images import ImageStore


@pytest.fixture
def images(store) -> ImageStore:
    return ImageStore(store)


def add(images: ImageStore, prompt: str = "a fox", *, workflow: str = "sd15_txt2img",
        model: str = "v1-5.safetensors", user: str = "owner", seed: int = 1, **extra):
    return images.add_image(path=f"2025/01/{prompt[:8]}-{seed}.png",
                            thumb=f"thumbs/2025/01/{seed}.webp", prompt=prompt, workflow=workflow,
                            model=model, user=user, seed=seed, params={"prompt": prompt},
                            graph={"1": {"class_type": "SaveImage", "inputs": {}}}, **extra)


def make_job(images: ImageStore, n: int = 3, **kwargs):
    defaults = dict(user="owner", lane="owner", workflow="sd15_txt2img", title="a fox",
                    spec={"seeds": n})
    defaults.update(kwargs)
    items = [({"prompt": "a fox", "seed": i}, {"3": {"class_type": "KSampler", "inputs": {"seed": i}}})
             for i in range(n)]
    return images.create_job(items=items, **defaults)


# ------------------------------------------------------------------ schema


def test_store_images_migration_creates_tables_indexes_and_search(tmp_path):
    db = Database(memory=True)
    migrations.apply(db)
    assert {"image_jobs", "image_job_items", "images", "images_fts"} <= set(db.table_names())
    assert db["image_job_items"].columns_dict["prompt_id"] is str
    assert db["images"].columns_dict["graph"] is str
    image_indexes = {tuple(i.columns) for i in db["images"].indexes}
    assert {("workflow", "id"), ("model", "id"), ("user", "id")} <= image_indexes
    [fk] = db["image_job_items"].foreign_keys
    assert (fk.other_table, fk.on_delete) == ("image_jobs", "CASCADE")


def test_store_images_upgrade_from_a_file_without_image_tables(tmp_path):
    path = tmp_path / "studio.db"
    old = Database(path)
    migrations.apply(old, stop_before="m004_create_image_tables")
    assert not old["images"].exists()
    old.close()
    store = Store.open(path)
    assert ImageStore(store).count_images() == 0
    store.close()


# ------------------------------------------------------------------ jobs


def test_store_images_job_keeps_items_in_order_with_graphs(images):
    job = make_job(images, 3)
    items = images.job_items(job.id)
    assert job.status == "queued" and job.total == 3
    assert [i.seq for i in items] == [1, 2, 3]
    assert items[1].graph["3"]["inputs"]["seed"] == 1
    assert all(i.status == "pending" and i.prompt_id is None for i in items)


def test_store_images_sent_items_are_found_for_restart_pickup(images):
    job = make_job(images, 3)
    first, second, _ = images.job_items(job.id)
    images.update_item(first.id, status="queued", prompt_id="p-1")
    images.update_item(second.id, status="done", prompt_id="p-2", timings={"total_s": 1.5})
    assert [i.prompt_id for i in images.sent_items()] == ["p-1"]
    assert images.get_item(second.id).timings == {"total_s": 1.5}
    assert images.item_counts(job.id) == {"queued": 1, "done": 1, "pending": 1, "images": 0}


def test_store_images_cancel_pending_leaves_sent_items(images):
    job = make_job(images, 3)
    first = images.job_items(job.id)[0]
    images.update_item(first.id, status="running", prompt_id="p")
    assert images.cancel_pending_items(job.id, "Cancelled.") == 2
    assert [i.status for i in images.job_items(job.id)] == ["running", "cancelled", "cancelled"]


def test_store_images_active_jobs_oldest_first(images):
    a, b = make_job(images, 1, title="a"), make_job(images, 1, title="b")
    images.update_job(a.id, status="done")
    c = make_job(images, 1, title="c")
    assert [j.id for j in images.active_jobs()] == [b.id, c.id]
    assert [j.id for j in images.list_jobs(limit=2)] == [c.id, b.id]


@pytest.mark.parametrize("method, fields", [
    ("update_item", {"colour": "red"}), ("update_job", {"prompt_id": "x"}),
])
def test_store_images_unknown_fields_are_refused(images, method, fields):
    job = make_job(images, 1)
    target = images.job_items(job.id)[0].id if method == "update_item" else job.id
    with pytest.raises(TypeError, match="unknown field"):
        getattr(images, method)(target, **fields)


def test_store_images_bad_status_is_refused(images):
    job = make_job(images, 1)
    with pytest.raises(ValueError, match="status must be one of"):
        images.update_job(job.id, status="spinning")


# ------------------------------------------------------------------ gallery


def test_store_images_gallery_newest_first_with_paging(images):
    for n in range(7):
        add(images, f"picture number {n}", seed=n)
    first = images.gallery(per_page=3)
    last = images.gallery(per_page=3, page=3)
    assert [i.seed for i in first.images] == [6, 5, 4]
    assert (first.total, first.pages) == (7, 3)
    assert [i.seed for i in last.images] == [0]
    assert images.gallery(per_page=3, page=99).page == 3  # clamped


def test_store_images_gallery_keeps_every_parameter(images):
    image = add(images, "a fox", timings={"execution_s": 2.5}, comfy_prompt_id="pid",
                width=512, height=512)
    back = images.get_image(image.id)
    assert back.params == {"prompt": "a fox"} and back.graph["1"]["class_type"] == "SaveImage"
    assert back.timings == {"execution_s": 2.5} and back.comfy_prompt_id == "pid"


def test_store_images_search_by_prompt_words_and_prefix(images):
    add(images, "a red fox in deep snow", seed=1)
    add(images, "a lighthouse at dusk", seed=2)
    add(images, "Fuchs im Schnee, fox", seed=3)
    assert {i.seed for i in images.gallery(query="fox").images} == {1, 3}
    assert [i.seed for i in images.gallery(query="fox sno").images] == [1]
    assert [i.seed for i in images.gallery(query="LIGHTH").images] == [2]


@pytest.mark.parametrize("query", ['"', "fox OR", "NEAR(fox", "*", "fox AND NOT", "a:b",
                                   "'; DROP TABLE images; --", "\x00", "\ud800", "(((", "^fox"])
def test_store_images_search_is_safe_for_any_input(images, query):
    add(images, "a fox")
    page = images.gallery(query=query)
    assert page.total == len(page.images)
    assert images.count_images() == 1


def test_store_images_filter_by_workflow_and_model(images):
    add(images, "one", workflow="sd15_txt2img", model="a.safetensors", seed=1)
    add(images, "two", workflow="sdxl_txt2img", model="b.safetensors", seed=2)
    add(images, "three", workflow="sdxl_txt2img", model="a.safetensors", seed=3)
    assert [i.seed for i in images.gallery(workflow="sdxl_txt2img").images] == [3, 2]
    assert [i.seed for i in images.gallery(model="a.safetensors").images] == [3, 1]
    assert [i.seed for i in images.gallery(workflow="sdxl_txt2img", model="a.safetensors",
                                           query="thr").images] == [3]
    assert images.gallery_filters() == (["sd15_txt2img", "sdxl_txt2img"],
                                        ["a.safetensors", "b.safetensors"])


def test_store_images_delete_removes_row_and_search_entry(images):
    keep, gone = add(images, "keep me", seed=1), add(images, "remove me", seed=2)
    assert images.delete_image(gone.id).path == gone.path
    assert images.delete_image(gone.id) is None
    assert [i.id for i in images.gallery(query="me").images] == [keep.id]
    assert images.gallery(query="remove").total == 0


@pytest.mark.parametrize("kwargs, index", [
    ({}, "SCAN i"), ({"workflow": "w"}, "idx_images_workflow_id"),
    ({"model": "m"}, "idx_images_model_id"),
])
def test_store_images_gallery_page_walks_an_index(images, kwargs, index):
    """With 10,000 images a page must not sort the table: the plan walks an index (or the
    rowid) newest first and stops at the page."""
    images.db.conn.executemany(
        "INSERT INTO images (user, created_at, path, thumb, prompt, workflow, model) "
        "VALUES ('owner', '2025', ?, ?, 'p', ?, ?)",
        [(f"{n}.png", f"{n}.webp", "w" if n % 2 else "x", "m" if n % 3 else "n")
         for n in range(10_000)])
    clauses = " AND ".join(f"i.{k} = ?" for k in kwargs) or "1"
    plan = images.db.execute(
        f"EXPLAIN QUERY PLAN SELECT i.* FROM images i WHERE {clauses} ORDER BY i.id DESC "
        "LIMIT 48 OFFSET 0", list(kwargs.values())).fetchall()
    text = " ".join(row[-1] for row in plan)
    assert "TEMP B-TREE" not in text
    assert index in text
    assert images.gallery(per_page=48, **kwargs).total > 0
