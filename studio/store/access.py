"""The SQL of sign-in: users, sessions and the audit log (tables of migration m008).

Only a hash of each session token is stored. Callers get plain dicts or dataclasses; the
rules (who may, names, passwords) are in ``studio.access``. No gradio imports here.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from .db import StoreTables

STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


def stamp(seconds: float) -> str:
    """Epoch seconds as the UTC text these tables keep (sorts as time does)."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime(STAMP)


def token_hash(token: str) -> str:
    """What the sessions table keeps of a token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def seconds_of(text: str) -> float:
    return datetime.strptime(text, STAMP).replace(tzinfo=timezone.utc).timestamp()

# Tables whose rows carry their user; what existed before sign-in belonged to "owner".
OWNED_TABLES = ("conversations", "usage", "budget_charges", "image_jobs", "images",
                "arena_runs")


class AccessStore(StoreTables):
    # -- users

    def add_user(self, name: str, role: str, password_hash: str, *,
                 claim_from: str | None = None) -> None:
        """Insert a user; with ``claim_from``, rows of that user in every owned table become
        this user's, in the same transaction."""
        with self.store.transaction():
            now = self.store._now()
            self.db.execute("INSERT INTO users (name, role, password_hash, created_at, "
                            "password_changed_at) VALUES (?, ?, ?, ?, ?)",
                            [name, role, password_hash, now, now])
            if claim_from is not None:
                for table in OWNED_TABLES:
                    self.db.execute(f"UPDATE {table} SET user = ? WHERE user = ?",
                                    [name, claim_from])
                self.db.execute("UPDATE image_jobs SET lane = ? WHERE lane = ?",
                                [name, claim_from])

    def user(self, name: str) -> dict | None:
        row = self.db.execute("SELECT name, role, password_hash FROM users "
                              "WHERE name = ? COLLATE NOCASE", [name]).fetchone()
        return {"name": row[0], "role": row[1], "password_hash": row[2]} if row else None

    def users(self) -> list[dict]:
        rows = self.db.execute("SELECT name, role FROM users ORDER BY name COLLATE NOCASE"
                               ).fetchall()
        return [{"name": r[0], "role": r[1]} for r in rows]

    def count_users(self, role: str | None = None) -> int:
        where, params = ("WHERE role = ?", [role]) if role else ("", [])
        return self.db.execute(f"SELECT count(*) FROM users {where}", params).fetchone()[0]

    def update_user(self, name: str, **fields: Any) -> bool:
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with self.store.transaction():
            return self.db.execute(f"UPDATE users SET {assignments} WHERE name = ?",
                                   [*fields.values(), name]).rowcount > 0

    def delete_user(self, name: str, *, keep_as: str) -> bool:
        """Delete the user (their sessions and keys go with them). What they made stays,
        renamed ``keep_as`` in the same transaction, so sums still add up and someone given
        the name later inherits none of it."""
        with self.store.transaction():
            for table in OWNED_TABLES:
                self.db.execute(f"UPDATE {table} SET user = ? WHERE user = ?", [keep_as, name])
            self.db.execute("UPDATE image_jobs SET lane = ? WHERE lane = ?", [keep_as, name])
            return self.db.execute("DELETE FROM users WHERE name = ?", [name]).rowcount > 0

    # -- sessions

    def add_session(self, token_hash: str, user: str, *, created_at: str, expires_at: str,
                    address: str, user_agent: str) -> None:
        with self.store.transaction():
            self.db.execute(
                "INSERT INTO sessions (token_hash, user, created_at, last_seen, expires_at, "
                "address, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [token_hash, user, created_at, created_at, expires_at, address, user_agent])

    def session(self, token_hash: str) -> dict | None:
        row = self.db.execute(
            "SELECT s.user, s.expires_at, s.last_seen, u.role FROM sessions s "
            "JOIN users u ON u.name = s.user WHERE s.token_hash = ?", [token_hash]).fetchone()
        return ({"user": row[0], "expires_at": row[1], "last_seen": row[2], "role": row[3]}
                if row else None)

    def touch_session(self, token_hash: str, last_seen: str) -> None:
        with self.store.transaction():
            self.db.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?",
                            [last_seen, token_hash])

    def delete_session(self, token_hash: str) -> None:
        with self.store.transaction():
            self.db.execute("DELETE FROM sessions WHERE token_hash = ?", [token_hash])

    def delete_sessions(self, user: str, *, keep: str | None = None) -> int:
        with self.store.transaction():
            return self.db.execute("DELETE FROM sessions WHERE user = ? AND token_hash != ?",
                                   [user, keep or ""]).rowcount

    def delete_expired_sessions(self, now: str) -> int:
        with self.store.transaction():
            return self.db.execute("DELETE FROM sessions WHERE expires_at <= ?",
                                   [now]).rowcount

    # -- API keys

    def add_key(self, *, user: str, name: str, key_hash: str, prefix: str) -> int:
        with self.store.transaction():
            return self.db.execute(
                "INSERT INTO api_keys (user, name, key_hash, prefix, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [user, name, key_hash, prefix, self.store._now()]).lastrowid

    def key_owner(self, key_hash: str) -> tuple[int, str, str] | None:
        """(key id, user, key name) of a live key, None when unknown or revoked."""
        row = self.db.execute("SELECT id, user, name FROM api_keys WHERE key_hash = ? AND "
                              "revoked_at IS NULL", [key_hash]).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def touch_key(self, key_id: int) -> None:
        with self.store.transaction():
            self.db.execute("UPDATE api_keys SET last_used = ? WHERE id = ?",
                            [self.store._now(), key_id])

    def keys(self, user: str) -> list[dict]:
        rows = self.db.execute(
            "SELECT id, name, prefix, created_at, last_used, revoked_at FROM api_keys "
            "WHERE user = ? ORDER BY id", [user]).fetchall()
        return [dict(zip(("id", "name", "prefix", "created_at", "last_used", "revoked_at"), r))
                for r in rows]

    def revoke_key(self, user: str, key_id: int) -> bool:
        with self.store.transaction():
            return self.db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND user = ? AND "
                "revoked_at IS NULL", [self.store._now(), key_id, user]).rowcount > 0

    # -- audit

    def add_audit(self, *, at: str, user: str, action: str, detail: str, address: str) -> None:
        with self.store.transaction():
            self.db.execute("INSERT INTO audit (at, user, action, detail, address) "
                            "VALUES (?, ?, ?, ?, ?)", [at, user, action, detail, address])

    def audit(self, limit: int, user: str | None = None) -> list[dict]:
        where, params = ("WHERE user = ?", [user]) if user else ("", [])
        rows = self.db.execute(f"SELECT at, user, action, detail, address FROM audit "
                               f"{where} ORDER BY id DESC LIMIT ?", [*params, limit]
                               ).fetchall()
        return [dict(zip(("at", "user", "action", "detail", "address"), r)) for r in rows]

    def delete_audit_before(self, at: str) -> int:
        with self.store.transaction():
            return self.db.execute("DELETE FROM audit WHERE at < ?", [at]).rowcount
