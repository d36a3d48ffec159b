"""Lists of backend hosts in one setting: ``OLLAMA_HOST``, ``COMFYUI_URL`` and
``STUDIO_OPENAI_SERVERS`` each take one address or several.

The syntax, one entry per host, entries separated by commas::

    [name=]address [weight=N] [key=SECRET]

- ``address`` is the server's URL (``http://box:11434``); for Ollama a bare ``host[:port]``
  works as it does for the ollama CLI.
- ``name`` is how the host is shown (status strip, Settings, replies that say where they
  went); without one the host is named by its address.
- ``weight`` (a whole number, default 1) says how much work the host should take compared to
  the others when none of them is preferred for another reason: a host of weight 2 is given
  twice as many concurrent requests as one of weight 1 before it counts as busier.
- ``key`` is sent as a bearer token (OpenAI-compatible servers, or an Ollama behind a proxy
  that asks for one). It never appears in ``repr`` or on a page.

Examples::

    OLLAMA_HOST=http://127.0.0.1:11434
    OLLAMA_HOST=desk=http://10.0.0.5:11434, big=http://10.0.0.9:11434 weight=3
    STUDIO_OPENAI_SERVERS=llama=http://box:8080/v1, vllm=http://gpu:8000/v1 key=sk-local

A bad entry stops the studio at start with a sentence naming the setting and the entry
(``ConfigError``), never a traceback. Pure functions: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from ..errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
MAX_WEIGHT = 1000


@dataclass(frozen=True)
class HostSpec:
    """One configured host. ``url`` is normalised (scheme, no trailing slash)."""

    name: str
    url: str
    weight: int = 1
    key: str = field(default="", repr=False)


def _check_url(setting: str, entry: str, url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url):
        raise ConfigError(f"{setting}: the address in entry {entry!r} must start with http:// "
                          f"or https:// (got {url!r}).")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that isn't a number
    except ValueError as exc:
        raise ConfigError(f"{setting}: the address in entry {entry!r} can't be read ({exc}).") \
            from None
    if not parts.hostname:
        raise ConfigError(f"{setting}: entry {entry!r} has no host name in its address.")
    if port is not None and not (0 < port < 65536):
        raise ConfigError(f"{setting}: the port in entry {entry!r} must be between 1 and 65535.")
    return url


_SECRET = re.compile(r"(\bkey\w*=)[^\s,]+")


def mask_keys(text: str) -> str:
    """A host list as it may be shown: every ``key=…`` value hidden.

    >>> mask_keys("a=http://x:1 key=sk-1, http://y:2")
    'a=http://x:1 key=…, http://y:2'
    """
    return _SECRET.sub(r"\1…", text)


THIS_MACHINE = "localhost"
_THIS_MACHINE_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", ""})


def machine_of(url: str) -> str:
    """The machine a URL points at: its host name, lower case (``THIS_MACHINE`` for this
    one). Hosts of one machine share its GPUs.

    >>> [machine_of(u) for u in ("http://127.0.0.1:8188", "http://[::1]:1", "http://GPU2:1")]
    ['localhost', 'localhost', 'gpu2']
    """
    host = (urlsplit(url).hostname or "").lower()
    return THIS_MACHINE if host in _THIS_MACHINE_NAMES else host


def _parse_entry(setting: str, raw: str,
                 normalise: Callable[[str], str] | None) -> HostSpec:
    entry = mask_keys(raw)  # as the entry is quoted in messages: no key shown
    words = raw.split()
    head, options = words[0], words[1:]
    name = ""
    if "=" in head and not head.lower().startswith(("http://", "https://")):
        name, head = head.split("=", 1)
        if not _NAME.match(name):
            raise ConfigError(f"{setting}: the name {name!r} in entry {entry!r} must be 1 to 40 "
                              "letters, digits, '.', '_' or '-', starting with a letter or digit.")
    if not head:
        raise ConfigError(f"{setting}: entry {entry!r} has a name but no address.")
    url = _check_url(setting, entry, normalise(head) if normalise else head)
    weight, key = 1, ""
    for option in options:
        label, _, value = option.partition("=")
        if label == "weight":
            if not value.isdigit() or not 1 <= int(value) <= MAX_WEIGHT:
                raise ConfigError(f"{setting}: weight in entry {entry!r} must be a whole number "
                                  f"from 1 to {MAX_WEIGHT} (got {value!r}).")
            weight = int(value)
        elif label == "key":
            if not value:
                raise ConfigError(f"{setting}: key= in entry {entry!r} is empty.")
            key = value
        else:
            shown = mask_keys(option)
            raise ConfigError(f"{setting}: {shown!r} in entry {entry!r} is not understood; after "
                              "the address only weight=N and key=SECRET may follow.")
    return HostSpec(name or _default_name(url), url, weight, key)


def _default_name(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def host_label(spec: HostSpec, index: int) -> str:
    """How a page may name a host: the name its setting gave it, else "host N" (its place
    in the list, 1-based), since an unnamed host is named by its address and ComfyUI's
    address must not reach a page.

    >>> host_label(HostSpec("gpu2", "http://10.0.0.9:8188"), 1)
    'gpu2'
    >>> host_label(HostSpec("10.0.0.9:8188", "http://10.0.0.9:8188"), 1)
    'host 2'
    """
    return spec.name if spec.name != _default_name(spec.url) else f"host {index + 1}"


def parse_hosts(setting: str, raw: str, *,
                normalise: Callable[[str], str] | None = None) -> tuple[HostSpec, ...]:
    """The hosts of one setting, in the order written. ``normalise`` turns a bare address
    into a URL (Ollama's ``host[:port]``). Raises ConfigError naming the setting and the
    entry for anything it can't use; an empty setting gives ().

    >>> [h.name for h in parse_hosts("COMFYUI_URL", "http://a:8188, gpu2=http://b:8188")]
    ['a:8188', 'gpu2']
    """
    specs: list[HostSpec] = []
    for entry in (e.strip() for e in raw.split(",")):
        if entry:
            specs.append(_parse_entry(setting, entry, normalise))
    seen: set[tuple[str, str]] = set()
    for spec in specs:
        for label, value in (("address", spec.url), ("name", spec.name)):
            if (label, value) in seen:
                raise ConfigError(f"{setting}: the {label} {value!r} appears twice; each host "
                                  "needs its own name and address.")
            seen.add((label, value))
    return tuple(specs)
