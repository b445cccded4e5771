"""`Store`: all database access of the server, one unit of work per method.

The queries live by subject: `users` (accounts, refresh and bot tokens),
`rooms` (rooms, members, settings, last seqs), `dms` (direct-message rooms),
`messages` (the batch insert, history, gap reads), `inbox` (notifications),
`changes` (edits, deletes, reactions, replies, their history), `reads` (read
cursors, unread counts), `files` (uploads), `search` (full-text search),
`directory` (accounts and bots for admins) and `audit` (what admins did); `Store`
is all of them on one database.
"""

from __future__ import annotations

from chat.storage.audit import AuditQueries
from chat.storage.changes import ChangeQueries
from chat.storage.db import Database
from chat.storage.directory import DirectoryQueries
from chat.storage.dms import DmQueries
from chat.storage.files import FileQueries
from chat.storage.inbox import InboxQueries
from chat.storage.messages import MessageQueries
from chat.storage.notifications import BatchNotifier
from chat.storage.reads import ReadQueries
from chat.storage.rooms import RoomQueries
from chat.storage.search import SearchQueries
from chat.storage.users import UserQueries
from chat.webhooks.outbox import WebhookOutbox


class Store(
    UserQueries,
    DmQueries,
    RoomQueries,
    MessageQueries,
    InboxQueries,
    ChangeQueries,
    ReadQueries,
    FileQueries,
    SearchQueries,
    DirectoryQueries,
    AuditQueries,
):
    def __init__(
        self, db: Database, *, webhook_outbox_max: int = 1000, search_timeout: float = 5.0
    ) -> None:
        super().__init__(db)
        self.search_timeout = search_timeout
        self.notifier = BatchNotifier()
        self.outbox = WebhookOutbox(webhook_outbox_max)
