"""What the front door (studio/access/web.py) costs per request, on 127.0.0.1.

One small Starlette route served by uvicorn three ways, the same run: without the gate
(the baseline), behind the gate with sign-in off, and behind the gate with sign-in on
(a real session looked up in a real SQLite file on every request). Prints the median and
95th percentile of request times over several rounds.

    .venv/bin/python bench/bench_access.py [--requests 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from studio.access.audit import Audit  # noqa: E402
from studio.access.service import Access  # noqa: E402
from studio.access.sessions import Sessions  # noqa: E402
from studio.access.users import Users  # noqa: E402
from studio.access.web import SESSION_COOKIE, AccessGate  # noqa: E402
from studio.store.db import Store  # noqa: E402
from tests.conftest import free_port  # noqa: E402


def hello(request):
    return JSONResponse({"user": request.scope.get("state", {}).get("studio_user")})


def serve(middleware) -> tuple[uvicorn.Server, str]:
    app = Starlette(routes=[Route("/hello", hello)], middleware=middleware)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{port}"


def timings(url: str, cookies: dict, n: int) -> list[float]:
    with httpx.Client(cookies=cookies) as client:
        client.get(url + "/hello").raise_for_status()
        out = []
        for _ in range(n):
            start = time.perf_counter()
            client.get(url + "/hello").raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp())
    store = Store.open(data / "studio.db")
    Users(store).add("ann", "ann-password-1", admin=True)
    sessions = Sessions(store, lifetime_s=3600)
    token = sessions.start("ann")

    def access(no_auth: bool) -> Access:
        return Access(Users(store), sessions, Audit(store, keep_days=1), no_auth=no_auth,
                      session_days=1, file_owner=lambda path: None)

    setups = {
        "no gate (baseline)": ([], {}),
        "gate, sign-in off": ([Middleware(AccessGate, authority=access(True), data_dir=data)], {}),
        "gate, sign-in on": ([Middleware(AccessGate, authority=access(False), data_dir=data)],
                             {SESSION_COOKIE: token}),
    }
    results: dict[str, list[float]] = {name: [] for name in setups}
    servers = {name: serve(mw) for name, (mw, _) in setups.items()}
    for _ in range(args.rounds):  # interleaved, so a slow moment hits every setup alike
        for name, (_, cookies) in setups.items():
            results[name].extend(timings(servers[name][1], cookies, args.requests))
    print(f"{args.rounds} rounds x {args.requests} GETs each, on {os.cpu_count()} cores")
    base = statistics.median(results["no gate (baseline)"])
    for name, values in results.items():
        values.sort()
        median, p95 = statistics.median(values), values[int(len(values) * 0.95)]
        print(f"  {name:<22} median {median:.3f} ms  p95 {p95:.3f} ms  "
              f"(+{median - base:.3f} ms on the baseline)")
    for server, _ in servers.values():
        server.should_exit = True


if __name__ == "__main__":
    main()
