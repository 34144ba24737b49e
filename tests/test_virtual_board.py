"""The virtual board: the real MicroPython unix port behind a pty, driven as a serial board would be."""
import subprocess
import sys
import threading
import time

import pytest
import serial

from ugate.board import VirtualBoard, connect

RAW = b"raw REPL; CTRL-B to exit\r\n>"


def read_until(s, ending, timeout=10):
    out, end = b"", time.monotonic() + timeout
    while not out.endswith(ending) and time.monotonic() < end:
        out += s.read(1)
    assert out.endswith(ending), f"wanted {ending!r}, got {out[-300:]!r}"
    return out


def raw_exec(s, code):
    """Run code in the raw REPL (already entered); returns (stdout, stderr) bytes."""
    s.write(code.encode() + b"\x04")
    assert s.read(2) == b"OK"
    out = read_until(s, b"\x04")[:-1]
    err = read_until(s, b"\x04>")[:-2]
    return out, err


@pytest.fixture
def vb(tmp_path):
    with VirtualBoard(tmp_path / "fs") as vb:
        yield vb


@pytest.fixture
def raw(vb):
    with serial.Serial(vb.port, timeout=1) as s:
        read_until(s, b">>> ")
        s.write(b"\r\x01")
        read_until(s, RAW)
        yield s


def test_pyserial_friendly_repl(vb):
    with serial.Serial(vb.port, timeout=1) as s:
        read_until(s, b">>> ")
        s.write(b"6*7\r")
        assert b"42" in read_until(s, b">>> ")


def test_raw_exec_and_errors(raw):
    assert raw_exec(raw, "print(1+1)") == (b"2\n", b"")
    out, err = raw_exec(raw, "1/0")
    assert out == b"" and b"ZeroDivisionError" in err


def test_soft_reset_restarts_and_keeps_files(vb, raw):
    raw_exec(raw, "open('kept.txt','w').write('yes')\nx=5")
    raw.write(b"\x04")  # empty Ctrl-D in the raw REPL: a board soft-reboots, the unix port exits
    read_until(raw, b"OK\r\nMPY: soft reboot\r\n" + RAW)
    assert vb.restarts == 1
    assert raw_exec(raw, "print(open('kept.txt').read())") == (b"yes\n", b"")
    out, err = raw_exec(raw, "print(x)")  # a fresh interpreter: no state but the filesystem
    assert b"NameError" in err
    assert (vb.dir / "kept.txt").read_text() == "yes"


def test_import_from_board_folder(vb, raw):
    (vb.dir / "mod.py").write_text("V = 3\n")
    assert raw_exec(raw, "import mod\nprint(mod.V)") == (b"3\n", b"")


def test_heap_size_from_board_file(vb, raw):
    out, _ = raw_exec(raw, "import gc\ngc.collect()\nprint(gc.mem_free()+gc.mem_alloc())")
    assert abs(int(out) - vb.board.heap_budget) < 0.05 * vb.board.heap_budget
    _, err = raw_exec(raw, "b=bytearray(400*1024)")
    assert b"MemoryError" in err


def test_binary_passes_unchanged(raw):
    data = bytes(range(256)) * 8 + b"\r\n\n\r\x00\x03\x04\x1a\x11\x13"
    # as on a board, 0x03 is an interrupt until kbd_intr(-1) has run: wait for the program to say so
    raw.write(f"import sys,micropython\nmicropython.kbd_intr(-1)\nprint('ready')\nb=sys.stdin.buffer.read({len(data)})\n"
              f"sys.stdout.buffer.write(b)\nsys.stdout.buffer.write(bytes(range(256)))\n".encode() + b"\x04")
    read_until(raw, b"OKready\n")
    raw.write(data)
    want = data + bytes(range(256))
    got = b""
    while len(got) < len(want) + 1 and (chunk := raw.read(len(want) + 1 - len(got))):
        got += chunk
    assert got == want + b"\x04"


def test_ctrl_c_interrupts_running_code(raw):
    raw.write(b"import time\nwhile 1: time.sleep(0.01)\x04")
    assert raw.read(2) == b"OK"
    time.sleep(0.2)
    raw.write(b"\x03")
    assert b"KeyboardInterrupt" in read_until(raw, b"\x04>")
    assert raw_exec(raw, "print('alive')") == (b"alive\n", b"")


def test_hard_reset(vb, raw):
    raw.write(b"while 1: pass\x04")
    assert raw.read(2) == b"OK"
    vb.reset()
    assert b"MPY: soft reboot" in read_until(raw, b">>> ")


def test_mpremote_exec_and_soft_reset(vb):
    mp = [sys.executable, "-m", "mpremote", "connect", vb.port]
    p = subprocess.run(mp + ["exec", "print(6*7)"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "42", p.stderr
    (vb.dir / "up.bin").write_bytes(b"\x00\xff" * 600)
    p = subprocess.run(mp + ["fs", "cp", str(vb.dir / "up.bin"), ":copy.bin", "+", "soft-reset", "+",
                             "exec", "print(len(open('copy.bin','rb').read()))"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip().endswith("1200"), p.stdout + p.stderr
    assert (vb.dir / "copy.bin").read_bytes() == b"\x00\xff" * 600


def test_connect_reuses_port_after_close(vb):
    for _ in range(2):  # a client may close and reopen the port, as with a USB board
        with connect(vb.port) as t:
            assert t.eval("1+2") == 3


def test_clean_shutdown(tmp_path):
    before = set(threading.enumerate())
    vb = VirtualBoard(tmp_path).start()
    proc, port = vb.proc, vb.port
    with serial.Serial(port, timeout=1) as s:
        read_until(s, b">>> ")
        vb.close()
    assert proc.poll() is not None and set(threading.enumerate()) == before and vb.port is None


def test_two_boards_never_share_a_folder(tmp_path, monkeypatch):
    """Two virtual boards at once (a test beside a bench): the default folder goes to the first, the
    second takes virtual-2; a folder given explicitly and in use is one clear error."""
    from ugate import UgateError
    monkeypatch.setenv("HOME", str(tmp_path))
    with VirtualBoard() as a, VirtualBoard() as b:
        assert a.dir.name == "virtual" and b.dir.name == "virtual-2"
        with connect(a.port) as t:
            t.exec("open('f','w').write('a')")
        assert not (b.dir / "f").exists()
        with pytest.raises(UgateError, match="in use by another virtual board"):
            VirtualBoard(a.dir).start()
    with VirtualBoard() as c:   # both released
        assert c.dir.name == "virtual"


def test_cli_virtual_in_another_process(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "ugate.cli", "board", "virtual", "--dir", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = p.stdout.readline().strip()
        assert port.startswith("/dev/"), p.stderr.read()
        with connect(port) as t:
            assert t.eval("2**10") == 1024
            t.exec("open('f','w').write('x')")
        assert (tmp_path / "f").read_text() == "x"
    finally:
        p.terminate()
        assert p.wait(10) == 0


def test_board_info(vb, tmp_path, capsys):
    from ugate.cli import main
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "stage1.blob").write_bytes(b"blob")
    (vb.dir / "model.blob").write_bytes(b"blob")
    assert main(["board", "info", "--port", vb.port, "--model", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "micropython 1." in out and "n/a (virtual)" in out and "model.blob (4 B)" in out and "matches stage1.blob" in out
    (vb.dir / "model.blob").write_bytes(b"other")
    assert main(["board", "info", "--port", vb.port, "--model", str(tmp_path / "run")]) == 0
    assert "DIFFERS" in capsys.readouterr().out
