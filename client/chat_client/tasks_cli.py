"""`tasks ...`: start, watch, list, cancel and download tasks over the HTTP API.

A subcommand of both `chat` and `chat-client` (`add_task_commands`):

    chat tasks start export --param room=general --param format=csv --wait
    chat tasks start import_users --file users.csv --wait --json
    chat tasks status ID | chat tasks list [--active] | chat tasks cancel ID
    chat tasks download ID [-o FILE]

Every command takes `--url` (the server: `http://host:port`, or its WebSocket URL
`ws://host:port/ws`; default `$CHAT_URL`, else `http://127.0.0.1:8000`) and `--token`
(default `$CHAT_TOKEN`). `start` prints the task's id at once (202); with `--wait` it
reports progress on stderr and ends with the final task. Exit status: 0 done (and,
with `--wait`, succeeded), 1 refused, failed or cancelled, 2 bad usage, 3 the token
was refused; the reason is one line on stderr, after the program's name (`chat: ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL = ("succeeded", "failed", "cancelled")
EXIT_FAILED, EXIT_USAGE, EXIT_AUTH = 1, 2, 3


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_task_commands(subparsers: Any) -> None:
    """Register `tasks ...` on an argparse subparsers object (`add_subparsers()`).

    Each subcommand sets `handler`, and `tool`: the program's name (`chat`,
    `chat-client`), which starts its error lines.
    """
    group = subparsers.add_parser(
        "tasks", help="long-running tasks (export, purge, import_users, demo)"
    )
    tool = group.prog.split()[0]  # "chat tasks" -> "chat"
    tasks = group.add_subparsers(dest="tasks_command", required=True)

    start = tasks.add_parser("start", help="start a task; prints its id")
    start.add_argument("kind", help="demo, export, purge, import_users")
    start.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter (repeat); VALUE is text for a text parameter, else read as JSON "
        "when it parses",
    )
    start.add_argument("--params", help="all parameters as one JSON object")
    start.add_argument("--file", type=Path, help="upload a file (import_users: the CSV)")
    start.add_argument("--wait", action="store_true", help="follow it to the end")
    start.add_argument("--json", action="store_true", help="print the task as JSON")
    start.set_defaults(handler=_run(_start))

    status = tasks.add_parser("status", help="show a task")
    status.add_argument("id")
    status.add_argument("--wait", action="store_true", help="follow it to the end")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_run(_status))

    listing = tasks.add_parser("list", help="recent tasks, newest first")
    listing.add_argument("--active", action="store_true", help="only queued and running")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_run(_list))

    cancel = tasks.add_parser("cancel", help="cancel a queued or running task")
    cancel.add_argument("id")
    cancel.add_argument("--json", action="store_true")
    cancel.set_defaults(handler=_run(_cancel))

    download = tasks.add_parser("download", help="save an export's file")
    download.add_argument("id")
    download.add_argument("-o", "--output", type=Path, help="file to write ('-': stdout)")
    download.set_defaults(handler=_run(_download))

    for command in (start, status, listing, cancel, download):
        command.add_argument(
            "--url",
            default=os.environ.get("CHAT_URL") or DEFAULT_URL,
            help=f"the server (default $CHAT_URL, else {DEFAULT_URL})",
        )
        command.add_argument(
            "--token", default=os.environ.get("CHAT_TOKEN"), help="default $CHAT_TOKEN"
        )
        command.set_defaults(tool=tool)


def _run(work: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        try:
            with _client(args) as client:
                code: int = work(client, args)
                return code
        except _Exit as exc:
            print(f"{_tool(args)}: {exc}", file=sys.stderr)
            return exc.code
        except httpx.HTTPError as exc:
            print(f"{_tool(args)}: cannot reach the server: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return handler


def _tool(args: argparse.Namespace) -> str:
    return getattr(args, "tool", None) or "chat"


def base_url(url: str) -> str:
    """`ws://h:p/ws` or `http://h:p/...` -> `http://h:p` (wss -> https)."""
    parsed = httpx.URL(url)
    scheme = {"ws": "http", "wss": "https"}.get(parsed.scheme, parsed.scheme)
    if scheme not in ("http", "https") or not parsed.host:
        raise _Exit(EXIT_USAGE, f"not a server URL: {url!r}")
    port = f":{parsed.port}" if parsed.port else ""
    return f"{scheme}://{parsed.host}{port}"


def _client(args: argparse.Namespace) -> httpx.Client:
    if not args.token:
        raise _Exit(EXIT_USAGE, "no token: pass --token or set CHAT_TOKEN")
    return httpx.Client(
        base_url=base_url(args.url),
        headers={"Authorization": f"Bearer {args.token}"},
        timeout=30.0,
    )


def _check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    if isinstance(detail, list):
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail
        )
    code = EXIT_AUTH if response.status_code == 401 else EXIT_FAILED
    raise _Exit(code, f"{detail or response.reason_phrase} ({response.status_code})")


def _text_params(client: httpx.Client, kind: str) -> set[str]:
    """The parameters of `kind` whose values are text (`GET /api/tasks/kinds`): the
    server takes a JSON string there and nothing else, so `room=2024` stays "2024"."""
    response = client.get("/api/tasks/kinds")
    if response.status_code != 200:
        return set()
    for item in response.json().get("items", []):
        if item.get("kind") == kind:
            fields = item.get("params", {}).get("properties", {})
            return {name for name, schema in fields.items() if _is_text(schema)}
    return set()


def _is_text(schema: dict[str, Any]) -> bool:
    types = [schema.get("type")] + [s.get("type") for s in schema.get("anyOf", [])]
    return "string" in types and not {"integer", "number", "boolean"} & set(types)


def _params(args: argparse.Namespace, text: Collection[str] = ()) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params:
        try:
            loaded = json.loads(args.params)
        except ValueError:
            raise _Exit(EXIT_USAGE, "--params must be a JSON object") from None
        if not isinstance(loaded, dict):
            raise _Exit(EXIT_USAGE, "--params must be a JSON object")
        params.update(loaded)
    for item in args.param:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise _Exit(EXIT_USAGE, f"--param wants NAME=VALUE, not {item!r}")
        if name in text:
            params[name] = raw
            continue
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw
    return params


def _start(client: httpx.Client, args: argparse.Namespace) -> int:
    params = _params(args, _text_params(client, args.kind) if args.param else set())
    if args.file is not None:
        try:
            content = args.file.read_bytes()
        except OSError as exc:
            raise _Exit(EXIT_USAGE, f"cannot read {args.file}: {exc.strerror}") from None
        response = client.post(
            "/api/tasks",
            data={"kind": args.kind, "params": json.dumps(params)},
            files={"file": (args.file.name, content, "text/csv")},
        )
    else:
        response = client.post("/api/tasks", json={"kind": args.kind, "params": params})
    task = _check(response)
    if not args.wait:
        _show(task, args.json)
        return 0
    print(f"started {task['kind']} {task['id']}", file=sys.stderr)
    return _follow(client, task, args.json)


def _status(client: httpx.Client, args: argparse.Namespace) -> int:
    task = _check(client.get(f"/api/tasks/{args.id}"))
    if args.wait and task["status"] not in FINAL:
        return _follow(client, task, args.json)
    _show(task, args.json)
    return 0


def _follow(client: httpx.Client, task: dict[str, Any], as_json: bool) -> int:
    last = None
    while task["status"] not in FINAL:
        line = f"{task['status']} {task['progress'] * 100:.0f}% {task.get('detail') or ''}"
        if line != last:
            print(line.rstrip(), file=sys.stderr)
            last = line
        time.sleep(0.5)
        task = _check(client.get(f"/api/tasks/{task['id']}"))
    _show(task, as_json)
    return 0 if task["status"] == "succeeded" else EXIT_FAILED


def _list(client: httpx.Client, args: argparse.Namespace) -> int:
    query = {"limit": args.limit, "active": "true" if args.active else "false"}
    items = _check(client.get("/api/tasks", params=query))["items"]
    if args.json:
        for task in items:
            print(json.dumps(task))
        return 0
    for task in items:
        print(
            f"{task['id']}  {task['kind']:<12} {task['status']:<9} "
            f"{task['progress'] * 100:>3.0f}%  {task['user']['name']:<16} {task['created_at']}"
        )
    return 0


def _cancel(client: httpx.Client, args: argparse.Namespace) -> int:
    _show(_check(client.post(f"/api/tasks/{args.id}/cancel")), args.json)
    return 0


def _download(client: httpx.Client, args: argparse.Namespace) -> int:
    with client.stream("GET", f"/api/tasks/{args.id}/result") as response:
        if not response.is_success:
            response.read()
            _check(response)
        name = _filename(response) or f"{args.id}.export"
        output: Path = args.output or Path(name)
        if str(output) == "-":
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            return 0
        with output.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
    print(f"saved {output}", file=sys.stderr)
    return 0


def _filename(response: httpx.Response) -> str | None:
    header = response.headers.get("content-disposition", "")
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename":
            return Path(value.strip('"')).name or None
    return None


def _show(task: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(task))
        return
    print(f"{task['id']} {task['kind']} {task['status']} {task['progress'] * 100:.0f}%")
    if task.get("error"):
        print(f"error: {task['error']}")
    if task.get("result") is not None:
        print(f"result: {json.dumps(task['result'])}")
