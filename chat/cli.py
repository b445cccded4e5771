"""The `chat` command: serve, worker, db upgrade, users create, bots create; and the client's.

The client's own subcommands (`chat_client.cli`: send, tail, edit, delete, react, read,
notifications, notify, search; `chat_client.tasks_cli`: tasks) are the same as `chat-client`
runs where only the client is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Awaitable, Callable

from chat.config import Settings
from chat_client.cli import add_client_commands
from chat_client.tasks_cli import add_task_commands

log = logging.getLogger("chat")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # One line per HTTP request of the CLI's own client is noise, not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
    except KeyboardInterrupt:
        code = 130
    except CommandError as exc:
        print(f"chat: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


class CommandError(Exception):
    """A failure reported as one line on stderr."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chat", description="Real-time chat and notification hub")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (migrations applied first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser(
        "worker", help="run tasks from the site's queue, and nothing else (needs CHAT_REDIS_URL)"
    )
    worker.set_defaults(handler=cmd_worker)

    db = commands.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True
    )
    db.add_parser("upgrade", help="apply migrations").set_defaults(handler=cmd_db_upgrade)

    users = commands.add_parser("users", help="accounts").add_subparsers(
        dest="users_command", required=True
    )
    create_user = users.add_parser("create", help="create an account")
    create_user.add_argument("name")
    create_user.add_argument("--admin", action="store_true")
    create_user.add_argument(
        "--password-stdin", action="store_true", help="read the password as one line of stdin"
    )
    create_user.set_defaults(handler=cmd_users_create)

    bots = commands.add_parser("bots", help="bot accounts").add_subparsers(
        dest="bots_command", required=True
    )
    create_bot = bots.add_parser("create", help="create a bot; prints its token last")
    create_bot.add_argument("name")
    create_bot.set_defaults(handler=cmd_bots_create)

    # The client's subcommands (send, tail, edit... notify, search, tasks), from its distribution.
    add_client_commands(commands)
    add_task_commands(commands)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from chat.storage.migrate import upgrade

    settings = Settings()
    if args.workers > 1 and not settings.redis_url:
        print(
            "chat serve: warning: several workers without CHAT_REDIS_URL do not share rooms, "
            "presence or rate limits (see docs/scaling.md)",
            file=sys.stderr,
        )
    upgrade(settings.database_url)
    # Resolve (and maybe generate) the dev secret once, before workers start.
    from chat.auth.tokens import resolve_secret

    resolve_secret(settings)
    from chat.drain import SHUTDOWN_GRACE
    from chat.monitoring import multiprocess
    from chat.ws.socket import PROTOCOL_CLASS

    # Several workers: each writes its metrics to files that /metrics adds up. Set
    # after this process's own imports: it never serves, the workers it spawns do.
    metrics_dir = multiprocess.prepare() if args.workers > 1 else None
    proxies = settings.trusted_proxies
    try:
        uvicorn.run(
            "chat.app:create_server",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            # Jittered protocol pings, closes that never wait on a stuck peer
            # (chat/ws/socket.py).
            ws=PROTOCOL_CLASS,
            ws_per_message_deflate=settings.ws_compression,
            ws_max_size=settings.max_frame_bytes,
            ws_ping_interval=settings.heartbeat_interval,
            ws_ping_timeout=settings.heartbeat_timeout,
            # The client address (per-address limits) and scheme come from
            # X-Forwarded-For/-Proto only when the peer is one of these (docs/deploy.md).
            proxy_headers=proxies != [],
            forwarded_allow_ips=",".join(proxies) if proxies else None,
            # The app drains first (up to drain_timeout, on the signal); this is what is left.
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
            log_level="info",
            log_config=serve_log_config(),
        )
    finally:
        if metrics_dir is not None:
            multiprocess.cleanup(metrics_dir)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from chat.storage.migrate import upgrade
    from chat.worker import run_worker

    settings = Settings()
    if not settings.redis_url:
        raise CommandError("worker needs CHAT_REDIS_URL: tasks reach workers through Redis")
    upgrade(settings.database_url)
    asyncio.run(run_worker(settings))
    return 0


def serve_log_config() -> dict[str, object]:
    """uvicorn's logging plus our `chat` loggers, applied in every worker process.

    (`logging.basicConfig` in `main` only reaches the first process: workers are
    spawned and configure logging from this dictionary alone.)
    """
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, object] = copy.deepcopy(LOGGING_CONFIG)
    formatters = config["formatters"]
    handlers = config["handlers"]
    loggers = config["loggers"]
    assert isinstance(formatters, dict) and isinstance(handlers, dict)
    assert isinstance(loggers, dict)
    formatters["chat"] = {"format": LOG_FORMAT}
    handlers["chat"] = {
        "formatter": "chat",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    loggers["chat"] = {"handlers": ["chat"], "level": "INFO", "propagate": False}
    return config


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from chat.storage.migrate import upgrade

    upgrade(Settings().database_url)
    return 0


def _run_with_services(work: Callable[..., Awaitable[int]], *extra: object) -> int:
    async def runner() -> int:
        from chat.services import Services

        services = Services.build(Settings())
        try:
            return await work(services, *extra)
        finally:
            await services.db.dispose()

    from chat.storage.migrate import upgrade

    upgrade(Settings().database_url)
    return asyncio.run(runner())


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise CommandError("the passwords differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise CommandError("expected the password as one line on standard input")
    return line.rstrip("\r\n")


def cmd_users_create(args: argparse.Namespace) -> int:
    from chat.storage.rules import Conflict, InputError

    password = _read_password()

    async def work(services: object) -> int:
        from chat.services import Services

        assert isinstance(services, Services)
        try:
            user = await services.accounts.register(
                args.name, password, "admin" if args.admin else "user"
            )
        except (InputError, Conflict) as exc:
            raise CommandError(str(exc)) from None
        print(f"created {user.role} {user.username} (id {user.id})")
        return 0

    return _run_with_services(work)


def cmd_bots_create(args: argparse.Namespace) -> int:
    from chat.storage.rules import Conflict, InputError

    async def work(services: object) -> int:
        from chat.services import Services

        assert isinstance(services, Services)
        try:
            user, token = await services.accounts.create_bot(args.name)
        except (InputError, Conflict) as exc:
            raise CommandError(str(exc)) from None
        print(f"created bot {user.username} (id {user.id}); its token:")
        print(token)
        return 0

    return _run_with_services(work)
