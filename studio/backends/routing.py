"""One request over a pool of hosts: the host the pool ranks first, and the next one when it
fails before the first token. Shared by every engine with several hosts."""

from __future__ import annotations

import hashlib
import logging
from typing import Callable, Iterator, Sequence

from ..errors import (BackendRejected, BackendUnavailable, GenerationFailed, ModelNotFound,
                      StudioError)
from ..events import ChatMessage, ChatNotice, ChatOptions
from .hosts import HostSpec
from .pool import HostPool

log = logging.getLogger(__name__)


def moves_on(err: StudioError) -> bool:
    """Whether another host may succeed where this one failed before the first token: the
    host is unreachable, broke off, erred on its side, or lacks the model. A refusal of
    the request itself (a bad option, an image for a text model) would be refused anywhere."""
    if isinstance(err, (BackendUnavailable, GenerationFailed, ModelNotFound)):
        return True
    status = getattr(err, "status", None)
    return isinstance(err, BackendRejected) and status is not None and status >= 500


def sticky_key(model: str, messages: Sequence[ChatMessage]) -> str | None:
    """A conversation's key for stickiness: its model and first message (after the system
    prompt), which every later turn of it repeats."""
    if not messages:
        return None
    first = messages[0].content
    if messages[0].role == "system" and len(messages) > 1:
        first += "\0" + messages[1].content
    return hashlib.sha256(f"{model}\0{first}".encode("utf-8", "surrogatepass")).hexdigest()


def routed_stream(pool: HostPool, client_for: Callable[[HostSpec], object], engine: str,
                  model: str, messages: Sequence[ChatMessage],
                  options: ChatOptions | None = None) -> Iterator:
    """Stream ``client.chat_stream(model, messages, options)`` from the pool's best host for
    the conversation; a host that fails before the first piece is cooled down (unless it
    only lacks the model) and the next one is tried, and the reply then starts with a
    ``ChatNotice`` saying where it went. After the first piece a failure is the reply's own.
    Raises the first host's error when none could answer."""
    key = sticky_key(model, messages)
    tried: list[str] = []
    failures: list[tuple[str, StudioError]] = []
    while True:
        order = pool.order(model, sticky=key, exclude=tried)
        if not order:
            break
        spec = order[0]
        tried.append(spec.name)
        started = False
        with pool.use(spec.name):
            stream = client_for(spec).chat_stream(model, messages, options)
            try:
                for event in stream:
                    if not started:
                        started = True
                        pool.succeeded(spec.name, model)
                        if key is not None:
                            pool.remember(key, spec.name)
                        if failures:
                            failed = "; ".join(f"{name}: {err.message}" for name, err in failures)
                            yield ChatNotice(f"Answered by the {engine} host {spec.name}: {failed}")
                    yield event
                return
            except StudioError as err:
                if started or not moves_on(err):
                    raise
                failures.append((spec.name, err))
                if not isinstance(err, ModelNotFound):
                    pool.failed(spec.name, str(err))
                log.warning("%s host %s couldn't answer for %s: %s", engine, spec.name, model, err)
            finally:
                stream.close()
    if failures:
        raise failures[0][1]
    raise ModelNotFound(f"No {engine} host has the model '{model}'.")
