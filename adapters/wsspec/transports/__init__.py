"""Transports: each moves WebSocket frames between a server library and the runtime, and
nothing else. ``trio_websocket`` (:func:`serve`) and ``asgi`` (:class:`ASGIApp`, for
uvicorn, hypercorn, Starlette and FastAPI)."""

from .wsproto_failure import install as _install_wsproto_failure

# Before any server accepts a connection: a connection that fails (a text frame that is not
# UTF-8, a protocol error) is closed with a close frame carrying the code, not dropped.
_install_wsproto_failure()
