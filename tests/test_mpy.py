""".mpy deploy: compiled for the architecture and .mpy version the board reports, verified by hash,
falling back to .py with a warning where mpy-cross cannot emit what the board loads."""
import pytest

import ugate.deploy
from ugate.board import connect
from ugate.deploy import board_mpy, cross_version, deploy, device_files, mpy_problem
from ugate.hil import hil

pytestmark = pytest.mark.board


def test_mpy_deploy_runs_hil_bit_for_bit(digits_run, board_port):
    said = []
    r = deploy(board_port, digits_run, progress=False, mpy=True, log=said.append)
    assert not said
    assert "main.py" in r and "runtime.mpy" in r and "kernels.mpy" in r and "runtime.py" not in r
    with connect(board_port) as t:
        files = t.eval("__import__('os').listdir()")
        assert "runtime.mpy" in files and "runtime.py" not in files   # no source left to shadow it
    assert hil(digits_run, board_port, limit=20, deploy_first=False, progress=False)["passed"]
    deploy(board_port, digits_run, progress=False)   # back to .py, as the other tests expect
    with connect(board_port) as t:
        assert "runtime.py" in t.eval("__import__('os').listdir()")


def test_version_mismatch_falls_back_to_py_with_a_warning(board_port, monkeypatch):
    monkeypatch.setattr(ugate.deploy, "cross_version", lambda: (6, 1))   # an older mpy-cross than the board's
    said = []
    r = deploy(board_port, files=device_files(), progress=False, mpy=True, log=said.append)
    assert all(n.endswith(".py") for n in r)
    assert len(said) == 1 and said[0].startswith(f"warning: deploying .py, not .mpy, to {board_port}: the board loads .mpy v6.")


def test_board_report_and_problems(board_port):
    with connect(board_port) as t:
        arch, v, sub = board_mpy(t)
    assert (v, sub) == cross_version() and arch in ugate.deploy.ARCHS   # the unix port and mpy-cross of one release
    assert mpy_problem(("xtensawin", 6, 3), (6, 3)) is None
    assert "not one mpy-cross emits" in mpy_problem((None, 6, 3), (6, 3))
    assert "reports no" in mpy_problem(None, (6, 3))
    assert "v6.3, mpy-cross emits v6.1" in mpy_problem(("xtensawin", 6, 3), (6, 1))
