"""Host Link over loop:// and against device/link.py running in real MicroPython behind a pty."""
import os
import shutil
import subprocess
import tty

import pytest
import serial

from conftest import MICROPYTHON, ROOT
from ugate import UgateError
from ugate.link import Link
from ugate.shared import sparse, wire

# a device that answers like device/main.py will, with a stand-in model: the gate opens when the
# first input byte is nonzero and the activations are the input itself; t_stage1 counts samples
# so a test can tell a recomputed RESULT from a cached one
DEVICE = """
import sys, wire
from link import Link
samples = opens = 0
with Link(sys.stdin.buffer, sys.stdout.buffer, n_in=64, n_act=64, ack_ms=%d) as link:
    while True:
        t = link.read_frame()
        if t is None:
            break
        if t == wire.HELLO:
            link.send_info("test-1", b"\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08", "pty", 1234)
        elif t == wire.VECTOR:
            samples += 1
            x = link.payload
            logit, n = sum(x), len(x)
            opened = 1 if x[0] else 0
            if opened:
                opens += 1
                link.encode(x, n)
                link.send_activations()
            link.send_result(logit, opened, samples, 2, link.alen, 4)
        elif t == wire.STATS:
            link.send_stats(samples, opens)
        else:
            link.send_error(wire.E_TYPE, wire.NAMES[t])
"""


@pytest.fixture
def device(tmp_path):
    """(Link to the device, its process). The device holds the pty master, we the slave side."""
    for f in ("shared/wire.py", "shared/sparse.py", "device/link.py"):
        shutil.copy(ROOT / f, tmp_path)

    def start(ack_ms=150, timeout=1.0):
        (tmp_path / "dev.py").write_text(DEVICE % ack_ms)
        master, slave = os.openpty()
        tty.setraw(slave)
        p = subprocess.Popen([MICROPYTHON, "dev.py"], cwd=tmp_path, stdin=master, stdout=master,
                             stderr=subprocess.PIPE)
        os.close(master)
        port = serial.Serial(os.ttyname(slave), timeout=0.02)
        os.close(slave)
        procs.append((p, port))
        return Link(port, timeout=timeout), p
    procs = []
    yield start
    for p, port in procs:
        port.close()
        p.kill()
        p.wait()


class DropFirstAck:
    """A port that loses the first ACK we write."""
    def __init__(self, port):
        self.port, self.dropped = port, 0

    def write(self, b):
        if not self.dropped and wire.Decoder().feed(b)[0][0] == wire.ACK:
            self.dropped = 1
            return len(b)
        return self.port.write(b)

    def __getattr__(self, name):
        return getattr(self.port, name)


def test_device_session(device):
    link, p = device()
    info = link.hello()
    assert info == {"wire": wire.VERSION, "blob_hash": bytes(range(1, 9)), "heap_free": 1234, "n_in": 64,
                    "n_act": 64, "max_payload": 64, "version": "test-1", "board": "pty"}
    x = bytes([3, 0, 0, 250, 0, 0, 0, 0, 0, 7] + [0] * 30)
    r, act = link.infer(x)
    assert r["seq"] == 2   # our seqs: HELLO 0, the ACK of INFO 1, VECTOR 2
    assert r["logit"] == 260 and r["decision"] == 1 and r["t_stage1"] == 1 and act == x
    r, act = link.infer(bytes(40))
    assert r["decision"] == 0 and act is None and r["t_stage1"] == 2
    st = link.device_stats()
    assert st["samples"] == 2 and st["opens"] == 1 and st["corrupt"] == 0 and st["retransmits"] == 0
    assert link.stats["corrupt"] == 0 and link.stats["duplicates"] == 0


def test_device_dropped_ack_and_duplicate(device):
    link, p = device(ack_ms=100)
    link.hello()
    link.port = DropFirstAck(link.port)
    x = bytes([5] + [0] * 20 + [9])
    r, act = link.infer(x)     # the first ACK is lost: the device retransmits, we drop and re-ack
    assert act == x and link.port.dropped and link.stats["duplicates"] == 1
    # the same VECTOR again (as if our RESULT were lost): answered from the cache, not recomputed,
    # the activations first
    link.last = None     # forget the RESULT, so its resend is not dropped as a duplicate
    link.send(wire.VECTOR, x, r["seq"])
    typ, _, pl = link.recv(2.0)
    assert typ == wire.ACTIVATIONS and bytes(sparse.decode(wire.rd_activations(pl)[1])) == x
    typ, _, pl = link.recv(2.0)
    assert typ == wire.RESULT and wire.rd_result(pl) == r
    st = link.device_stats()
    assert st["samples"] == 1 and st["retransmits"] == 1 and st["duplicates"] >= 1


def test_device_skips_garbage_and_corrupt(device):
    link, p = device()
    link.hello()
    f, n = wire.encode_frame(wire.VECTOR, 40, bytes([1, 2, 3]))
    bad = bytearray(f[:n])
    bad[4] ^= 0x10
    link.port.write(b"\x07garbage\x13\x00" + bytes(bad) + b"\x05\x01\x01\x00")   # last: a group cut short
    r, act = link.infer(bytes([1, 2, 3]))
    assert r["decision"] == 1 and act == bytes([1, 2, 3])
    assert link.device_stats()["corrupt"] == 3


def test_device_error_reply(device):
    link, p = device()
    link.hello()
    with pytest.raises(UgateError, match="device error 1 .unexpected frame type.: ACTIVATIONS"):
        link.request(wire.ACTIVATIONS, b"\x00\x00", wire.RESULT)


def test_loop_roundtrip_and_ack():
    port = serial.serial_for_url("loop://", timeout=0.01)
    link = Link(port, timeout=0.3)
    pl = wire.wr_activations(9, b"\x00\x03\x00\x00\x00")
    seq = link.send(wire.ACTIVATIONS, pl)
    link.send(wire.ACTIVATIONS, pl, seq)   # a retransmission: dropped, acked again
    assert link.recv() == (wire.ACTIVATIONS, seq, pl)
    # recv acked both; the loop hands our ACKs back
    for _ in range(2):
        typ, _, p = link.recv()
        assert typ == wire.ACK and wire.rd_ack(p) == seq
    assert link.stats["duplicates"] == 1 and link.stats["retransmits"] == 1
    assert link.recv(0.05) is None


def test_loop_counts_corrupt_and_resyncs():
    port = serial.serial_for_url("loop://", timeout=0.01)
    link = Link(port, timeout=0.3)
    f, n = wire.encode_frame(wire.STATS, 3, b"abc")
    good = bytes(f[:n])
    port.write(b"\xff\x01noise\x00" + good[:-4] + b"\x00" + good)
    assert link.recv() == (wire.STATS, 3, b"abc")
    assert link.stats["corrupt"] == 2 and "offset" in link.dec.error


def test_no_reply_and_closed_port():
    port = serial.serial_for_url("loop://", timeout=0.01)
    link = Link(port, timeout=0.05, retries=1)
    with pytest.raises(UgateError, match="no reply to VECTOR after 2 tries"):
        link.infer(b"x")   # the loop echoes the VECTOR; no RESULT ever comes
    port.close()
    with pytest.raises(UgateError, match="loop://"):
        link.send(wire.HELLO)
    with pytest.raises(UgateError, match="cannot open /nonexistent/tty"):
        Link("/nonexistent/tty")
