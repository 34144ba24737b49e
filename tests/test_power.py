"""The duty-cycled device loop on the virtual board, energy bookkeeping on a synthetic trace, the
estimate's configurations, and the whole measuring path with virtual meters (short)."""
import math
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_micropython

DEVICE = [ROOT / "device" / f for f in ("link.py",)] + [ROOT / "shared" / f for f in ("wire.py", "sparse.py", "marks.py")]


def test_link_buffers_take_control_frames_for_a_tiny_model():
    # a model of 4 inputs and 1 activation: the INFO frame (and a long board name) must still fit
    out = run_micropython("""
import sys
from link import Link
class Out:
    def __init__(s): s.n = 0
    def write(s, b, n=None): s.n += 1
l = Link(sys.stdin.buffer, Out(), n_in=4, n_act=1)
for board in ("x86_64", "ESP32S3 module (spiram octal) with ESP32S3", "B" * 300):
    l.send_info("0.1.0", b"12345678", board, 100000)
l.send_error(1, "x" * 200)
l.send_stats(1, 2)
print("sent", l.out.n)
""", DEVICE)
    assert "sent 5" in out


def test_marks_round_trip_on_both_sides():
    from ugate.shared import marks as K
    out = run_micropython("""
import marks
b = bytearray(marks.SIZE)
marks.pack_into(b, marks.TRANSMIT, marks.MODE_NOGATE, 70000, (1 << 31) + 5, 123)
print(bytes(b).hex())
""", DEVICE)
    b = bytes.fromhex(out.split()[-1])
    # sample modulo 2**16, ticks modulo 2**30, as the host reads them
    assert K.unpack(b) == (K.TRANSMIT, K.MODE_NOGATE, 70000 & 0xFFFF, 5, 123)
    with pytest.raises(ValueError, match="unknown phase"):
        K.unpack(b"\x09" + bytes(11))


def _marks(path):
    from ugate.shared import marks as K
    d = Path(path).read_bytes()
    return [K.unpack(d, i) for i in range(0, len(d) - len(d) % K.SIZE, K.SIZE)]


@pytest.mark.board
def test_duty_loop_keeps_the_rate_and_the_sleep_policy(digits_run, tmp_path):
    """Samples begin one period apart on the virtual board; every sample ends in a SLEEP mark with the
    board's policy; the positives (only) are sent, dense with no gate."""
    from ugate.board import VirtualBoard, connect
    from ugate.deploy import deploy
    from ugate.npu import listen, load_stage2
    from ugate.run import Experiment
    from ugate.session import session
    from ugate.shared import marks as K
    exp = Experiment(digits_run, 12, progress=False)
    stage2 = load_stage2(digits_run / "stage2.npz")
    stage2(np.zeros((1, int(np.prod(stage2.act_shape))), np.int8))
    rate = 20.0
    with VirtualBoard(tmp_path / "vb") as vb:
        deploy(vb.port, digits_run, progress=False)
        with connect(vb.port) as t:
            t.fs_writefile("sensor.bin", exp.xq.tobytes())
        for gate in (True, False):
            opts = {"rate": rate, "sleep": "light", "marks": "marks.bin", "gate": gate}
            with session(vb.port, blob_hash=exp.meta["hash"], entry="stream", options=opts) as (link, _):
                stats = listen(link, stage2, exp.class_names, lambda d: None)
            assert stats["samples"] == len(exp) and stats["lost"] == 0
            assert stats["gate_open"] == (int(exp.ref["open"].sum()) if gate else len(exp))
        recs = _marks(vb.dir / "marks.bin")
    runs = [[]]
    for r in recs:
        if r[0] == K.START:
            runs.append([])
        runs[-1].append(r)
    gated, nogate = runs[1], runs[2]
    assert gated[0][4] == int(1e6 / rate) and gated[-1][0] == K.STOP and gated[-1][4] == len(exp)
    starts = [r[3] for r in gated if r[0] == K.STAGE1]
    gaps_us = np.diff(starts) % K.TICKS_PERIOD
    assert len(starts) == len(exp)
    assert np.median(gaps_us) == pytest.approx(1e6 / rate, rel=0.05)      # the set rate
    late = np.cumsum(gaps_us) - 1e6 / rate * np.arange(1, len(starts))
    assert late.min() > -2000   # on the schedule k / rate, never ahead of it (a late one is caught up)
    sleeps = [r for r in gated if r[0] == K.SLEEP]   # the leading guard's, then one a sample
    assert len(sleeps) == len(exp) + 1 and all(r[4] == K.SLEEP_LIGHT for r in sleeps)
    guards_us = [(starts[0] - gated[0][3]) % K.TICKS_PERIOD, (gated[-1][3] - starts[-1]) % K.TICKS_PERIOD]
    assert guards_us[0] >= K.GUARD_US and guards_us[1] > 1e6 / rate + K.GUARD_US - 2000   # asleep around the samples
    assert sum(r[0] == K.TRANSMIT for r in gated) == int(exp.ref["open"].sum())
    tx = [r[4] for r in nogate if r[0] == K.TRANSMIT]
    assert len(tx) == len(exp) and all(r[1] & K.MODE_NOGATE for r in nogate)
    assert min(tx) > exp.ref["act"][0].size                                 # dense: every activation byte


def test_energy_by_difference_on_a_synthetic_trace():
    """A 1 kHz trace: asleep at 1 mW, then a scenario at 10 samples/s whose samples each add 500 µJ
    (5 ms at 100 mW above sleep): by difference and by the marker, 500 µJ a sample."""
    from ugate.measure import wakeup_energy, window, window_power
    fs, rate = 1000.0, 10.0
    i = np.arange(6000)
    t0 = 100.0   # the stream's first sample begins at t0, then every 1/rate
    t = t0 + i / fs
    awake = i % 100 < 5
    volts = np.full(len(t), 3.3)
    amps = np.where(awake, 0.101 / 3.3, 0.001 / 3.3)
    logic = awake.astype(int)
    w = window(t0, t0 + 6, rate, 60, fs)
    assert w[2] == range(int(w[2].start), int(w[2].stop)) and (w[1] - w[0]) * rate == pytest.approx(len(w[2]))
    p, n = window_power(t, volts, amps, w[0], w[1])
    p_sleep = 0.001
    assert (p - p_sleep) / rate * 1e6 == pytest.approx(500, rel=1e-6)
    assert wakeup_energy(t, volts, amps, logic, w[0], w[1], p_sleep, fs) == pytest.approx(500, rel=1e-6)
    assert window(t0, t0 + 0.5, rate, 5, 2.0) is None   # too short for a slow meter: no window


def test_scenario_inputs_spread_the_open_samples():
    from types import SimpleNamespace
    from ugate.measure import scenario_inputs
    y = np.array([0] * 20 + [1] * 5)
    opened = np.zeros(25, bool)
    opened[[3, 7, 20, 21, 22]] = True
    exp = SimpleNamespace(y=y, ref={"open": opened})
    idx = scenario_inputs(exp, "mix", 50)
    o = opened[idx]
    assert o.sum() == 10 and max(np.diff(np.flatnonzero(o))) <= 5   # 1 in 5, evenly
    assert (y[scenario_inputs(exp, "negatives", 30)] == 0).all()


def test_estimate_states_its_sources_and_the_gate_saves(digits_run):
    from ugate import power
    from ugate.boards import load_board
    board = load_board("esp32s3-devkitc-1-uart")
    e = power.estimate(digits_run, board, rate=1.0)
    c = e["configs"]
    assert set(c) == {"ugate", "no_gate", "raw_streaming", "whole_model_on_mcu"}
    assert c["ugate"]["j_per_day"] < c["no_gate"]["j_per_day"]
    assert e["uj_per_inference"]["negative_stopped"] < e["uj_per_inference"]["positive_sent"]
    assert all(a["source"] for a in e["assumptions"].values()) and "ugate.cycles" in e["sources"]["phases"]
    # a stated chip speed replaces the cycle model, and says so
    slow = power.chip_model(digits_run, board, cycles_per_mac=100)
    assert "100 cycles/MAC" in slow.source["phases"] and slow.stage1_us > power.chip_model(digits_run, board).stage1_us
    # the sleep floor: at a slower rate a day costs less, the idle board (no light sleep) more
    assert power.estimate(digits_run, board, rate=0.1)["configs"]["ugate"]["j_per_day"] < c["ugate"]["j_per_day"]
    awake = load_board("esp32s3-devkitc-1")
    assert power.estimate(digits_run, awake, rate=1.0)["configs"]["ugate"]["j_per_day"] > 10 * c["ugate"]["j_per_day"]
    assert "J/day gated vs" in power.headline(e)


def test_estimate_cli_writes_the_sweep(digits_run, capsys):
    from ugate.cli import main
    assert main(["power", "estimate", "--model", str(digits_run), "--board", "virtual", "--rate", "10"]) == 0
    out = capsys.readouterr().out
    assert "assumptions" in out and "no_gate" in out
    assert (digits_run / "power" / "sweep.png").stat().st_size > 1000
    assert main(["power", "estimate", "--model", str(digits_run), "--rate", "0"]) == 2
    assert "--rate must be positive" in capsys.readouterr().err


@pytest.mark.board
@pytest.mark.parametrize("kind,tolerance", [("ppk2", 0.02), ("fnb58", 0.02)])
def test_measure_with_a_virtual_meter_agrees_with_the_estimate(digits_run, kind, tolerance):
    from ugate.boards import load_board
    from ugate.measure import measure
    from ugate.power import assumption
    r = measure(digits_run, "virtual", kind, rate=10, seconds=2.5,
                scenarios=("sleep_only", "negatives", "positives", "no_gate"), progress=False)
    assert r["sleep_power_mw"] == pytest.approx(0.24 * 3.3, rel=0.05)
    for name, s in r["scenarios"].items():
        assert s["ratio_to_estimate"] == pytest.approx(1, abs=tolerance), name
    assert r["uj_per_positive"] > r["uj_per_stopped_negative"]
    if kind == "ppk2":   # fast, with the marker and phase pin on D0/D1: every phase of a sent sample, as estimated
        s = r["scenarios"]["positives"]
        m, e = s["uj_by_phase_from_marker"], s["uj_by_phase_estimate"]
        assert set(m) == {"stage1", "gate", "encode", "transmit"}
        # each of a phase's two edges lands within half a reading (the logic bits' majority over a decimated
        # reading) and wakes recur on the meter's grid, so those errors need not average out over the wakes
        reading_uj = load_board(r["board"]).power["active_busy_ma"] * assumption("supply_v") / r["meter_rate"] * 1e3
        for p in m:
            assert m[p] == pytest.approx(e[p], rel=0.15, abs=reading_uj), p
    out = digits_run / "power"
    rows = (out / "trace.csv").read_text().splitlines()
    assert rows[0] == "t,volts,amps,logic,gap,scenario" and len(rows) > 100
    assert {ln.rsplit(",", 1)[1] for ln in rows[1:]} >= {"sleep_only", "negatives", "positives", "no_gate"}
    assert (out / "report.md").read_text().count("|") > 20 and (out / "trace.png").exists()


def test_measure_with_an_unplugged_meter_is_one_clear_error(digits_run, capsys):
    from ugate.cli import main
    assert main(["power", "measure", "--model", str(digits_run), "--port", "virtual", "--meter", "um25c:/nonexistent/rfcomm9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot open meter port /nonexistent/rfcomm9" in err


def test_recorder_keeps_the_trace_when_the_meter_goes(tmp_path):
    """The meter is unplugged mid-run: what it gave before is in trace.csv, labelled, gaps marked; the
    error is one line for the caller."""
    from ugate.measure import Recorder
    from ugate.meters import Gap, Meter, MeterError, Sample

    class Dying(Meter):
        def samples(self):
            yield Sample(1.0, 3.3, 0.01, 1)
            yield Gap(1.1, 4, "fnirsi: CRC 0x00, computed 0x12")
            yield Sample(1.2, 3.3, 0.02, 0)
            raise MeterError("/dev/hidraw3: the meter went away (unplugged?)")
    rec = Recorder(Dying(), tmp_path / "trace.csv")
    rec.windows.append(["mix", 0.5, None])
    rec.start()
    rec.join(5)
    rec.close()
    assert rec.error == "/dev/hidraw3: the meter went away (unplugged?)"
    rows = (tmp_path / "trace.csv").read_text().splitlines()
    assert rows[1:] == ["1.000000,3.30000,0.0100000,1,,mix", '1.100000,,,,"4 lost: fnirsi: CRC 0x00, computed 0x12",mix',
                        "1.200000,3.30000,0.0200000,0,,mix"]
    t, v, a, logic = rec.arrays()
    assert list(a) == [0.01, 0.02] and list(logic) == [1, 0]


def test_phase_pin_cuts_each_wake_into_its_phases(digits_run, tmp_path):
    """On MicroPython: the runtime calls its phase hook once a stopped sample (stage 1 | gate), twice an
    open one (| encode), once with no gate (stage 1 | encode); the duty loop's phase pin starts each wake
    low and toggles at each call."""
    import shutil
    from ugate.run import Experiment
    exp = Experiment(digits_run, 40, progress=False)
    (tmp_path / "x.bin").write_bytes(exp.xq.tobytes())
    shutil.copy(digits_run / "stage1.blob", tmp_path / "model.blob")
    files = [ROOT / "device" / f for f in ("runtime.py", "kernels.py", "kernels_portable.py", "duty.py")] + \
            [ROOT / "shared" / f for f in ("blob.py", "marks.py")]
    out = run_micropython("""
from runtime import Model
from duty import Duty
m = Model("model.blob")
calls = [0]
def hook():
    calls[0] += 1
m.phase = hook
x = bytearray(m.in_size)
f = open("x.bin", "rb")
while f.readinto(x) == m.in_size:
    calls[0] = 0
    m.run(x)
    a = calls[0]
    calls[0] = 0
    m.run(x, False)
    print("calls", a, int(m.open and 1), calls[0])
class Pin:
    def __init__(s): s.seen = []
    def value(s, v): s.seen.append(v)
d = Duty(1000, phase=-1)
d.phase_pin = Pin()
d.toggle(); d.wake(); d.toggle(); d.toggle(); d.toggle(); d.wake(); d.toggle()
print("pin", d.phase_pin.seen)
""", files, cwd=tmp_path)
    rows = [ln.split()[1:] for ln in out.splitlines() if ln.startswith("calls")]
    assert len(rows) == len(exp)
    for (gated, _, nogate), opened in zip(rows, exp.ref["open"]):
        assert int(gated) == (2 if opened else 1) and int(nogate) == 1
    assert "pin [1, 0, 1, 0, 1, 0, 1]" in out


def test_phase_energy_on_a_synthetic_trace():
    """Wakes of 2 phases (a stopped sample) and 4 (a sent one), each phase at its own power above a 1 mW
    floor: each phase's µJ comes back, a wake cut by the window is left out, a garbled one counted."""
    from ugate.measure import phase_energy
    fs = 1000.0
    piece = {"stage1": (20, 0.050), "gate": (5, 0.030), "encode": (4, 0.040), "transmit": (10, 0.020)}   # ms, W above sleep
    t, p, lg = [], [], []
    def add(ms, watts, logic):
        for _ in range(ms):
            t.append(len(t) / fs), p.append(0.001 + watts), lg.append(logic)
    add(3, 0.03, 1)                                       # a wake begun before the window: left out
    for sent in (False, True, False, True, None):
        add(30, 0, 0)
        names = ("stage1", "gate", "encode", "transmit") if sent else ("stage1", "gate") if sent is False else ("stage1",) * 5
        for k, name in enumerate(names):
            ms, w = piece[name]
            add(ms, w, 1 | (k & 1) << 1)
    add(30, 0, 0)
    t, p, lg = np.array(t), np.array(p), np.array(lg)
    by_phase, wakes, odd = phase_energy(t, np.ones_like(p), p, lg, 0, t[-1] + 1, 0.001, fs)
    assert wakes == 5 and odd == 1                        # the last wake's 5 pieces parse as no phase sequence
    for name, (ms, w) in piece.items():
        assert by_phase[name] == pytest.approx(ms * w * 1e3, rel=1e-9), name
