"""`Store`: all database access of the server, one unit of work per method.

The queries live by subject: `users` (accounts, refresh and bot tokens),
`rooms` (rooms, members, last seqs) and `messages` (the batch insert, history,
gap reads); `Store` is all three on one database.
"""

from __future__ import annotations

from chat.storage.db import Database
from chat.storage.messages import MessageQueries
from chat.storage.rooms import RoomQueries
from chat.storage.users import UserQueries


class Store(UserQueries, RoomQueries, MessageQueries):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
