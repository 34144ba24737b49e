"""End-to-end speed through the virtual board, measured side by side in one run:
- the raw pty (bytes echoed by a MicroPython loop: streamed, and ping-pong in frame-sized chunks),
- the framed link (the same payloads in COBS frames through device/link.py, ping-pong),
- samples per second through `ugate run` (device stage 1 + gate, wire, NPU stand-in), per kernel set.

    .venv/bin/python bench/e2e.py --model runs/demo [--limit 1000]
"""
import argparse
import threading
import time

from ugate.board import VirtualBoard, connect
from ugate.deploy import deploy, device_files
from ugate.link import Link
from ugate.shared import wire

ECHO = """
import sys, micropython
micropython.kbd_intr(-1)
b = bytearray(%d); mv = memoryview(b); n = %d
sys.stdout.buffer.write(b'\\x00')
while n > 0:
    k = sys.stdin.buffer.readinto(mv[:min(len(b), n)])   # readinto fills all it is given: chunk by chunk
    sys.stdout.buffer.write(mv[:k]); n -= k
micropython.kbd_intr(3)
"""

FRAME_ECHO = """
import sys, wire
from link import Link
with Link(sys.stdin.buffer, sys.stdout.buffer, %d, %d) as l:
    l.out.write(b'\\x00')
    while True:
        t = l.read_frame()
        if t is None or t == wire.BYE:
            break
        l.send(wire.RESULT, l.payload, l.n)
"""


def raw_echo(port, total, chunk=None):
    """Bytes/s through the pty and back: streamed (writer thread) or ping-pong in `chunk`s."""
    with connect(port) as t:
        t.exec_raw_no_follow(ECHO % (chunk or 4096, total))
        t.read_until(1, b"\x00", timeout=10)
        s, data = t.serial, bytes(range(256)) * (total // 256 + 1)
        data = data[:total]
        t0 = time.perf_counter()
        if chunk is None:
            w = threading.Thread(target=s.write, args=(data,))
            w.start()
            got = bytearray()
            while len(got) < total:
                got += s.read(max(1, s.in_waiting))
            w.join()
        else:
            got = bytearray()
            for i in range(0, total, chunk):
                s.write(data[i:i + chunk])
                want = min(total, i + chunk)
                while len(got) < want:
                    got += s.read(max(1, s.in_waiting))
        dt = time.perf_counter() - t0
        assert bytes(got[:total]) == data, "the pty changed the bytes"
        if not got.endswith(b">"):   # the raw REPL's end marker, unless already read with the data
            t.read_until(1, b"\x04>", timeout=5)
    return total / dt


def framed_echo(port, total, size):
    with connect(port) as t:
        t.exec_raw_no_follow(FRAME_ECHO % (size, size))
        t.read_until(1, b"\x00", timeout=10)
        link = Link(t.serial, timeout=2)
        payload = bytes(range(256)) * (size // 256 + 1)
        payload = payload[:size]
        n = total // size
        t0 = time.perf_counter()
        for _ in range(n):
            got = link.request(wire.VECTOR, payload, wire.RESULT)
            assert got == payload
        dt = time.perf_counter() - t0
        link.send(wire.BYE)
        t.follow(timeout=5)
    return n * size / dt, n / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="run folder (ugate train + export) for the samples/s rows")
    ap.add_argument("--limit", type=int, default=1000, help="test samples streamed per kernel set")
    ap.add_argument("--bytes", type=int, default=1 << 18, help="bytes echoed per link measurement")
    ap.add_argument("--size", type=int, default=784, help="frame payload (default: a fashion-mnist input)")
    a = ap.parse_args()

    with VirtualBoard() as vb:
        deploy(vb.port, files=device_files(), progress=False)
        stream = raw_echo(vb.port, a.bytes)
        pingpong = raw_echo(vb.port, a.bytes, a.size)
        framed, fps = framed_echo(vb.port, a.bytes, a.size)
    print(f"virtual board link, {a.bytes} bytes, {a.size}-byte payloads:")
    print(f"  raw pty, streamed          {stream / 1e6:8.2f} MB/s")
    print(f"  raw pty, ping-pong         {pingpong / 1e6:8.2f} MB/s")
    print(f"  framed link, ping-pong     {framed / 1e6:8.2f} MB/s  ({fps:.0f} frames/s)")
    print(f"  framed / raw ping-pong     {framed / pingpong:8.2f}x   (COBS + CRC on both ends, MicroPython side in Python)")
    print(f"  framed / raw streamed      {framed / stream:8.2f}x")
    print(f"  for scale: a real 115200-baud UART carries {115200 / 10 / 1e6:.4f} MB/s")

    if a.model:
        from ugate.run import run
        print(f"\nsamples/s through the virtual board and the NPU stand-in ({a.model}, {a.limit} samples):")
        rates = {}
        for k in ("viper", "portable"):
            r = run(a.model, "virtual", k, a.limit, progress=False, out="/dev/null")
            rates[k] = r["samples_per_second"]
            print(f"  {k:<9} {rates[k]:8.0f} samples/s   device stage 1 {r['timings_us']['stage1']:.0f} us, "
                  f"gate {r['timings_us']['gate']:.0f} us; mismatches {r['mismatches']}")
        print(f"  viper / portable {rates['viper'] / rates['portable']:8.1f}x")


if __name__ == "__main__":
    main()
