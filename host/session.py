"""A streaming session with a board: the device main loop (device/main.py) started over the raw
REPL, then the binary wire protocol on the same serial port (ugate.link). Used by run, hil and npu."""
import contextlib
import signal
import threading

from ugate import UgateError
from ugate.board import connect
from ugate.link import Link
from ugate.shared import wire


@contextlib.contextmanager
def session(port, kernels="viper", timeout=2.0, blob_hash=None, entry="serve", options=None):
    """Yield (link, info) for the board on `port` (a path, or "virtual" for a virtual board for the
    block). blob_hash (8 bytes): the model the host expects; a board running another one is an error.
    entry: "serve" (the host sends each input), "stream" (the board reads its own, device/main.py) or
    "listen" (always-on audio); options: more keyword arguments for it (stream's rate, sleep, marker,
    marks, gate; listen's refractory, ...)."""
    if kernels not in ("viper", "portable"):
        raise UgateError(f"unknown kernels {kernels!r}: viper or portable")
    with connect(port) as t, _signals_end_sessions():
        more = "".join(f", {k}={v!r}" for k, v in (options or {}).items())
        t.exec_raw_no_follow(f"import main\nmain.{entry}(kernels={kernels!r}{more})")
        _wait_ready(t, port)
        link = Link(t.serial, timeout=timeout)
        try:
            info = link.hello()
            if blob_hash is not None and info["blob_hash"] != blob_hash:
                raise UgateError(f"{port} runs model {info['blob_hash'].hex()}, not this one ({blob_hash.hex()}): "
                                 f"ugate deploy --port {port} MODEL_DIR")
            yield link, info
        finally:
            # BYE returns the board to its REPL (after zero bytes that end any frame we were cut off in
            # the middle of writing); then collect what the program printed as it ended
            with contextlib.suppress(UgateError), _deferred(_SIGNALS):
                link.resync()
                link.request(wire.BYE, b"", wire.ACK)
            with contextlib.suppress(Exception):
                t.follow(timeout=5)


def _wait_ready(t, port, timeout=10):
    """The device writes one 0x00 once Ctrl-C is off; binary sent before that could interrupt it.
    Anything else it printed is the reason it did not start (a traceback from the raw REPL)."""
    got = t.read_until(1, b"\x00", timeout=timeout, timeout_overall=timeout)
    if not got.endswith(b"\x00"):
        text = got.replace(b"\x04", b"\n").rstrip(b">").decode(errors="replace").strip().splitlines()
        reason = text[-1] if text else "no reply"
        hint = (f"the model does not fit the board's free heap: a smaller model, or a board with more RAM"
                if "MemoryError" in reason else f"ugate deploy --port {port} MODEL_DIR")
        raise UgateError(f"the device main loop did not start on {port}: {reason} ({hint})")


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(*_):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_end_sessions():
    """SIGTERM and SIGHUP (a closed terminal, `kill`, a CI timeout) end a session as Ctrl-C does: with
    BYE, so the board is back at its REPL for the next command, not left streaming."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _interrupt) for s in _SIGNALS[1:]}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _deferred(signals):
    """Hold these signals until the block ends (a second Ctrl-C must not cut the BYE short)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
