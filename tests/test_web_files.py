"""Files in the browser chat (headless Chromium, a real server): attaching a picture and
a document and sending them, seen on both sides (a thumbnail that opens full size, a
download chip with name and size that downloads the bytes), and files refused: too big
for the limit (said before uploading), and an image the server refuses (its reason shown).

Screenshots land in `test-output/screenshots/` (prefix `files-`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.browser import ChatPerson
from tests.conftest import ServerFactory
from tests.harness import Api, ServerProcess
from tests.test_files import png_bomb

pytestmark = [pytest.mark.browser, pytest.mark.one_backend]

TIMEOUT = 10_000
MAX_UPLOAD = 64 * 1024


@pytest.fixture(scope="module")
def web_server(module_servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return module_servers(
        data_dir=tmp_path_factory.mktemp("web-files"), max_upload_bytes=MAX_UPLOAD
    )


class Person(ChatPerson):
    timeout = TIMEOUT
    shot_prefix = "files-"

    def open_room(self, room: str) -> Person:
        self.page.locator(f'#room-list button[data-room="{room}"]').click()
        self.expect("#room-title").to_have_text(f"# {room}")
        self.expect(".history-status").not_to_have_text(re.compile("Loading"))
        return self

    def message(self, body: str) -> Any:
        return self.page.locator("#scroller .messages > li").filter(
            has=self.page.locator(".msg-body", has_text=re.compile(f"^{re.escape(body)}$"))
        )


@pytest.fixture
def people(browser: Any, web_server: ServerProcess) -> Iterator[Any]:
    opened: list[Person] = []

    def make() -> Person:
        context = browser.new_context(
            viewport={"width": 1280, "height": 800}, accept_downloads=True
        )
        person = Person(context, web_server.http)
        opened.append(person)
        return person

    yield make
    problems = [p for person in opened for p in person.problems]
    for person in opened:
        person.context.close()
    assert not problems, problems


def picture() -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (400, 300), (30, 140, 90))
    for x in range(0, 400, 40):  # stripes, so the thumbnail is visibly a picture
        image.paste((240, 200, 40), (x, 0, x + 20, 300))
    image.save(out, "PNG")
    return out.getvalue()


def test_attach_and_send_a_picture_and_a_document(
    people: Any, web_api: Api, tmp_path: Path
) -> None:
    alice, bob = web_api.user(), web_api.user()
    room = web_api.room(alice)
    a = people().sign_in(alice).open_room(room)
    b = people().sign_in(bob).open_room(room)
    doc = b"Minutes of the meeting\n" * 100
    a.page.set_input_files(
        "#file-input",
        files=[
            {"name": "stripes.png", "mimeType": "image/png", "buffer": picture()},
            {"name": "minutes.txt", "mimeType": "text/plain", "buffer": doc},
        ],
    )
    a.expect("#upload-tray .upload.ready").to_have_count(2)
    a.expect("#upload-tray").to_contain_text("stripes.png")
    a.shot("tray")
    box = a.page.locator("#message-input")
    box.fill("the plan, and the minutes")
    box.press("Enter")
    a.expect("#upload-tray").to_be_hidden()
    for person in (a, b):
        item = person.message("the plan, and the minutes")
        thumb = item.locator(".file-thumb img")
        person.expect(thumb).to_have_attribute("src", re.compile("^blob:"))
        person.expect(thumb).to_have_attribute("alt", "stripes.png")
        person.page.wait_for_function(
            "img => img.complete && img.naturalWidth === 320", arg=thumb.element_handle()
        )
        chip = item.locator(".file-chip")
        person.expect(chip).to_contain_text("minutes.txt")
        person.expect(chip).to_contain_text(f"{len(doc) / 1024:.1f} KB")
    b.shot("received")
    # The thumbnail opens the picture full size; the chip downloads the document.
    b.message("the plan, and the minutes").locator(".file-thumb").click()
    full = b.page.locator(".file-viewer img")
    b.expect(full).to_have_attribute("src", re.compile("^blob:"))
    b.page.wait_for_function(
        "img => img.complete && img.naturalWidth === 400", arg=full.element_handle()
    )
    b.shot("full-size")
    b.page.keyboard.press("Escape")
    b.expect(".file-viewer").to_have_count(0)
    with b.page.expect_download() as info:
        b.message("the plan, and the minutes").locator(".file-chip").click()
    download = info.value
    assert download.suggested_filename == "minutes.txt"
    saved = tmp_path / "minutes.txt"
    download.save_as(saved)
    assert saved.read_bytes() == doc


def test_files_too_big_or_refused_are_explained(people: Any, web_api: Api) -> None:
    alice = web_api.user()
    room = web_api.room(alice)
    a = people().sign_in(alice).open_room(room)
    a.page.set_input_files(
        "#file-input",
        files=[
            {
                "name": "huge.bin",
                "mimeType": "application/octet-stream",
                "buffer": b"x" * (MAX_UPLOAD + 1),
            }
        ],
    )
    a.expect("#notices").to_contain_text("“huge.bin” is too big: files can be up to 64 KB.")
    a.expect("#upload-tray .upload").to_have_count(0)
    a.shot("too-big")
    a.page.set_input_files(
        "#file-input",
        files=[{"name": "bomb.png", "mimeType": "image/png", "buffer": png_bomb()}],
    )
    a.expect("#notices").to_contain_text("“bomb.png” was refused: the image has too many pixels.")
    a.expect("#upload-tray .upload").to_have_count(0)
    a.shot("refused")
    assert web_api.history(alice, room) == []
