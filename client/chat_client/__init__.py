"""The chat hub's Python client: `ChatClient`, the wire types, and the `chat-client` CLI.

```python
from chat_client import ChatClient, MessageFrame

async with ChatClient("ws://127.0.0.1:8000/ws", token=TOKEN) as bot:
    await bot.join("general")
    async for event in bot:
        if isinstance(event, MessageFrame) and event.user.role != "bot":
            await bot.send(event.room, f"echo: {event.body}")
```

This distribution (`chat-hub-client`) needs only pydantic, websockets and httpx. Its
`chat_client.protocol` is the one definition of every frame: the server imports it too.
"""

from chat_client._version import __version__
from chat_client.client import ChatClient, Event, TokenProvider
from chat_client.connection import http_base_url
from chat_client.errors import (
    ApiError,
    AuthenticationError,
    ChatClientError,
    ClientClosedError,
    ConnectionFailedError,
    DisconnectedError,
    FrameTooLargeError,
    RequestError,
    RevokedError,
)
from chat_client.inbox import NotificationPage
from chat_client.protocol import (
    AckFrame,
    AlertFrame,
    ChangesCheckedFrame,
    CloseCode,
    DeletedFrame,
    EditedFrame,
    ErrorCode,
    ErrorFrame,
    HelloFrame,
    JoinedFrame,
    MessageFrame,
    NotificationFrame,
    NotificationsReadFrame,
    PongFrame,
    PresenceFrame,
    ReactionFrame,
    ReadFrame,
    ReauthedFrame,
    RemovedFrame,
    RoomFrame,
    TaskFrame,
    TypingFrame,
    UserRef,
)
from chat_client.search import SearchHit, SearchPage, SnippetSegment
from chat_client.stream import StreamClient

__all__ = [
    "AckFrame",
    "AlertFrame",
    "ApiError",
    "AuthenticationError",
    "ChangesCheckedFrame",
    "ChatClient",
    "ChatClientError",
    "ClientClosedError",
    "CloseCode",
    "ConnectionFailedError",
    "DeletedFrame",
    "DisconnectedError",
    "EditedFrame",
    "ErrorCode",
    "ErrorFrame",
    "Event",
    "FrameTooLargeError",
    "HelloFrame",
    "JoinedFrame",
    "MessageFrame",
    "NotificationFrame",
    "NotificationPage",
    "NotificationsReadFrame",
    "PongFrame",
    "PresenceFrame",
    "ReactionFrame",
    "ReadFrame",
    "ReauthedFrame",
    "RemovedFrame",
    "RequestError",
    "RevokedError",
    "RoomFrame",
    "SearchHit",
    "SearchPage",
    "SnippetSegment",
    "StreamClient",
    "TaskFrame",
    "TokenProvider",
    "TypingFrame",
    "UserRef",
    "__version__",
    "http_base_url",
]
