"""wsspec: the WebSocketSpec server built on wsspec_core, trio-websocket and Peewee."""
