"""wsspec_core must not import any IO library (STYLE.md principle 1)."""

import subprocess
import sys

IO_MODULES = ["trio", "peewee", "asyncio", "socket", "threading", "selectors", "psycopg"]


def test_core_imports_no_io_library() -> None:
    code = (
        "import sys, wsspec_core\n"
        f"bad = [m for m in {IO_MODULES!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "", f"wsspec_core imported IO modules: {out}"
