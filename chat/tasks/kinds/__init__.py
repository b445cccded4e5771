"""The built-in task kinds, one module each; importing this package registers them.

Each kind works in small batches, each batch in its own short transaction, and
reports progress after every batch, so live chat keeps its turn at the database
and a cancel lands between batches (see docs/tasks.md).
"""

from chat.tasks.kinds import demo, export, import_users, purge

__all__ = ["demo", "export", "import_users", "purge"]
