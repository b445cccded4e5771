"""A real-time chat and notification hub: FastAPI, WebSockets, async SQLAlchemy."""

__version__ = "0.1.0"
