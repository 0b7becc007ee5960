"""Transports: each moves WebSocket frames between a server library and the runtime, and
nothing else. ``trio_websocket`` (:func:`serve`) and ``asgi`` (:class:`ASGIApp`, for
uvicorn, hypercorn, Starlette and FastAPI)."""
