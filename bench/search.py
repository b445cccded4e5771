"""Search latency on a large history, and what the search index costs on insert.

    .venv/bin/python bench/search.py                          # 1,000,000 messages, both databases
    .venv/bin/python bench/search.py --messages 20000 --db sqlite --runs 1   # a quick check
    .venv/bin/python bench/search.py --insert-cost            # + insert rate with/without index

Latency: seeds `--messages` messages straight into a fresh database (an SQLite file,
and a throwaway PostgreSQL database created and dropped here), brought to the newest
migration first so the index is kept by the same triggers / generated column as in
production. Bodies are 3-30 words drawn from a 30,000-word vocabulary with a Zipf
distribution (s = 1.07): a few words are in a large share of messages, most are rare.
Then `python -m chat serve` runs on that database and one user (a member of no private
room: the permission filter is exercised) sends `GET /api/search` over HTTP, one at a
time, `--queries` times per kind: `rare` (a word of vocabulary rank 3,000-30,000),
`common` (rank 1-20), `two-words` (a mid-frequency and a common word) and `phrase`
(two consecutive words of a stored message, in quotes). Each kind's p50 and p99 are
taken per run; the table shows the medians over `--runs` runs (each run a new set
of queries of the same kinds), and the median number of results (of a page of 20).

Insert cost (`--insert-cost`): the rate of `Store.save_messages` (the group-commit
writer's transaction: seq allocation, the multi-row insert, mention/DM checks, the
index) in batches of `--batch` messages over 500 rooms, on a fresh database with the
index and on one without it (the same schema with the FTS5 table and its triggers,
or the tsvector column and its index, dropped), `--insert-messages` each, medians of
`--runs`. The end-to-end figure is hot-path scenario 3 (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "hotpath")]

from hplib import PgDatabase, chat_env, free_port, mint  # noqa: E402

from chat.storage.migrate import upgrade  # noqa: E402

VOCABULARY = 30_000
ZIPF_S = 1.07
ROOMS = 500
PRIVATE_EVERY = 10  # every 10th room is private and the searcher is not in it
KINDS = ("rare", "common", "two-words", "phrase")
# Word lists read better as text than as a list literal.
COMMON = """
the to and a i you it is of that in we for on this be have not with are just was
but so what can do me at if my all no get your up like will out there about one
know think now how when they an yes ok good from see as or time going then here
""".split()  # noqa: SIM905
SYLLABLES = """
ba be bi bo bu ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu ra re
ri ro ru sa se si so su ta te ti to tu va ve vi vo vu za ze zi zo zu dra tre pli
sto gru fen mar tal dor vin quel
""".split()  # noqa: SIM905
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- text -------------------------------------------------------------------------------


class Vocabulary:
    """Words by rank (common English first, then made-up words) and Zipf weights."""

    def __init__(self, rng: random.Random) -> None:
        words = list(dict.fromkeys(COMMON))
        seen = set(words)
        while len(words) < VOCABULARY:
            word = "".join(rng.choices(SYLLABLES, k=rng.randint(2, 4)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = words
        weights = [1 / (rank**ZIPF_S) for rank in range(1, len(words) + 1)]
        self.cumulative = list(itertools.accumulate(weights))

    def body(self, rng: random.Random) -> str:
        n = rng.randint(3, 30)
        total = self.cumulative[-1]
        picks = [bisect.bisect(self.cumulative, rng.random() * total) for _ in range(n)]
        return " ".join(self.words[min(i, len(self.words) - 1)] for i in picks)


def queries(
    kind: str, vocab: Vocabulary, rng: random.Random, samples: list[str], n: int
) -> list[str]:
    words = vocab.words
    out = []
    for _ in range(n):
        if kind == "rare":
            out.append(words[rng.randint(3_000, VOCABULARY - 1)])
        elif kind == "common":
            out.append(words[rng.randint(0, 19)])
        elif kind == "two-words":
            out.append(f"{words[rng.randint(200, 2_000)]} {words[rng.randint(0, 19)]}")
        else:
            parts = rng.choice(samples).split()
            i = rng.randint(0, len(parts) - 2)
            out.append(f'"{parts[i]} {parts[i + 1]}"')
    return out


# --- databases ----------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        yield f"sqlite+aiosqlite:///{folder / 'chat.db'}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def pg_database(admin_url: str) -> Any:
    db = PgDatabase(admin_url)
    url = await db.create()
    try:
        yield url
    finally:
        await db.drop()


def fresh(kind: str, pg_url: str) -> Any:
    """An async context manager yielding a new empty database's URL."""
    if kind == "sqlite":

        @contextlib.asynccontextmanager
        async def wrap() -> Any:
            with sqlite_database() as url:
                yield url

        return wrap()
    return pg_database(pg_url)


USERS_SQL = (
    "INSERT INTO users (username, username_key, password_hash, role, token_version, banned,"
    " created_at, notifications_read_upto) VALUES ({})"
)


async def seed(
    url: str, vocab: Vocabulary, count: int, rng: random.Random
) -> tuple[int, list[str]]:
    """Users, rooms and `count` messages; returns the searcher's id and some bodies."""
    await asyncio.to_thread(upgrade, url)
    now = time.time()
    samples: list[str] = []
    started = time.perf_counter()
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for i in range(20):
            db.execute(
                USERS_SQL.format(",".join("?" * 8)), (f"u{i}", f"u{i}", None, "user", 0, 0, now, 0)
            )
        searcher = db.execute("SELECT id FROM users WHERE username = 'u0'").fetchone()[0]
        for r in range(ROOMS):
            db.execute(
                "INSERT INTO rooms (name, private, owner_id, last_seq, created_at, kind, archived)"
                " VALUES (?, ?, ?, 0, ?, 'room', 0)",
                (f"room{r}", r % PRIVATE_EVERY == 1, searcher + 1 + r % 19, now),
            )
        rooms = [row[0] for row in db.execute("SELECT id FROM rooms ORDER BY id")]
        seqs = dict.fromkeys(rooms, 0)
        done = 0
        while done < count:
            rows = []
            for _ in range(min(50_000, count - done)):
                room = rooms[rng.randrange(len(rooms))]
                seqs[room] += 1
                body = vocab.body(rng)
                if len(samples) < 5_000 and rng.random() < 0.01:
                    samples.append(body)
                rows.append(
                    (room, seqs[room], searcher + 1 + room % 19, body, now - (count - done))
                )
                done += 1
            with db:
                db.executemany(
                    "INSERT INTO messages (room_id, seq, user_id, body, created_at, deleted)"
                    " VALUES (?, ?, ?, ?, ?, 0)",
                    rows,
                )
            log(f"  seeded {done:,} messages ({done / (time.perf_counter() - started):,.0f}/s)")
        with db:
            db.executemany(
                "UPDATE rooms SET last_seq = ? WHERE id = ?", [(s, r) for r, s in seqs.items()]
            )
        db.execute("PRAGMA optimize")
        db.close()
        return searcher, samples
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for i in range(20):
            await conn.execute(
                USERS_SQL.format(", ".join(f"${k}" for k in range(1, 9))),
                f"u{i}",
                f"u{i}",
                None,
                "user",
                0,
                False,
                now,
                0,
            )
        searcher = await conn.fetchval("SELECT id FROM users WHERE username = 'u0'")
        for r in range(ROOMS):
            await conn.execute(
                "INSERT INTO rooms (name, private, owner_id, last_seq, created_at, kind, archived)"
                " VALUES ($1, $2, $3, 0, $4, 'room', false)",
                f"room{r}",
                r % PRIVATE_EVERY == 1,
                searcher + 1 + r % 19,
                now,
            )
        rooms = [row[0] for row in await conn.fetch("SELECT id FROM rooms ORDER BY id")]
        seqs = dict.fromkeys(rooms, 0)
        done = 0
        while done < count:
            records = []
            for _ in range(min(50_000, count - done)):
                room = rooms[rng.randrange(len(rooms))]
                seqs[room] += 1
                body = vocab.body(rng)
                if len(samples) < 5_000 and rng.random() < 0.01:
                    samples.append(body)
                records.append(
                    (room, seqs[room], searcher + 1 + room % 19, body, now - (count - done), False)
                )
                done += 1
            await conn.copy_records_to_table(
                "messages",
                records=records,
                columns=["room_id", "seq", "user_id", "body", "created_at", "deleted"],
            )
            log(f"  seeded {done:,} messages ({done / (time.perf_counter() - started):,.0f}/s)")
        await conn.executemany(
            "UPDATE rooms SET last_seq = $1 WHERE id = $2", [(s, r) for r, s in seqs.items()]
        )
        await conn.execute("VACUUM ANALYZE messages")
    finally:
        await conn.close()
    return searcher, samples


# --- the server and the queries --------------------------------------------------------------


@contextlib.contextmanager
def chat_server(url: str, workdir: Path) -> Iterator[str]:
    port = free_port()
    env = chat_env(url, workdir, {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat", "serve", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "server.log").open("ab"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: see {workdir / 'server.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class KindResult:
    p50: list[float]
    p99: list[float]
    hits: list[float]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    base: str, token: str, plan: dict[str, list[str]]
) -> dict[str, tuple[float, float, float]]:
    """Per kind: p50 and p99 in ms, and the median number of results."""
    out = {}
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        for q in next(iter(plan.values()))[:5]:  # warm the connection and the caches a little
            http.get("/api/search", params={"q": q})
        for kind, qs in plan.items():
            times, hits = [], []
            for q in qs:
                started = time.perf_counter()
                r = http.get("/api/search", params={"q": q, "limit": 20})
                times.append((time.perf_counter() - started) * 1000)
                if r.status_code != 200:
                    raise SystemExit(f"search {q!r} answered {r.status_code}: {r.text[:200]}")
                hits.append(len(r.json()["items"]))
            out[kind] = (percentile(times, 0.5), percentile(times, 0.99), statistics.median(hits))
    return out


async def latency(kind: str, args: argparse.Namespace) -> dict[str, KindResult]:
    rng = random.Random(args.seed)
    vocab = Vocabulary(rng)
    results = {k: KindResult([], [], []) for k in KINDS}
    async with fresh(kind, args.pg_url) as url:
        log(f"{kind}: seeding {args.messages:,} messages")
        searcher, samples = await seed(url, vocab, args.messages, rng)
        token = mint(searcher, "user")
        with (
            tempfile.TemporaryDirectory(prefix="bench-search-srv-") as work,
            chat_server(url, Path(work)) as base,
        ):
            for run in range(args.runs):
                plan = {k: queries(k, vocab, rng, samples, args.queries) for k in KINDS}
                figures = await asyncio.to_thread(measure, base, token, plan)
                for k, (p50, p99, hits) in figures.items():
                    results[k].p50.append(p50)
                    results[k].p99.append(p99)
                    results[k].hits.append(hits)
                shown = (f"{k} p50 {v[0]:.1f} p99 {v[1]:.1f} ms" for k, v in figures.items())
                log(f"{kind}: run {run + 1}: " + ", ".join(shown))
    return results


# --- insert cost ----------------------------------------------------------------------------


async def insert_rate(
    url: str, messages: int, batch: int, rng: random.Random, vocab: Vocabulary
) -> float:
    from chat.protocol import UserRef
    from chat.storage.db import Database
    from chat.storage.records import NewMessage
    from chat.storage.store import Store

    db = Database(url)
    store = Store(db)
    try:
        marks = ["?"] * 8 if db.is_sqlite else [f"${k}" for k in range(1, 9)]
        async with db.write_connection() as conn:
            await conn.exec_driver_sql(
                USERS_SQL.format(", ".join(marks)),
                ("writer", "writer", None, "user", 0, False, time.time(), 0),
            )
        owner = UserRef(id=1, name="writer")
        rooms = [await store.create_room(f"r{i}", False, owner) for i in range(ROOMS)]
        bodies = [vocab.body(rng) for _ in range(messages)]
        items = [
            NewMessage(rooms[i % ROOMS], owner, f"ref{i}", body) for i, body in enumerate(bodies)
        ]
        started = time.perf_counter()
        for i in range(0, len(items), batch):
            await store.save_messages(items[i : i + batch])
        return messages / (time.perf_counter() - started)
    finally:
        await db.dispose()


# What migration 0005_search's downgrade drops: the same schema otherwise, at head.
DROP_INDEX = {
    "sqlite": [
        "DROP TRIGGER messages_fts_update",
        "DROP TRIGGER messages_fts_delete",
        "DROP TRIGGER messages_fts_insert",
        "DROP TABLE messages_fts",
    ],
    "postgres": [
        "DROP INDEX ix_messages_search_vector",
        "ALTER TABLE messages DROP COLUMN search_vector",
    ],
}


async def drop_search_index(kind: str, url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in DROP_INDEX[kind]:
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def insert_cost(kind: str, args: argparse.Namespace) -> dict[str, list[float]]:
    rng = random.Random(args.seed)
    vocab = Vocabulary(rng)
    rates: dict[str, list[float]] = {"with index": [], "without index": []}
    for _ in range(args.runs):
        for label in rates:
            async with fresh(kind, args.pg_url) as url:
                await asyncio.to_thread(upgrade, url)
                if label == "without index":
                    await drop_search_index(kind, url)
                rate = await insert_rate(url, args.insert_messages, args.batch, rng, vocab)
                rates[label].append(rate)
                log(f"{kind}: insert {label}: {rate:,.0f} messages/s")
    return rates


# --- the command ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--messages", type=int, default=1_000_000, help="messages seeded (default 1,000,000)"
    )
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are shown (default 3)")
    parser.add_argument(
        "--queries", type=int, default=100, help="queries per kind per run (default 100)"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--pg-url", default=os.environ.get("CHAT_BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument(
        "--insert-cost",
        action="store_true",
        help="also measure the insert rate with and without the index",
    )
    parser.add_argument("--insert-only", action="store_true", help="only the insert rate")
    parser.add_argument(
        "--insert-messages",
        type=int,
        default=50_000,
        help="messages inserted per measurement (default 50,000)",
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="messages per save_messages batch (default 100)"
    )
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    lines = []
    if not args.insert_only:
        lines += [
            f"Search latency over HTTP, {args.messages:,} messages, medians of {args.runs} run(s) "
            f"of {args.queries} queries per kind (limit 20):",
            "",
            "| database | query | p50 ms | p99 ms | results (median) |",
            "|---|---|---|---|---|",
        ]
        for kind in kinds:
            results = asyncio.run(latency(kind, args))
            for k, r in results.items():
                p50, p99 = statistics.median(r.p50), statistics.median(r.p99)
                hits = statistics.median(r.hits)
                lines.append(f"| {kind} | {k} | {p50:.1f} | {p99:.1f} | {hits:.0f} |")
    if args.insert_cost or args.insert_only:
        lines += [
            "",
            f"Insert rate through `Store.save_messages`, batches of {args.batch}, "
            f"{args.insert_messages:,} messages, medians of {args.runs} run(s):",
            "",
            "| database | with index msg/s | without index msg/s | cost |",
            "|---|---|---|---|",
        ]
        for kind in kinds:
            rates = asyncio.run(insert_cost(kind, args))
            with_, without = (
                statistics.median(rates["with index"]),
                statistics.median(rates["without index"]),
            )
            lines.append(
                f"| {kind} | {with_:,.0f} | {without:,.0f} | {(1 - with_ / without) * 100:+.1f} % |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
