"""The Go README's "Python Client Example", rewritten with wsspec.client (docs/client.md).

The original correlates nothing on failure, forgets its subscription when the socket
drops and misses every change made meanwhile. This one raises typed errors, reconnects
by itself and resumes the subscription where it left off (with a server running the
change feed, as ``wsspec demo`` does), and runs unchanged on asyncio or trio.

    wsspec demo &
    python docs/examples/python_client.py                 # ws://localhost:8080/ws, asyncio
    python docs/examples/python_client.py URL --loop trio --changes 3
"""

from __future__ import annotations

import argparse

import anyio
import wsspec.client

ACTIVE = [("status", "eq", "active")]


async def main(url: str, changes: int | None) -> None:
    async with wsspec.client.connect(url) as client:
        # Read users
        users = await client.read("users", filters=ACTIVE, limit=10)
        print("Users:", users)

        # Subscribe to changes
        async with client.subscribe("users", filters=ACTIVE) as sub:
            print("Subscribed", flush=True)
            async for item in sub:
                if isinstance(item, wsspec.client.Resync):
                    # The server could not replay what a long outage missed: start again.
                    print("Users now:", item.rows, flush=True)
                    continue
                print(f"User {item.operation}: {item.data}", flush=True)
                if changes is not None:
                    changes -= 1
                    if changes == 0:
                        break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://localhost:8080/ws")
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--changes", type=int, default=None, help="stop after this many")
    args = parser.parse_args()
    anyio.run(main, args.url, args.changes, backend=args.loop)
