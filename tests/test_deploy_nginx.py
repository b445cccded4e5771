"""docs/deploy.md followed literally: Debian's nginx, TLS, two chat processes behind it.

The nginx site is read out of docs/deploy.md (the block after the `nginx-site` mark);
only the upstream ports, the listen addresses and the certificate paths are replaced.
nginx runs in the foreground as an ordinary process with a certificate made here,
in front of two `chat serve` processes (separate ports) sharing Redis and one
database. Through it: the project's Python client over `wss://`, the event stream,
the browser UI, a rolling restart under continuous sending (no acknowledged message
lost, the client sees reconnects only), and client addresses taken from
X-Forwarded-For only when the peer is the trusted proxy.

Needs nginx (`apt-get install nginx-light`, or `CHAT_NGINX`) and Redis: skips with the
reason when either is absent, fails under CHAT_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import base64
import grp
import ipaddress
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chat.config import Settings
from chat_client import ChatClient
from tests.conftest import Databases, need_service
from tests.harness import ROOT, Api, ServerPair, ServerProcess, all_messages, free_port
from tests.sse import open_stream

DOC = ROOT / "docs" / "deploy.md"
SITE_MARK = "<!-- nginx-site:"
# The per-address handshake bucket of this site: small, so the address tests can
# fill it in a second; refilled slowly, so it stays full while they look.
HANDSHAKE_BURST = 30
SITE_SETTINGS: dict[str, Any] = {
    "trusted_proxies": "127.0.0.1",  # as in docs/deploy.md: nginx, and only nginx
    "handshakes_per_ip_burst": HANDSHAKE_BURST,
    "handshakes_per_ip_per_second": 0.5,
    "send_rate": 500,
    "send_burst": 500,
}
TIMEOUT = 15_000  # ms, for the browser's waits
STARTUP = 60  # seconds a chat process may take to start on a busy machine


# --- the doc's nginx site ---------------------------------------------------------------


def doc_site() -> str:
    """The nginx block of docs/deploy.md that follows the `nginx-site` mark."""
    text = DOC.read_text()
    start = text.index(SITE_MARK)
    match = re.compile(r"```nginx\n(.*?)```", re.S).search(text, start)
    assert match, "docs/deploy.md: no ```nginx block after the nginx-site mark"
    return match.group(1)


def render_site(site: str, replacements: list[tuple[str, str]]) -> str:
    """The site with each example value replaced; each must be in the doc exactly once."""
    for old, new in replacements:
        assert site.count(old) == 1, f"docs/deploy.md's nginx site no longer has {old!r} once"
        site = site.replace(old, new)
    return site


def location_block(site: str, location: str) -> str:
    match = re.search(r"location " + re.escape(location) + r" \{(.*?)\n    \}", site, re.S)
    assert match, f"docs/deploy.md's nginx site has no `location {location}`"
    return match.group(1)


def seconds(block: str, directive: str) -> float:
    match = re.search(rf"^\s*{directive} (\d+)s;", block, re.M)
    assert match, f"no {directive} in {block!r}"
    return float(match.group(1))


def test_doc_timeouts_outlast_the_heartbeat_and_the_stream_keepalive() -> None:
    """The quietest a live socket or stream gets, by chat/config.py's defaults, is
    shorter than the doc's nginx timeouts (else nginx cuts healthy connections)."""
    fields = Settings.model_fields
    ping_every = fields["heartbeat_interval"].default  # the longest wait between pings
    pong_within = fields["heartbeat_timeout"].default
    keepalive = fields["stream_keepalive_interval"].default
    site = doc_site()
    ws = location_block(site, "= /ws")
    assert seconds(ws, "proxy_read_timeout") > ping_every + pong_within
    assert seconds(ws, "proxy_send_timeout") > ping_every + pong_within
    stream = location_block(site, "= /api/stream")
    assert "proxy_buffering off;" in stream
    assert seconds(stream, "proxy_read_timeout") > 2 * keepalive


# --- a certificate -------------------------------------------------------------------------


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost signed by it:
    (ca.pem, server.pem, server.key)."""
    now = datetime.now(UTC)

    def build(subject: str, key: Any, issuer: x509.Name, signer: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat test CA")])
    ca = (
        build("chat test CA", ca_key, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        build("127.0.0.1", key, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


# --- nginx -------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    """`CHAT_NGINX` when set, else nginx on the PATH or where Debian puts it."""
    chosen = os.environ.get("CHAT_NGINX")
    if chosen:
        return shutil.which(chosen)
    return shutil.which("nginx") or shutil.which("/usr/sbin/nginx")


class Nginx:
    """nginx in the foreground with the doc's site under a minimal main file of its own
    (pid, logs and temporary files in `folder`, so it needs no root)."""

    def __init__(self, binary: str, folder: Path, site: str) -> None:
        self.binary = binary
        self.folder = folder
        (folder / "chat.conf").write_text(site)
        # As root (CI), nginx's workers drop to `nobody`, as Debian's do to www-data.
        user = ""
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            user = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
        temp = "\n".join(
            f"    {kind}_temp_path {folder}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf = folder / "nginx.conf"
        self.conf.write_text(
            f"""{user}
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {folder}/access.log;
{temp}
    include {folder}/chat.conf;
}}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.folder), "-c", str(self.conf), "-e", "stderr", *extra]

    def check(self) -> None:
        done = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"nginx -t refused the doc's site:\n{done.stderr}"

    def start(self) -> None:
        log = (self.folder / "stderr.log").open("ab")
        self.proc = subprocess.Popen(
            self.command("-g", "daemon off;"), stdout=log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        parts = [self.folder / "stderr.log", self.folder / "error.log"]
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in parts if p.exists())


@dataclass
class Site:
    nginx: Nginx
    chat: ServerPair
    https: str  # https://127.0.0.1:PORT, through nginx
    wss: str
    http_port: int  # nginx's plain-HTTP listener (redirects)
    tls: ssl.SSLContext  # trusts the test CA
    ca: Path

    @property
    def tls_port(self) -> int:
        return int(self.https.rsplit(":", 1)[1])


def wait_until_ready(url: str, verify: ssl.SSLContext | bool = True, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{url}/readyz", verify=verify, timeout=2)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url}/readyz did not answer 200 within {timeout}s: {last!r}")


@pytest.fixture(scope="module")
def site(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    binary = nginx_binary()
    need_service("nginx", binary is not None, "no nginx binary (apt-get install nginx)")
    assert binary is not None
    from tests.redis_support import shared_redis_url

    redis_url = shared_redis_url()
    chat = ServerPair(
        databases.new(), tmp_path_factory.mktemp("deploy"), redis_url, **SITE_SETTINGS
    )
    # nginx's workers (nobody, under root) must reach their temporary files: a
    # world-readable folder of our own, not pytest's private one.
    folder = Path(tempfile.mkdtemp(prefix="chat-nginx-"))
    folder.chmod(0o755)
    ca, cert, key = make_certificates(folder)
    tls_port, http_port = free_port(), free_port()
    a, b = chat.nodes
    rendered = render_site(
        doc_site(),
        [
            ("server 127.0.0.1:8001 ", f"server 127.0.0.1:{a.port} "),
            ("server 127.0.0.1:8002 ", f"server 127.0.0.1:{b.port} "),
            ("listen 80;", f"listen 127.0.0.1:{http_port};"),
            ("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;"),
            ("/etc/ssl/chat/fullchain.pem", str(cert)),
            ("/etc/ssl/chat/privkey.pem", str(key)),
        ],
    )
    nginx = Nginx(binary, folder, rendered)
    nginx.check()
    tls = ssl.create_default_context(cafile=str(ca))
    chat.start(timeout=STARTUP)
    nginx.start()
    https = f"https://127.0.0.1:{tls_port}"
    try:
        for node in chat.nodes:
            wait_until_ready(node.http)
        wait_until_ready(https, verify=tls)
        yield Site(nginx, chat, https, f"wss://127.0.0.1:{tls_port}/ws", http_port, tls, ca)
    except BaseException:
        print(nginx.log())
        raise
    finally:
        nginx.stop()
        chat.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def api(site: Site) -> Iterator[Api]:
    """Accounts and history, straight from one chat process (not what is under test)."""
    client = Api(site.chat.nodes[0])
    yield client
    client.close()


# --- through the proxy ---------------------------------------------------------------


async def test_wss_client_https_and_the_event_stream_through_nginx(site: Site, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    async with (
        ChatClient(site.wss, token=alice.token, ssl_context=site.tls) as a,
        ChatClient(site.wss, token=bob.token, ssl_context=site.tls) as b,
    ):
        await a.join(room)
        await b.join(room)
        ticket = httpx.post(
            f"{site.https}/api/stream/ticket", headers=alice.headers, verify=site.tls
        ).json()["ticket"]
        async with open_stream(site.https, [room], ticket=ticket, verify=site.tls) as stream:
            assert stream.response.status_code == 200
            await stream.until("joined", room=room)  # live from here on
            ack = await a.send(room, "over TLS")
            # Unbuffered: the event is through nginx at once, not when a buffer fills.
            event = await stream.until("message", timeout=3, seq=ack.seq)
            assert event.data["body"] == "over TLS"
        async with asyncio.timeout(5):
            async for event in b:
                if event.type == "message" and event.seq == ack.seq:
                    assert event.body == "over TLS"
                    break
        # The client's HTTP calls go over https too.
        found = await a.search("TLS", room=room)
        assert [hit.message.body for hit in found.items] == ["over TLS"]

    # Plain HTTP is sent to https; /metrics is not served to the outside.
    r = httpx.get(f"http://127.0.0.1:{site.http_port}/", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"].startswith("https://")
    assert httpx.get(f"{site.https}/metrics", verify=site.tls).status_code == 403
    r = httpx.get(f"{site.https}/healthz", verify=site.tls)
    assert r.headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.browser
def test_browser_ui_through_nginx(site: Site, api: Api) -> None:
    # Chromium for this test only: Playwright's sync API holds an event loop on this
    # thread while it runs, and the module's other tests are async.
    from tests.browser import launch_chromium

    with launch_chromium(TIMEOUT) as browser:
        browse_through_nginx(site, api, browser)


def browse_through_nginx(site: Site, api: Api, browser: Any) -> None:
    from playwright.sync_api import expect

    from tests.browser import ChatPerson

    alice = api.user()
    room = api.room(alice)
    context = browser.new_context(ignore_https_errors=True)  # our own CA is not Chromium's
    person = ChatPerson(context, site.https)
    try:
        person.page.set_default_timeout(TIMEOUT)
        person.sign_in(alice)  # over https, then the socket over wss: "Online"
        button = person.page.locator(f'#room-list button[data-room="{room}"]')
        button.click()
        person.expect("#room-title").to_have_text(f"# {room}")
        person.page.fill("#message-input", "typed in a browser behind nginx")
        person.page.locator("#message-input").press("Enter")
        item = person.page.locator("#scroller .messages > li[data-seq]")
        expect(item.filter(has_text="typed in a browser behind nginx")).to_have_count(1)
        person.shot("deploy-nginx-chat")

        # A message from the Python client (another process maybe) reaches the page.
        async def other_client() -> None:
            async with ChatClient(site.wss, token=alice.token, ssl_context=site.tls) as c:
                await c.join(room)
                await c.send(room, "from the wss client")

        with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
            pool.submit(asyncio.run, other_client()).result(timeout=30)
        expect(item.filter(has_text="from the wss client")).to_have_count(1)
        assert [m["body"] for m in all_messages(api, alice, room)] == [
            "typed in a browser behind nginx",
            "from the wss client",
        ]
        assert not person.problems, person.problems
    finally:
        context.close()


def restart(node: ServerProcess) -> tuple[float, float]:
    """docs/deploy.md's rolling step for one process: SIGTERM, wait for it to exit,
    start it, wait until /readyz answers. Returns (seconds to exit, seconds to ready)."""
    started = time.monotonic()
    # uvicorn ends by re-raising the SIGTERM it handled (systemd counts that a clean stop).
    assert node.stop() in (0, -signal.SIGTERM), node.log()[-3000:]
    stopped = time.monotonic()
    node.start(timeout=STARTUP)
    wait_until_ready(node.http)
    return stopped - started, time.monotonic() - stopped


@pytest.mark.timeout(300)
async def test_rolling_restart_loses_no_acknowledged_message(site: Site, api: Api) -> None:
    """Each process restarted in turn while two clients send without pause (two sends in
    flight each): every acknowledged message is stored exactly once, and what the
    clients saw was reconnects, never an error.

    Whichever process a client was on, the second restart reaches it: the first one
    moved everyone on the first process to the second (a draining process refuses new
    sockets, and nginx sends them on), so each client reconnects at least once.
    """
    people = [api.user(), api.user()]
    room = api.room(people[0])
    acked: dict[str, int] = {}  # body -> seq of its ack
    errors: list[BaseException] = []
    stop = asyncio.Event()
    clients = [
        ChatClient(
            site.wss, token=p.token, ssl_context=site.tls, backoff_initial=0.05, backoff_max=1.0
        )
        for p in people
    ]

    async def sender(client: ChatClient, lane: str) -> None:
        n = 0
        while not stop.is_set():
            body = f"{lane} message {n} {uuid.uuid4().hex[:6]}"
            try:
                ack = await asyncio.wait_for(client.send(room, body), 30)
            except Exception as exc:  # anything but an ack is what the test forbids
                errors.append(exc)
                return
            acked[body] = ack.seq
            n += 1

    for client in clients:
        await client.connect()
        await client.join(room)
    try:
        lanes = [
            asyncio.create_task(sender(client, f"client {c} lane {lane}"))
            for c, client in enumerate(clients)
            for lane in range(2)
        ]
        await asyncio.sleep(1.0)
        timings = []
        for node in site.chat.nodes:
            before = len(acked)
            timings.append(await asyncio.to_thread(restart, node))
            await asyncio.sleep(1.0)  # sending goes on through the restarted process too
            assert len(acked) > before, "no message was acknowledged across a restart"
        stop.set()
        await asyncio.gather(*lanes)
        reconnects = [client.reconnects for client in clients]
    finally:
        for client in clients:
            await client.close()
    assert not errors, f"a client saw errors, not just reconnects: {errors!r}"
    assert all(count >= 1 for count in reconnects), f"reconnects per client: {reconnects}"

    stored = all_messages(api, people[0], room)
    bodies = [m["body"] for m in stored]
    seqs = [m["seq"] for m in stored]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap in the room's seqs"
    assert len(set(bodies)) == len(bodies), "a message was stored twice"
    by_body = {m["body"]: m["seq"] for m in stored}
    lost = [body for body in acked if body not in by_body]
    assert not lost, f"{len(lost)} acknowledged messages are not in the history: {lost[:5]}"
    assert all(by_body[body] == seq for body, seq in acked.items()), "an ack's seq differs"
    print(
        f"\nrolling restart through nginx: {len(acked)} messages acknowledged, "
        f"{len(stored)} stored, lost 0, reconnects per client {reconnects}, "
        "restarts (exit s, ready s): " + ", ".join(f"({a:.1f}, {b:.1f})" for a, b in timings)
    )


# --- client addresses ----------------------------------------------------------------------


async def handshake(
    port: int,
    *,
    forwarded_for: str | None = None,
    source: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
) -> int:
    """The HTTP status of a WebSocket handshake to /ws (101 upgraded, 429 throttled), sent
    from `source` with an `X-Forwarded-For` header of the caller's choosing."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        port,
        local_addr=(source, 0),
        ssl=tls,
        server_hostname="127.0.0.1" if tls else None,
    )
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if forwarded_for is not None:
        lines.append(f"X-Forwarded-For: {forwarded_for}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        status = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    return int(status.split()[1])


async def fill_bucket(port: int, **how: Any) -> list[int]:
    """Handshakes until one is throttled (at most the burst and five more)."""
    statuses = []
    for _ in range(HANDSHAKE_BURST + 5):
        statuses.append(await handshake(port, **how))
        if statuses[-1] == 429:
            break
    return statuses


async def test_forwarded_for_counts_from_the_trusted_proxy_only(site: Site) -> None:
    a, b = site.chat.nodes
    # Documentation addresses (TEST-NET-2), this run's own.
    run = uuid.uuid4().int % 100
    claimed, other = f"198.51.100.{run + 1}", f"198.51.100.{run + 101}"

    # From the trusted proxy's address (127.0.0.1), X-Forwarded-For is the client: the
    # handshake limit fills for the address it names, on every process (Redis)...
    statuses = await fill_bucket(a.port, forwarded_for=claimed)
    assert statuses[-1] == 429 and statuses.count(101) >= HANDSHAKE_BURST, statuses
    assert await handshake(b.port, forwarded_for=claimed) == 429
    # ...and for no one else: another forwarded address, and the proxy's own, pass.
    assert await handshake(a.port, forwarded_for=other) == 101
    assert await handshake(a.port) == 101
    # Through nginx a client cannot claim that address: nginx replaces the header.
    assert await handshake(site.tls_port, forwarded_for=claimed, tls=site.tls) == 101

    # From a peer that is not trusted (127.0.0.3), the header is ignored: its own
    # address fills up, whatever address each handshake claims.
    untrusted = [f"203.0.113.{n}" for n in range(1, HANDSHAKE_BURST + 6)]
    statuses = []
    for address in untrusted:
        statuses.append(await handshake(a.port, forwarded_for=address, source="127.0.0.3"))
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429 and statuses.count(101) >= HANDSHAKE_BURST, statuses
    # Those addresses were never charged: from the trusted proxy they pass.
    assert await handshake(a.port, forwarded_for=untrusted[0]) == 101
