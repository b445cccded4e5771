"""The built-in task kinds; importing this package registers them."""

from chat.tasks.kinds import export

__all__ = ["export"]
