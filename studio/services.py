"""The studio's long-lived objects, built once from Settings and handed to the UI.

``Services`` is wiring only: one frozen record, built in one expression at the end of
``build_services``, the one place that opens the store and constructs clients and
managers. Each manager gets the collaborators it uses as arguments, never the record
itself. No behaviour lives here; no gradio imports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

from .access.audit import Audit
from .access.exposure import Exposure, exposure
from .access.files import FileOwners
from .access.keys import ApiKeys
from .access.limits import Limits
from .access.service import Access
from .access.sessions import Sessions
from .access.urls import UrlGuard
from .access.users import Users
from .chat.arena import Arena
from .chat.embeddings import Embeddings
from .chat.models import ChatModels
from .chat.replies import ReplyManager
from .chat.router import Router
from .chat.service import ChatService
from .chat.streams import ChatStreams, record_usage
from .chat.titles import TitleWriter
from .clients.comfyui import ComfyUIClient
from .backends.board import HostBoard, build_host_board
from .backends.comfyui_hosts import ComfyUIHosts, build_comfyui
from .backends.health import HealthChecker
from .backends.local_servers import LocalServers, build_local_servers
from .backends.ollama_hosts import OllamaHosts, build_ollama
from .clients.ollama import OllamaClient
from .clients.openrouter import OpenRouterClient
from .config import Settings
from .costs.accounting import Accounting
from .costs.budget import Budget
from .costs.catalog import Catalog
from .costs.generation_costs import GenerationCosts
from .images.jobs import ImageJobs, build_image_jobs
from .images.runner import COMFYUI_PLACE
from .models.downloads import DownloadManager
from .models.gpu import GpuMonitor
from .models.gpu_coordinator import GpuCoordinator, ModelsInUse, parse_vram_overrides
from .models.local import LocalModels
from .models.pulls import PullManager
from .ops.metrics import StudioMetrics
from .ops.readings import Operations
from .ops.backup import BackupSchedule, build_backup_schedule
from .ops.data_lock import DataLock
from .ops.status import StatusBoard
from .presets import ChatPreset, load_chat_presets
from .store.cloud import CloudStore
from .store.db import Store
from .store.files import FileOwnerStore
from .store.models import ModelsStore
from .store.usage import UsageStore

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent

RESTART_REASON = "The studio stopped before this reply finished."


@dataclass(frozen=True)
class Services:
    """Everything a tab needs, built once. ``openrouter`` and ``catalog`` are None when no
    OpenRouter key is set: cloud models are then simply not offered."""

    settings: Settings
    root: Path
    store: Store
    access: Access  # who is calling, and may they (sign-in, sessions, roles, audit)
    keys: ApiKeys  # per-user API keys for /v1
    exposure: Exposure  # whether sign-in is on, and the warning when the owner runs open
    ollama: OllamaClient | OllamaHosts  # OllamaHosts when OLLAMA_HOST lists several
    openrouter: OpenRouterClient | None
    comfyui: ComfyUIClient  # the first ComfyUI host's client
    comfyui_hosts: ComfyUIHosts  # every ComfyUI host of COMFYUI_URL (one or several), health
    catalog: Catalog | None
    router: Router
    budget: Budget
    accounting: Accounting
    models: ChatModels  # what a chat can pick, and what each model reads
    replies: ReplyManager  # chat replies that outlive the page
    chat: ChatService  # the Chat tab's (and the API's) verbs
    embeddings: Embeddings  # vectors for texts (the API's /v1/embeddings and /api/embed)
    arena: Arena
    presets: list[ChatPreset]
    status: StatusBoard
    gpu: GpuMonitor
    gpu_coordinator: GpuCoordinator  # the one-GPU policy other features call before work
    models_in_use: ModelsInUse  # Ollama models a reply streams from right now
    models_store: ModelsStore
    local_models: LocalModels  # Ollama's models, what each can do, the last known list
    pulls: PullManager
    downloads: DownloadManager
    images: ImageJobs
    metrics: StudioMetrics  # /metrics: the event counters (fed by the hooks below)
    operations: Operations  # what /readyz, /status.json and /metrics read at request time
    data_lock: DataLock  # held while the process lives: `studio restore` sees the studio runs
    backups: BackupSchedule | None  # scheduled backups (None: STUDIO_BACKUP_DIR is empty)
    ollama_health: HealthChecker | None = None  # the hosts' health, when OLLAMA_HOST lists several
    local_servers: LocalServers | None = None  # STUDIO_OPENAI_SERVERS (None when empty)
    local_health: HealthChecker | None = None
    # Asks OpenRouter what a cut-off reply cost (None without a key).
    generation_costs: GenerationCosts | None = None

    @cached_property
    def hosts(self) -> HostBoard:
        """Every backend host, for the admin's hosts table and per-host model lists, made on
        first use from the engines above."""
        return build_host_board(settings=self.settings, ollama=self.ollama,
                                ollama_health=self.ollama_health, comfyui=self.comfyui,
                                comfyui_hosts=self.comfyui_hosts,
                                local_servers=self.local_servers, local_health=self.local_health)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_path

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"


def build_services(settings: Settings, *, root: Path = ROOT, nvml: object | None = None) -> Services:
    """Open the store (creating the data directory) and construct every client and manager.

    Nothing here touches the network: clients connect on first use, so the studio starts
    and history stays browsable with every backend down (image jobs a previous run left in
    ComfyUI are picked up, which asks ComfyUI only if there are any). Raises StudioError
    when the data directory can't be written (DataFolderBusy while `studio restore` writes
    into it), and ConfigError when the studio would be reachable from other machines with
    nobody able to sign in. Scheduled backups start when STUDIO_BACKUP_DIR is set.
    ``nvml`` stands in for pynvml (tests).
    """
    # Before the database opens: a restore may be writing into the folder right now.
    data_lock = DataLock.for_studio(settings.data_path)
    if data_lock.others:  # a restart overlapping the old process, or a second studio
        log.warning(
            "Another studio (process %s) is already running on %s. Both write the database "
            "safely, but each runs its own image queue, backup schedule and per-user limits: "
            "stop the older one once this one is up, or give each its own STUDIO_DATA_DIR.",
            ", ".join(data_lock.others), settings.data_path)
    store = Store.open(settings.db_path)  # says so in a sentence when the folder can't be written
    users = Users(store)
    exposed = exposure(host=settings.host, share=settings.share, users=users.count(),
                       no_auth=settings.no_auth)  # refuses to run open by accident
    data = settings.data_path
    uploads, exports, outputs = data / "uploads", data / "exports", data / "outputs"
    for path in (uploads, exports, outputs):
        path.mkdir(parents=True, exist_ok=True)
    if stale := store.mark_interrupted_streams(RESTART_REASON):
        log.warning("%d replies were cut off by the last shutdown; kept as partial", stale)
    cloud_store = CloudStore(store)
    if cloud_store.mark_interrupted_arena(RESTART_REASON):
        log.warning("Arena answers cut off by the last shutdown were kept as partial")

    ollama, ollama_health = build_ollama(settings.ollama_hosts, timeout=settings.request_timeout,
                                         health_interval=settings.health_interval)
    local_servers, local_health = build_local_servers(
        settings.openai_server_hosts, timeout=settings.request_timeout,
        health_interval=settings.health_interval)
    # ComfyUI has no sign-in: its address never reaches a page, a message or the log.
    comfyui_hosts = build_comfyui(settings.comfyui_hosts, place=COMFYUI_PLACE,
                                  health_interval=settings.health_interval)
    comfyui = comfyui_hosts.first
    openrouter = _openrouter(settings, settings.request_timeout)
    # The catalog has its own client with a short timeout: page loads may wait on its fetch.
    catalog = (Catalog(_openrouter(settings, min(settings.request_timeout, 20.0)).list_models,
                       cloud_store) if openrouter is not None else None)
    prices = catalog.prices if catalog is not None else None

    budget = Budget(UsageStore(store), settings)
    # Without a key the cloud backend is still there, so a cloud model says "set
    # OPENROUTER_API_KEY" (before any request) and can fall back like any failure.
    router = Router({"ollama": ollama,
                     "openrouter": openrouter or OpenRouterClient("", settings.openrouter_base_url),
                     **({"local": local_servers} if local_servers is not None else {})},
                    fallbacks=settings.fallback_chains, budget=budget, prices=prices)
    # A cloud reply cut off before its usage report is billed all the same: ask what it cost.
    generation_costs = (GenerationCosts(UsageStore(store), openrouter.generation_cost)
                        if openrouter is not None else None)
    accounting = Accounting(UsageStore(store), settings, prices=prices,
                            ask_cost=generation_costs.ask if generation_costs else None)
    if generation_costs is not None:
        generation_costs.resume(accounting.today())

    gpu = GpuMonitor(nvml)
    models_store = ModelsStore(store)
    in_use = ModelsInUse()
    coordinator = GpuCoordinator(
        policy=settings.gpu_policy, vram_overrides=parse_vram_overrides(settings.vram_per_family),
        gpu=gpu, ollama=ollama, comfyui=comfyui, log=models_store, busy_models=in_use.names,
        comfyui_hosts=comfyui_hosts)
    streams = ChatStreams(router, in_use=in_use, coordinator=coordinator, gpu=gpu)
    metrics = StudioMetrics()
    settled = record_usage(accounting, observe=metrics.observe_reply)
    local_models = LocalModels(ollama, models_store)
    chat_models = ChatModels(ollama, catalog, local_models, servers=local_servers)
    # Chat and arena replies alike go through `streams` (the GPU policy, the busy list) and
    # are accounted by the same hook, each under its own use; the arena asks for exact
    # models and stores its own.
    replies = ReplyManager(streams.open, store, on_settled=settled)
    arena_settled = record_usage(accounting, observe=metrics.observe_reply, source="arena")
    arena_replies = ReplyManager(partial(streams.open, exact=True), on_settled=arena_settled)

    limits = Limits(chat_per_minute=settings.limit_chat_per_minute,
                    tokens_per_day=settings.limit_tokens_per_day,
                    images_per_hour=settings.limit_images_per_hour,
                    concurrent_replies=settings.limit_concurrent_replies,
                    tokens_today=accounting.tokens_today, exempt=users.is_admin_or_owner)
    chat = ChatService(store, replies, router, uploads_dir=uploads, exports_dir=exports,
                       max_message_chars=settings.max_message_chars,
                       supports_images=chat_models.supports_images, prices=prices,
                       budget=budget, default_max_tokens=router.default_max_tokens,
                       max_megapixels=settings.max_input_megapixels, limits=limits,
                       on_refused=metrics.observe_refusal,
                       titles=TitleWriter(replies, store, settings.title_model),
                       max_import_bytes=int(settings.max_upload_mb * 1024 * 1024))
    access = Access(users, Sessions(store, lifetime_s=settings.session_days * 86400),
                    Audit(store, keep_days=settings.audit_days), no_auth=settings.no_auth,
                    session_days=settings.session_days,
                    origins=settings.allowed_origins.split(","),
                    file_owner=FileOwners(data, FileOwnerStore(store), chat.owner_of).owner)
    status = StatusBoard(settings)
    pulls = PullManager(ollama.pull, on_pulled=local_models.invalidate)
    downloads = DownloadManager(guard=UrlGuard.from_setting(settings.download_allow_hosts))
    images = build_image_jobs(settings=settings, root=root, hosts=comfyui_hosts, store=store,
                              outputs_dir=outputs, uploads_dir=uploads, accounting=accounting,
                              limits=limits, observe=metrics.observe_image_job)

    return Services(
        settings=settings, root=root, store=store, access=access, exposure=exposed,
        keys=ApiKeys(store),
        ollama=ollama, openrouter=openrouter,
        comfyui=comfyui, comfyui_hosts=comfyui_hosts, catalog=catalog, router=router, budget=budget, accounting=accounting,
        models=chat_models, replies=replies, chat=chat,
        embeddings=Embeddings(router.backends, accounting=accounting, budget=budget,
                              limits=limits, prices=prices, in_use=in_use,
                              max_chars=settings.max_message_chars),
        arena=Arena(arena_replies, cloud_store,
                    names=catalog.display_name if catalog is not None else None),
        presets=load_chat_presets(root / "presets" / "chat"),
        status=status, gpu=gpu, gpu_coordinator=coordinator,
        models_in_use=in_use, models_store=models_store, local_models=local_models,
        pulls=pulls, downloads=downloads,
        images=images, metrics=metrics,
        operations=Operations(store=store, status=status, gpu=gpu, accounting=accounting,
                              budget=budget, replies=replies, images=images, pulls=pulls,
                              downloads=downloads, outputs_dir=outputs),
        data_lock=data_lock, backups=build_backup_schedule(settings), ollama_health=ollama_health,
        local_servers=local_servers, local_health=local_health, generation_costs=generation_costs)


def _openrouter(settings: Settings, timeout: float) -> OpenRouterClient | None:
    """An OpenRouter client with the configured key and attribution; None without a key."""
    if not settings.openrouter_api_key:
        return None
    return OpenRouterClient(settings.openrouter_api_key, settings.openrouter_base_url,
                            referer=settings.openrouter_referer, title=settings.openrouter_title,
                            timeout=timeout)
