"""The link on a bad line (a seeded fault-injecting bridge, ugate.faults): run and the streaming NPU
stand-in lose and get nothing wrong; a RESULT corrupted in stream mode is recovered, one that never
gets through is counted lost; a host killed by any signal leaves a board the next command reaches;
a run folder's parts are bound together; and the small input problems of issue 8."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, train_tiny
from ugate import UgateError
from ugate.cli import main as cli
from ugate.faults import DOWN, Bridge, Faults
from ugate.shared import wire


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from ugate.export import export
    d = tmp_path_factory.mktemp("digits")
    export(d, dataset=train_tiny(d), quiet=True)
    return d


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    from ugate.board import VirtualBoard
    with VirtualBoard(tmp_path_factory.mktemp("board")) as vb:
        yield vb


@pytest.fixture(scope="module")
def exp(run_dir):
    from ugate.run import Experiment
    return Experiment(run_dir, 60, progress=False)


def test_faults_are_seeded_and_at_the_rate():
    data = bytes(range(256)) * 200
    f = Faults(1e-2, seed=3)
    out = f.apply(data)[0]
    g = Faults(1e-2, seed=3)   # the same faults however the bytes are cut up
    assert b"".join(g.apply(data[i:i + 999])[0] for i in range(0, len(data), 999)) == out
    n = sum(f.counts.values())
    assert 0.8e-2 < n / len(data) < 1.2e-2 and min(f.counts.values()) > 0 and out != data
    assert Faults(0.0).apply(data) == (data, 0.0)


def _expected(exp, run_dir):
    from ugate.npu import load_stage2
    opened = np.flatnonzero(exp.ref["open"])
    return opened, list(load_stage2(run_dir / "stage2.npz").predict(exp.ref["act"][opened]))


def test_run_on_a_noisy_line(run_dir, board):
    from ugate.run import run
    with Bridge(board.port, 3e-3, 3e-3, seed=1) as br:
        r = run(run_dir, br.port, limit=60, progress=False, out=os.devnull)
    assert sum(sum(v.values()) for v in br.faults.values()) > 0, br.faults
    assert r["mismatches"] == 0 and r["lost"] == 0 and r["samples"] == 60
    assert r["retransmits"] + r["corrupt_frames"] > 0


def test_npu_on_a_noisy_line(run_dir, board, exp):
    from ugate.npu import follow
    lines = []
    with Bridge(board.port, 3e-3, 3e-3, seed=2) as br:
        st, _, _ = follow(br.port, run_dir, 60, emit=lines.append)
    assert sum(sum(v.values()) for v in br.faults.values()) > 0, br.faults
    opened, classes = _expected(exp, run_dir)
    assert st["lost"] == 0 and st["samples"] == 60
    assert [d["sample"] for d in lines] == list(opened) and [d["class"] for d in lines] == classes


def test_stream_recovers_corrupt_results_and_counts_what_never_arrives(run_dir, board, exp):
    from ugate.npu import follow
    opened, classes = _expected(exp, run_dir)
    assert len(opened) >= 2
    left = [3]

    def first_three(direction, typ, payload):   # the first 3 RESULT frames arrive corrupt, once each
        if typ == wire.RESULT and left[0]:
            left[0] -= 1
            return True
        return False
    lines = []
    with Bridge(board.port, corrupt=first_three) as br:
        st, _, _ = follow(br.port, run_dir, 60, emit=lines.append)
    assert br.damaged == 3 and st["lost"] == 0
    assert st["host"]["corrupt"] >= 3 and st["device"]["retransmits"] >= 3
    assert [d["sample"] for d in lines] == list(opened) and [d["class"] for d in lines] == classes

    victim = int(opened[1])   # every RESULT of this sample is corrupted: the board gives up, we count it
    never = lambda direction, typ, p: typ == wire.RESULT and wire.rd_result(p)["seq"] == victim
    with Bridge(board.port, corrupt=never) as br:
        st, _, _ = follow(br.port, run_dir, None, emit=lines.clear() or lines.append)
        assert cli(["npu", "--port", br.port, "--model", str(run_dir), "--out", os.devnull]) == 1
    assert st["lost"] == 1 and st["never_arrived"] == 1 and st["device"]["undelivered"] == 1
    assert [d["sample"] for d in lines] == [s for s in opened if s != victim]


CHILD = """
import sys
from ugate.session import session
with session(sys.argv[1], entry="stream") as (link, info):
    print("streaming", flush=True)
    while True:
        link.recv(1.0)   # never acknowledges: the board keeps retransmitting, mid-stream
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_killed_host_leaves_a_board_the_next_command_reaches(run_dir, board, exp, sig):
    from ugate.board import connect
    from ugate.deploy import deploy
    from ugate.session import session
    deploy(board.port, run_dir, progress=False)
    with connect(board.port) as t:
        t.fs_writefile("sensor.bin", exp.xq.tobytes())
    p = subprocess.Popen([sys.executable, "-c", CHILD, board.port], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"streaming\n", p.stderr.read()
    time.sleep(0.3)
    p.send_signal(sig)
    p.wait(timeout=30)
    if sig != signal.SIGKILL:   # the session's BYE went out: the board is at its REPL, no rescue needed
        from mpremote.transport_serial import SerialTransport
        t = SerialTransport(board.port, timeout=1)
        try:
            t.enter_raw_repl(soft_reset=False, timeout_overall=5)
            t.exit_raw_repl()
        finally:
            t.close()
    with session(board.port, blob_hash=exp.meta["hash"]) as (link, info):   # the first try
        assert link.infer(exp.xq[0].tobytes())[0]["logit"] == exp.ref["logit"][0]


def test_a_stale_or_foreign_part_is_refused(run_dir, tmp_path):
    import struct
    import zlib
    from ugate.export import check_run_folder, model_hash
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    assert check_run_folder(d)["hash"] == check_run_folder(run_dir)["hash"]
    blob = bytearray((run_dir / "stage1.blob").read_bytes())
    blob[-40] ^= 0x11   # a weight changed, the CRC recomputed
    blob[-4:] = struct.pack("<I", zlib.crc32(bytes(blob[:-4])))
    (d / "stage1.blob").write_bytes(blob)
    with pytest.raises(UgateError, match="stage1.blob was changed after export"):
        check_run_folder(d)
    blob[12:20] = model_hash(bytes(blob))   # the same, passed off as another model: hash and CRC redone
    blob[-4:] = struct.pack("<I", zlib.crc32(bytes(blob[:-4])))
    (d / "stage1.blob").write_bytes(blob)
    with pytest.raises(UgateError, match=r"stage1.blob \(model [0-9a-f]{16}\) is not the blob exported with stage2.npz"):
        check_run_folder(d)
    assert cli(["run", "--model", str(d), "--port", "virtual", "--quiet"]) == 2
    shutil.copy(run_dir / "stage1.blob", d)
    with open(d / "model.pt", "ab") as f:   # retrained since the export
        f.write(b"\0")
    with pytest.raises(UgateError, match="model.pt is not the checkpoint .* stale; re-run `ugate export"):
        check_run_folder(d)


def test_a_port_that_is_not_a_serial_port_fails_at_once(run_dir, tmp_path, capsys):
    (tmp_path / "plain").write_text("")
    t0 = time.monotonic()
    for port in ("/dev/null", str(tmp_path / "plain")):
        assert cli(["run", "--model", str(run_dir), "--port", port, "--quiet"]) == 2
        assert cli(["npu", "--model", str(run_dir), "--port", port]) == 2
    assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all("is not a serial port" in line for line in err)


def test_a_short_schedule_trains(tmp_path):
    """--limit 600 --epochs 1 gave OneCycleLR a warm-up of zero steps (ZeroDivisionError)."""
    import torch
    from ugate.model import Net, NetConfig
    from ugate.train import _fit
    net = Net(NetConfig(in_shape=(1, 8, 8), n_classes=2, channels=[4, 8, 8], pools=[True, True, False], hidden=8, split=2))
    x, y = torch.rand(600, 1, 8, 8), torch.randint(0, 2, (600,))
    loss = lambda net, x, y: (torch.nn.functional.cross_entropy(net(x)[0], y), {})
    for n in (600, 300, 130, 1):   # 5, 3, 2 and 1 steps of 128
        _fit(net, x[:n], y[:n], 1, loss, "t", 0, quiet=True)


def test_nan_inputs_warn_and_random_bytes_are_not_an_npz(tmp_path):
    from ugate import data
    x = np.random.default_rng(0).random((60, 8, 8)).astype(np.float32)
    x[7, 2, 3] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 2)
    with pytest.warns(UserWarning, match=r"1 of 60 samples have NaN or infinite values \(first: sample 7\)"):
        ds = data._npz(tmp_path / "d.npz")
    assert np.isfinite(ds[0]).all()
    (tmp_path / "r.npz").write_bytes(np.random.default_rng(1).bytes(3000))
    with pytest.raises(UgateError, match="is not an .npz file"):
        data._npz(tmp_path / "r.npz")


def test_a_model_too_big_for_the_heap_is_not_a_deploy_problem():
    from ugate.session import _wait_ready

    class Board:   # what the raw REPL prints when main.py cannot allocate the model's buffers
        def read_until(self, *a, **k):
            return b"OK\x04Traceback (most recent call last):\r\n  File \"runtime.py\", line 40\r\nMemoryError: memory allocation failed, allocating 8192 bytes\r\n\x04>"
    with pytest.raises(UgateError, match=r"MemoryError: memory allocation failed.*does not fit the board's free heap"):
        _wait_ready(Board(), "/dev/ttyACM0")
