"""``wsspec fuzz`` against servers: a correct one passes, broken ones fail with a minimal
counterexample printed as the frames exchanged.

The servers are the core engine with the in-memory storage behind a small
``websockets.sync`` adapter (engine_server.py), with deliberate bugs switched on; and the
project's own ``wsspec demo`` server when it is available.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from wsspec.testing.fuzz import command as fuzz
from wsspec.testing.fuzz.config import FuzzConfig
from wsspec.testing.fuzz.runner import Fuzzer

from ._entities import EVERYTHING
from .engine_server import EngineServer

FAST = ["--max-examples", "8", "--max-seconds", "30", "--seed", "7", "--grace", "0.02"]


def run_fuzz(*argv: str) -> tuple[int, str]:
    parser = __import__("argparse").ArgumentParser()
    fuzz.add_arguments(parser)
    out = io.StringIO()
    status = fuzz.run(parser.parse_args(list(argv)), out=out)
    return status, out.getvalue()


def test_every_property_has_its_module() -> None:
    from wsspec.testing.fuzz.properties import BY_NAME

    assert list(BY_NAME) == list(fuzz.PROPERTIES)
    for module in BY_NAME.values():
        assert callable(module.check)
        assert isinstance(module.PER_ENTITY, bool)


def test_passes_against_a_correct_server() -> None:
    with EngineServer() as server:
        status, output = run_fuzz(server.url, *FAST)
    assert status == 0, output
    assert "PASSED: 5 properties on 2 entities" in output
    for name in fuzz.PROPERTIES:
        assert f"ok      {name}" in output
    # Everything the fuzzer created was deleted again.
    assert server.storage.rows("public.users") == []
    assert server.storage.rows("public.posts") == []


def test_catches_a_server_that_ignores_subscription_filters() -> None:
    with EngineServer(ignore_filters=True) as server:
        status, output = run_fuzz(
            server.url, *FAST, "--property", "subscription", "--entity", "public.users"
        )
    assert status == 1, output
    assert "FAILED  subscription [public.users]" in output
    assert "which does not match its filters" in output
    assert "Minimal counterexample (after shrinking):" in output
    assert "subscription filters: [{" in output
    # The frames, in order: the subscribe, the create, and the offending notification.
    frames = output.split("Frames exchanged", 1)[1]
    subscribe = frames.index('"operation":"subscribe"')
    create = frames.index('"operation":"create"')
    notification = frames.index('"type":"notification"')
    assert subscribe < create < notification
    assert "Reproduce with: wsspec fuzz" in output
    assert server.storage.rows("public.users") == []


def test_catches_a_server_that_deletes_missing_records_successfully() -> None:
    with EngineServer(delete_missing_succeeds=True) as server:
        status, output = run_fuzz(server.url, *FAST, "--property", "roundtrip")
    assert status == 1, output
    assert "delete of a deleted record was answered with success, not not_found" in output
    counterexample = output.split("Minimal counterexample (after shrinking):", 1)[1]
    counterexample = counterexample.split("Frames exchanged", 1)[0]
    # Shrunk: one create, no update.
    assert "create: {" in counterexample
    assert "update:" not in counterexample
    frames = output.split("Frames exchanged", 1)[1]
    assert frames.count('"operation":"delete"') == 2
    assert '"deleted":true' in frames


def test_a_short_time_budget_ends_between_examples_not_inconclusive() -> None:
    """The budget runs out in the middle of a property.  (The fuzzer used to skip the
    examples past the deadline by returning early from inside them, so that a replayed
    prefix drew less than the first time: Hypothesis raised FlakyStrategyDefinition and
    the run ended INCONCLUSIVE.)"""
    with EngineServer() as server:
        status, output = run_fuzz(
            server.url,
            *("--max-examples", "500", "--max-seconds", "0.3", "--seed", "1"),
            *("--grace", "0.02", "--property", "responses", "--property", "roundtrip"),
        )
    assert status == 0, output
    assert "Flaky" not in output
    assert "ok      responses: " in output
    # Cut short: far fewer than 500 examples, but at least one round of each.
    examples = [int(n) for n in re.findall(r"ok {6}\S+(?: \[.+?\])?: (\d+) examples", output)]
    assert len(examples) == 3, output  # responses, and roundtrip on both entities
    assert examples and all(10 <= n < 500 for n in examples), output


def test_shrinking_cut_short_still_reports_a_real_counterexample() -> None:
    """With no time left, shrinking stops at the next example; the report is the last
    failing example, a real one, and says it is not a minimal one."""
    out = io.StringIO()
    with EngineServer(ignore_filters=True) as server:
        config = FuzzConfig(
            url=server.url,
            properties=("subscription",),
            entities=("public.users",),
            max_examples=100,
            max_seconds=0.001,  # past before the first round: only that round runs
            min_shrink_seconds=0,
            seed=3,
            grace=0.02,
        )
        status = Fuzzer(config, out).run()
        output = out.getvalue()
        assert server.storage.rows("public.users") == []
    assert status == 1, output
    assert "Smallest counterexample found before shrinking ran out of time:" in output
    assert "which does not match its filters" in output
    frames = output.split("Frames exchanged", 1)[1]
    assert '"type":"notification"' in frames


@pytest.mark.parametrize("blocked", ["hypothesis", "websockets"])
def test_without_the_testing_extra_fuzz_says_what_to_install(blocked: str) -> None:
    """``wsspec fuzz`` in an environment without Hypothesis or websockets: one line naming
    the ``testing`` extra, exit status 2, no traceback."""
    program = f"""
import sys
from importlib.abc import MetaPathFinder

class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
from wsspec.cli import main
sys.exit(main(["fuzz", "ws://127.0.0.1:9/ws"]))
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'wsspec[testing]'" in lines[0]
    assert blocked in lines[0]
    assert result.stdout == ""


def test_the_subcommand_module_imports_neither_hypothesis_nor_websockets() -> None:
    """It is imported to build ``wsspec --help``."""
    program = (
        "import sys; import wsspec.testing.fuzz.command; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hypothesis', 'websockets')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unreachable_server_is_an_error_not_a_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, output = run_fuzz(f"ws://127.0.0.1:{port}/ws", *FAST)
    assert status == 2
    assert "cannot connect" in output


def test_unknown_entity_is_an_error() -> None:
    with EngineServer() as server:
        status, output = run_fuzz(server.url, *FAST, "--entity", "public.nope")
    assert status == 2
    assert "no entity public.nope" in output


# --- the project's own server ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cli_available() -> bool:
    try:
        from wsspec import cli  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _wsspec_server(*arguments: str) -> Iterator[str]:
    """Run ``wsspec ARGUMENTS --host 127.0.0.1 --port FREE`` as a subprocess; yield its URL."""
    if not _cli_available():
        pytest.skip("wsspec.cli (the server command) is not available yet")
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wsspec.cli",
            *arguments,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"wsspec {arguments[0]} exited with {process.returncode}:\n{output}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"wsspec {arguments[0]} did not start listening within 15 s")
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize("server", ["trio", "uvicorn", "hypercorn"])
def test_passes_against_the_demo_server(tmp_path: Path, server: str) -> None:
    db = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    with _wsspec_server("demo", "--db", db, "--server", server) as url:
        status, output = run_fuzz(url, *FAST)
    assert status == 0, output
    assert "PASSED: 5 properties on 2 entities" in output


def test_passes_against_the_server_on_every_column_type(tmp_path: Path) -> None:
    """``wsspec serve`` with Peewee models of every column type, and a text primary key."""
    db = f"sqlite:///{tmp_path / 'all.sqlite3'}"
    with _wsspec_server("serve", "tests.conformance.alltypes_app:build_app", "--db", db) as url:
        status, output = run_fuzz(url, *FAST)
    assert status == 0, output
    assert "PASSED: 5 properties on 2 entities" in output


def test_the_wsspec_command_has_a_fuzz_subcommand() -> None:
    if not _cli_available():
        pytest.skip("the wsspec command is not available yet")
    result = subprocess.run(
        [sys.executable, "-m", "wsspec.cli", "fuzz", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "--max-examples" in result.stdout


def test_passes_on_every_column_type() -> None:
    """An entity with float, boolean, date and datetime columns and a text key."""
    with EngineServer(extra_entities=(EVERYTHING,)) as server:
        status, output = run_fuzz(server.url, *FAST, "--entity", "things")
    assert status == 0, output
    assert "PASSED: 5 properties on 1 entity" in output
