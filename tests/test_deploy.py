"""Deploy to the board under test (a virtual board unless --port), and every way deploy refuses."""
import fcntl
import hashlib
import os
import pty

import pytest

from ugate import UgateError
from ugate.board import connect, board_hashes
from ugate.deploy import deploy, device_files


@pytest.fixture
def model(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "stage1.blob").write_bytes(os.urandom(5000) + b"\x00\x03\x04\r\n")
    (tmp_path / "ugt_dev.py").write_text("import ugt_fmt\nV = ugt_fmt.K * 2\n")
    (tmp_path / "ugt_fmt.py").write_text("K = 21\n")
    return tmp_path


@pytest.mark.board
def test_deploy_import_and_verify(board_port, model):
    files = [model / "ugt_dev.py", model / "ugt_fmt.py"]
    blob = (model / "run" / "stage1.blob").read_bytes()
    (model / "ugt_fmt.py").write_text(f"K = 21\n# {os.urandom(4).hex()}\n")  # new on every run, even on a real board
    r = deploy(board_port, model / "run", files=files, progress=False)
    assert r["ugt_fmt.py"] == "copied" and set(r) == {"ugt_dev.py", "ugt_fmt.py", "model.blob"}
    with connect(board_port) as t:
        assert t.eval("__import__('ugt_dev').V") == 42
        assert board_hashes(t, ["model.blob"])["model.blob"] == hashlib.sha256(blob).hexdigest()
        assert t.eval("len(open('model.blob','rb').read())") == len(blob)
    assert deploy(board_port, model / "run", files=files, progress=False) == dict.fromkeys(r, "unchanged")
    (model / "ugt_dev.py").write_text("import ugt_fmt\nV = ugt_fmt.K * 3\n")
    r = deploy(board_port, model / "run", files=files, progress=False)
    assert r == {"ugt_dev.py": "copied", "ugt_fmt.py": "unchanged", "model.blob": "unchanged"}


def test_device_files_flat_and_shared_init_skipped():
    names = [p.name for p in device_files()]
    assert "__init__.py" not in names and len(names) == len(set(names))
    assert all(p.suffix == ".py" and p.parent.name in ("device", "shared") for p in device_files())


def test_cli_deploy_virtual(model, tmp_path, monkeypatch, capsys):
    from ugate.cli import main
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default virtual board folder goes under ~/.cache
    monkeypatch.setattr("ugate.deploy.device_files", lambda: [model / "ugt_dev.py", model / "ugt_fmt.py"])
    assert main(["deploy", "--port", "virtual", "--quiet", str(model / "run")]) == 0
    assert "3 copied" in capsys.readouterr().out
    fs = tmp_path / "home" / ".cache" / "ugate" / "boards" / "virtual"
    assert (fs / "model.blob").read_bytes() == (model / "run" / "stage1.blob").read_bytes()
    assert main(["deploy", "--port", "virtual", "--quiet", str(model / "run")]) == 0
    assert "0 copied" in capsys.readouterr().out


def test_missing_port():
    with pytest.raises(UgateError, match="no such port /dev/ttyNOPE9"):
        deploy("/dev/ttyNOPE9", files=[], progress=False)


def test_silent_port_is_not_micropython():
    m, s = pty.openpty()  # a device that never answers
    try:
        with pytest.raises(UgateError, match=f"no MicroPython raw REPL on {os.ttyname(s)}: is it a MicroPython board"):
            deploy(os.ttyname(s), files=[], progress=False)
    finally:
        os.close(m), os.close(s)


def test_busy_port():
    m, s = pty.openpty()
    fd = os.open(os.ttyname(s), os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what another pyserial (exclusive=True) or mpremote holds
    try:
        with pytest.raises(UgateError, match="is busy"):
            deploy(os.ttyname(s), files=[], progress=False)
    finally:
        for f in (fd, m, s):
            os.close(f)


def test_missing_blob_and_file(tmp_path):
    with pytest.raises(UgateError, match="stage1.blob: run ugate export"):
        deploy("/dev/null", tmp_path, files=[], progress=False)
    with pytest.raises(UgateError, match="no .*absent.py"):
        deploy("/dev/null", files=[tmp_path / "absent.py"], progress=False)


def test_hash_mismatch_after_copy(tmp_path, model, monkeypatch):
    import ugate.deploy
    calls = []

    def lying(t, names):  # the second query (after copying) reports a corrupted file
        calls.append(names)
        return {n: None if len(calls) == 1 else "0" * 64 for n in names}
    monkeypatch.setattr(ugate.deploy, "board_hashes", lying)
    from ugate.board import VirtualBoard
    with VirtualBoard(tmp_path / "fs") as vb, pytest.raises(UgateError, match="ugt_fmt.py on .* has sha256 0+ after copying"):
        deploy(vb.port, files=[model / "ugt_fmt.py"], progress=False)
