"""wsspec_core must not import any IO library (STYLE.md principle 1).

attrs itself imports ``threading`` (for its own locks), so the runtime check compares what
importing wsspec_core adds on top of its declared dependencies; the static check reads the
core's own import statements.
"""

import ast
import pathlib
import subprocess
import sys

import wsspec_core

IO_MODULES = ["trio", "peewee", "asyncio", "socket", "threading", "selectors", "psycopg", "time"]


def test_importing_core_adds_no_io_module() -> None:
    code = (
        "import sys\n"
        "import attrs, cattrs, orjson\n"
        "before = set(sys.modules)\n"
        "import wsspec_core\n"
        f"bad = [m for m in {IO_MODULES!r} if m in sys.modules and m not in before]\n"
        f"bad += [m for m in {IO_MODULES[:4]!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "", f"wsspec_core imported IO modules: {out}"


def test_core_source_imports_no_io_module() -> None:
    root = pathlib.Path(wsspec_core.__file__).parent
    offenders = []
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in [*IO_MODULES, "random", "uuid", "secrets", "os"]
            ]
    assert offenders == []
