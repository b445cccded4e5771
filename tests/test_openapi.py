"""The OpenAPI document tells the truth (issue 12), checked against a real server.

- /docs and /redoc load every asset from the server itself (no CDN), and render in
  Chromium with the network to anywhere else cut, under the page's CSP.
- Every error answer has the declared `ErrorOut` shape: a rule's 422 has its words as
  `detail`, a malformed request's 422 the list of problems.
- A 405 names every method of the path in `Allow`.
- The patterns the request models put in the document accept exactly what the
  server's rules accept (property-tested over random text).

scripts/api_check.py runs schemathesis over the whole document (CI).
"""

from __future__ import annotations

import re
import unicodedata
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.api.notifications import LINK_PATTERN, link_problem
from chat.api.responses import ErrorOut
from chat.storage import rules
from tests.conftest import ServerFactory
from tests.harness import Api, ServerProcess

pytestmark = pytest.mark.one_backend


class _Assets(HTMLParser):
    """Every `src` and `href` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_use_only_assets_served_here(api: Api, page: str) -> None:
    r = api.client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    parser = _Assets()
    parser.feed(r.text)
    assert len(parser.urls) >= 2, r.text
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url  # same origin only
        asset = api.client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert CONTENT_TYPES[suffix] in asset.headers["content-type"], (url, asset.headers)
        assert len(asset.content) > 1000 or suffix == ".js", url


def test_the_document_declares_errors_as_they_are_sent(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in str(document)
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            if operation.get("security"):
                assert "401" in responses, (method, path)
            for code, response in responses.items():
                if (code[0] in "45" and code != "503") or code == "422":
                    json_body = response["content"]["application/json"]["schema"]
                    assert json_body == {"$ref": "#/components/schemas/ErrorOut"}, (path, code)


def test_error_bodies_have_the_declared_shape(api: Api) -> None:
    alice = api.user()
    # A broken rule: its words, as before.
    r = api.client.post("/api/auth/register", json={"username": "ab", "password": "x" * 10})
    assert r.status_code == 422 and r.json() == {"detail": "username must be 3 to 32 characters"}
    # A request that does not fit the schema: the list of problems.
    r = api.client.post("/api/rooms", json={"name": "x", "private": 0}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "private"]
    answers = [
        r,
        api.client.get("/api/me"),  # 401
        api.client.get("/api/rooms/nope/messages", headers=alice.headers),  # 404
        api.client.post("/api/rooms/nope/messages", json={"body": ""}, headers=alice.headers),
        api.client.patch("/api/me", json={"display_name": " "}, headers=alice.headers),
    ]
    for answer in answers:
        assert answer.status_code >= 400 and ErrorOut.model_validate(answer.json()), answer.text


def test_405_names_every_method_of_the_path(api: Api) -> None:
    alice = api.user()
    for method, path, allow in [
        ("OPTIONS", "/api/me", "GET, PATCH"),
        ("PUT", "/api/rooms", "GET, POST"),
        ("PATCH", "/api/rooms/x/members/bob", "DELETE"),  # not a room named "x/members/bob"
        ("DELETE", "/api/rooms/a/b/messages", "GET, POST"),
    ]:
        r = api.client.request(method, path, headers=alice.headers)
        assert r.status_code == 405 and r.headers["allow"] == allow, (method, path, r.text)
        assert r.json() == {"detail": "Method Not Allowed"}


def _agrees(pattern: str, accepts: Any, text: str) -> None:
    # JSON Schema's `$` is the end of the text; Python's also matches before a last "\n".
    python = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
    assert bool(re.search(python, text)) == accepts(text), (pattern[:40], text)


def _rule(check: Any) -> Any:
    def accepts(text: str) -> bool:
        try:
            check(text)
        except rules.InputError:
            return False
        return True

    return accepts


# NFC text (what the schema speaks of): normalization aside, pattern and rule agree.
texts = st.text(st.characters(codec="utf-8"), max_size=80).map(
    lambda s: unicodedata.normalize("NFC", s)
)
edges = st.sampled_from(
    ["", " ", "a", " a ", "a\u00a0b", "\u00a0a", "a\u200bb", "two\nlines", "\tx\t", "dm:x", "DM:x"]
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(texts, edges, st.text("ab _.-\u00e9\u200b\t", max_size=40)))
def test_schema_patterns_accept_what_the_rules_accept(text: str) -> None:
    _agrees(rules.USERNAME_PATTERN, _rule(rules.check_username), text)
    _agrees(rules.DISPLAY_NAME_PATTERN, _rule(rules.normalize_display_name), text)
    _agrees(rules.TOPIC_PATTERN, _rule(rules.normalize_topic), text)
    _agrees(rules.room_name_pattern(64), _rule(lambda t: rules.normalize_room_name(t, 64)), text)
    _agrees(rules.BODY_PATTERN, lambda t: rules.check_body(t) is None, text)
    _agrees(LINK_PATTERN, lambda t: link_problem(t) is None, text)
    _agrees(LINK_PATTERN, lambda t: link_problem(t) is None, "/" + text)
    _agrees(LINK_PATTERN, lambda t: link_problem(t) is None, "https://" + text)


@pytest.mark.browser
def test_docs_render_offline_in_chromium(module_servers: ServerFactory, browser: Any) -> None:
    from tests.browser import BrowserPage

    server: ServerProcess = module_servers()
    context = browser.new_context()
    outside: list[str] = []

    def only_here(route: Any) -> None:
        if route.request.url.startswith(server.http):
            route.continue_()
        else:  # offline: nothing but this server answers
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_here)
    page = BrowserPage(context, server.http)
    page.page.goto(server.http + "/docs")
    operations = page.page.locator(".opblock")
    page.expect(operations.first).to_be_visible()
    assert operations.count() > 40
    page.expect(
        page.page.locator(".opblock-summary-path", has_text="/api/rooms").first
    ).to_be_visible()
    page.shot("docs-swagger")
    page.page.goto(server.http + "/redoc")
    page.expect(page.page.get_by_role("heading", name="Create Room")).to_be_visible()
    page.shot("docs-redoc")
    # ReDoc's "powered by" logo points at its CDN: the page's CSP blocks it, as it should.
    problems = [p for p in page.problems if "cdn.redoc.ly/redoc/logo-mini.svg" not in p]
    assert outside == [] and problems == []
    context.close()
