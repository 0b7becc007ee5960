"""wsspec_core.client imports no IO library, reads no clock, draws no random number
(STYLE.md principle 1): tests/test_purity.py checks wsspec_core's own modules, this the
client subpackage, the same two ways."""

import ast
import pathlib
import subprocess
import sys

import wsspec_core.client

FORBIDDEN = ["trio", "peewee", "asyncio", "socket", "threading", "selectors", "psycopg", "time"]
FORBIDDEN_IN_SOURCE = [*FORBIDDEN, "anyio", "wsproto", "random", "uuid", "secrets", "os"]


def test_importing_the_client_core_adds_no_io_module() -> None:
    code = (
        "import sys\n"
        "import attrs, cattrs, orjson\n"
        "before = set(sys.modules)\n"
        "import wsspec_core.client\n"
        f"bad = [m for m in {[*FORBIDDEN, 'anyio', 'wsproto', 'random']!r}\n"
        "       if m in sys.modules and m not in before]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "", f"wsspec_core.client imported IO modules: {out}"


def test_client_core_source_imports_no_io_module() -> None:
    root = pathlib.Path(wsspec_core.client.__file__).parent
    offenders = []
    sources = sorted(root.glob("*.py"))
    assert len(sources) >= 6
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_IN_SOURCE
            ]
    assert offenders == []
