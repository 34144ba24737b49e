"""`ugate power measure --model DIR --port BOARD --meter KIND[:PATH]`: scenarios on a duty-cycled board
while a USB meter records, written to DIR/power/.

Scenarios, in turn, each `seconds` long (at least what the meter's rate needs): sleep only (the floor),
all negatives, all positives, the test set's own mix, and no gate (every sample sent dense). The meter
is read in a thread throughout; every sample goes to trace.csv as it comes (t, volts, amps, logic, gap,
scenario), so an unplugged meter loses nothing recorded before. Energy a sample is derived by
difference: (mean power of a scenario - mean power asleep) x period; for meters fast enough to see the
phases (>= 1 kS/s, with the marker on a logic input), also per wake-up from the marker: the energy
while it is high, above the sleep floor, and per phase (stage 1, gate, encode, transmit) where the
phase pin is on a second logic input. power.json holds the figures, the estimate for the same runs
(ugate.power) and their ratio; report.md a person reads, with trace.png, energy.png and per_day.png.

With --port virtual and a meter without PATH, a virtual board and a virtual meter of that kind
(ugate.vmeter) stand in: the whole path runs here.
"""
import contextlib
import csv
import json
import math
import threading
import time
from pathlib import Path

import numpy as np

from ugate import UgateError
from ugate.shared import marks

SCENARIOS = ("sleep_only", "negatives", "positives", "mix", "no_gate")
FAST_RATE = 1000   # samples/s from which the meter sees phases: energy per wake-up from the marker too
PPK2_DECIMATE = 10   # 100 kS/s averaged to 10 kS/s: an encode phase of a few hundred µs still shows
WHOLE_RATE = 100   # from here a scenario is averaged whole, half of each sleeping guard around it (marks.GUARD_US);
                   # slower meters: whole periods inside it, ends trimmed
SETTLE_S = 0.3     # trimmed from each end of a scenario window: start-up of the stream, a meter's delay


class Recorder(threading.Thread):
    """Reads a meter into trace.csv (flushed row by row) and memory, labelling each sample with the
    scenario whose window holds its time. A MeterError ends it; .error keeps the line."""

    def __init__(self, meter, path):
        super().__init__(name="meter recorder", daemon=True)
        self.meter, self.f = meter, open(path, "w", newline="")
        self.w = csv.writer(self.f)
        self.w.writerow(["t", "volts", "amps", "logic", "gap", "scenario"])
        self.rows = []           # (t, volts, amps, logic)
        self.gaps = []           # Gap
        self.windows = []        # [name, t0, t1 or None]
        self.error = None
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()

    def label(self, t):
        for name, t0, t1 in reversed(self.windows):
            if t0 <= t and (t1 is None or t < t1):
                return name
        return ""

    def run(self):
        from ugate.meters import Gap, MeterError
        try:
            for s in self.meter.samples():
                with self.lock:
                    if isinstance(s, Gap):
                        self.gaps.append(s)
                        self.w.writerow([f"{s.t:.6f}", "", "", "", f"{s.lost} lost: {s.reason}", self.label(s.t)])
                    else:
                        self.rows.append((s.t, s.volts, s.amps, -1 if s.logic is None else s.logic))
                        self.w.writerow([f"{s.t:.6f}", f"{s.volts:.5f}", f"{s.amps:.7f}", "" if s.logic is None else s.logic,
                                         "", self.label(s.t)])
                    self.f.flush()
                if self.stop_ev.is_set():
                    return
        except MeterError as e:
            self.error = str(e)
        finally:
            self.f.flush()

    def begin(self, name):
        with self.lock:
            self.windows.append([name, time.monotonic(), None])

    def end(self):
        with self.lock:
            self.windows[-1][2] = time.monotonic()

    def close(self):
        self.stop_ev.set()
        self.join(3)
        self.meter.close()
        self.f.close()

    def arrays(self):
        with self.lock:
            a = np.array(self.rows, float).reshape(-1, 4)
        return a[:, 0], a[:, 1], a[:, 2], a[:, 3]


def scenario_inputs(exp, name, n):
    """Indices into the test set of n inputs for a scenario, cycling through its negatives, positives or
    all, ordered so that the samples whose gate opens (by the host reference) are spread evenly: any
    stretch of the scenario then has about its overall mix, so trimming its ends does not bias it."""
    pick = {"negatives": exp.y == 0, "positives": exp.y > 0}.get(name, np.ones(len(exp.y), bool))
    idx = np.flatnonzero(pick)
    if not len(idx):
        raise UgateError(f"the test set has no {name} to run")
    idx = idx[np.arange(n) % len(idx)]
    opened = exp.ref["open"][idx]
    o, c, k = list(idx[opened]), list(idx[~opened]), int(opened.sum())
    out = []
    for j in range(n):   # Bresenham: an open one whenever the running share falls behind
        out.append(o.pop() if o and ((j + 1) * k // n > j * k // n or not c) else c.pop())
    return np.array(out)


def window(t0, t1, rate, n, meter_rate):
    """The part of a scenario's window [t0, t1] to average over: SETTLE_S and two meter readings trimmed
    from each end, then cut to whole periods between sample starts (t0 + k / rate, the stream's
    schedule), so it holds exactly as many samples as periods. -> (start, end, samples in it)."""
    p, trim = 1 / rate, SETTLE_S + 2 / meter_rate
    k0 = math.ceil(trim / p - 0.5)
    k1 = min(math.floor((t1 - t0 - trim) / p - 0.5), n - 1)
    if k1 <= k0:
        return None
    return t0 + (k0 + 0.5) * p, t0 + (k1 + 0.5) * p, range(k0 + 1, k1 + 1)


def window_power(t, v, a, w0, w1):
    """Mean power (W) of the meter readings in [w0, w1), and how many there were."""
    m = (t >= w0) & (t < w1)
    if m.sum() < 2:
        return None, int(m.sum())
    return float(np.mean(v[m] * a[m])), int(m.sum())


def wakeup_energy(t, v, a, logic, t0, t1, p_sleep, rate):
    """µJ a wake-up above the sleep floor from a fast meter's marker (logic bit 0): the energy while it
    is high, over the number of rising edges. None when the marker never rose."""
    m = (t >= t0) & (t < t1) & (logic >= 0)
    hi = (logic[m].astype(int) & 1) == 1
    rises = int(np.sum(hi[1:] & ~hi[:-1]))
    if not rises:
        return None
    return float(np.sum(v[m][hi] * a[m][hi] - p_sleep) / rate * 1e6 / rises)


# a wake cut by the phase input's edges: its pieces, by how many there are (device/duty.py)
WAKE_PHASES = {2: ("stage1", "gate"), 3: ("stage1", "encode", "transmit"), 4: ("stage1", "gate", "encode", "transmit")}


def phase_energy(t, v, a, logic, t0, t1, p_sleep, rate):
    """µJ above the sleep floor of each phase of a wake-up, from a fast meter's two logic inputs: the
    marker (bit 0, high while awake) and the phase pin (bit 1, toggled at each boundary within a wake).
    -> ({phase: mean µJ over the wakes that had it}, wakes, wakes whose pieces did not parse)."""
    m = (t >= t0) & (t < t1) & (logic >= 0)
    lg = logic[m].astype(int)
    e = (v[m] * a[m] - p_sleep) / rate * 1e6
    hi = (lg & 1) == 1
    edges = np.flatnonzero(np.diff(hi.astype(int))) + 1
    bounds = np.concatenate(([0], edges, [len(hi)]))
    sums, counts, wakes, odd = {}, {}, 0, 0
    for s, f in zip(bounds[:-1], bounds[1:]):
        if not hi[s] or s == 0 or f == len(hi):   # asleep, or a wake cut by the window
            continue
        wakes += 1
        cut = np.flatnonzero(np.diff((lg[s:f] >> 1) & 1)) + 1
        names = WAKE_PHASES.get(len(cut) + 1)
        if names is None:
            odd += 1
            continue
        for name, piece in zip(names, np.split(e[s:f], cut)):
            sums[name] = sums.get(name, 0.0) + float(piece.sum())
            counts[name] = counts.get(name, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}, wakes, odd


def measure(model_dir, port="virtual", meter="ppk2", rate=1.0, seconds=None, scenarios=SCENARIOS, board_name=None,
            kernels="viper", progress=True, cycles_per_mac=None):
    """Run the scenarios; returns the power.json dict (also written, with trace.csv and the report)."""
    from ugate import power
    from ugate.boards import load_board
    from ugate.meters import open_meter, parse_spec
    from ugate.run import Experiment, check_port_first

    model_dir = Path(model_dir)
    kind, path = parse_spec(meter)
    virtual = port == "virtual"
    board = load_board(board_name or ("virtual" if virtual else "esp32s3-devkitc-1-uart"))
    if rate <= 0:
        raise UgateError(f"--rate must be positive, not {rate}")
    check_port_first(port)
    from ugate.meters import FNB_RATE, PPK2_RATE, UM_RATE
    meter_rate = {"ppk2": PPK2_RATE / PPK2_DECIMATE, "joulescope": 1000.0}.get(kind, UM_RATE if kind.startswith("um") else FNB_RATE)
    # long enough for the meter: the slow ones (2 readings/s) need many readings a scenario
    seconds = seconds or max(10.0, 40 / meter_rate + 2 * SETTLE_S, 5 / rate)
    out = model_dir / "power"
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda m: print(m, flush=True)) if progress else (lambda m: None)

    exp = Experiment(model_dir, progress=False)
    chip = power.chip_model(model_dir, board, cycles_per_mac, inputs=exp.xq[:power.COUNT_SAMPLES])
    with contextlib.ExitStack() as stack:
        if virtual:
            from ugate.board import VirtualBoard
            import tempfile
            vb = stack.enter_context(VirtualBoard(dir=tempfile.mkdtemp(prefix="ugate-power-"), board=board.name))
            board_port = vb.port
            marks_file = vb.dir / "marks.bin"
            if path is None:
                from ugate import vmeter
                tl = vmeter.Timeline(marks_file, chip, board)
                stack.callback(tl.close)
                srv = vmeter.serve(kind, tl)
                stack.callback(srv.close)
                path = srv.path
                log(f"virtual {kind} on {path}, following {marks_file}")
        else:
            board_port, marks_file = port, None
        m = open_meter(f"{kind}:{path}" if path else kind, **({"decimate": PPK2_DECIMATE} if kind == "ppk2" else {}))
        rec = Recorder(m, out / "trace.csv")
        rec.start()
        stack.callback(rec.close)
        results = {}
        from ugate.deploy import deploy
        deploy(board_port, model_dir, progress=False)
        for name in scenarios:
            log(f"scenario {name}: {seconds:g} s at {rate:g} samples/s")
            results[name] = _scenario(name, exp, board_port, board, rate, seconds, rec, marks_file, kernels)
            if rec.error:
                raise UgateError(f"meter: {rec.error} (trace so far kept in {out / 'trace.csv'})")
        time.sleep(0.5 + (1 / meter_rate))   # the meter's last readings of the last scenario
        t, v, a, logic = rec.arrays()
        gaps, windows = list(rec.gaps), {name: (t0, t1) for name, t0, t1 in rec.windows}
    return _report(model_dir, out, results, windows, t, v, a, logic, gaps, meter_rate, kind, rate, board, chip, exp, virtual)


def _scenario(name, exp, port, board, rate, seconds, rec, marks_file, kernels):
    from ugate.board import connect
    from ugate.npu import listen, load_stage2
    from ugate.session import session
    side = "marks.bin" if marks_file else None
    if name == "sleep_only":
        with connect(port) as t:
            t.exec("import duty")
            rec.begin(name)
            _, err = t.exec_raw(f"duty.sleep_only({seconds}, {board.sleep!r}, {board.marker_pin}, {side!r})", timeout=seconds + 10)
            rec.end()
        if err:
            raise UgateError(f"{port}: the sleep-only scenario failed on the board: {err.decode(errors='replace').strip().splitlines()[-1]}")
        return {"samples": 0, "opens": 0}
    n = max(2, math.ceil(seconds * rate))
    idx = scenario_inputs(exp, name, n)
    with connect(port) as t:
        t.fs_writefile("sensor.bin", exp.xq[idx].tobytes())
    stage2 = getattr(_scenario, "stage2", None)
    if stage2 is None:   # compiled before the board streams: a first-call JIT would hold the ACK, and the board
        stage2 = _scenario.stage2 = load_stage2(exp.dir / "stage2.npz")   # with it
        stage2(np.zeros((1, int(np.prod(stage2.act_shape))), np.int8))
    opts = {"rate": rate, "sleep": board.sleep, "marker": board.marker_pin, "phase": board.phase_pin, "marks": side,
            "gate": name != "no_gate"}
    with session(port, kernels, blob_hash=exp.meta["hash"], entry="stream", options=opts) as (link, info):
        rec.begin(name)
        # a stream of stopped negatives is silent until its STATS at the end: give up only after its length
        stats = listen(link, stage2, exp.class_names, lambda d: None, quiet=2.0 + 1 / rate, give_up=30.0 + n / rate)
        rec.end()
    return {"samples": stats["samples"], "opens": stats["gate_open"], "lost": stats["lost"],
            "activation_bytes": stats["activation_bytes"], "inputs": idx}


def sample_estimates(exp, chip, board, idx, nogate):
    """ugate.power's µJ above sleep for each of these test inputs: open or not by the host reference,
    the bytes its activations take (dense with no gate)."""
    from ugate import power
    from ugate.shared import sparse
    out = bytearray(sparse.size(chip.n_act))
    e = []
    for i in idx:
        opened = nogate or bool(exp.ref["open"][i])
        nb = 5 + chip.n_act if nogate else sparse.encode(exp.ref["act"][i].tobytes(), chip.n_act, out) if opened else 0
        e.append(power.inference_uj(chip.phases(opened, nogate, power.sample_bytes(nb) if opened else 0), board))
    return np.array(e)


def _report(model_dir, out, results, win, t, v, a, logic, gaps, meter_rate, kind, rate, board, chip, exp, virtual):
    from ugate import power
    period = 1 / rate
    p = {}
    t0, t1 = win["sleep_only"]
    p["sleep_only"], results["sleep_only"]["meter_samples"] = window_power(t, v, a, t0 + SETTLE_S + 2 / meter_rate,
                                                                           t1 - SETTLE_S - 2 / meter_rate)
    if p["sleep_only"] is None:
        raise UgateError(f"too few meter readings while asleep ({results['sleep_only']['meter_samples']}): "
                         f"give --seconds longer for a {kind} ({meter_rate:g} readings/s)")
    p_sleep = p["sleep_only"]
    guard = marks.GUARD_US * 1e-6
    rows = {}
    for name, r in results.items():
        if name == "sleep_only":
            continue
        first = win[name][0] + guard   # the first sample's period (the host's clock, a link round trip off)
        if meter_rate >= WHOLE_RATE:   # every sample however the host's timing moved them, and only sleep around them
            w = (first - guard / 2, first + r["samples"] / rate + guard / 2, range(0, r["samples"]))
        else:
            w = window(first, win[name][1], rate, r["samples"], meter_rate)
        if w is None:
            raise UgateError(f"scenario {name} too short for a {kind} ({meter_rate:g} readings/s): give --seconds longer")
        p[name], r["meter_samples"] = window_power(t, v, a, w[0], w[1])
        if p[name] is None:
            raise UgateError(f"too few meter readings in scenario {name}: give --seconds longer")
        uj = (p[name] - p_sleep) * (w[1] - w[0]) / len(w[2]) * 1e6
        est = float(sample_estimates(exp, chip, board, r["inputs"][w[2].start:w[2].stop], name == "no_gate").mean())
        f_open = r["opens"] / max(r["samples"], 1)
        sent_b = power.sample_bytes(r["activation_bytes"] / r["opens"] - 2) if r["opens"] else 0
        busy_s = sum(us for _, us, _ in chip.phases(True, name == "no_gate", sent_b)) * 1e-6
        rows[name] = {"mean_power_mw": p[name] * 1e3, "uj_per_inference": uj, "estimate_uj": est,
                      "ratio_to_estimate": uj / est if est else None, "gate_open": f_open, "samples": r["samples"],
                      "samples_averaged": len(w[2]),
                      # a sent sample's work outlasts the period: the chip falls behind, a period holds less than a sample
                      "overrun": bool(f_open and busy_s > period)}
        if meter_rate >= FAST_RATE:
            rows[name]["uj_per_wakeup_from_marker"] = wakeup_energy(t, v, a, logic, w[0], w[1], p_sleep, meter_rate)
            by_phase, wakes, odd = phase_energy(t, v, a, logic, w[0], w[1], p_sleep, meter_rate)
            if by_phase:
                volts = power.assumption("supply_v")
                rows[name]["uj_by_phase_from_marker"] = by_phase
                rows[name]["uj_by_phase_estimate"] = {
                    k: us * (board.power[power._ma_key(s)] - power.sleep_ma(board)) * volts / 1000
                    for k, us, s in chip.phases(True, name == "no_gate", sent_b)}
                rows[name]["wakes_unparsed"] = f"{odd} of {wakes}"
        r["inputs"] = [int(i) for i in r["inputs"]]
    stats = {"dataset": exp.dataset.get("name_or_path", "?")}
    per_day = {k: (p[k]) * power.DAY for k in ("mix", "no_gate") if p.get(k) is not None}
    cell_j = power.assumption("cell_mah") * 3.6 * power.assumption("cell_v")
    res = {"model": str(model_dir), "dataset": stats["dataset"], "meter": kind, "meter_rate": meter_rate, "virtual": virtual,
           "board": board.name, "sleep": board.sleep, "rate": rate, "sleep_power_mw": p_sleep * 1e3,
           "gaps": [{"t": g.t, "lost": g.lost, "reason": g.reason} for g in gaps],
           "scenarios": rows, "runs": results,
           "uj_per_stopped_negative": rows.get("negatives", {}).get("uj_per_inference"),
           "uj_per_positive": rows.get("positives", {}).get("uj_per_inference"),
           "mcu_j_per_day": per_day, "battery_days_mcu_only": {k: cell_j / j for k, j in per_day.items()},
           "estimate_sources": chip.source}
    (out / "power.json").write_text(json.dumps(res, indent=2, default=float))
    _plots(out, res, t, a, logic, win, board, rate)
    (out / "report.md").write_text(_markdown(res))
    return res


SHADE = {"sleep_only": "#dddddd", "negatives": "#cfe8ff", "positives": "#ffd9c2", "mix": "#d8f5d0", "no_gate": "#f2d0f5"}


def _plots(out, res, t, a, logic, win, board, rate):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ugate import power
    t_start = min(t0 for t0, _ in win.values())
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 6))
    ax.plot(t - t_start, a * 1e3, lw=0.6, color="k")
    for name, (t0, t1) in win.items():
        ax.axvspan(t0 - t_start, t1 - t_start, color=SHADE.get(name, "#eeeeee"), label=name)
    ax.set_ylabel("current (mA)")
    ax.set_xlabel("s")
    ax.set_title(f"{res['meter']} trace, scenarios shaded")
    ax.legend(fontsize=7, ncol=5, loc="upper right")
    # a close look into the mix, the marker's high (awake) phases shaded
    t0, t1 = win.get("mix", next(iter(win.values())))
    z0 = t0 + SETTLE_S + 2 / res["meter_rate"]
    m = (t >= z0) & (t <= z0 + max(2 / rate, 20 / res["meter_rate"]))   # two periods, or 20 readings of a slow meter
    ax2.plot((t[m] - z0) * 1e3, a[m] * 1e3, lw=0.8, color="k")
    if (logic[m] >= 0).any():
        hi = (logic[m].astype(int) & 1) == 1
        ax2.fill_between((t[m] - z0) * 1e3, 0, a[m].max() * 1e3, where=hi, color="#ffd9c2", label="awake (marker high)")
        ax2.legend(fontsize=7)
    ax2.set_xlabel("ms into the mix scenario")
    ax2.set_ylabel("current (mA)")
    fig.tight_layout()
    fig.savefig(out / "trace.png", dpi=100)
    plt.close(fig)

    sc = res["scenarios"]
    names = [k for k in ("negatives", "positives", "mix", "no_gate") if k in sc]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [sc[k]["uj_per_inference"] for k in names], 0.4, label="measured")
    ax.bar(x + 0.2, [sc[k]["estimate_uj"] for k in names], 0.4, label="estimate")
    ax.set_xticks(x, names)
    ax.set_ylabel("µJ a sample above sleep")
    ax.set_title("energy a sample: gated scenarios vs no gate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "energy.png", dpi=100)
    plt.close(fig)

    if "mix" in sc and "no_gate" in sc:
        rates_ = np.logspace(-2, math.log10(max(rate * 10, 1)), 40)
        p_sleep = res["sleep_power_mw"] * 1e-3
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, lab in (("mix", "ugate (gated, the test mix)"), ("no_gate", "no gate")):
            ax.plot(rates_, (p_sleep + sc[k]["uj_per_inference"] * 1e-6 * rates_) * power.DAY, label=lab)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("samples a second")
        ax.set_ylabel("MCU energy a day (J)")
        ax.set_title("energy a day against the sample rate (measured per-sample energy)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "per_day.png", dpi=100)
        plt.close(fig)


def _markdown(res):
    lines = [f"# Power: {res['model']} ({res['dataset']})", "",
             f"Meter **{res['meter']}** ({res['meter_rate']:g} readings/s{', virtual' if res['virtual'] else ''}), board "
             f"**{res['board']}** (sleep: {res['sleep']}), {res['rate']:g} samples/s. Asleep: {res['sleep_power_mw']:.3f} mW. "
             f"{len(res['gaps'])} gaps in the trace.", "",
             "| scenario | mean mW | µJ a sample (measured) | µJ (estimate) | measured / estimate | gate open |",
             "|---|---:|---:|---:|---:|---:|"]
    for k, r in res["scenarios"].items():
        lines.append(f"| {k} | {r['mean_power_mw']:.3f} | {r['uj_per_inference']:.1f} | {r['estimate_uj']:.1f} | "
                     f"{r['ratio_to_estimate']:.3f}{' (overrun: a sent sample outlasts the period)' if r['overrun'] else ''} | "
                     f"{r['gate_open']:.1%} |")
    phased = {k: r for k, r in res["scenarios"].items() if r.get("uj_by_phase_from_marker")}
    if phased:   # a fast meter with the phase pin: each phase of a wake-up, measured beside the estimate
        lines += ["", "µJ a wake-up by phase, from the marker and phase pin (measured / estimate):", "",
                  "| scenario | " + " | ".join(WAKE_PHASES[4]) + " | wakes unparsed |", "|---|" + "---:|" * 5]
        for k, r in phased.items():
            m, e = r["uj_by_phase_from_marker"], r["uj_by_phase_estimate"]
            lines.append(f"| {k} | " + " | ".join(f"{m[p]:.1f} / {e[p]:.1f}" if p in m and p in e else "-"
                                                   for p in WAKE_PHASES[4]) + f" | {r['wakes_unparsed']} |")
    lines += ["", "MCU energy a day at this rate: " + ", ".join(f"{k} {v:.1f} J" for k, v in res["mcu_j_per_day"].items()), "",
              "![trace](trace.png)", "", "![energy](energy.png)", "", "![per day](per_day.png)", "",
              "Energy a sample is (mean power of the scenario - mean power asleep) x the period; the estimate is "
              "ugate.power's for the same samples (its gate-open fraction). Sources of the estimate:", ""]
    lines += [f"- {k}: {v}" for k, v in res["estimate_sources"].items()]
    return "\n".join(lines) + "\n"


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="exported run folder")
    parser.add_argument("--port", default="virtual", help="board's serial port, or virtual (default)")
    parser.add_argument("--meter", default="ppk2", help="KIND[:PATH]: um24c, um25c, um34c, fnb48, fnb48s, c1, fnb58, ppk2, "
                                                      "joulescope; no PATH with --port virtual: a virtual meter")
    parser.add_argument("--board", help="board definition (default: virtual, or esp32s3-devkitc-1-uart for a real port)")
    parser.add_argument("--rate", type=float, default=1.0, help="samples a second (default 1)")
    parser.add_argument("--seconds", type=float, help="each scenario's length (default: enough for the meter's rate)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS)[:],
                        help="which scenarios (sleep_only is always run first: the others are measured against it)")
    parser.add_argument("--cycles-per-mac", type=float, help="chip speed instead of the cycle model (virtual meter, estimate)")


def main(args):
    sc = ["sleep_only"] + [s for s in args.scenarios if s != "sleep_only"]
    r = measure(args.model, args.port, args.meter, args.rate, args.seconds, sc, args.board,
                cycles_per_mac=args.cycles_per_mac)
    print(_markdown(r).split("![trace]")[0].rstrip())
    print(f"wrote {Path(args.model) / 'power'}/: trace.csv, power.json, report.md, trace.png, energy.png, per_day.png")
    return 0
