"""One GPU, two servers: free VRAM for an image job or a chat, following the owner's policy.

``GpuCoordinator`` gathers the figures (free VRAM from NVML, or from ComfyUI's
``/system_stats`` when NVML can't see the card; loaded models from Ollama's ``/api/ps``;
which models a running chat uses), lets the pure ``gpu_policy`` decide, carries the
decision out (unload idle Ollama models / ask ComfyUI to ``/free``) and writes every
action to the log table. Other tabs call ``before_image_job(family)`` and
``before_chat(model)`` right before they start work; with the policy ``ask`` they get
``needs_confirmation`` and call again with ``confirmed=True`` (or ``decline``).

With several ComfyUI hosts (``COMFYUI_URL`` a list) the policy works per machine: before an
image job it reads the free memory of the host the job goes to (NVML only when that host
is this machine, else its ``/system_stats``) and unloads Ollama models only from an Ollama
host on that same machine (same host name in the URL); before a chat it frees only a
ComfyUI on the chat's Ollama machine. Another machine's GPU is left alone. With one
ComfyUI host the studio is one GPU box, as before.

No gradio imports here.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Mapping

from ..backends.hosts import THIS_MACHINE, machine_of as _machine
from ..errors import ConfigError, InvalidInput, StudioError
from ..model_id import OLLAMA, ModelId
from .gpu import GpuReading, format_bytes
from .gpu_policy import (CHAT_HEADROOM_BYTES, POLICIES, Decision, LoadedModel,
                         decide_before_chat, decide_before_image_job, needed_vram_for_family)
from .pulls import full_model_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Coordination:
    """What happened before a job. ``outcome``: ``fits`` (nothing to do, not logged),
    ``done``, ``failed``, ``asked`` (waiting for a yes: ``needs_confirmation``),
    ``declined`` or ``skipped`` (short of memory but nothing was freed)."""

    trigger: str
    action: str
    outcome: str
    message: str
    models: tuple[str, ...] = ()
    free_bytes: int | None = None
    needed_bytes: int | None = None
    freed_bytes: int = 0

    @property
    def needs_confirmation(self) -> bool:
        return self.outcome == "asked"


def parse_vram_overrides(text: str) -> dict[str, str]:
    """``"sdxl=9, flux=14 GiB"`` -> ``{"sdxl": "9", "flux": "14 GiB"}``, each checked.

    Raises ConfigError naming STUDIO_VRAM_PER_FAMILY for a malformed entry or size.
    """
    overrides: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in (text or "").replace(";", ",").split(","))):
        family, sep, size = entry.partition("=")
        if not sep or not family.strip() or not size.strip():
            raise ConfigError(f"STUDIO_VRAM_PER_FAMILY entries look like 'sdxl=9' or "
                              f"'flux=14 GiB' (got {entry!r}).")
        overrides[family.strip()] = size.strip()
    try:
        for family in overrides:
            needed_vram_for_family(family, overrides)
    except InvalidInput as exc:
        raise ConfigError(f"STUDIO_VRAM_PER_FAMILY: {exc.message}", hint=exc.hint) from exc
    return overrides


def check_policy(policy: str) -> str:
    """The policy, lower-cased; raises ConfigError naming STUDIO_GPU_POLICY otherwise."""
    value = (policy or "").strip().lower()
    if value not in POLICIES:
        raise ConfigError(f"STUDIO_GPU_POLICY must be off, ask or automatic (got {policy!r}).")
    return value


class ModelsInUse:
    """Which Ollama models a reply is streaming from right now, chat and arena alike.

    A stream holds its model from before the GPU policy runs until the stream is closed, so
    the policy never unloads a model that is answering. Thread-safe; counts, so two replies
    from one model hold it twice.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    @contextmanager
    def hold(self, model: ModelId) -> Iterator[None]:
        """Count ``model`` as in use inside the block (only Ollama models are counted)."""
        name = full_model_name(model.name) if model.backend == OLLAMA else None
        if name is not None:
            with self._lock:
                self._counts[name] = self._counts.get(name, 0) + 1
        try:
            yield
        finally:
            if name is not None:
                with self._lock:
                    self._counts[name] -= 1
                    if not self._counts[name]:
                        del self._counts[name]

    def names(self) -> set[str]:
        """Full names (``llama3.2:latest``) of the Ollama models in use."""
        with self._lock:
            return set(self._counts)


class GpuCoordinator:
    """Carries out the GPU-sharing policy; thread-safe (one coordination at a time).

    ``gpu`` is a ``GpuMonitor``, ``ollama`` an ``OllamaClient``, ``comfyui`` a
    ``ComfyUIClient``, ``log`` a ``ModelsStore`` (or None), ``busy_models()`` the Ollama
    models a chat is using now.
    """

    def __init__(self, *, policy: str, gpu, ollama, comfyui, log=None,
                 vram_overrides: Mapping[str, object] | None = None,
                 busy_models: Callable[[], Iterable[str]] = lambda: (),
                 comfyui_hosts=None):
        self.policy = check_policy(policy)
        self.vram_overrides = dict(vram_overrides or {})
        self._gpu = gpu
        self._ollama = ollama
        self._comfyui = comfyui
        self._log = log
        self._busy_models = busy_models
        self._hosts = comfyui_hosts  # ComfyUIHosts; only matters with several
        self._lock = threading.Lock()

    # -- which machine

    def _several(self) -> bool:
        return self._hosts is not None and self._hosts.several

    def _on_machine(self, machine: str, comfyui, ollama, where: str) -> "GpuCoordinator":
        """This coordinator acting on one machine's servers: ``comfyui`` and ``ollama``
        there (a stand-in that says why when there is none; ``where`` names the machine in
        that sentence), NVML only when ``machine`` is this one. Shares the lock and the log."""
        other = copy.copy(self)
        other._comfyui = comfyui or _Absent(f"No ComfyUI host in COMFYUI_URL runs on {where}.")
        other._ollama = ollama or _Absent(f"No Ollama host runs on {where}, so none is "
                                          "unloaded for it.")
        if machine != THIS_MACHINE:
            other._gpu = _NoGpu()
        return other

    def _ollama_on(self, machine: str):
        """The Ollama client of a host on ``machine``, or None."""
        pool = getattr(self._ollama, "pool", None)
        if pool is None:
            return self._ollama if _machine(self._ollama.url) == machine else None
        for view in pool.views():
            if _machine(view.spec.url) == machine:
                return self._ollama.client_for(view.name)
        return None

    def for_image_host(self, host: str | None = None) -> "GpuCoordinator":
        """The coordinator for an image job on ComfyUI ``host`` (None: the host the next
        prompt would go to). Itself with one ComfyUI host."""
        if not self._several():
            return self
        pool = self._hosts.pool
        host = host or pool.choose().name
        machine = _machine(pool.spec(host).url)
        return self._on_machine(machine, self._hosts.client_for(host), self._ollama_on(machine),
                                f"the machine of ComfyUI {self._hosts.label(host)}")

    def _for_chat(self, model: str) -> "GpuCoordinator":
        if not self._several():
            return self
        pool = getattr(self._ollama, "pool", None)
        spec = (pool.choose(model) or pool.spec(pool.names[0])) if pool is not None else None
        machine = _machine(spec.url if spec is not None else self._ollama.url)
        comfy = next((client for spec, client in self._hosts.clients()
                      if _machine(spec.url) == machine), None)
        return self._on_machine(machine, comfy, self._ollama, "the chat's Ollama machine")

    # -- figures

    def free_vram(self) -> tuple[int | None, str]:
        """(free bytes or None, where the figure came from: 'NVML', 'ComfyUI' or '')."""
        reading = self._gpu.sample()
        if reading.free_vram_bytes is not None:
            return reading.free_vram_bytes, "NVML"
        try:
            stats = self._comfyui.system_stats()
        except StudioError:
            return None, ""
        cuda = [d for d in stats.devices if d.type == "cuda" and d.vram_total]
        return (max(d.vram_free for d in cuda), "ComfyUI") if cuda else (None, "")

    def loaded_models(self) -> list[LoadedModel]:
        """Ollama's loaded models, each marked busy when a chat is streaming from it."""
        busy = {full_model_name(n) for n in self._busy_models()}
        return [LoadedModel(m.name, m.size_vram, full_model_name(m.name) in busy)
                for m in self._ollama.running()]

    # -- before jobs

    def before_image_job(self, family: str, *, confirmed: bool = False,
                         host: str | None = None) -> Coordination:
        """Make room for a ComfyUI job of ``family`` (sd15, sdxl, flux...): unload idle
        Ollama models when free VRAM is short, as the policy says. Never raises for a
        backend that is down: the job then starts as it is, and the message says why.
        With several ComfyUI hosts it acts on the machine of ``host`` (None: the host the
        next prompt would go to)."""
        if self._several():
            return self.for_image_host(host)._before_image_job(family, confirmed=confirmed)
        return self._before_image_job(family, confirmed=confirmed)

    def _before_image_job(self, family: str, *, confirmed: bool) -> Coordination:
        with self._lock:
            needed = needed_vram_for_family(family, self.vram_overrides)
            free, _source = self.free_vram()
            try:
                loaded = self.loaded_models()
            except StudioError as exc:
                loaded = []
                if free is not None and free < needed:
                    return self._record("image_job", Decision("none"), "skipped",
                                        f"The image job needs about {format_bytes(needed)} and "
                                        f"only {format_bytes(free)} is free, but Ollama can't be "
                                        f"asked to make room: {exc}", free, needed)
            decision = decide_before_image_job(free, needed, self.policy, loaded)
            fits = free is None or free >= needed
            return self._carry_out("image_job", decision, fits, confirmed, free, needed)

    def before_chat(self, model: str, *, confirmed: bool = False) -> Coordination:
        """Make room for Ollama ``model``: ask ComfyUI to free its models when the model
        is not loaded and won't fit, as the policy says. Never raises for a backend that is
        down (the chat reports its own errors). With several ComfyUI hosts only one on the
        chat's Ollama machine is asked."""
        if self._several():
            try:
                return self._for_chat(model)._before_chat(model, confirmed=confirmed)
            except StudioError as exc:
                return Coordination("chat", "none", "fits", f"Ollama can't be asked: {exc}")
        return self._before_chat(model, confirmed=confirmed)

    def _before_chat(self, model: str, *, confirmed: bool) -> Coordination:
        with self._lock:
            name = full_model_name(model)
            try:
                if any(full_model_name(m.name) == name for m in self._ollama.running()):
                    return Coordination("chat", "none", "fits", f"{model} is already loaded.")
                size = next((m.size for m in self._ollama.list_models()
                             if full_model_name(m.name) == name), None)
            except StudioError as exc:
                return Coordination("chat", "none", "fits", f"Ollama can't be asked: {exc}")
            if size is None:
                return Coordination("chat", "none", "fits", f"{model} is not installed.")
            free, _source = self.free_vram()
            comfy_up = self._comfyui_reachable()
            decision = decide_before_chat(size, free, self.policy, comfy_up)
            needed = size + CHAT_HEADROOM_BYTES  # as decide_before_chat counts it
            fits = free is None or free >= needed
            return self._carry_out("chat", decision, fits, confirmed, free, needed)

    def decline(self, coordination: Coordination) -> Coordination:
        """The person said no to an ``asked`` coordination: log it, free nothing."""
        return self._record(coordination.trigger, Decision("none", coordination.models),
                            "declined", "Declined: " + coordination.message,
                            coordination.free_bytes, coordination.needed_bytes)

    # -- manual actions (Models tab)

    def unload_models(self, names: Iterable[str], *, trigger: str = "manual",
                      host: str | None = None) -> Coordination:
        """Unload these Ollama models now (keep_alive 0), logged; from every Ollama host,
        or from ``host`` only (several hosts). Raises InvalidInput for an empty list."""
        names = tuple(names)
        if not names:
            raise InvalidInput("No Ollama model is loaded, so there is nothing to unload.")
        sizes = {m.name: m.size_vram for m in (self._ollama.running_on(host) if host
                                               else self._ollama.running())}
        where = f"Ollama on {host}" if host else "Ollama"
        with self._lock:
            return self._unload(trigger, names, sizes, f"Unloaded {', '.join(names)} from {where}.",
                                None, None, host=host)

    def unload_idle(self) -> Coordination:
        """Unload every Ollama model no chat is using (the Models tab's button)."""
        idle = [m for m in self.loaded_models() if not m.busy]
        if not idle:
            raise InvalidInput("Ollama has no idle model loaded, so there is nothing to unload.")
        return self.unload_models([m.name for m in idle])

    def free_comfyui(self, *, trigger: str = "manual") -> Coordination:
        """Ask ComfyUI to unload its models and free its cached VRAM, logged."""
        with self._lock:
            return self._free_comfyui(trigger, "Asked ComfyUI to free its models.", None, None)

    # -- helpers

    def _carry_out(self, trigger: str, decision: Decision, fits: bool, confirmed: bool,
                   free: int | None, needed: int) -> Coordination:
        action = decision.action
        if action == "ask" and confirmed:
            action = "unload" if trigger == "image_job" else "free_comfyui"
        if action == "unload":
            sizes = {name: 0 for name in decision.models_to_unload}
            for m in self._ollama.running():
                if m.name in sizes:
                    sizes[m.name] = m.size_vram
            return self._unload(trigger, decision.models_to_unload, sizes, decision.reason,
                                free, needed)
        if action == "free_comfyui":
            return self._free_comfyui(trigger, decision.reason, free, needed)
        if action == "ask":
            return self._record(trigger, decision, "asked", decision.reason, free, needed)
        if fits:
            return Coordination(trigger, "none", "fits", decision.reason, free_bytes=free,
                                needed_bytes=needed)
        return self._record(trigger, decision, "skipped", decision.reason, free, needed)

    def _unload(self, trigger: str, names: tuple[str, ...], sizes: Mapping[str, int],
                reason: str, free: int | None, needed: int | None,
                host: str | None = None) -> Coordination:
        done, problems = [], []
        for name in names:
            try:
                if host:
                    self._ollama.unload(name, host=host)
                else:
                    self._ollama.unload(name)
                done.append(name)
            except StudioError as exc:
                problems.append(f"{name}: {exc}")
        freed = sum(sizes.get(n, 0) for n in done)
        message = reason
        if problems:
            message = f"{reason} Could not unload {'; '.join(problems)}"
        outcome = "done" if not problems else "failed"
        return self._log_row(Coordination(trigger, "unload_ollama", outcome, message, names, free,
                                          needed, freed))

    def _free_comfyui(self, trigger: str, reason: str, free: int | None,
                      needed: int | None) -> Coordination:
        try:
            self._comfyui.free(unload_models=True, free_memory=True)
            outcome, message = "done", reason
        except StudioError as exc:
            outcome, message = "failed", f"{reason} ComfyUI did not take it: {exc}"
        return self._log_row(Coordination(trigger, "free_comfyui", outcome, message, (), free,
                                          needed))

    def _record(self, trigger: str, decision: Decision, outcome: str, message: str,
                free: int | None, needed: int | None) -> Coordination:
        action = {"unload": "unload_ollama", "ask": "unload_ollama" if trigger == "image_job"
                  else "free_comfyui", "free_comfyui": "free_comfyui"}.get(decision.action, "none")
        return self._log_row(Coordination(trigger, action, outcome, message,
                                          tuple(decision.models_to_unload), free, needed))

    def _log_row(self, c: Coordination) -> Coordination:
        log.info("GPU sharing (%s, %s): %s", c.trigger, c.outcome, c.message)
        if self._log is not None:
            try:
                self._log.log_gpu_action(trigger=c.trigger, policy=self.policy, action=c.action,
                                         outcome=c.outcome, message=c.message, models=c.models,
                                         free_bytes=c.free_bytes, needed_bytes=c.needed_bytes,
                                         freed_bytes=c.freed_bytes or None)
            except Exception:  # noqa: BLE001 - the log must never stop a job
                log.warning("could not log the GPU action", exc_info=True)
        return c

    def _comfyui_reachable(self) -> bool:
        try:
            self._comfyui.system_stats()
            return True
        except StudioError:
            return False



class _Absent:
    """Stands for a server a machine doesn't have: every question raises ``StudioError``
    with the sentence saying so (the coordinator's usual path for a server that is down)."""

    def __init__(self, sentence: str) -> None:
        self._sentence = sentence

    def __getattr__(self, name: str):
        def absent(*_args, **_kwargs):
            raise StudioError(self._sentence)
        return absent


class _NoGpu:
    """Another machine's card: NVML here can't see it."""

    def sample(self) -> GpuReading:
        return GpuReading.unavailable("That GPU is in another machine.")
