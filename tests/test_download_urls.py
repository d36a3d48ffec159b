"""Model downloads fetch public addresses only: the pure checks, and real downloads from
loopback servers that are refused (or allowed when the owner lists the host)."""

from __future__ import annotations

import http.server
import threading

import pytest

from studio.access.urls import AddressRefused, UrlGuard
from studio.models.downloads import DownloadManager, guarded_client_factory
from studio.models.files import plan_download
from tests.conftest import free_port


def resolving(table: dict[str, list[str]]):
    """A resolver that knows only ``table`` (tests need no DNS)."""
    def resolve(host, port):
        if host not in table:
            raise OSError("unknown host")
        return table[host]
    return resolve


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.0.0.5", "172.16.3.4", "192.168.1.20",
    "169.254.169.254", "fc00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "0.0.0.0", "::", "224.0.0.1", "100.64.0.1"])
def test_urls_private_and_local_addresses_are_refused(address):
    guard = UrlGuard(resolver=resolving({"files.example": [address]}))
    with pytest.raises(AddressRefused, match="private or local address") as refused:
        guard.check("https://files.example/model.safetensors")
    assert "STUDIO_DOWNLOAD_ALLOW_HOSTS" in str(refused.value)


def test_urls_one_private_address_among_public_ones_is_refused():
    guard = UrlGuard(resolver=resolving({"mixed.example": ["93.184.216.34", "10.0.0.1"]}))
    with pytest.raises(AddressRefused):
        guard.check("http://mixed.example/a")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://files.example/a", "gopher://x/",
                                 "http:///nohost"])
def test_urls_only_http_and_https(url):
    with pytest.raises(AddressRefused, match="Only http:// and https://"):
        UrlGuard(resolver=resolving({})).check(url)


def test_urls_public_addresses_and_the_allow_list_pass():
    table = {"cdn.example": ["93.184.216.34", "2606:2800:220:1::1"], "nas.lan": ["192.168.1.9"],
             "other.lan": ["192.168.7.7"]}
    guard = UrlGuard(["nas.lan", "10.0.0.0/8"], resolver=resolving(table))
    guard.check("https://cdn.example/model.safetensors")
    guard.check("http://nas.lan:8080/models/a.safetensors")
    with pytest.raises(AddressRefused):
        guard.check("http://other.lan/a")
    UrlGuard(["192.168.7.0/24"], resolver=resolving(table)).check("http://other.lan/a")


def test_urls_an_unknown_host_is_one_sentence():
    with pytest.raises(AddressRefused, match="can't be found"):
        UrlGuard(resolver=resolving({})).check("https://nowhere.example/a")


class Files(http.server.BaseHTTPRequestHandler):
    """/file answers bytes; /hop redirects to ``target``; anything else a private body."""
    target = ""

    def do_GET(self):
        if self.path == "/hop":
            self.send_response(302)
            self.send_header("Location", self.target)
            self.end_headers()
            return
        body = b"MODEL-BYTES" if self.path == "/file" else b"internal admin page, secret"
        self.send_response(200 if self.path == "/file" else 500)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_urls_a_redirect_to_loopback_is_refused(server):
    # The first host is allowed (standing in for the owner's NAS); it redirects to a
    # loopback address that isn't.
    port = server.rsplit(":", 1)[1]
    Files.target = f"http://127.0.0.1:{port}/secret"
    guard = UrlGuard(["localhost"])
    with guarded_client_factory(guard)() as client, pytest.raises(AddressRefused) as refused:
        client.get(f"http://localhost:{port}/hop")
    assert "secret" not in str(refused.value) and port not in str(refused.value)


def test_urls_downloads_from_loopback_are_refused_before_anything_is_written(server, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    manager = DownloadManager(guard=UrlGuard())
    plan = plan_download(f"{server}/file", "checkpoints", "a.safetensors", tmp_path,
                         ["checkpoints"])
    with pytest.raises(AddressRefused, match="private or local address"):
        manager.start(plan)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_urls_an_allow_listed_host_downloads(server, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    manager = DownloadManager(guard=UrlGuard(["127.0.0.1"]))
    plan = plan_download(f"{server}/file", "checkpoints", "a.safetensors", tmp_path,
                         ["checkpoints"])
    job = manager.start(plan)
    assert job.wait_finished(10) and job.progress().state == "done", job.progress()
    assert (tmp_path / "checkpoints" / "a.safetensors").read_bytes() == b"MODEL-BYTES"


def test_urls_a_download_redirected_to_a_private_address_fails_with_a_sentence(server, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    port = server.rsplit(":", 1)[1]
    Files.target = f"http://127.0.0.1:{port}/secret"
    manager = DownloadManager(guard=UrlGuard(["localhost"]))
    plan = plan_download(f"http://localhost:{port}/hop", "checkpoints", "b.safetensors",
                         tmp_path, ["checkpoints"])
    job = manager.start(plan)
    assert job.wait_finished(10)
    progress = job.progress()
    assert progress.state == "failed" and "private or local address" in progress.message
    assert "secret" not in progress.message and "internal admin" not in progress.message
    assert not (tmp_path / "checkpoints" / "b.safetensors").exists()
