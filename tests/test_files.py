"""Files end to end: upload, download, permissions, limits while streaming, quota,
types decided by content, images (bombs, EXIF, thumbnails), attachments on messages
(live, replay, history, export), and cleanup (delete, purge, the sweep)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection

from tests.conftest import Servers
from tests.harness import Account, Api, Server, connect, join, recv, recv_until, say, send

MAX_UPLOAD = 100 * 1024
QUOTA = 256 * 1024


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by both processes of a pair: files live there, whoever took them."""
    return tmp_path_factory.mktemp("files-data")


@pytest.fixture(scope="module")
def fserver(module_servers: Servers, data_dir: Path) -> Server:
    server: Server = module_servers(
        data_dir=data_dir,
        max_upload_bytes=MAX_UPLOAD,
        upload_quota_bytes=QUOTA,
        max_image_pixels=4_000_000,
        send_rate=100,
        send_burst=200,
    )
    return server


@pytest.fixture(scope="module")
def fapi(fserver: Server) -> Any:
    client = Api(fserver)
    yield client
    client.close()


def upload(
    api: Api, who: Account, room: str, name: str, data: bytes, ctype: str = "text/plain"
) -> httpx.Response:
    return api.client.post(
        "/api/files", data={"room": room}, files={"file": (name, data, ctype)}, headers=who.headers
    )


def uploaded(
    api: Api, who: Account, room: str, name: str, data: bytes, **kw: Any
) -> dict[str, Any]:
    r = upload(api, who, room, name, data, **kw)
    assert r.status_code == 201, r.text
    item: dict[str, Any] = r.json()
    return item


def blobs(data_dir: Path) -> list[Path]:
    """Every stored blob (thumbnails included), and anything left in the temp folder."""
    root = data_dir / "files"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def jpeg_with_gps() -> bytes:
    """A 40x20 JPEG with EXIF: GPS coordinates, a camera, orientation 6 (turn 90°)."""
    image = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: shown turned by 90 degrees
    exif[0x010F] = "SpyCam"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 30.0, 15.0)
    gps[3] = "E"
    gps[4] = (13.0, 24.0, 1.0)
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


def png(size: tuple[int, int] = (640, 480)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", size, (0, 120, 255, 200)).save(out, "PNG")
    return out.getvalue()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A few hundred bytes declaring a huge image: decoded, it would take gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


async def answer(ws: ClientConnection, ref: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        frame = await recv(ws, deadline - asyncio.get_running_loop().time())
        if frame.get("ref") == ref and frame["type"] in ("ack", "error"):
            return frame


async def send_files(
    ws: ClientConnection, room: str, files: list[str], body: str = "", ref: str | None = None
) -> dict[str, Any]:
    ref = ref or uuid.uuid4().hex
    await send(ws, type="send", room=room, body=body, ref=ref, attachments=files)
    return await answer(ws, ref)


# --- upload and download ------------------------------------------------------------


@pytest.mark.one_backend
def test_an_upload_comes_back_byte_for_byte_as_a_download(fapi: Api) -> None:
    alice = fapi.user()
    room = fapi.room(alice)
    data = "línea uno\nline two\n".encode() * 100
    item = uploaded(fapi, alice, room, "../../etc/notes ü.txt", data, ctype="image/png")
    assert item["size"] == len(data)
    assert item["name"] == "notes ü.txt"  # no directories kept
    assert item["content_type"] == "text/plain; charset=utf-8"  # the content, not the claim
    r = fapi.client.get(f"/api/files/{item['id']}", headers=alice.headers)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith("attachment;")
    assert "filename*=UTF-8''notes%20%C3%BC.txt" in r.headers["content-disposition"]
    assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"


@pytest.mark.one_backend
@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("page.html", b"<!doctype html><html><script>alert(document.cookie)</script></html>"),
        (
            "logo.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        ),
    ],
)
def test_html_and_svg_are_never_served_as_markup(fapi: Api, name: str, data: bytes) -> None:
    alice = fapi.user()
    room = fapi.room(alice)
    ctype = "image/svg+xml" if name.endswith("svg") else "text/html"
    item = uploaded(fapi, alice, room, name, data, ctype=ctype)
    r = fapi.client.get(f"/api/files/{item['id']}", headers=alice.headers)
    assert r.status_code == 200
    assert r.content == data
    assert "html" not in r.headers["content-type"] and "svg" not in r.headers["content-type"]
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]


@pytest.mark.one_backend
def test_binary_content_is_typed_by_its_magic_number(fapi: Api) -> None:
    alice = fapi.user()
    room = fapi.room(alice)
    pdf = uploaded(fapi, alice, room, "report.txt", b"%PDF-1.7\n" + os.urandom(500))
    assert pdf["content_type"] == "application/pdf"
    blob = uploaded(fapi, alice, room, "x.png", b"\x00\x01\x02" + os.urandom(500))
    assert blob["content_type"] == "application/octet-stream"
    r = fapi.client.get(f"/api/files/{pdf['id']}", headers=alice.headers)
    assert r.headers["content-disposition"].startswith("attachment;")


# --- permissions ------------------------------------------------------------------------


@pytest.mark.one_backend
def test_files_of_a_private_room_are_not_found_for_outsiders(fapi: Api) -> None:
    owner, outsider, member = fapi.user(), fapi.user(), fapi.user()
    room = fapi.room(owner, private=True)
    fapi.client.post(
        f"/api/rooms/{room}/members", json={"username": member.name}, headers=owner.headers
    ).raise_for_status()
    item = uploaded(fapi, owner, room, "secret.png", png())
    for path in (f"/api/files/{item['id']}", f"/api/files/{item['id']}/thumbnail"):
        assert fapi.client.get(path, headers=member.headers).status_code == 200
        r = fapi.client.get(path, headers=outsider.headers)
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"
    missing = fapi.client.get(f"/api/files/{'0' * 32}", headers=outsider.headers)
    assert missing.status_code == 404  # the same answer as for a file not theirs
    assert fapi.client.get(f"/api/files/{item['id']}").status_code == 401


@pytest.mark.one_backend
def test_uploads_need_a_room_the_caller_may_send_in(fapi: Api, data_dir: Path) -> None:
    owner, outsider = fapi.user(), fapi.user()
    private = fapi.room(owner, private=True)
    before = set(blobs(data_dir))
    r = upload(fapi, outsider, private, "a.txt", b"hello")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = upload(fapi, outsider, "no-such-room-" + uuid.uuid4().hex, "a.txt", b"hello")
    assert r.status_code == 404
    archived = fapi.room(owner)
    fapi.client.patch(
        f"/api/rooms/{archived}", json={"archived": True}, headers=owner.headers
    ).raise_for_status()
    r = upload(fapi, owner, archived, "a.txt", b"hello")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = fapi.client.post("/api/files", files={"file": ("a.txt", b"x")}, headers=owner.headers)
    assert r.status_code == 400 and r.json()["code"] == "bad_upload"
    assert set(blobs(data_dir)) == before


@pytest.mark.one_backend
async def test_only_your_own_free_upload_to_that_room_can_be_attached(
    fserver: Server, fapi: Api
) -> None:
    alice, bob = fapi.user(), fapi.user()
    room, other_room = fapi.room(alice), fapi.room(alice)
    mine = uploaded(fapi, alice, room, "mine.txt", b"mine")
    elsewhere = uploaded(fapi, alice, other_room, "there.txt", b"there")
    bobs = uploaded(fapi, bob, room, "bob.txt", b"bob's")
    a = await connect(fserver, alice.token)
    await join(a, room)
    for files in ([bobs["id"]], [elsewhere["id"]], ["f" * 32], [mine["id"], mine["id"]]):
        refused = await send_files(a, room, files, body="nope")
        assert refused["type"] == "error" and refused["code"] == "bad_attachment", refused
    assert fapi.history(alice, room) == []  # nothing stored by a refused send
    ref = uuid.uuid4().hex
    ack = await send_files(a, room, [mine["id"]], body="here", ref=ref)
    assert ack["type"] == "ack"
    again = await send_files(a, room, [mine["id"]], body="here", ref=ref)  # a resend
    assert again["type"] == "ack" and again["seq"] == ack["seq"]
    twice = await send_files(a, room, [mine["id"]], body="once more")
    assert twice["type"] == "error" and twice["code"] == "bad_attachment"
    too_many = await send_files(a, room, [mine["id"]] * 11)
    assert too_many["code"] == "bad_frame"
    history = fapi.history(alice, room)
    assert [m["body"] for m in history] == ["here"]
    assert [f["id"] for f in history[0]["attachments"]] == [mine["id"]]
    await a.close()


# --- limits ------------------------------------------------------------------------------


def raw_post(server: Server, head: str, body_chunks: list[bytes], token: str) -> bytes:
    """Send a request over a plain socket (whatever the body claims); the raw answer."""
    url = urlsplit(server.http)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            (head + f"Host: {url.netloc}\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
        )
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what we want to see
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
                if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def settled(check: Any, timeout: float = 5.0) -> None:
    """Wait until `check()` holds (a request the server is still winding up)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "still not so"
        time.sleep(0.02)


def multipart_parts(room: str, boundary: str) -> tuple[bytes, bytes]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="room"\r\n\r\n{room}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head, f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.one_backend
def test_a_chunked_upload_is_stopped_at_the_limit_and_leaves_nothing(
    fserver: Server, fapi: Api, data_dir: Path
) -> None:
    alice = fapi.user()
    room = fapi.room(alice)
    before = set(blobs(data_dir))
    head, tail = multipart_parts(room, "BOUNDARY")
    body = [head] + [os.urandom(16 * 1024) for _ in range(MAX_UPLOAD // (16 * 1024) + 8)] + [tail]
    chunks = [b"%x\r\n%s\r\n" % (len(c), c) for c in body] + [b"0\r\n\r\n"]
    answer = raw_post(
        fserver,
        "POST /api/files HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=BOUNDARY\r\n",
        chunks,
        alice.token,
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer
    assert set(blobs(data_dir)) == before  # the partial file is gone


@pytest.mark.one_backend
def test_a_body_longer_than_its_content_length_stores_nothing(
    fserver: Server, fapi: Api, data_dir: Path
) -> None:
    alice = fapi.user()
    room = fapi.room(alice)
    before = set(blobs(data_dir))
    head, tail = multipart_parts(room, "B0UNDARY")
    body = head + os.urandom(MAX_UPLOAD * 2) + tail
    # Claims a small body, sends far more than the limit: only the claimed bytes are
    # read as this request, which then ends in the middle of the file; the bytes after
    # it are no request at all (the server answers 400 and closes the connection).
    answer = raw_post(
        fserver,
        f"POST /api/files HTTP/1.1\r\nContent-Length: {len(head) + 1000}\r\n"
        "Content-Type: multipart/form-data; boundary=B0UNDARY\r\n",
        [body],
        alice.token,
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    settled(lambda: set(blobs(data_dir)) == before)  # the partial file is gone
    # Declaring more than the limit is refused before a byte of the body is read.
    answer = raw_post(
        fserver,
        f"POST /api/files HTTP/1.1\r\nContent-Length: {MAX_UPLOAD * 4}\r\n"
        "Content-Type: multipart/form-data; boundary=B0UNDARY\r\n",
        [head],
        alice.token,
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert set(blobs(data_dir)) == before
    # Through an ordinary client: one byte over the limit.
    r = upload(fapi, alice, room, "big.bin", os.urandom(MAX_UPLOAD + 1))
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    assert uploaded(fapi, alice, room, "fits.bin", os.urandom(MAX_UPLOAD))["size"] == MAX_UPLOAD


@pytest.mark.one_backend
def test_a_user_past_the_quota_is_refused(fapi: Api, data_dir: Path) -> None:
    alice, bob = fapi.user(), fapi.user()
    room = fapi.room(alice)
    size = 90 * 1024
    uploaded(fapi, alice, room, "1.bin", os.urandom(size))
    uploaded(fapi, alice, room, "2.bin", os.urandom(size))
    before = set(blobs(data_dir))
    r = upload(fapi, alice, room, "3.bin", os.urandom(size))  # 270 KiB > 256 KiB
    assert r.status_code == 413 and r.json()["code"] == "quota_exceeded", r.text
    assert set(blobs(data_dir)) == before
    uploaded(fapi, bob, room, "bob.bin", os.urandom(size))  # a quota per user


# --- images -------------------------------------------------------------------------------


@pytest.mark.one_backend
def test_a_decompression_bomb_is_refused_and_nothing_stored(fapi: Api, data_dir: Path) -> None:
    alice = fapi.user()
    room = fapi.room(alice)
    bomb = png_bomb()
    assert len(bomb) < 1000
    before = set(blobs(data_dir))
    r = upload(fapi, alice, room, "bomb.png", bomb, ctype="image/png")
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "image_too_large"
    assert set(blobs(data_dir)) == before


@pytest.mark.one_backend
def test_exif_and_gps_are_stripped_and_orientation_kept(fapi: Api) -> None:
    alice = fapi.user()
    room = fapi.room(alice)
    original = jpeg_with_gps()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # it has GPS
    item = uploaded(fapi, alice, room, "holiday.jpg", original, ctype="application/foo")
    assert item["content_type"] == "image/jpeg"
    assert (item["width"], item["height"]) == (20, 40)  # turned upright
    r = fapi.client.get(f"/api/files/{item['id']}", headers=alice.headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["content-disposition"].startswith("inline;")
    served = Image.open(io.BytesIO(r.content))
    assert served.size == (20, 40)
    assert len(served.getexif()) == 0
    assert not served.getexif().get_ifd(0x8825)
    assert b"SpyCam" not in r.content
    assert item["size"] == len(r.content)


@pytest.mark.one_backend
def test_images_get_a_bounded_thumbnail(fapi: Api) -> None:
    alice = fapi.user()
    room = fapi.room(alice)
    item = uploaded(fapi, alice, room, "wide.png", png((1600, 400)))
    assert item["thumbnail"] == f"/api/files/{item['id']}/thumbnail"
    r = fapi.client.get(item["thumbnail"], headers=alice.headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/webp"
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.size == (320, 80)
    text = uploaded(fapi, alice, room, "a.txt", b"no picture")
    assert text["thumbnail"] is None
    r = fapi.client.get(f"/api/files/{text['id']}/thumbnail", headers=alice.headers)
    assert r.status_code == 404


# --- attachments on messages ------------------------------------------------------------


async def test_messages_carry_their_attachments_live_on_replay_and_in_history(
    fserver: Server, fapi: Api
) -> None:
    alice, bob = fapi.user(), fapi.user()
    room = fapi.room(alice)
    a = await connect(fserver, alice.token)
    b = await connect(fserver, bob.token)  # the other process, on the redis backend
    await join(a, room)
    await join(b, room)
    picture = uploaded(fapi, alice, room, "cat.png", png((64, 48)))
    notes = uploaded(fapi, alice, room, "notes.txt", b"some notes")
    ack = await send_files(a, room, [picture["id"], notes["id"]], body="look")
    assert ack["type"] == "ack"
    live = await recv_until(b, "message", room=room)
    assert live["body"] == "look"
    assert [f["id"] for f in live["attachments"]] == [picture["id"], notes["id"]]
    first = live["attachments"][0]
    assert first["name"] == "cat.png" and first["content_type"] == "image/png"
    assert (first["width"], first["height"]) == (64, 48)
    assert first["thumbnail"] == picture["thumbnail"]
    assert live["attachments"][1] == {**notes, "width": None, "height": None}
    await say(a, room, "plain")
    history = fapi.history(bob, room)
    assert history[1]["attachments"] == live["attachments"]
    assert history[0]["attachments"] == []
    c = await connect(fserver, bob.token)
    await join(c, room, since=0)
    replayed = await recv_until(c, "message", room=room, seq=ack["seq"])
    assert replayed["attachments"] == live["attachments"]
    r = fapi.client.get(f"/api/files/{notes['id']}", headers=bob.headers)
    assert r.content == b"some notes"
    for ws in (a, b, c):
        await ws.close()


@pytest.mark.one_backend
async def test_deleting_the_message_removes_its_files(
    fserver: Server, fapi: Api, data_dir: Path
) -> None:
    alice = fapi.user()
    room = fapi.room(alice)
    data = os.urandom(2000)
    shared = os.urandom(1500)  # the same bytes in two files: kept while one remains
    item = uploaded(fapi, alice, room, "gone.bin", data)
    twin_a = uploaded(fapi, alice, room, "twin.bin", shared)
    twin_b = uploaded(fapi, alice, room, "twin.bin", shared)
    a = await connect(fserver, alice.token)
    await join(a, room)
    ack = await send_files(a, room, [item["id"], twin_a["id"]], body="soon gone")
    stored = {p.read_bytes() for p in blobs(data_dir) if p.stat().st_size in (2000, 1500)}
    assert data in stored and shared in stored
    await send(a, type="delete", room=room, seq=ack["seq"], ref="del")
    assert (await recv_until(a, "deleted", room=room))["seq"] == ack["seq"]
    for gone in (item, twin_a):
        assert fapi.client.get(f"/api/files/{gone['id']}", headers=alice.headers).status_code == 404
    left = {p.read_bytes() for p in blobs(data_dir) if p.stat().st_size in (2000, 1500)}
    assert data not in left
    assert shared in left  # twin_b still has these bytes
    r = fapi.client.get(f"/api/files/{twin_b['id']}", headers=alice.headers)
    assert r.content == shared
    assert fapi.history(alice, room)[0]["attachments"] == []
    await a.close()


@pytest.mark.one_backend
async def test_exports_list_attachments_and_purge_takes_the_files(
    fserver: Server, fapi: Api, data_dir: Path
) -> None:
    admin = fapi.admin()
    room = fapi.room(admin)
    data = os.urandom(3000)
    item = uploaded(fapi, admin, room, "report.bin", data)
    a = await connect(fserver, admin.token)
    await join(a, room)
    assert (await send_files(a, room, [item["id"]], body="the report"))["type"] == "ack"
    await a.close()

    async def run_task(kind: str, params: dict[str, Any]) -> dict[str, Any]:
        r = fapi.client.post(
            "/api/tasks", json={"kind": kind, "params": params}, headers=admin.headers
        )
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 20
        while True:
            task: dict[str, Any] = fapi.client.get(
                f"/api/tasks/{r.json()['id']}", headers=admin.headers
            ).json()
            if task["status"] in ("succeeded", "failed"):
                assert task["status"] == "succeeded", task
                return task
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

    task = await run_task("export", {"room": room, "format": "jsonl"})
    result = fapi.client.get(f"/api/tasks/{task['id']}/result", headers=admin.headers)
    line = json.loads(result.text.splitlines()[0])
    assert line["attachments"] == [
        {"id": item["id"], "name": "report.bin", "size": 3000, "content_type": item["content_type"]}
    ]
    await run_task("purge", {"older_than_days": 0, "room": room})
    assert fapi.client.get(f"/api/files/{item['id']}", headers=admin.headers).status_code == 404
    assert data not in {p.read_bytes() for p in blobs(data_dir) if p.stat().st_size == 3000}


@pytest.mark.one_backend
async def test_uploads_never_attached_are_swept_after_the_ttl(
    make_server: Servers, tmp_path: Path
) -> None:
    server = make_server(data_dir=tmp_path / "data", upload_ttl=1.0, upload_sweep_interval=0.2)
    api = Api(server)
    try:
        alice = api.user()
        room = api.room(alice)
        a = await connect(server, alice.token)
        await join(a, room)
        kept = uploaded(api, alice, room, "kept.txt", b"attached in time")
        assert (await send_files(a, room, [kept["id"]]))["type"] == "ack"
        await a.close()
        stale = uploaded(api, alice, room, "stale.txt", b"never attached")
        deadline = time.monotonic() + 10
        while api.client.get(f"/api/files/{stale['id']}", headers=alice.headers).status_code != 404:
            assert time.monotonic() < deadline, "the unattached upload was not swept"
            await asyncio.sleep(0.1)
        assert [p.read_bytes() for p in blobs(tmp_path / "data")] == [b"attached in time"]
        r = api.client.get(f"/api/files/{kept['id']}", headers=alice.headers)
        assert r.status_code == 200
    finally:
        api.close()


# --- the Python client and the CLI ---------------------------------------------------------


@pytest.mark.one_backend
async def test_the_client_sends_a_file_and_the_cli_too(
    fserver: Server, fapi: Api, tmp_path: Path
) -> None:
    from chat_client import ChatClient
    from chat_client.errors import ApiError

    alice = fapi.user()
    room = fapi.room(alice)
    path = tmp_path / "notes ü.txt"
    path.write_bytes(b"from the client\n")
    async with ChatClient(fserver.ws, token=alice.token) as client:
        await client.join(room)
        ack = await client.send_file(room, path, "see attached")
        too_big = tmp_path / "big.bin"
        too_big.write_bytes(os.urandom(MAX_UPLOAD + 10))
        with pytest.raises(ApiError) as refused:
            await client.upload(room, too_big)
        assert refused.value.status == 413
    message = fapi.history(alice, room)[0]
    assert (message["seq"], message["body"]) == (ack.seq, "see attached")
    (file,) = message["attachments"]
    assert (file["name"], file["size"]) == ("notes ü.txt", 16)
    got = fapi.client.get(f"/api/files/{file['id']}", headers=alice.headers)
    assert got.content == b"from the client\n"

    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(CHAT_URL=fserver.ws, CHAT_TOKEN=alice.token, HOME=str(tmp_path))
    picture = tmp_path / "pic.png"
    picture.write_bytes(png((30, 30)))
    done = subprocess.run(
        [sys.executable, "-m", "chat", "send", "--room", room, "--file", str(picture), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    seq = json.loads(done.stdout)["seq"]
    message = fapi.history(alice, room)[0]
    assert message["seq"] == seq and message["body"] == ""
    assert [(f["name"], f["content_type"]) for f in message["attachments"]] == [
        ("pic.png", "image/png")
    ]
    missing = subprocess.run(
        [sys.executable, "-m", "chat", "send", "--room", room, "--file", str(tmp_path / "nope")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode != 0 and missing.stderr.strip()
