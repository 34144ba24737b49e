"""The whole path on a board (the virtual one unless --port): deploy, device main loop, wire, NPU
stand-in, run report, and HIL, including a board whose blob is corrupt or subtly wrong."""
import json
import struct
import zlib

import numpy as np
import pytest

from ugate import UgateError
from ugate.cli import main as cli
from ugate.deploy import deploy
from ugate.hil import hil
from ugate.run import run
from ugate.session import session

pytestmark = pytest.mark.board


@pytest.fixture
def run_dir(digits_run):
    return digits_run


def test_run_matches_reference(run_dir, board_port):
    r = run(run_dir, board_port, limit=120, progress=False)
    saved = json.loads((run_dir / "run.json").read_text())
    assert saved["samples"] == r["samples"] == 120
    assert r["mismatches"] == 0 and r["lost"] == 0
    assert r["accuracy"] == r["reference_accuracy"]
    assert r["positives_sent"] > 0 and r["activation_bytes_on_wire"] > 0
    assert r["raw_input_bytes"] == 120 * 64
    assert r["timings_us"]["stage1"] > 0


def test_run_cli_on_a_virtual_board(run_dir, capsys):
    assert cli(["run", "--model", str(run_dir), "--port", "virtual", "--limit", "40", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mismatches vs reference" in out and "negatives stopped" in out


def test_hil_passes_with_both_kernel_sets(run_dir, board_port, request):
    rep = hil(run_dir, board_port, ("viper", "portable"), limit=60, progress=False, board=request.config.getoption("--board"))
    assert rep["passed"], rep
    assert [r["kernels"] for r in rep["runs"]] == ["viper", "portable"]
    assert all(r["mismatches"] == 0 for r in rep["runs"])


def _put(port, name, data):
    from ugate.board import connect
    with connect(port) as t:
        t.fs_writefile(name, data)


def test_hil_reports_a_corrupt_blob(run_dir, board_port, capsys):
    deploy(board_port, run_dir, progress=False)
    blob = bytearray((run_dir / "stage1.blob").read_bytes())
    blob[len(blob) // 2] ^= 0x40
    _put(board_port, "model.blob", bytes(blob))
    with pytest.raises(UgateError, match="crc|CRC"):
        hil(run_dir, board_port, kernels=("viper",), limit=5, deploy_first=False, progress=False)


def test_hil_names_the_first_differing_layer(run_dir, board_port):
    # a blob that loads (CRC recomputed, same model hash) but has one weight changed: only the
    # bit-for-bit comparison can catch it
    from ugate.shared import blob as B
    blob = bytearray((run_dir / "stage1.blob").read_bytes())
    meta = B.parse(blob)
    conv = next(op for op in meta["ops"] if op[0] == B.CONV)
    op, src, dst, phase, relu, stride, k, j, m, w_off, b_off, s_off = conv
    blob[w_off] ^= 0x55   # the first weight of the first conv
    body = len(blob) - 4
    blob[body:] = struct.pack("<I", zlib.crc32(bytes(blob[:body])))
    deploy(board_port, run_dir, progress=False)
    _put(board_port, "model.blob", bytes(blob))
    rep = hil(run_dir, board_port, kernels=("viper",), limit=120, deploy_first=False, progress=False)
    assert not rep["passed"]
    r = rep["runs"][0]
    first_conv = meta["bufs"][dst][0]
    assert r["mismatches"] > 0 and r["first_difference"].split(": ")[1].startswith(first_conv + "["), r["first_difference"]
    deploy(board_port, run_dir, progress=False)   # leave the board as the other tests expect it


def test_session_refuses_a_board_running_another_model(run_dir, board_port):
    deploy(board_port, run_dir, progress=False)
    with pytest.raises(UgateError, match="runs model"):
        with session(board_port, blob_hash=b"\x00" * 8):
            pass


def test_session_says_why_the_device_did_not_start(board_port):
    _put(board_port, "main.py", b"raise ImportError('no runtime here')\n")
    try:
        with pytest.raises(UgateError, match="no runtime here"):
            with session(board_port):
                pass
    finally:
        from ugate.deploy import device_files
        deploy(board_port, files=device_files(), progress=False)


def test_device_drops_a_duplicate_vector_and_answers_from_cache(run_dir, board_port):
    from ugate.run import Experiment
    from ugate.shared import wire
    exp = Experiment(run_dir, limit=3, progress=False)
    deploy(board_port, run_dir, progress=False)
    with session(board_port, blob_hash=exp.meta["hash"]) as (link, info):
        r1, _ = link.infer(exp.xq[0].tobytes())
        seq = link.seq - 1
        link.send(wire.VECTOR, exp.xq[0].tobytes(), seq)   # the host "missed" the RESULT: same seq again
        stats = link.device_stats()
        assert stats["duplicates"] == 1 and stats["samples"] == 1
        assert np.int64(r1["logit"]) == exp.ref["logit"][0]


def test_npu_stand_in_follows_a_streaming_board(run_dir, tmp_path, capsys):
    """The board streams its own input and sends nothing for a stopped sample: the NPU stand-in's
    lines are exactly the reference's positives, classified as stage 2 classifies them."""
    from ugate.npu import load_stage2
    from ugate.run import Experiment
    out = tmp_path / "decisions.jsonl"
    assert cli(["npu", "--port", "virtual", "--model", str(run_dir), "--replay", "40", "--out", str(out)]) == 0
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    exp = Experiment(run_dir, limit=40, progress=False)
    opened = np.flatnonzero(exp.ref["open"])
    assert len(opened) and [d["sample"] for d in lines] == list(opened)
    assert [d["gate_logit"] for d in lines] == list(exp.ref["logit"][opened])
    stage2 = load_stage2(run_dir / "stage2.npz")
    assert [d["class"] for d in lines] == list(stage2.predict(exp.ref["act"][opened]))
    err = capsys.readouterr().err
    assert "40 samples" in err and f"{len(opened)} through the gate" in err


def test_a_new_host_takes_over_a_board_left_streaming(run_dir, board_port):
    """The host dies mid-stream (no BYE): the board is still in its binary loop with Ctrl-C off.
    The next host must still get in (connect sends BYE when the raw REPL does not answer)."""
    from ugate.board import connect
    from ugate.run import Experiment
    exp = Experiment(run_dir, limit=3, progress=False)
    deploy(board_port, run_dir, progress=False)
    t = connect(board_port)
    tr = t.__enter__()
    tr.exec_raw_no_follow("import main\nmain.serve()")
    tr.read_until(1, b"\x00", timeout=10)
    tr.serial.write(b"\x03\x03")   # what a dying host's Ctrl-C would do: nothing, Ctrl-C is off
    tr.close()                     # gone without BYE
    with session(board_port, blob_hash=exp.meta["hash"]) as (link, info):
        r, _ = link.infer(exp.xq[0].tobytes())
        assert r["logit"] == exp.ref["logit"][0]


def test_a_board_that_resets_mid_stream_is_a_clear_error(run_dir, tmp_path):
    from ugate.board import VirtualBoard
    from ugate.run import Experiment
    exp = Experiment(run_dir, limit=3, progress=False)
    with VirtualBoard(tmp_path / "board") as vb:
        deploy(vb.port, run_dir, progress=False)
        with pytest.raises(UgateError, match="no reply|lost|reset"):
            with session(vb.port, blob_hash=exp.meta["hash"], timeout=0.5) as (link, info):
                link.infer(exp.xq[0].tobytes())
                vb.reset()   # power cycle: the interpreter restarts at its REPL
                link.infer(exp.xq[1].tobytes())
        with session(vb.port, blob_hash=exp.meta["hash"]) as (link, info):   # and it works again
            assert link.infer(exp.xq[2].tobytes())[0]["logit"] == exp.ref["logit"][2]


def test_a_missing_port_is_one_clear_error(run_dir, capsys):
    assert cli(["hil", "--model", str(run_dir), "--port", "/dev/ttyNOPE", "--quiet"]) == 2
    assert cli(["run", "--model", str(run_dir), "--port", "/dev/ttyNOPE", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("no such port /dev/ttyNOPE" in line for line in err)
