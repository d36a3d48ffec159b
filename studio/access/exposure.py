"""Whether the studio needs sign-in, decided at start from where it listens.

Bound to loopback with no users, the studio serves one person at one machine without a
sign-in, as it always has. Reachable from elsewhere (another bind address, or a share
link) with no users, it refuses to start, unless STUDIO_NO_AUTH says the owner wants it
open, which is said loudly. Once users exist, sign-in is always required. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import ConfigError

def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the studio on this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "0.0.0.0", "")]
    [True, True, True, True, False, True]
    """
    host = (host or "127.0.0.1").strip().lower().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, others may reach it

ADD_USER = "studio users add NAME --admin"
OPEN_WARNING = ("Sign-in is OFF (STUDIO_NO_AUTH) and the studio is reachable from other "
                "machines: anyone who reaches it can read every chat, download images and "
                "delete models. Add a user with `" + ADD_USER + "` and drop STUDIO_NO_AUTH.")


@dataclass(frozen=True)
class Exposure:
    """``sign_in``: every request needs a session. ``warning``: say it at start and in the page."""

    sign_in: bool
    warning: str = ""


def exposure(*, host: str, share: bool, users: int, no_auth: bool) -> Exposure:
    """Decide how the studio may run.

    >>> exposure(host="127.0.0.1", share=False, users=0, no_auth=False)
    Exposure(sign_in=False, warning='')
    >>> exposure(host="0.0.0.0", share=False, users=2, no_auth=False).sign_in
    True

    Raises ``ConfigError`` (with the command to run) when reachable from elsewhere with no
    users and no STUDIO_NO_AUTH.
    """
    exposed = share or not is_loopback(host)
    if no_auth:
        return Exposure(sign_in=False, warning=OPEN_WARNING if exposed else "")
    if users:
        return Exposure(sign_in=True)
    if exposed:
        where = "through a share link" if share else f"on {host}"
        raise ConfigError(
            f"The studio would be reachable from other machines ({where}) with no sign-in, "
            f"and there are no users yet.",
            hint=f"Add the first one with `{ADD_USER}` (it asks for a password), then start "
                 "again. To run open anyway, set STUDIO_NO_AUTH=true (or pass --no-auth).")
    return Exposure(sign_in=False)
