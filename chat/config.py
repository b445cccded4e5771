"""Settings, read once from `CHAT_*` environment variables (and `.env`) at start."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chat.storage.rules import ROOM_NAME_DEFAULT_MAX

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./chat.db"


class Settings(BaseSettings):
    """Every tunable of the server. Instances are frozen: build a new one to change it."""

    model_config = SettingsConfigDict(
        env_prefix="CHAT_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Literal["development", "production"] = "development"
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    redis_prefix: str = Field("chat:", min_length=1, description="namespaces Redis keys, channels")
    jwt_secret: SecretStr | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_ttl: float = Field(15 * 60, gt=0, description="seconds")
    refresh_token_ttl: float = Field(30 * 24 * 3600, gt=0, description="seconds")
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    registration_enabled: bool = True
    # Behind a reverse proxy (docs/deploy.md): the peers whose X-Forwarded-For and
    # X-Forwarded-Proto are believed, as IP addresses or networks, comma-separated.
    # Unset: uvicorn's default (FORWARDED_ALLOW_IPS, else 127.0.0.1 and ::1); empty:
    # nobody's, every client is its TCP peer.
    trusted_proxies: Annotated[list[str] | None, NoDecode] = None

    # Message and frame bounds.
    max_body_chars: int = Field(32_000, gt=0)
    max_frame_bytes: int = Field(64 * 1024, ge=1024)
    max_room_name_chars: int = Field(ROOM_NAME_DEFAULT_MAX, gt=0)
    replay_cap: int = Field(500, gt=0, description="most messages a join's `since` replays")
    history_page_max: int = Field(200, ge=100)
    max_request_bytes: int = Field(64 * 1024, ge=1024, description="HTTP request body bound")
    max_upload_request_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="the bound for POST /api/tasks (CSV uploads)"
    )

    # Connections.
    auth_timeout: float = Field(5.0, gt=0)
    outbound_buffer_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="unsent bytes per connection before 4008"
    )
    ws_compression: bool = Field(False, description="offer permessage-deflate (costs CPU)")
    # The write path (group commit): sends a connection may have unacknowledged, the
    # most messages stored per transaction, and sends waiting for the writer in all.
    max_inflight_sends: int = Field(64, gt=0)
    write_batch_max: int = Field(500, gt=0, le=2000)
    write_queue_max: int = Field(10_000, gt=0)
    heartbeat_interval: float = Field(25.0, gt=0)
    heartbeat_timeout: float = Field(10.0, gt=0)
    presence_grace: float = Field(3.0, ge=0)
    presence_tick: float = Field(
        0.05, ge=0, description="seconds presence changes gather before going out together"
    )
    presence_ttl: float = Field(15.0, gt=0, description="shared presence entry lifetime (Redis)")
    # Several processes (Redis): how long an out-of-order room message waits for
    # the seqs before it, and how often every watched room is checked, before
    # the missing seqs are read back from the database.
    reorder_window: float = Field(0.25, gt=0, description="seconds")
    gap_check_interval: float = Field(2.0, gt=0, description="seconds")
    drain_timeout: float = Field(20.0, gt=0)
    max_connections_per_user: int = Field(20, gt=0)
    max_rooms_per_connection: int = Field(100, gt=0)
    # The event stream (`GET /api/stream`): rooms per stream, the longest silence
    # before a keep-alive comment (proxies cut idle streams), and a ticket's life.
    max_stream_rooms: int = Field(50, gt=0, le=500)
    stream_keepalive_interval: float = Field(15.0, gt=0, le=30)
    stream_ticket_ttl: float = Field(30.0, gt=0, le=300)
    room_creations_per_user: int = Field(10, gt=0, description="per room_creation_window")
    room_creation_window: float = Field(3600.0, gt=0, description="seconds")
    max_rooms_per_user: int = Field(100, gt=0, description="rooms a non-admin may own")
    handshakes_per_ip_per_second: float = Field(20.0, gt=0)
    handshakes_per_ip_burst: int = Field(40, gt=0)

    # Per-user token buckets (rate per second, burst).
    send_rate: float = Field(5.0, gt=0)
    send_burst: int = Field(20, gt=0)
    bot_send_rate: float = Field(20.0, gt=0)
    bot_send_burst: int = Field(60, gt=0)
    typing_rate: float = Field(2.0, gt=0)
    typing_burst: int = Field(5, gt=0)
    read_rate: float = Field(10.0, gt=0, description="`read` frames (cursor moves) per second")
    read_burst: int = Field(40, gt=0)
    join_rate: float = Field(2.0, gt=0, description="join and leave frames share this bucket")
    join_burst: int = Field(10, gt=0)
    rate_limit_close_after: int = Field(50, gt=0, description="refusals in a row before close")

    # Login throttling and hashing.
    login_failures_per_account: int = Field(5, gt=0)
    login_failures_per_ip: int = Field(20, gt=0)
    login_failure_window: float = Field(300.0, gt=0)
    hash_concurrency: int = Field(2, gt=0)
    # argon2id cost (argon2-cffi's defaults). Tests lower them: they test logic, not cost.
    password_hash_time_cost: int = Field(3, ge=1)
    password_hash_memory_kib: int = Field(64 * 1024, ge=8)
    password_hash_parallelism: int = Field(4, ge=1)
    hash_queue_max: int = Field(64, gt=0, description="password checks running or waiting")
    registrations_per_ip: int = Field(5, gt=0, description="per registration_window")
    registration_window: float = Field(300.0, gt=0, description="seconds")

    # Long-running tasks.
    task_concurrency: int = Field(2, gt=0)
    task_progress_interval: float = Field(0.25, ge=0)
    task_heartbeat_interval: float = Field(5.0, gt=0, description="stale after 3 missed")
    tasks_per_user: int = Field(3, gt=0, description="active tasks a non-admin may have")
    demo_max_seconds_user: float = Field(
        60.0, gt=0, description="longest demo (steps * delay) a non-admin may start"
    )
    export_retention_days: float = Field(7.0, gt=0, description="export files are then deleted")
    # Who runs tasks (docs/tasks.md, "Workers"): `auto` runs them in this process without
    # Redis and leaves them to `chat worker` processes with it; `always` runs them here
    # (each process its own, as without workers); `never` only with Redis (workers do).
    run_tasks: Literal["auto", "always", "never"] = "auto"
    # Retention: messages (their files too) and notifications older than this many days
    # are purged every `retention_interval` seconds by one process of the site. Unset: off.
    retention_days: float | None = Field(None, gt=0)
    retention_interval: float = Field(3600.0, gt=0, description="seconds between runs")
    data_dir: Path | None = None

    # Files (`POST /api/files`): stored under `<state dir>/files` by content hash.
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="one file's bound")
    upload_quota_bytes: int = Field(
        1024 * 1024 * 1024, ge=1, description="bytes of files one user may keep stored"
    )
    upload_ttl: float = Field(24 * 3600.0, gt=0, description="seconds an unattached upload lives")
    upload_sweep_interval: float = Field(
        300.0, gt=0, description="seconds between sweeps of expired uploads"
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="width * height above which an image is refused"
    )
    thumbnail_px: int = Field(320, ge=16, le=2048, description="a thumbnail's longest side")

    # Outgoing webhooks (`POST /api/webhooks`).
    webhooks_allow_private: bool = Field(
        False, description="allow webhook URLs into the server's own network (tests only)"
    )
    webhook_timeout: float = Field(5.0, gt=0, description="seconds per delivery attempt")
    webhook_backoff_base: float = Field(
        1.0, gt=0, description="seconds before the first retry; doubled each time"
    )
    webhook_backoff_max: float = Field(300.0, gt=0, description="the longest wait between tries")
    webhook_max_failures: int = Field(
        10, gt=0, description="failed attempts in a row before a webhook is disabled"
    )
    search_timeout: float = Field(
        5.0, gt=0, description="seconds a PostgreSQL search may run (then 503 search_too_slow)"
    )
    webhook_outbox_max: int = Field(
        1000, gt=0, description="deliveries one webhook may have waiting; more are dropped"
    )
    webhook_concurrency: int = Field(16, gt=0, description="deliveries in flight per process")
    webhook_poll_interval: float = Field(
        1.0, gt=0, description="seconds between looks for deliveries due (retries, others')"
    )
    webhook_refresh_interval: float = Field(
        2.0, gt=0, description="seconds before a change made on another process applies here"
    )
    webhook_attempts_kept: int = Field(200, gt=0, description="attempts kept per webhook")

    # Alerts: counted per process over a sliding window, raised once per window and key.
    health_check_interval: float = Field(10.0, gt=0)
    stats_sample_interval: float = Field(
        10.0, ge=0.1, le=60, description="seconds per sample of the console's hour of charts"
    )
    alert_window: float = Field(600.0, gt=0, description="seconds")
    alert_rate_limit_closes: int = Field(3, gt=0, description="closes of one user")
    alert_auth_failures: int = Field(10, gt=0, description="failures from one address")

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = [p.strip() for p in value.split(",") if p.strip()]
        if isinstance(value, list):
            for item in value:
                try:
                    ipaddress.ip_network(str(item), strict=False)
                except ValueError:
                    raise ValueError(
                        f"{item!r} is not an IP address or network (CHAT_TRUSTED_PROXIES)"
                    ) from None
        return value

    @model_validator(mode="after")
    def _someone_runs_tasks(self) -> Settings:
        if self.run_tasks == "never" and not self.redis_url:
            raise ValueError(
                "CHAT_RUN_TASKS=never needs CHAT_REDIS_URL: tasks reach `chat worker` "
                "processes through Redis, and without it nothing would run them"
            )
        return self

    @cached_property
    def tasks_here(self) -> bool:
        """Whether this chat process runs tasks (else it queues them for `chat worker`)."""
        if self.run_tasks == "auto":
            return not self.redis_url
        return self.run_tasks == "always"

    @cached_property
    def sqlite_path(self) -> Path | None:
        """The database file when the database is SQLite on disk, else None."""
        prefix = "sqlite+aiosqlite:///"
        if not self.database_url.startswith(prefix):
            return None
        path = self.database_url[len(prefix) :].split("?", 1)[0]
        if not path or path == ":memory:":
            return None
        return Path(path).expanduser().resolve()

    @cached_property
    def state_dir(self) -> Path:
        """Where files of our own live (dev secret, exports): beside the database."""
        if self.data_dir is not None:
            return self.data_dir.expanduser().resolve()
        if self.sqlite_path is not None:
            return self.sqlite_path.parent
        return Path.cwd()
