"""Users, sessions and the audit log over a real SQLite file, and `studio users` end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlite_utils

from studio.access.audit import Audit
from studio.access.passwords import hash_password, verify_password
from studio.access.sessions import Sessions
from studio.access.users import Users
from studio.errors import InvalidInput
from studio.store.db import Store
from tests.conftest import ROOT


class Clock:
    def __init__(self, now=1_750_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_users_passwords_are_salted_hashes(store):
    first, second = hash_password("same password"), hash_password("same password")
    assert first != second and "same password" not in first
    assert verify_password(first, "same password") and not verify_password(first, "other")
    Users(store).add("ann", "ann-password-1", admin=True)
    stored = store.db.execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$") and "ann-password-1" not in stored


def test_users_verify(store):
    users = Users(store)
    users.add("ann", "ann-password-1", admin=True)
    assert users.verify("ann", "ann-password-1").is_admin
    assert users.verify("ANN", "ann-password-1").name == "ann"
    assert users.verify("ann", "wrong-password") is None
    assert users.verify("nobody", "ann-password-1") is None


@pytest.mark.parametrize("name, password, message", [
    ("", "long-enough-1", "can't be a user name"), ("..", "long-enough-1", "can't be a user name"),
    ("a/b", "long-enough-1", "can't be a user name"), ("owner", "long-enough-1", "not 'owner'"),
    ("x" * 33, "long-enough-1", "can't be a user name"), ("ann", "short", "too short"),
])
def test_users_refuse_bad_names_and_passwords(store, name, password, message):
    with pytest.raises(InvalidInput, match=message):
        Users(store).add(name, password)


def test_users_the_last_admin_stays(store):
    users = Users(store)
    users.add("ann", "ann-password-1", admin=True)
    users.add("bob", "bob-password-1")
    with pytest.raises(InvalidInput, match="last admin"):
        users.remove("ann")
    with pytest.raises(InvalidInput, match="last admin"):
        users.set_role("ann", admin=False)
    with pytest.raises(InvalidInput, match="already a user called ann"):
        users.add("Ann", "ann-password-2")
    users.remove("bob")
    assert [u.name for u in users.list()] == ["ann"]


def test_users_first_admin_inherits_what_was_made_before_sign_in(store):
    from studio.store.cloud import CloudStore
    from studio.store.images import ImageStore

    conv = store.create_conversation("before sign-in")  # user "owner"
    ImageStore(store).create_job(user="owner", lane="owner", workflow="w", title="t",
                                 spec={}, items=[])
    CloudStore(store).create_arena_run("p", ["ollama:a", "ollama:b"], user="owner")
    users = Users(store)
    assert store.get_conversation(conv.id).user == "owner"
    users.add("ann", "ann-password-1", admin=True)
    for table in ("conversations", "image_jobs", "arena_runs"):
        assert {r[0] for r in store.db.execute(f"SELECT user FROM {table}")} == {"ann"}, table
    users.add("cy", "cy-password-1", admin=True)  # the second admin inherits nothing
    assert store.get_conversation(conv.id).user == "ann"


def test_sessions_keep_only_a_hash_and_expire(store):
    Users(store).add("ann", "ann-password-1", admin=True)
    clock = Clock()
    sessions = Sessions(store, lifetime_s=3600, clock=clock)
    token = sessions.start("ann", address="10.0.0.7")
    assert sessions.user_for(token).name == "ann"
    dump = "\n".join(store.db.iterdump())
    assert token not in dump
    clock.now += 3601
    assert sessions.user_for(token) is None
    assert sessions.user_for("made-up") is None and sessions.user_for(None) is None


def test_sessions_end_with_a_new_password_or_the_user(store):
    users = Users(store)
    users.add("ann", "ann-password-1", admin=True)
    users.add("bob", "bob-password-1")
    sessions = Sessions(store, lifetime_s=3600)
    bob = sessions.start("bob")
    users.set_password("bob", "bob-password-2")
    assert sessions.user_for(bob) is None
    bob = sessions.start("bob")
    users.remove("bob")
    assert sessions.user_for(bob) is None


def test_sessions_survive_a_restart(tmp_path):
    store = Store.open(tmp_path / "studio.db")
    Users(store).add("ann", "ann-password-1", admin=True)
    token = Sessions(store, lifetime_s=3600).start("ann")
    store.close()
    again = Store.open(tmp_path / "studio.db")
    assert Sessions(again, lifetime_s=3600).user_for(token).name == "ann"
    again.close()


def test_audit_records_newest_first_and_forgets_old_entries(store):
    clock = Clock()
    audit = Audit(store, keep_days=1, clock=clock)
    audit.record("ann", "sign-in", address="10.0.0.7")
    clock.now += 10
    audit.record("ann", "delete", "llama3.2:latest")
    assert [e.action for e in audit.recent()] == ["delete", "sign-in"]
    clock.now += 86400 - 5  # the first entry is now a day and 5 s old, the second not yet
    assert audit.prune() == 1
    assert [e.action for e in audit.recent()] == ["delete"]


def run_cli(*args, stdin="", data_dir):
    return subprocess.run([sys.executable, "-m", "studio.cli", "users", *args,
                           "--data-dir", str(data_dir)], input=stdin, text=True,
                          capture_output=True, cwd=ROOT, timeout=60)


def test_cli_users_add_list_passwd_remove(tmp_path):
    added = run_cli("add", "ann", "--admin", stdin="ann-password-1\n", data_dir=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "Added ann (admin). Sign-in is now on" in added.stdout
    assert run_cli("add", "bob", stdin="bob-password-1\n", data_dir=tmp_path).returncode == 0
    assert run_cli("list", data_dir=tmp_path).stdout.split() == ["ann", "admin", "bob", "user"]
    short = run_cli("passwd", "bob", stdin="short\n", data_dir=tmp_path)
    assert short.returncode == 2 and "too short" in short.stderr and "Traceback" not in short.stderr
    assert run_cli("passwd", "bob", stdin="bob-password-2\n", data_dir=tmp_path).returncode == 0
    assert Users(Store.open(tmp_path / "studio.db")).verify("bob", "bob-password-2")
    last = run_cli("remove", "ann", data_dir=tmp_path)
    assert last.returncode == 2 and "last admin" in last.stderr
    assert run_cli("remove", "bob", data_dir=tmp_path).returncode == 0
    db = sqlite_utils.Database(tmp_path / "studio.db")
    actions = [r["action"] for r in db.query("select action from audit order by id")]
    assert actions == ["add user", "add user", "set password", "remove user"]
    assert not any("password-" in str(r) for r in db.query("select * from audit"))


def test_cli_users_never_take_a_password_on_the_command_line(tmp_path):
    done = run_cli("add", "ann", "ann-password-1", data_dir=tmp_path)
    assert done.returncode == 2 and "unrecognized arguments" in done.stderr


def run_keys(*args, data_dir):
    return subprocess.run([sys.executable, "-m", "studio.cli", "keys", "--data-dir",
                           str(data_dir), *args],
                          text=True, capture_output=True, cwd=ROOT, timeout=60)


def test_cli_keys_add_list_revoke(tmp_path):
    from studio.access.keys import ApiKeys

    assert run_cli("add", "ann", "--admin", stdin="ann-password-1\n",
                   data_dir=tmp_path).returncode == 0
    assert run_cli("add", "bob", stdin="bob-password-1\n", data_dir=tmp_path).returncode == 0
    added = run_keys("add", "bob", "laptop", data_dir=tmp_path)
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("hs-")
    store = Store.open(tmp_path / "studio.db")
    assert ApiKeys(store).user_for(secret) == ("bob", "laptop")
    assert secret not in "\n".join(store.db.iterdump())  # only its hash is kept
    listed = run_keys("list", "bob", data_dir=tmp_path).stdout
    assert "laptop" in listed and secret not in listed
    assert run_keys("revoke", "bob", "1", data_dir=tmp_path).returncode == 0
    assert ApiKeys(store).user_for(secret) is None
    nobody = run_keys("add", "nobody", "x", data_dir=tmp_path)
    assert nobody.returncode == 2 and "no user called nobody" in nobody.stderr


def test_access_tables_reach_their_schema_and_a_rerun_changes_nothing(tmp_path):
    store = Store.open(tmp_path / "studio.db")
    db = store.db
    assert db["users"].columns_dict == {"name": str, "role": str, "password_hash": str,
                                        "created_at": str, "password_changed_at": str}
    assert db["sessions"].columns_dict == {"token_hash": str, "user": str, "created_at": str,
                                           "last_seen": str, "expires_at": str, "address": str,
                                           "user_agent": str}
    assert db["audit"].columns_dict == {"id": int, "at": str, "user": str, "action": str,
                                        "detail": str, "address": str}
    assert db["api_keys"].columns_dict == {"id": int, "user": str, "name": str, "key_hash": str,
                                           "prefix": str, "created_at": str, "last_used": str,
                                           "revoked_at": str}
    store.close()
    again = Store.open(tmp_path / "studio.db")  # applying the migrations twice is a no-op
    assert again.db["users"].columns_dict["role"] is str
    again.close()


def test_users_a_removed_persons_things_never_pass_to_a_new_one_of_that_name(store):
    users = Users(store)
    users.add("ann", "ann-password-1", admin=True)
    users.add("bob", "bob-password-1")
    conv = store.create_conversation("bob's secret", user="bob")
    users.remove("bob")
    kept = store.get_conversation(conv.id).user
    assert kept.startswith("bob (removed ") and store.list_conversations(user="bob") == []
    users.add("bob", "bob-password-2")
    assert store.list_conversations(user="bob") == []


def test_users_the_first_person_is_an_admin(store):
    with pytest.raises(InvalidInput, match="first person must be an admin"):
        Users(store).add("bob", "bob-password-1")
    with pytest.raises(InvalidInput, match="not 'owner' or 'cli'"):
        Users(store).add("cli", "cli-password-1", admin=True)
