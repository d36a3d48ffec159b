"""The studio database's schema history, as ``sqlite_utils.Migrations`` steps.

Append-only: once a step has shipped, never edit, rename or reorder it (its name is
its identity in ``_sqlite_migrations``); add a new ``mNNN_verb_object`` step instead.
Nothing runs at import time: ``Store.open`` calls ``migrations.apply(db)``.
Only this module and ``store.py`` write SQL. No gradio imports here.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.db import ForeignKey
from sqlite_utils.migrations import Migrations

migrations = Migrations("studio")


@migrations()
def m001_create_chat_tables(db: Database) -> None:
    db["conversations"].create(
        {
            # uuid4 hex, made by the store: ids can be shown in URLs and exported
            # without revealing how many chats exist.
            "id": str,
            "title": str,
            "user": str,
            "model": str,
            "backend": str,
            "system_prompt": str,
            "params": str,  # JSON object of generation parameters
            "created_at": str,  # ISO 8601 UTC with milliseconds, sorts as text
            "updated_at": str,
            "pinned": int,
        },
        pk="id",
        not_null=["title", "user", "model", "backend", "system_prompt", "params",
                  "created_at", "updated_at", "pinned"],
        defaults={"title": "", "user": "owner", "model": "", "backend": "",
                  "system_prompt": "", "params": "{}", "pinned": 0},
    )
    db["messages"].create(
        {
            "id": int,
            "conversation_id": str,
            "seq": int,  # position in the conversation, 1-based
            "role": str,
            "content": str,
            "thinking": str,
            "images": str,  # JSON list of file paths
            "model": str,
            "backend": str,
            # 'complete' | 'partial' | 'error' | 'streaming'. Checked in the store, not by a
            # CHECK constraint, so a new status needs no table rebuild.
            "status": str,
            "error": str,
            # Stats stay NULL when the backend did not report them (unknown is not zero).
            "prompt_tokens": int,
            "completion_tokens": int,
            "ttft_ms": float,
            "tokens_per_s": float,
            "load_ms": float,
            "total_ms": float,
            "cost_usd": float,
            "meta": str,  # JSON object for whatever a backend returns beyond the above
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        foreign_keys=[
            # Deleting a conversation takes its messages with it.
            ForeignKey("messages", "conversation_id", "conversations", "id",
                       on_delete="CASCADE"),
        ],
        not_null=["conversation_id", "seq", "role", "content", "thinking", "images",
                  "model", "backend", "status", "error", "meta", "created_at", "updated_at"],
        defaults={"content": "", "thinking": "", "images": "[]", "model": "",
                  "backend": "", "status": "complete", "error": "", "meta": "{}"},
    )
    # Also serves the foreign key (cascade deletes) and "next seq" lookups.
    db["messages"].create_index(["conversation_id", "seq"], unique=True)
    db["conversations"].create_index(["updated_at"])
    db["conversations"].create_index(["user", "updated_at"])
    # The sidebar lists pinned chats first, then the most recent: with pinned in the
    # index that is a plain index walk that stops after `limit` rows, no sort.
    db["conversations"].create_index(["pinned", "updated_at"])
    db["conversations"].create_index(["user", "pinned", "updated_at"])


@migrations()
def m002_add_search_index(db: Database) -> None:
    # External-content FTS5 keyed on messages.id (an INTEGER PRIMARY KEY, so VACUUM
    # keeps it stable): the text is not stored twice.
    db.execute("""
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        )""")
    db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
    # Hand-written rather than enable_fts(create_triggers=True): "AFTER UPDATE OF content"
    # skips re-indexing on the status/stats-only updates a streaming reply makes.
    db.execute("""
        CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
        END""")
    db.execute("""
        CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content)
                VALUES ('delete', old.id, old.content);
        END""")
    db.execute("""
        CREATE TRIGGER messages_fts_au AFTER UPDATE OF content ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content)
                VALUES ('delete', old.id, old.content);
            INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
        END""")

    # conversations has a TEXT primary key, so its rowid may change on VACUUM and an
    # external-content index could point at the wrong row. This one stores the id
    # (unindexed) with the title instead; titles are short, so the copy costs little.
    db.execute("""
        CREATE VIRTUAL TABLE conversations_fts USING fts5(
            conversation_id UNINDEXED, title,
            tokenize='unicode61 remove_diacritics 2'
        )""")
    db.execute("INSERT INTO conversations_fts(conversation_id, title) "
               "SELECT id, title FROM conversations")
    db.execute("""
        CREATE TRIGGER conversations_fts_ai AFTER INSERT ON conversations BEGIN
            INSERT INTO conversations_fts(conversation_id, title) VALUES (new.id, new.title);
        END""")
    db.execute("""
        CREATE TRIGGER conversations_fts_ad AFTER DELETE ON conversations BEGIN
            DELETE FROM conversations_fts WHERE conversation_id = old.id;
        END""")
    # "OF title": touching updated_at on every new message must not rewrite the index.
    db.execute("""
        CREATE TRIGGER conversations_fts_au AFTER UPDATE OF title ON conversations BEGIN
            DELETE FROM conversations_fts WHERE conversation_id = old.id;
            INSERT INTO conversations_fts(conversation_id, title) VALUES (new.id, new.title);
        END""")


@migrations()
def m003_create_usage_tables(db: Database) -> None:
    # One row per reply or image job, for the Costs tab and the budgets. No foreign key to
    # conversations: deleting a chat must not erase what it cost.
    db["usage"].create(
        {
            "id": int,
            "created_at": str,  # ISO 8601 UTC with milliseconds, like the chat tables
            # Local calendar day when it happened (YYYY-MM-DD): "today", "this month" and the
            # per-day chart go by the owner's clock, and a text column groups without
            # re-deriving time zones in SQL on every query.
            "day": str,
            "user": str,
            "backend": str,  # 'ollama' | 'openrouter' | 'comfyui' ...
            "model": str,
            "kind": str,  # 'chat' | 'image', set by accounting.py (no CHECK: new kinds stay cheap)
            # NULL = not reported (unknown is not zero), as in messages.
            "prompt_tokens": int,
            "completion_tokens": int,
            "images": int,
            "duration_s": float,
            "cost_usd": float,  # cloud bill; 0 for local work; NULL when no price is known
            "cost_is_estimate": int,  # 1 when computed from catalogue prices, not reported
            "energy_kwh": float,  # local work only
            "energy_cost": float,
            "gpu_watts": float,  # the power figure the energy estimate used
            "conversation_id": str,
            "message_id": int,
            "job_id": str,
        },
        pk="id",
        not_null=["created_at", "day", "user", "backend", "model", "kind", "cost_is_estimate"],
        defaults={"user": "owner", "model": "", "kind": "chat", "cost_is_estimate": 0},
    )
    # Period totals, the per-day chart and local-vs-cloud read a range of days; budgets and
    # the filters add user / backend / model in front of it.
    db["usage"].create_index(["day"])
    db["usage"].create_index(["user", "day"])
    db["usage"].create_index(["backend", "day"])
    db["usage"].create_index(["model", "day"])

    # Budget charges not yet visible in `usage`: reservations of requests still running
    # ('open', counted at their estimate) and finished ones whose usage row hasn't been
    # written yet ('settled', counted at their actual cost). Recording the usage row deletes
    # its settled charge in the same transaction, so a cost is never counted twice or missed.
    db["budget_charges"].create(
        {
            "id": int,
            "created_at": str,
            "day": str,
            "user": str,
            "model": str,
            "state": str,  # 'open' | 'settled'
            "estimate_usd": float,
            "actual_usd": float,
        },
        pk="id",
        not_null=["created_at", "day", "user", "model", "state"],
    )
    db["budget_charges"].create_index(["user", "state"])


@migrations()
def m004_create_image_tables(db: Database) -> None:
    # An image job is one press of Generate: prompts x seeds (x a parameter sweep) become
    # its items, one ComfyUI prompt each. The item keeps the prompt id ComfyUI was given
    # (chosen by the studio *before* queueing), so a restarted studio can pick up prompts
    # already queued in ComfyUI and store their results.
    db["image_jobs"].create(
        {
            "id": str,  # uuid4 hex
            "user": str,  # who it is for (accounting, listing)
            "lane": str,  # fairness key: the login name, else the browser's address
            "workflow": str,
            "title": str,
            # 'queued' | 'running' | 'done' | 'partial' | 'failed' | 'cancelled'; checked in
            # images.py, not by a constraint, so a new state needs no table rebuild.
            "status": str,
            "total": int,
            "spec": str,  # JSON: what the form asked for (prompts, seeds, sweep, style)
            "error": str,
            "created_at": str,
            "updated_at": str,
            "finished_at": str,
        },
        pk="id",
        not_null=["user", "lane", "workflow", "title", "status", "total", "spec", "error",
                  "created_at", "updated_at"],
        defaults={"user": "owner", "lane": "owner", "title": "", "status": "queued",
                  "spec": "{}", "error": ""},
    )
    db["image_jobs"].create_index(["status"])
    db["image_jobs"].create_index(["user", "created_at"])
    db["image_job_items"].create(
        {
            "id": int,
            "job_id": str,
            "seq": int,
            # 'pending' (not sent yet) | 'queued' | 'running' | 'done' | 'failed' | 'cancelled'
            "status": str,
            "prompt_id": str,  # ComfyUI's prompt id; NULL until sent
            "params": str,  # JSON: every studio parameter of this image
            "graph": str,  # JSON: the exact API-format workflow sent
            "error": str,
            "images": int,
            "timings": str,  # JSON: queued_s, execution_s, total_s, store_s
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        foreign_keys=[ForeignKey("image_job_items", "job_id", "image_jobs", "id",
                                 on_delete="CASCADE")],
        not_null=["job_id", "seq", "status", "params", "graph", "error", "images", "timings",
                  "created_at", "updated_at"],
        defaults={"status": "pending", "error": "", "images": 0, "timings": "{}"},
    )
    db["image_job_items"].create_index(["job_id", "seq"], unique=True)
    db["image_job_items"].create_index(["status"])
    db["image_job_items"].create_index(["prompt_id"])
    # The gallery: one row per stored file. No foreign key to the job: a gallery image
    # stays when job bookkeeping is cleaned up.
    db["images"].create(
        {
            "id": int,
            "job_id": str,
            "item_id": int,
            "user": str,
            "created_at": str,
            "path": str,  # relative to the outputs folder of the data directory
            "thumb": str,  # ditto, a small WebP for the gallery grid
            "width": int,
            "height": int,
            "bytes": int,
            "prompt": str,
            "negative": str,
            "seed": int,
            "workflow": str,
            "model": str,  # the checkpoint (or diffusion model) file
            "params": str,  # JSON: every parameter
            "graph": str,  # JSON: the exact workflow sent
            "timings": str,  # JSON
            "comfy_prompt_id": str,
            "comfy_filename": str,
        },
        pk="id",
        not_null=["user", "created_at", "path", "thumb", "prompt", "negative", "workflow",
                  "model", "params", "graph", "timings"],
        defaults={"user": "owner", "prompt": "", "negative": "", "model": "", "params": "{}",
                  "graph": "{}", "timings": "{}"},
    )
    # Newest first is the rowid order (id DESC); filters walk these and stop at the page.
    db["images"].create_index(["workflow", "id"])
    db["images"].create_index(["model", "id"])
    db["images"].create_index(["user", "id"])
    db["images"].create_index(["job_id"])
    # Prompt search. External content keyed on images.id (INTEGER PRIMARY KEY, stable
    # across VACUUM). Kept in step by store_images.py in the same transaction as the row
    # (prompts never change after insert), not by triggers.
    db.execute("""
        CREATE VIRTUAL TABLE images_fts USING fts5(
            prompt, content='images', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        )""")


@migrations()
def m005_create_models_tables(db: Database) -> None:
    # The GPU-sharing log: every time the studio unloaded Ollama models or asked ComfyUI to
    # free memory (or proposed to, or could not), so the owner can see who took the card.
    db["gpu_actions"].create(
        {
            "id": int,
            "created_at": str,
            "trigger": str,  # 'image_job' | 'chat' | 'manual'
            "policy": str,  # 'off' | 'ask' | 'automatic' at the time
            "action": str,  # 'unload_ollama' | 'free_comfyui' | 'none'
            "outcome": str,  # 'done' | 'failed' | 'asked' | 'declined' | 'skipped'
            "models": str,  # JSON list of the model names concerned
            "message": str,  # the sentence the UI showed
            "free_bytes": int,  # free VRAM when it was decided; NULL = unknown
            "needed_bytes": int,
            "freed_bytes": int,
        },
        pk="id",
        not_null=["created_at", "trigger", "policy", "action", "outcome", "models", "message"],
        defaults={"models": "[]", "message": ""},
    )
    db["gpu_actions"].create_index(["created_at"])
    # When each model was last used, for the "unused for N days" report. Chats already
    # say which Ollama model answered (messages.model); this table holds what they don't:
    # ComfyUI model files, and uses recorded by other tabs.
    db["model_uses"].create(
        {
            "backend": str,  # 'ollama' | 'comfyui'
            "name": str,  # Ollama model name, or '<folder>/<file>' for ComfyUI
            "last_used_at": str,
        },
        pk=("backend", "name"),
        not_null=["last_used_at"],
    )


@migrations()
def m006_create_cloud_tables(db: Database) -> None:
    # OpenRouter's model catalogue as last fetched, so the picker and the price lookups work
    # while OpenRouter is unreachable. Replaced wholesale on each successful fetch.
    db["cloud_models"].create(
        {
            "id": str,  # OpenRouter's id, e.g. "openai/gpt-4o-mini"
            "name": str,
            "context_length": int,
            "input_modalities": str,  # JSON list
            "output_modalities": str,  # JSON list
            # USD per token (per image / per request) as decimal text, exactly as OpenRouter
            # sends it: REAL would round the bill. NULL = unknown.
            "price_prompt": str,
            "price_completion": str,
            "price_image": str,
            "price_request": str,
            "fetched_at": str,
        },
        pk="id",
        not_null=["name", "input_modalities", "output_modalities", "fetched_at"],
    )
    # One comparison: a prompt sent to 2-4 models at once, and the owner's vote.
    db["arena_runs"].create(
        {
            "id": str,  # uuid4 hex
            "created_at": str,
            "user": str,
            "prompt": str,
            "system_prompt": str,
            "options": str,  # JSON object of generation parameters
            "blind": int,
            "voted_at": str,  # NULL until voted
            "winner_slot": int,  # NULL with voted_at set = a tie
        },
        pk="id",
        not_null=["created_at", "user", "prompt", "system_prompt", "options", "blind"],
        defaults={"user": "owner", "system_prompt": "", "options": "{}", "blind": 0},
    )
    db["arena_runs"].create_index(["created_at"])
    db["arena_answers"].create(
        {
            "id": int,
            "run_id": str,
            "slot": int,  # position on screen, 0-based; blind runs shuffle models into slots
            "model_id": str,  # what was asked for, "backend:model"
            "backend": str,  # who answered (the arena never falls back, but retries)
            "answered_by": str,
            "status": str,  # 'streaming' | 'complete' | 'partial' | 'error', as for messages
            "error": str,
            "content": str,
            "thinking": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "ttft_ms": float,
            "tokens_per_s": float,
            "total_ms": float,
            "cost_usd": float,
            "cost_is_estimate": int,
            "updated_at": str,
        },
        pk="id",
        foreign_keys=[ForeignKey("arena_answers", "run_id", "arena_runs", "id",
                                 on_delete="CASCADE")],
        not_null=["run_id", "slot", "model_id", "backend", "answered_by", "status", "error",
                  "content", "thinking", "cost_is_estimate", "updated_at"],
        defaults={"backend": "", "answered_by": "", "status": "streaming", "error": "",
                  "content": "", "thinking": "", "cost_is_estimate": 0},
    )
    # Also serves the foreign key (cascade deletes); model_id serves the win table.
    db["arena_answers"].create_index(["run_id", "slot"], unique=True)
    db["arena_answers"].create_index(["model_id"])


@migrations()
def m007_add_favourite_to_images(db: Database) -> None:
    # Favourites are what output retention must never delete (issue 6); a flag on the
    # gallery row, indexed so "favourites only" stays fast with 10,000 images.
    db["images"].add_column("favourite", int, not_null_default=0)
    db["images"].create_index(["favourite", "id"])


@migrations()
def m008_create_access_tables(db: Database) -> None:
    # Sign-in (issue 10): people, their sessions (only a hash of each token is kept, so a
    # copy of the database signs nobody in), and the audit log of sign-ins and admin actions.
    db["users"].create(
        {"name": str, "role": str, "password_hash": str, "created_at": str,
         "password_changed_at": str},
        pk="name", not_null=["role", "password_hash", "created_at", "password_changed_at"],
        defaults={"role": "user"})
    db["sessions"].create(
        {"token_hash": str, "user": str, "created_at": str, "last_seen": str,
         "expires_at": str, "address": str, "user_agent": str},
        pk="token_hash",
        foreign_keys=[ForeignKey("sessions", "user", "users", "name", on_delete="CASCADE")],
        not_null=["user", "created_at", "last_seen", "expires_at", "address", "user_agent"],
        defaults={"address": "", "user_agent": ""})
    db["sessions"].create_index(["user"])
    db["sessions"].create_index(["expires_at"])
    db["audit"].create(
        {"id": int, "at": str, "user": str, "action": str, "detail": str, "address": str},
        pk="id", not_null=["at", "user", "action", "detail", "address"],
        defaults={"detail": "", "address": ""})
    db["audit"].create_index(["at"])


@migrations()
def m009_create_api_keys(db: Database) -> None:
    # The API (issue 11): keys per user. Only a SHA-256 of each key is kept (a copy of the
    # database calls nothing); the prefix lets a person tell their keys apart in a list.
    db["api_keys"].create(
        {"id": int, "user": str, "name": str, "key_hash": str, "prefix": str,
         "created_at": str, "last_used": str, "revoked_at": str},
        pk="id",
        foreign_keys=[ForeignKey("api_keys", "user", "users", "name", on_delete="CASCADE")],
        not_null=["user", "name", "key_hash", "prefix", "created_at"],
        defaults={"name": ""})
    db["api_keys"].create_index(["key_hash"], unique=True)
    db["api_keys"].create_index(["user"])


@migrations()
def m010_add_via_to_usage(db: Database) -> None:
    # How a request came in: "" from the pages, "api: <key name>" through /v1 (issue 11),
    # so Costs tells a script's spend from a person's.
    db["usage"].add_column("via", str, not_null_default="")


@migrations()
def m011_index_arena_runs_by_user(db: Database) -> None:
    # Each person's comparisons are listed apart since sign-in (issue 10).
    db["arena_runs"].create_index(["user", "created_at"])


@migrations()
def m012_add_source_to_usage(db: Database) -> None:
    # What a cost was for (issue 14): "chat", "arena", "images" or "api", so Costs tells
    # them apart and filters by them ("kind" says chat reply or image job; an API request
    # can be either). Rows from before: API use from their `via`, image jobs from their
    # kind, the rest as chat (arena replies were recorded as chat and can't be told apart).
    db["usage"].add_column("source", str, not_null_default="chat")
    db.execute("UPDATE usage SET source = CASE WHEN via LIKE 'api:%' THEN 'api' "
               "WHEN kind = 'image' THEN 'images' ELSE 'chat' END")
    db["usage"].create_index(["source", "day"])


@migrations()
def m013_add_generation_id_to_usage(db: Database) -> None:
    # OpenRouter's id of a cloud reply ("gen-…", issue 14): a reply cut off before its usage
    # report is billed all the same, and its cost can be asked for by this id afterwards.
    db["usage"].add_column("generation_id", str)


@migrations()
def m014_create_local_models(db: Database) -> None:
    # The last list of Ollama models and what each can do (issue 14): a page opened while
    # Ollama is down, after a restart too, still offers them (marked unreachable) so a
    # configured fallback can answer, and /api/show is asked once per model digest.
    # capabilities is a JSON list, NULL when the server doesn't report them (before v0.6.4).
    db["local_models"].create(
        {"name": str, "digest": str, "size": int, "family": str, "parameter_size": str,
         "quantization": str, "modified_at": str, "capabilities": str, "listed_at": str},
        pk="name",
        not_null=["digest", "size", "family", "parameter_size", "quantization",
                  "modified_at", "listed_at"],
        defaults={"digest": "", "size": 0, "family": "", "parameter_size": "",
                  "quantization": "", "modified_at": ""})


@migrations()
def m015_add_title_source_and_import_keys(db: Database) -> None:
    # Titles written by a small model (issue 14, item 16) must never replace one the person
    # chose: each title says who wrote it ('words': the first words of the question,
    # 'model', 'person', 'import'). Rows from before carry 'words'; no title is generated
    # for them (only after a chat's first reply), so a past rename stays whatever it says.
    db["conversations"].add_column("title_source", str, not_null_default="words")
    # Imported chats (item 17) remember where they came from and their id there, so
    # importing the same file twice adds nothing; one person's import never hides another's.
    db["conversations"].add_column("source", str, not_null_default="")
    db["conversations"].add_column("source_id", str, not_null_default="")
    db.execute("CREATE UNIQUE INDEX idx_conversations_user_source_source_id "
               "ON conversations (user, source, source_id) WHERE source_id != ''")
    # The sidebar pages through every chat (issue 16) by keyset: (pinned, updated_at, id)
    # after the last one shown. With id in the index each page is one index range walk that
    # stops after a page, however deep, where OFFSET walked every row it skipped.
    db["conversations"].create_index(["user", "pinned", "updated_at", "id"])


@migrations()
def m016_add_message_versions(db: Database) -> None:
    # Answer versions (issue 14 item 6): ↻ and an edit keep the earlier answer or message as
    # another version of the same turn, with its own later turns, like Open WebUI. Messages
    # form a tree: parent_id is the message before this one on its branch (NULL for a
    # chat's first message), and among the versions of a turn (messages with the same
    # parent) the one with active = 1 is shown. The branch a chat shows follows the active
    # version at every turn, so paging back to a version brings its later turns with it,
    # and the choice survives a reload. seq stays the position in the branch (1-based), so
    # versions share a seq and the old unique index goes.
    db["messages"].add_column("parent_id", int)
    db["messages"].add_column("active", int, not_null_default=1)
    # Every chat so far is one branch: each message follows the one before it.
    db.execute("""
        UPDATE messages SET parent_id = (
            SELECT p.id FROM messages p
            WHERE p.conversation_id = messages.conversation_id AND p.seq = messages.seq - 1)""")
    db.execute("DROP INDEX IF EXISTS idx_messages_conversation_id_seq")
    db["messages"].create_index(["conversation_id", "seq"])
    # Walking a branch down from its first message, and finding a turn's versions.
    db["messages"].create_index(["conversation_id", "parent_id"])


@migrations()
def m017_add_search_prefix_indexes(db: Database) -> None:
    # Issue 16: the last word of a search matches as a prefix, and without a prefix index
    # FTS5 merges the postings of every word that starts with it before it can answer:
    # "sourdough t" (the way to "sourdough toast") took 1.1-1.6 s over a million messages.
    # Prefix indexes of 1 to 3 characters answer those lazily, newest first. Longer
    # prefixes match few enough words to merge quickly. The rebuild reads every message
    # once (docs/benchmarks.md has its time at a million); the insert/update/delete
    # triggers name the table, so they keep working on the rebuilt one.
    db.execute("DROP TABLE messages_fts")
    db.execute("""
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2', prefix='1 2 3'
        )""")
    db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
    db.execute("DROP TABLE conversations_fts")
    db.execute("""
        CREATE VIRTUAL TABLE conversations_fts USING fts5(
            conversation_id UNINDEXED, title,
            tokenize='unicode61 remove_diacritics 2', prefix='1 2 3'
        )""")
    db.execute("INSERT INTO conversations_fts(conversation_id, title) "
               "SELECT id, title FROM conversations")


@migrations()
def m018_index_streaming_and_model_use(db: Database) -> None:
    # Issue 16: start-up looks for replies a restart cut off (status 'streaming'), and the
    # Models tab for when each model last answered; both scanned every message. Partial
    # indexes hold only the rows they ask about: the few replies streaming, and the
    # assistant turns by (backend, model, created_at), so "last use of each model" is one
    # index seek per model.
    db.execute("CREATE INDEX messages_streaming ON messages (id) WHERE status = 'streaming'")
    db.execute("CREATE INDEX messages_model_use ON messages (backend, model, created_at) "
               "WHERE role = 'assistant'")


@migrations()
def m019_add_comfy_host_to_image_items(db: Database) -> None:
    # Issue 15: COMFYUI_URL may list several hosts and a batch spreads its prompts over
    # them. The host a prompt went to is kept beside its prompt id, so that a restarted
    # studio asks that host's /history for it, and the gallery says where an image was made.
    # NULL: made before this (or with one host), i.e. on the first host.
    db["image_job_items"].add_column("comfy_host", str)
    db["images"].add_column("comfy_host", str)
