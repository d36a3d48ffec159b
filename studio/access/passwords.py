"""Password hashing: Argon2id through argon2-cffi, salted per password. Never plain SHA.

>>> h = hash_password("correct horse")
>>> h.startswith("$argon2id$") and verify_password(h, "correct horse")
True
>>> verify_password(h, "wrong horse")
False
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()  # argon2-cffi's defaults (RFC 9106 low-memory profile)


@functools.cache
def dummy_hash() -> str:
    """Verified when a name is unknown, so a wrong name takes as long as a wrong password.
    Made on first use, not at import: an Argon2 hash is a deliberate ~0.1-0.5 s of CPU that
    every start-up paid (issue 16, item 6)."""
    return _HASHER.hash("a password nobody has")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with older parameters than today's."""
    return _HASHER.check_needs_rehash(password_hash)
