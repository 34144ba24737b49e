"""HIL across a labgrid board farm: `ugate hil --place A --place B ...` acquires each place through the
labgrid coordinator, reads its NetworkSerialPort (ser2net, published by a labgrid exporter), splits the
test set across the places, runs them in parallel and merges one report; the places are released in every
case (failure, Ctrl-C). labgrid (LGPL-2.1) is used as an imported library, unmodified.

`local_farm(n)` stands up a farm on this machine: labgrid-coordinator, n virtual boards (each its own
`ugate board virtual` process), and a labgrid-exporter publishing their ptys through Debian's ser2net,
one place a board. The tests and bench/farm.py use it."""
import argparse
import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ugate import UgateError

DEFAULT_COORDINATOR = "127.0.0.1:20408"   # labgrid's default port


def coordinator_address(address=None):
    return address or os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


def _session(address):
    from labgrid.remote.client import start_session
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return start_session(address, extra={"args": argparse.Namespace(allow_unmatched=False, kick=False)})
    except Exception as e:   # grpc or labgrid's ServerError: which one depends on where it failed
        raise UgateError(f"no labgrid coordinator at {address}: {e} (start labgrid-coordinator, or set --coordinator / LG_COORDINATOR)") from None


def _url(host, port, protocol="rfc2217"):
    """A NetworkSerialPort as a pyserial URL (rfc2217 with ign_set_control, as labgrid's own driver opens it)."""
    return f"rfc2217://{host}:{port}?ign_set_control" if protocol == "rfc2217" else f"socket://{host}:{port}"


def serial_url(session, place):
    for (name, cls), r in session.get_target_resources(place).items():
        if cls == "NetworkSerialPort":
            return _url(r.args["host"], r.args["port"], r.args.get("protocol", "rfc2217"))
    raise UgateError(f"place {place.name} has no NetworkSerialPort: match an exporter's serial port to it "
                     f"(labgrid-client -p {place.name} add-match EXPORTER/GROUP/NetworkSerialPort)")


def target_port(target):
    """The serial port of a labgrid target (pytest --lg-env ENV.yaml): a NetworkSerialPort (a RemotePlace's,
    acquired beforehand with labgrid-client) as a URL, or a local serial port's path."""
    from labgrid.resource import NetworkSerialPort
    target.await_resources(target.resources, timeout=10)
    for r in target.resources:
        if isinstance(r, NetworkSerialPort):
            return _url(r.host, r.port, r.protocol)
        if getattr(r, "port", None) and str(r.port).startswith("/dev/"):
            return r.port
    raise UgateError(f"labgrid target {target.name} has no serial port resource (NetworkSerialPort, RawSerialPort, USBSerialPort)")


def acquired(address=None):
    """Names of the places acquired on the coordinator now."""
    with _client(coordinator_address(address)) as (s, _):
        return sorted(n for n, p in s.places.items() if p.acquired)


@contextlib.contextmanager
def places(names, address=None):
    """Acquire the places `names`; yield {name: serial port URL}; release every acquired one on the way
    out, whatever ends the block (an error, Ctrl-C). The coordinator session is held only while acquiring
    and releasing: an idle gRPC session left open over a long run does not survive it."""
    from labgrid.remote.client import Error as LabgridError
    address = coordinator_address(address)
    held = []
    try:
        ports = {}
        with _client(address) as (s, run):
            for n in names:
                try:
                    run(s._acquire_place(n))
                except (LabgridError, UgateError) as e:
                    raise UgateError(f"cannot acquire place {n} on {address}: {e}") from None
                held.append(n)
                ports[n] = serial_url(s, s.get_place(n))
        yield ports
    finally:
        if held:
            with _client(address) as (s, run):
                for n in held:
                    with contextlib.suppress(Exception):
                        run(s._release_place(n))


@contextlib.contextmanager
def _client(address):
    """A coordinator session for the block, and a function running one of its coroutines quietly
    (labgrid's client prints "acquired place ..." on stdout)."""
    s = _session(address)

    def run(coro):
        with contextlib.redirect_stdout(io.StringIO()):
            return s.loop.run_until_complete(coro)
    try:
        yield s, run
    finally:
        run(s.stop())


def merge(runs, seconds):
    """One kernel set's per-place reports (hil.check) as one, as if one board had run every sample."""
    n, pos = sum(r["samples"] for r in runs), sum(r["positives"] for r in runs)
    firsts = [r for r in runs if r["first_mismatch"] is not None]
    first = min(firsts, key=lambda r: r["first_mismatch"]) if firsts else None

    def mean(p, w):   # stage1 and gate run on every sample, encode and transmit on the positives
        total = sum(r[w] for r in runs)
        return sum(r["timings_us"][p] * r[w] for r in runs) / total if total else 0.0
    rep = {"kernels": runs[0]["kernels"], "samples": n, "positives": pos, "mismatches": sum(r["mismatches"] for r in runs),
           "first_mismatch": first and first["first_mismatch"], "heap_free": min(r["heap_free"] for r in runs),
           "board": runs[0]["board"], "seconds": seconds,
           "timings_us": {p: mean(p, "samples" if p in ("stage1", "gate") else "positives") for p in runs[0]["timings_us"]},
           "corrupt_frames": sum(r["corrupt_frames"] for r in runs), "retransmits": sum(r["retransmits"] for r in runs),
           "places": [{"port": r["port"], "samples": r["samples"], "seconds": r["seconds"]} for r in runs]}
    if first is not None and "first_difference" in first:
        rep["first_difference"] = first["first_difference"]
    return rep


def _parallel(fns):
    """Run fns in daemon threads; results in order; the first exception is raised. Daemon threads and a
    polling join keep Ctrl-C deliverable to the main thread, which releases the places."""
    out, errs = [None] * len(fns), []

    def go(k, f):
        try:
            out[k] = f()
        except BaseException as e:
            errs.append(e)
    threads = [threading.Thread(target=go, args=(k, f), daemon=True) for k, f in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive() and not errs:
            t.join(0.1)
    if errs:
        raise errs[0]
    return out


def hil_farm(model_dir, place_names, address=None, kernels=("viper",), limit=None, deploy_first=True, progress=True,
             board=None, budget=None, log=None):
    """ugate.hil.hil across labgrid places: the samples dealt round-robin to the places (in the seeded order,
    so with a budget each place runs a random share), every place checked against `board`."""
    from ugate.board import connect
    from ugate.boards import load_board
    from ugate.deploy import deploy
    from ugate.hil import check, order
    from ugate.run import Experiment
    if len(set(place_names)) != len(place_names):
        raise UgateError(f"a place named twice: {', '.join(place_names)}")
    board = load_board(board) if board else None
    exp = Experiment(model_dir, limit, progress=progress)
    idx = order(len(exp)) if budget else np.arange(len(exp))
    with places(place_names, address) as ports:
        urls = list(ports.values())
        if log is not None:
            log("places: " + ", ".join(f"{n} ({u})" for n, u in ports.items()))
        if deploy_first:
            _parallel([lambda u=u: deploy(u, exp.dir, progress=False) for u in urls])
        runs = []
        for k in kernels:
            t0 = time.perf_counter()
            parts = _parallel([lambda j=j, u=u: dict(check(u, exp, k, progress, board, idx[j::len(urls)], budget, log), port=u)
                               for j, u in enumerate(urls)])
            runs.append(merge(parts, time.perf_counter() - t0))
        with connect(urls[0]) as t:
            total = t.eval("__import__('gc').mem_free() + __import__('gc').mem_alloc()")
    return {"passed": all(r["mismatches"] == 0 for r in runs), "runs": runs, "heap_total": total,
            "model": str(exp.dir), "port": "places " + ", ".join(place_names)}


# --- a farm on this machine: coordinator, exporter, ser2net, virtual boards ---

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, what, timeout=30):
    t = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > t:
            raise UgateError(f"local farm: {what} not up after {timeout} s")
        time.sleep(0.1)


def missing_tools():
    """What a local farm needs and this machine lacks (labgrid's commands come with the Python package)."""
    bin_dir = Path(sys.executable).parent
    need = {"ser2net": shutil.which("ser2net") or next((p for p in ("/usr/sbin/ser2net",) if os.path.exists(p)), None),
            "labgrid-coordinator": shutil.which("labgrid-coordinator", path=str(bin_dir)) or shutil.which("labgrid-coordinator"),
            "labgrid-exporter": shutil.which("labgrid-exporter", path=str(bin_dir)) or shutil.which("labgrid-exporter")}
    return [k for k, v in need.items() if not v]


@contextlib.contextmanager
def local_farm(n, baud=None, workdir=None):
    """Yield (coordinator address, [place names]) for n virtual boards published as labgrid places."""
    if gone := missing_tools():
        raise UgateError(f"a local farm needs {', '.join(gone)}: bash scripts/setup (apt-get install ser2net; pip install labgrid)")
    bin_dir = Path(sys.executable).parent
    tool = lambda name: shutil.which(name, path=str(bin_dir)) or shutil.which(name)
    work = Path(workdir or tempfile.mkdtemp(prefix="ugate-farm-"))
    address = f"127.0.0.1:{_free_port()}"
    procs = []
    env = dict(os.environ, LG_COORDINATOR=address)
    try:
        procs.append(subprocess.Popen([tool("labgrid-coordinator"), "-l", address], cwd=work, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        boards = []
        for k in range(n):
            cmd = [tool("ugate"), "board", "virtual", "--dir", str(work / f"board{k}")] + (["--baud", str(baud)] if baud else [])
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
            procs.append(p)
            boards.append(p.stdout.readline().strip())
        if not all(b.startswith("/dev/") for b in boards):
            raise UgateError(f"local farm: a virtual board did not start ({boards})")
        (work / "exporter.yaml").write_text("".join(f"ugate-board-{k}:\n  RawSerialPort:\n    port: {b}\n    speed: 115200\n"
                                                     for k, b in enumerate(boards)))
        _wait(lambda: socket.socket().connect_ex(tuple(address.rsplit(":", 1)[:1]) + (int(address.rsplit(":", 1)[1]),)) == 0,
              "labgrid-coordinator")
        procs.append(subprocess.Popen([tool("labgrid-exporter"), "-c", address, "-n", "ugate-farm", "--hostname", "127.0.0.1",
                                       str(work / "exporter.yaml")], cwd=work, env=env, stdout=subprocess.DEVNULL,
                                      stderr=open(work / "exporter.log", "w"), start_new_session=True))
        names = [f"ugate-{k}" for k in range(n)]
        client = lambda *a: subprocess.run([tool("labgrid-client"), "-x", address, *a], capture_output=True, text=True, env=env)
        for k, name in enumerate(names):
            client("-p", name, "create")
            client("-p", name, "add-match", f"ugate-farm/ugate-board-{k}/NetworkSerialPort")

        def published():
            s = _session(address)
            try:
                groups = s.resources.get("ugate-farm", {})
                return all(r.avail for k in range(n) for r in groups.get(f"ugate-board-{k}", {}).values()) and len(groups) == n
            finally:
                s.loop.run_until_complete(s.stop())
        _wait(published, "the exporter's serial ports")
        yield address, names
    finally:
        for p in reversed(procs):   # exporter (and its ser2net), boards, coordinator
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 15)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()
