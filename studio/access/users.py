"""The people who may sign in: names, roles and passwords (hashed, see ``passwords``).

Roles: ``admin`` (models, files, the GPU, settings, everyone's usage, users) and ``user``
(their own chats, images, arena runs and usage). The first admin inherits what was made
before sign-in existed (rows of the user "owner"). No gradio imports here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidInput
from ..store.access import AccessStore, token_hash
from ..store.db import Store
from .passwords import dummy_hash, hash_password, needs_rehash, verify_password

ADMIN, USER = "admin", "user"
BEFORE_SIGN_IN = "owner"  # the user of everything made while there was no sign-in
RESERVED = {BEFORE_SIGN_IN, "cli"}  # "cli" is who the audit log names for the command line
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
MIN_PASSWORD = 8


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


class Users:
    def __init__(self, store: Store):
        self._rows = AccessStore(store)

    def add(self, name: str, password: str, *, admin: bool = False) -> User:
        """Add a person. Raises ``InvalidInput`` for a bad or taken name or a short password."""
        name = check_name(name)
        check_password(password)
        if (taken := self._rows.user(name)) is not None:  # names ignore case
            raise InvalidInput(f"There is already a user called {taken['name']}.",
                               hint="Pick another name, or `studio users passwd` for theirs.")
        if not admin and self._rows.count_users(ADMIN) == 0:
            raise InvalidInput("The first person must be an admin, or nobody could manage the "
                               "studio once sign-in is on.", hint="Add them with --admin.")
        first_admin = admin and self._rows.count_users(ADMIN) == 0
        self._rows.add_user(name, ADMIN if admin else USER, hash_password(password),
                            claim_from=BEFORE_SIGN_IN if first_admin else None)
        return User(name, ADMIN if admin else USER)

    def remove(self, name: str) -> None:
        """Remove a person (their sessions end with them). What they made stays."""
        user = self._require(name)
        if user.is_admin and self._rows.count_users(ADMIN) == 1:
            raise InvalidInput(f"{user.name} is the last admin.",
                               hint="Make someone else an admin first.")
        self._rows.delete_user(user.name,
                               keep_as=f"{user.name} (removed {self._rows.store._now()[:16]})")

    def set_password(self, name: str, password: str, *, keep_session: str | None = None) -> None:
        """A new password; every session of that person ends (other devices sign in again),
        except ``keep_session`` (the token of the device that changed it)."""
        user = self._require(name)
        check_password(password)
        self._rows.update_user(user.name, password_hash=hash_password(password),
                               password_changed_at=self._rows.store._now())
        self._rows.delete_sessions(user.name,
                                   keep=token_hash(keep_session) if keep_session else None)

    def set_role(self, name: str, admin: bool) -> None:
        user = self._require(name)
        if user.is_admin and not admin and self._rows.count_users(ADMIN) == 1:
            raise InvalidInput(f"{user.name} is the last admin.",
                               hint="Make someone else an admin first.")
        self._rows.update_user(user.name, role=ADMIN if admin else USER)

    def get(self, name: str | None) -> User | None:
        row = self._rows.user(name) if name else None
        return User(row["name"], row["role"]) if row else None

    def list(self) -> list[User]:
        return [User(r["name"], r["role"]) for r in self._rows.users()]

    def is_admin_or_owner(self, name: str) -> bool:
        """Whether ``name`` is an admin, or the one owner while there is no sign-in: who
        per-user limits leave alone."""
        if name == BEFORE_SIGN_IN:
            return True
        user = self.get(name)
        return user is not None and user.is_admin

    def count(self) -> int:
        return self._rows.count_users()

    def verify(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None; as slow for an unknown name."""
        row = self._rows.user(name) if name else None
        if row is None:
            verify_password(dummy_hash(), password or "")
            return None
        if not verify_password(row["password_hash"], password or ""):
            return None
        if needs_rehash(row["password_hash"]):
            self._rows.update_user(row["name"], password_hash=hash_password(password))
        return User(row["name"], row["role"])

    def _require(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            raise InvalidInput(f"There is no user called {name}.",
                               hint="`studio users list` shows who there is.")
        return user


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME.fullmatch(name) or name.lower() in RESERVED:
        raise InvalidInput(f"{name!r} can't be a user name.",
                           hint="Use 1-32 letters, digits, '.', '_' or '-', starting with a "
                                "letter or digit (not 'owner' or 'cli').")
    return name


def check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD:
        raise InvalidInput(f"The password is too short; use at least {MIN_PASSWORD} characters.")
