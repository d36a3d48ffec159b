"""The files Gradio's frontend loads before a page's first paint, named in the page's head so
the browser fetches and compiles them all at once (issue 16, item 4).

Gradio's page names one script. That script imports the app, the app imports ``Blocks``,
and ``Blocks`` imports the module of each component kind in the config, each with its own
scripts and styles: a chain the browser discovers one step at a time, each step waiting on
the main thread's work before it. With the whole list in the head (``<link
rel="modulepreload">`` for scripts, ``<link rel="preload" as="style">`` for styles), a
browser that has them cached compiles them while the first steps run, and one on a slow
network asks for them in one go instead of four round trips in a row. They are asked at low
priority, so the page's own script goes first.

The list is read from Gradio's built frontend (``gradio/templates/frontend``): Vite writes
each dynamic import as ``import(`./Name-hash.js`)`` beside ``__vite__mapDeps([...])``, the
indices of what that module needs in the file's own ``m.f=[...]`` table, and keeps the
component kinds in one map (``chatbot:{component:()=>...}``). Nothing here is needed for the
page to work: if a Gradio release writes them another way, the page is sent as Gradio
renders it (``tests/test_preload.py`` says so for the pinned release).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import gradio

log = logging.getLogger(__name__)

FRONTEND = Path(gradio.__file__).parent / "templates" / "frontend"
ENTRY = re.compile(r'<script type="module"[^>]*\ssrc="\./assets/([^"]+\.js)"')
IN_PAGE = re.compile(r'\ssrc="\./assets/([^"]+)"|\shref="\./assets/([^"]+)"')
TABLE = re.compile(r"m\.f=(\[[^\]]*\])")
IMPORT = re.compile(r"import\(`\./([^`]+\.js)`\)[^`]{0,80}?__vite__mapDeps\(\[([\d,]*)\]\)")
ROLE_IMPORT = re.compile(r"(component|example):\(\)=>[^`]{0,20}?import\(`\./([^`]+\.js)`\)"
                         r"[^`]{0,80}?__vite__mapDeps\(\[([\d,]*)\]\)")
KIND = re.compile(r"([a-z0-9_]+):\{([^{}]*import\([^{}]*)\}")
CONFIG_START = b"window.gradio_config = "
CONFIG_END = b";</script>"


@dataclass
class Frontend:
    """What Gradio's built frontend loads: ``boot`` before any component, ``kinds`` per
    component kind (its module, example module and what they need)."""

    in_page: frozenset[str] = frozenset()  # named by Gradio's page itself
    boot: list[str] = field(default_factory=list)
    kinds: dict[str, list[str]] = field(default_factory=dict)

    def files(self, kinds: Iterable[str]) -> list[str]:
        """Every file a page with components of ``kinds`` loads before its first paint,
        the page's own script and its style excepted; each once, in load order."""
        out = list(self.boot)
        for kind in kinds:
            out += self.kinds.get("state" if kind == "api" else kind, [])
        seen = set(self.in_page)
        return [name for name in out if not (name in seen or seen.add(name))]


def _named(deps: list[str], indices: str) -> list[str]:
    """The files ``__vite__mapDeps([indices])`` names, from its file's ``deps`` table."""
    return [deps[int(i)].removeprefix("./") for i in indices.split(",") if i]


def _imports(text: str) -> list[tuple[str, list[str]]]:
    """(module, the files it needs) for each dynamic import in one built file."""
    table = TABLE.search(text)
    deps = json.loads(table.group(1)) if table else []
    return [(module, _named(deps, indices)) for module, indices in IMPORT.findall(text)]


@functools.lru_cache(maxsize=4)
def read_frontend(root: Path = FRONTEND) -> Frontend:
    """Read Gradio's built frontend once; an empty ``Frontend`` where it is not as expected."""
    assets = root / "assets"
    try:
        page = (root / "index.html").read_text(encoding="utf-8")
        match = ENTRY.search(page)
        if match is None:
            return Frontend()
        entry = match.group(1)
        in_page = frozenset(a or b for a, b in IN_PAGE.findall(page))
        boot: list[str] = []
        for module, needs in _imports((assets / entry).read_text(encoding="utf-8")):
            boot += [module, *needs]
            # The app's module: of its imports, Blocks (the page) comes before the paint;
            # the sign-in form and the API docs don't.
            if module.startswith("Index-"):  # (the app; ``core`` is the other import)
                for inner, inner_needs in _imports((assets / module).read_text("utf-8")):
                    if inner.startswith("Blocks-"):
                        boot += [inner, *inner_needs]
        kinds: dict[str, list[str]] = {}
        for path in assets.glob("core-*.js"):
            text = path.read_text(encoding="utf-8")
            table = TABLE.search(text)
            if table is None:
                continue
            deps = json.loads(table.group(1))
            for kind, body in KIND.findall(text):
                files: list[str] = []
                for role, module, indices in ROLE_IMPORT.findall(body):
                    if role == "component":  # ``example`` is for a Dataset's rows
                        files += [module, *_named(deps, indices)]
                if files:
                    kinds[kind] = files
        if not any(name.startswith("Blocks-") for name in boot) or not kinds:
            return Frontend()
        return Frontend(in_page, boot, kinds)
    except (OSError, ValueError, IndexError) as exc:
        log.warning("Gradio's frontend is not as expected (%s): pages go without preloads",
                    exc)
        return Frontend()


def config_kinds(html: bytes) -> list[str]:
    """The kinds of the components a page's config shows, in order; [] when it has none.
    Hidden ones are left out: Gradio imports their modules only when they are shown."""
    start = html.find(CONFIG_START)
    if start < 0:
        return []
    start += len(CONFIG_START)
    end = html.find(CONFIG_END, start)
    try:
        config = json.loads(html[start:end])
    except ValueError:
        return []
    if not isinstance(config, dict):
        return []
    kinds = []
    for component in config.get("components") or []:
        if not isinstance(component, dict):
            continue
        kind, props = component.get("type"), component.get("props")
        if isinstance(props, dict) and props.get("visible") is False:
            continue
        if isinstance(kind, str) and kind not in kinds:
            kinds.append(kind)
    return kinds


def link_tags(files: list[str]) -> bytes:
    """``<link>`` tags for ``files`` (names in Gradio's ``assets/``): scripts as modules and
    styles as styles, in the CORS mode the frontend's own requests use (``crossorigin``: a
    preload in another mode is not used, and the file is fetched twice)."""
    tags = []
    for name in files:
        if name.endswith(".js"):
            tags.append(f'<link rel="modulepreload" fetchpriority="low" crossorigin '
                        f'href="./assets/{name}">')
        elif name.endswith(".css"):
            tags.append(f'<link rel="preload" as="style" fetchpriority="low" crossorigin '
                        f'href="./assets/{name}">')
    return "".join(tags).encode()


def with_preloads(html: bytes, frontend: Frontend | None = None) -> bytes:
    """The page with the files its first paint needs named at the end of its head; the page
    as it is if anything about it or Gradio's frontend is not as expected."""
    try:
        frontend = frontend if frontend is not None else read_frontend()
        kinds = config_kinds(html)
        if not frontend.boot or not kinds or b"</head>" not in html:
            return html
        return html.replace(b"</head>", link_tags(frontend.files(kinds)) + b"</head>", 1)
    except Exception:  # noqa: BLE001 - the page goes out as Gradio rendered it
        log.warning("page sent without preloads", exc_info=True)
        return html
