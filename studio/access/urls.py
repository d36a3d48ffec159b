"""URLs the studio fetches on someone's behalf (model downloads): public addresses only.

A link must be ``http``/``https`` and its host must resolve to public addresses: loopback,
link-local, private, unique-local, unspecified, multicast and reserved ones are refused
(IPv4, IPv6 and IPv4-mapped IPv6), unless the host is in STUDIO_DOWNLOAD_ALLOW_HOSTS (a NAS
on the LAN is a real case). ``GuardedTransport`` checks every request a client sends, so every
redirect hop is checked too. Refusals never say what answered where. No gradio imports.

Left open: the connection resolves the name again after the check, so a name whose DNS
answer changes in that instant (DNS rebinding) could still reach a private address.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Iterable
from urllib.parse import urlsplit

import httpx

from ..errors import InvalidInput

Resolver = Callable[[str, int], list[str]]
ALLOW_SETTING = "STUDIO_DOWNLOAD_ALLOW_HOSTS"


class AddressRefused(InvalidInput):
    """The link leads to an address the studio does not fetch."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system's resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_public(address: str) -> bool:
    """Whether an IP address is on the public internet.

    >>> [is_public(a) for a in ("8.8.8.8", "127.0.0.1", "10.1.2.3", "169.254.169.254",
    ...                         "::1", "fd00::1", "::ffff:127.0.0.1", "0.0.0.0", "2606:4700::1")]
    [True, False, False, False, False, False, False, False, True]
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified or not ip.is_global)


class UrlGuard:
    """Decides which addresses may be fetched. ``allow`` lists host names, IP addresses or
    CIDR ranges that may be private (the owner's own servers)."""

    def __init__(self, allow: Iterable[str] = (), *, resolver: Resolver = system_resolver):
        self._names: set[str] = set()
        self._nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in (a.strip().lower() for a in allow):
            if not entry:
                continue
            try:
                self._nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._names.add(entry.rstrip("."))
        self._resolve = resolver

    @classmethod
    def from_setting(cls, text: str, **kwargs) -> "UrlGuard":
        return cls(text.split(","), **kwargs)

    def addresses(self, url: str) -> tuple[str, list[str]]:
        """(host, the addresses to connect to) for ``url``; raises ``AddressRefused`` for a
        scheme other than http(s), a host that doesn't resolve, or a non-public address."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise AddressRefused("Only http:// and https:// links can be downloaded.",
                                 hint="Copy the file's direct download link.")
        host = parts.hostname.lower().rstrip(".")
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            found = self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise AddressRefused(f"The host {host} of that link can't be found.",
                                 hint="Check the link for typos.") from exc
        if not found:
            raise AddressRefused(f"The host {host} of that link can't be found.")
        if host in self._names:
            return host, found
        for address in found:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            allowed = any(ip in net for net in self._nets if net.version == ip.version)
            if not allowed and not is_public(address):
                raise AddressRefused(
                    f"That link points to a private or local address ({host}); model "
                    "downloads only fetch public addresses.",
                    hint=f"If it is your own server, add {host} to {ALLOW_SETTING}.")
        return host, found

    def check(self, url: str) -> None:
        """Raise ``AddressRefused`` unless ``url`` may be fetched (see ``addresses``)."""
        self.addresses(url)


class GuardedTransport(httpx.BaseTransport):
    """Checks every request before it is sent, so every redirect hop is checked."""

    def __init__(self, guard: UrlGuard, inner: httpx.BaseTransport | None = None):
        self._guard = guard
        self._inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._guard.check(str(request.url))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
