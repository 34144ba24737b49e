"""A UART-speed virtual board: the relay paces both directions to the line rate (10 bits a byte)."""
import time

import pytest

from ugate import UgateError
from ugate.board import VirtualBoard, connect

N = 5760   # half a second of bytes at 115200 baud


def timed(t, code, send=b""):
    """Seconds from sending `code` (and `send` after it) to the end of its output, read in bulk (mpremote's
    follow() reads a byte a call, slower than a fast line); the board sits at the raw REPL prompt."""
    t.serial.write(code.encode() + b"\x04")   # plain raw REPL: code, Ctrl-D; "OK" then output
    t0 = time.perf_counter()
    t.serial.write(send)
    got = b""
    while not (got.count(b"\x04") == 2 and got.endswith(b">")):   # output, Ctrl-D, errors, Ctrl-D, prompt
        got += t.serial.read(max(1, t.serial.in_waiting))
    s = time.perf_counter() - t0
    out, err = got.split(b"\x04")[:2]
    out = out.removeprefix(b"OK")
    assert not err, err
    return s, out


@pytest.mark.parametrize("baud", [115200, 921600])
def test_bulk_transfer_both_ways_at_the_line_rate(tmp_path, baud):
    """N and 3N bytes each way: the difference (2N bytes) takes the line's time, fixed costs cancel."""
    n = N * baud // 115200
    with VirtualBoard(tmp_path, baud=baud) as vb, connect(vb.port) as t:
        (out1, o1), (out3, o3) = (timed(t, f"import sys\nsys.stdout.write('x' * {k})") for k in (n, 3 * n))
        (in1, i1), (in3, i3) = (timed(t, f"import sys\nprint(len(sys.stdin.buffer.read({k})))", b"y" * k) for k in (n, 3 * n))
    assert len(o3) == 3 * n and i3.strip() == str(3 * n).encode()
    line_s = 2 * n * 10 / baud
    assert abs(out3 - out1 - line_s) < 0.1 * line_s, (out1, out3)
    assert abs(in3 - in1 - line_s) < 0.1 * line_s, (in1, in3)


def test_uart_board_file_paces_and_pty_board_does_not(tmp_path):
    assert VirtualBoard(tmp_path, "esp32s3-devkitc-1-uart").baud == 115200
    assert VirtualBoard(tmp_path).baud is None and VirtualBoard(tmp_path, baud=921600).baud == 921600
    with pytest.raises(UgateError, match="baud must be positive"):
        VirtualBoard(tmp_path, baud=-5)


@pytest.mark.board
def test_run_reports_the_wires_share_at_a_baud(digits_run):
    from ugate.run import run
    fast, slow = (run(digits_run, "virtual", limit=40, progress=False, baud=b) for b in (921600, 115200))
    assert slow["mismatches"] == fast["mismatches"] == 0
    assert slow["samples_per_second"] < fast["samples_per_second"]
    assert 0 < fast["wire_share"] < slow["wire_share"] <= 1.05   # measured time includes every byte at the line rate
    assert slow["wire_ms_per_positive"] == pytest.approx(8 * fast["wire_ms_per_positive"])
    assert slow["dense_wire_ms_per_positive"] == pytest.approx(8 * fast["dense_wire_ms_per_positive"])
