"""The Server-Sent Events stream: a hub connection whose frames go out as SSE events,
with a cursor in each `id:` to resume from (`GET /api/stream`, `chat.api.stream`)."""
