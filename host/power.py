"""Energy of a deployed model without a meter: `ugate power estimate --model DIR --board NAME`.

A sample's life on the duty-cycled board (device/duty.py): stage 1, the gate, then for an open gate the
compression, the sparse encoding and the transmission, then sleep until the next period. Each phase's
time on the ESP32-S3 comes from the chip model (ChipModel: ugate.cycles' count of the viper kernels'
own xtensawin machine code, or a stated cycles-per-MAC), its current from the board's datasheet power
table (boards/*.toml), the link's time from bytes x 10 bits / baud. Energy per day and battery life for
four configurations: ugate (gated: stage 1 + gate on the MCU, the open ones' sparse activations to the
NPU), no gate (stage 1 on the MCU, every sample's activations dense to the NPU), raw streaming (every
raw input over the link, the whole model on the NPU) and the whole model on the MCU (the gate kept,
stage 2 for the open ones at stage 1's cycles a MAC, nothing sent). Every assumed figure is
in ASSUMPTIONS with its source, printed with the estimate. The virtual meters (ugate.vmeter) draw
their current from the same ChipModel and power table, so `ugate power measure` checks the bookkeeping
of the two against each other.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ugate import UgateError

VOLTS = 3.3
MHZ = 240
DAY = 86400
COUNT_SAMPLES = 8   # test samples the cycle model counts on: each conv on the path the chip takes for this data

# name -> (value, unit, source); overridable on the command line where a flag says so
ASSUMPTIONS = {
    "supply_v": (VOLTS, "V", "boards/*.toml give the ESP32-S3 datasheet currents at 3.3 V (chip only: no "
                              "regulator, LED or USB bridge)"),
    "cpu_mhz": (MHZ, "MHz", "MicroPython's ESP32_GENERIC_S3 default CPU clock"),
    "cycles": (None, "", "stage 1, gate and compression: ugate.cycles, the viper kernels' own xtensawin machine "
                         "code (mpy-cross) with the LX7 timing rules in ugate.cycles.RULES"),
    "fallback_cycles_per_mac": (12.0, "cycles/MAC", "used only with --cycles-per-mac or when the cycle model cannot "
                                "run (no objdump): the order of ugate.cycles' own figure for the 3x3 int8 conv "
                                "kernel (bench/device_speed.py --chip esp32s3)"),
    "encode_cycles_per_element": (1000.0, "cycles/element", "sparse encoding is MicroPython bytecode, outside "
                                  "the cycle model: ~10 bytecodes an element at ~100 cycles each (an assumption; "
                                  "ugate run --port on a real board measures it)"),
    "bits_per_byte": (10, "bits", "UART 8N1: start, 8 data, stop"),
    "transmit_state": ("active_idle_ma", "", "the core waits awake for the UART and the ACK (datasheet idle current "
                                             "at 240 MHz); the UART's own current is inside the chip figure"),
    "npu_pj_per_mac": (5.0, "pJ/MAC", "an edge NPU's system energy a MAC, weights fetched included (int8 MAC "
                                      "0.2-0.3 pJ plus SRAM reads ~5 pJ/8 KB access, Horowitz ISSCC 2014, 45 nm); "
                                      "override with --npu-uj"),
    "npu_wake_uj": (50.0, "µJ", "an NPU's wake-up and interrupt per inference (assumed: ~1 ms at 50 mW)"),
    "cell_mah": (1000.0, "mAh", "a 1000 mAh LiPo cell"),
    "cell_v": (3.7, "V", "LiPo nominal; the regulator to 3.3 V taken as lossless"),
}


def assumption(name):
    return ASSUMPTIONS[name][0]


@dataclass
class ChipModel:
    """Phase times on the chip (µs) for one sample, and the link's bytes; `source` says where each
    came from."""
    stage1_us: float
    gate_us: float
    compress_us: float
    encode_us: float         # sparse encoding of the activations (the dense copy costs the same loop)
    stage2_us: float         # the rest of the model on the MCU (the whole-model configuration)
    baud: int
    n_in: int
    n_act: int
    macs: tuple = (0, 0)     # stage 1 + gate, stage 2
    source: dict = field(default_factory=dict)

    def link_us(self, nbytes):
        return nbytes * assumption("bits_per_byte") / self.baud * 1e6

    def phases(self, opened, nogate=False, nbytes=0):
        """[(phase, µs, state)] of one sample: state "busy" (a core computing) or "wait" (awake, waiting
        on the link). nbytes: bytes crossing the link for it, both directions."""
        p = [("stage1", self.stage1_us, "busy")]
        if not nogate:
            p.append(("gate", self.gate_us, "busy"))
        if opened or nogate:
            p += [("encode", self.compress_us + self.encode_us, "busy"), ("transmit", self.link_us(nbytes), "wait")]
        return p


def stage2_macs(cfg, act_shape):
    """MACs of stage 2 (the blocks after the cut and the classifier), from its config."""
    (c, h, w), macs = act_shape, 0
    for i in range(cfg["split"], len(cfg["channels"])):
        co, s = cfg["channels"][i], cfg["strides"][i]
        h, w = -(-h // s), -(-w // s)
        macs += co * c * 9 * h * w
        c = co
        if cfg["pools"][i]:
            h, w = h // 2, w // 2
    return macs + c * h * w * cfg["hidden"] + cfg["hidden"] * cfg["n_classes"]


def chip_model(model_dir, board, cycles_per_mac=None, mhz=None, encode_cpe=None, inputs=None):
    """The ChipModel of an exported run folder on `board` (a ugate.boards.Board). inputs: a few int8
    test samples, so the cycle model counts each conv on the path the chip takes for this data."""
    from ugate import cycles, reference
    from ugate.npu import read_stage2
    model_dir = Path(model_dir)
    if not (model_dir / "stage1.blob").is_file():
        raise UgateError(f"no {model_dir / 'stage1.blob'}: run ugate export {model_dir} first")
    mhz = mhz or assumption("cpu_mhz")
    cfg, _, act_shape, _ = read_stage2(model_dir / "stage2.npz")
    _, meta = reference.load(model_dir / "stage1.blob")
    src = {}
    rows = None
    if cycles_per_mac is None:
        try:
            rows = cycles.stage1_cycles(model_dir, inputs=inputs)
            src["phases"] = ASSUMPTIONS["cycles"][2]
        except (UgateError, OSError) as e:
            cycles_per_mac = assumption("fallback_cycles_per_mac")
            src["phases"] = f"{cycles_per_mac:g} cycles/MAC (the cycle model failed: {e}): {ASSUMPTIONS['fallback_cycles_per_mac'][2]}"
    if rows is None:
        from ugate.cycles import stage1_cycles
        try:
            rows = [dict(r, cycles=r["macs"] * cycles_per_mac) for r in stage1_cycles(model_dir)]
        except (UgateError, OSError):
            raise UgateError("the MAC count needs the MicroPython counting run (ugate.cycles); is micropython installed?")
        src.setdefault("phases", f"{cycles_per_mac:g} cycles/MAC, given")
    per = [sum(r["cycles"] for r in rows if r["phase"] == ph) / mhz for ph in (0, 1, 2)]
    cpm = sum(r["cycles"] for r in rows if r["macs"]) / max(sum(r["macs"] for r in rows), 1)
    n_act = int(np.prod(act_shape))
    n_in = int(np.prod(meta["bufs"][0][1:4]))
    epe = encode_cpe or assumption("encode_cycles_per_element")
    src["encode"] = f"{epe:g} cycles an element x {n_act}: " + ASSUMPTIONS["encode_cycles_per_element"][2]
    src["stage2_on_mcu"] = f"{cpm:.2f} cycles/MAC (stage 1's own mean) x {stage2_macs(cfg, act_shape)} MACs"
    src["link"] = f"{board.baud} baud, {assumption('bits_per_byte')} bits a byte (UART 8N1)"
    return ChipModel(stage1_us=per[0], gate_us=per[1], compress_us=per[2], encode_us=n_act * epe / mhz,
                     stage2_us=stage2_macs(cfg, act_shape) * cpm / mhz, baud=board.baud, n_in=n_in, n_act=n_act,
                     macs=(sum(r["macs"] for r in rows), stage2_macs(cfg, act_shape)), source=src)


def frame_bytes(payload_len):
    """Bytes on the line for one frame of this payload (a mean may be fractional), with its IDLE byte
    (shared/wire.py: header, CRC, COBS's code bytes, the delimiter)."""
    from ugate.shared import wire
    n = wire.HEADER + payload_len + wire.CRC
    return n + 1 + n // 254 + 1 + 1


def sample_bytes(act_bytes):
    """Bytes both ways for one sent sample in stream mode: ACTIVATIONS and RESULT out, an ACK for each back."""
    from ugate.shared import wire
    return frame_bytes(2 + act_bytes) + frame_bytes(wire.RESULT_SIZE) + 2 * frame_bytes(2)


def model_stats(model_dir, limit=2000):
    """From the host integer reference on (a seeded subset of) the test set: gate logits and labels,
    the calibrated threshold, mean sparse bytes of an opened sample."""
    from ugate.run import Experiment
    from ugate.shared import sparse
    exp = Experiment(model_dir, limit, progress=False)
    ref = exp.ref
    opened = ref["open"]
    out = bytearray(sparse.size(ref["act"][0].size))
    enc = [sparse.encode(a.tobytes(), a.size, out) for a in ref["act"][opened]] or [sparse.size(ref["act"][0].size)]
    return {"logit": np.asarray(ref["logit"]), "y": np.asarray(exp.y), "threshold": int(exp.meta["thr"]),
            "sparse_bytes": float(np.mean(enc)), "xq": exp.xq, "dataset": exp.dataset.get("name_or_path", "?")}


def rates(stats, threshold=None):
    """(positive fraction, recall, negatives stopped) at threshold (default the calibrated one)."""
    thr = stats["threshold"] if threshold is None else threshold
    y, lg = stats["y"], stats["logit"]
    pos = y > 0
    is_open = lg >= thr
    return float(pos.mean()), float(is_open[pos].mean()) if pos.any() else 1.0, float((~is_open[~pos]).mean()) if (~pos).any() else 1.0


def sample_uj(phases, power, volts=None):
    """µJ of the phases: sum of current x time x V."""
    volts = volts or assumption("supply_v")
    return sum(us * power[_ma_key(state)] for _, us, state in phases) * volts / 1000


def _ma_key(state):
    return "active_busy_ma" if state == "busy" else "active_idle_ma"


def sleep_ma(board):
    return board.power["light_sleep_ma" if board.sleep == "light" else "active_idle_ma"]


def period_uj(phases, board, period_s):
    """µJ of one period: the phases at their currents, the rest of the period asleep (by the board's
    policy). A period shorter than the work is an overrun: the work alone."""
    volts = assumption("supply_v")
    busy = sum(us for _, us, _ in phases)
    rest = max(period_s * 1e6 - busy, 0.0)
    return sample_uj(phases, board.power) + rest * sleep_ma(board) * volts / 1000


def inference_uj(phases, board):
    """µJ a sample costs above sleeping through the same time: what `power measure` derives by difference."""
    volts = assumption("supply_v")
    return sum(us * (board.power[_ma_key(s)] - sleep_ma(board)) for _, us, s in phases) * volts / 1000


def npu_uj(chip, stage1_too=False, npu_uj_override=None):
    """µJ of one NPU inference: stage 2 (and stage 1 too, for raw streaming) at the NPU's pJ/MAC."""
    if npu_uj_override is not None:
        return npu_uj_override
    macs = chip.macs[1] + (chip.macs[0] if stage1_too else 0)
    return macs * assumption("npu_pj_per_mac") * 1e-6 + assumption("npu_wake_uj")


def configurations(chip, board, stats, rate, positive_rate=None, threshold=None, npu_uj_override=None):
    """Energy a day (J, MCU and NPU) and battery life (days) of the four configurations at `rate`
    samples/s. positive_rate: the fraction of samples that are positives (default the test set's)."""
    p_pos, recall, stopped = rates(stats, threshold)
    p = p_pos if positive_rate is None else positive_rate
    p_open = p * recall + (1 - p) * (1 - stopped)
    period = 1 / rate
    sparse_b = sample_bytes(stats["sparse_bytes"])
    dense_b = sample_bytes(5 + chip.n_act)
    raw_b = frame_bytes(chip.n_in) + frame_bytes(2)
    e_npu = npu_uj(chip, npu_uj_override=npu_uj_override)
    e_npu_all = npu_uj(chip, True, npu_uj_override)
    mcu = {
        "ugate": (1 - p_open) * period_uj(chip.phases(False), board, period)
        + p_open * period_uj(chip.phases(True, nbytes=sparse_b), board, period),
        "no_gate": period_uj(chip.phases(True, nogate=True, nbytes=dense_b), board, period),
        "raw_streaming": period_uj([("transmit", chip.link_us(raw_b), "wait")], board, period),
        "whole_model_on_mcu": (1 - p_open) * period_uj(chip.phases(False), board, period)
        + p_open * period_uj(chip.phases(False) + [("stage2", chip.stage2_us, "busy")], board, period),
    }
    npu = {"ugate": p_open * e_npu, "no_gate": e_npu, "raw_streaming": e_npu_all, "whole_model_on_mcu": 0.0}
    cell_j = assumption("cell_mah") * 3.6 * assumption("cell_v")
    out = {}
    for k in mcu:
        j_day = (mcu[k] + npu[k]) * 1e-6 * rate * DAY
        out[k] = {"mcu_uj_per_sample": mcu[k], "npu_uj_per_sample": npu[k], "j_per_day": j_day,
                  "mcu_j_per_day": mcu[k] * 1e-6 * rate * DAY, "battery_days": cell_j / j_day}
    busy_s = sum(us for _, us, _ in chip.phases(True, True, dense_b)) * 1e-6
    return {"rate": rate, "positive_rate": p, "gate_recall": recall, "negatives_stopped": stopped, "gate_open": p_open,
            "overrun": busy_s > period, "configs": out}


def estimate(model_dir, board, rate=1.0, positive_rate=None, cycles_per_mac=None, npu_uj_override=None, stats=None,
             chip=None):
    """The estimate as a dict (also the source of the figures `power measure` is checked against)."""
    stats = stats or model_stats(model_dir)
    chip = chip or chip_model(model_dir, board, cycles_per_mac, inputs=stats["xq"][:COUNT_SAMPLES])
    sparse_b = sample_bytes(stats["sparse_bytes"])
    per_inf = {"negative_stopped": inference_uj(chip.phases(False), board),
               "positive_sent": inference_uj(chip.phases(True, nbytes=sparse_b), board),
               "no_gate": inference_uj(chip.phases(True, True, sample_bytes(5 + chip.n_act)), board)}
    c = configurations(chip, board, stats, rate, positive_rate, None, npu_uj_override)
    return {"model": str(model_dir), "dataset": stats["dataset"], "board": board.name, "sleep": board.sleep,
            "phases_us": {"stage1": chip.stage1_us, "gate": chip.gate_us, "compress": chip.compress_us,
                          "encode": chip.encode_us, "stage2_on_mcu": chip.stage2_us},
            "sparse_bytes": stats["sparse_bytes"], "uj_per_inference": per_inf, **c,
            "sources": chip.source, "assumptions": {k: {"value": v, "unit": u, "source": s} for k, (v, u, s) in ASSUMPTIONS.items()},
            "power_table_ma": dict(board.power, source=f"{board.path.name} [power] (ESP32-S3 datasheet, current consumption)")}


def sweep(chip, board, stats, rate, path, positive_rate=None, npu_uj_override=None):
    """Energy a day against missed positives a day over gate thresholds; the calibrated point marked.
    Writes the plot to path; returns the points."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lg = stats["logit"]
    thrs = np.unique(np.quantile(lg, np.linspace(0, 1, 60)).astype(int))
    pts = []
    for thr in list(thrs) + [stats["threshold"]]:
        c = configurations(chip, board, stats, rate, positive_rate, int(thr), npu_uj_override)
        missed = c["positive_rate"] * (1 - c["gate_recall"]) * rate * DAY
        pts.append((int(thr), missed, c["configs"]["ugate"]["j_per_day"]))
    cal = pts.pop()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]
    ax.plot(xs, ys, ".-", label="gate threshold sweep")
    ax.plot([cal[1]], [cal[2]], "r*", ms=14, label=f"calibrated (threshold {cal[0]})")
    nog = configurations(chip, board, stats, rate, positive_rate, None, npu_uj_override)["configs"]["no_gate"]["j_per_day"]
    ax.axhline(nog, color="gray", ls="--", label="no gate")
    ax.set_xscale("symlog")
    ax.set_xlabel("missed positives per day")
    ax.set_ylabel("energy per day (J, MCU + NPU)")
    ax.set_title(f"{stats['dataset']} at {rate:g} samples/s on {board.name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"points": pts, "calibrated": cal}


def headline(e):
    c = e["configs"]
    g, n = c["ugate"]["j_per_day"], c["no_gate"]["j_per_day"]
    return (f"energy on {e['board']}: {g:.0f} J/day gated vs {n:.0f} J/day with no gate at {e['rate']:g} samples/s "
            f"({1 - g / n:.0%} saved; battery {c['ugate']['battery_days']:.0f} vs {c['no_gate']['battery_days']:.0f} days "
            f"on {assumption('cell_mah'):.0f} mAh)")


def table(e):
    lines = [f"ugate power estimate: {e['model']} ({e['dataset']}) on {e['board']} (sleep: {e['sleep']}), {e['rate']:g} samples/s, "
             f"positives {e['positive_rate']:.1%}, gate open {e['gate_open']:.1%} (recall {e['gate_recall']:.2%}, "
             f"negatives stopped {e['negatives_stopped']:.2%})",
             "  phase times on the S3 (µs): " + ", ".join(f"{k} {v:.0f}" for k, v in e["phases_us"].items()),
             "  energy a sample above sleep (µJ): " + ", ".join(f"{k} {v:.1f}" for k, v in e["uj_per_inference"].items()),
             f"  {'configuration':<22} {'MCU µJ/sample':>14} {'NPU µJ/sample':>14} {'J/day':>10} {'battery days':>13}"]
    for k, v in e["configs"].items():
        lines.append(f"  {k:<22} {v['mcu_uj_per_sample']:>14.1f} {v['npu_uj_per_sample']:>14.1f} {v['j_per_day']:>10.1f} {v['battery_days']:>13.1f}")
    if e["overrun"]:
        lines.append(f"  warning: at {e['rate']:g} samples/s a no-gate sample's work is longer than the period (overrun)")
    lines.append("  " + headline(e))
    lines.append("  assumptions (value, source):")
    for k, v in e["sources"].items():
        lines.append(f"    {k}: {v}")
    lines.append(f"    power table: {', '.join(f'{k} {v}' for k, v in e['power_table_ma'].items() if k != 'source')} mA "
                 f"({e['power_table_ma']['source']})")
    for k, a in e["assumptions"].items():
        if a["value"] is not None:
            lines.append(f"    {k} = {a['value']} {a['unit']}: {a['source']}")
    return "\n".join(lines)


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", required=True)
    e = sub.add_parser("estimate", help="energy a day and battery life from the datasheet and the chip model, no meter")
    e.add_argument("--model", required=True, help="exported run folder")
    e.add_argument("--board", default="esp32s3-devkitc-1-uart", help="board definition (default esp32s3-devkitc-1-uart)")
    e.add_argument("--rate", type=float, default=1.0, help="samples a second (default 1)")
    e.add_argument("--positive-rate", type=float, help="fraction of samples that are positives (default: the test set's)")
    e.add_argument("--cycles-per-mac", type=float, help="chip speed instead of the cycle model (ugate.cycles)")
    e.add_argument("--npu-uj", type=float, help="NPU energy an inference, µJ (default from its MACs, see assumptions)")
    e.add_argument("--cell-mah", type=float, help=f"battery (default {assumption('cell_mah'):g} mAh)")
    m = sub.add_parser("measure", help="run scenarios on a board while a USB meter records, write DIR/power/")
    from ugate import measure
    measure.add_arguments(m)


def main(args):
    from ugate.boards import load_board
    if args.action == "measure":
        from ugate import measure
        return measure.main(args)
    if args.rate <= 0:
        raise UgateError(f"--rate must be positive, not {args.rate}")
    if args.positive_rate is not None and not 0 <= args.positive_rate <= 1:
        raise UgateError(f"--positive-rate is a fraction in [0, 1], not {args.positive_rate}")
    if args.cell_mah:
        ASSUMPTIONS["cell_mah"] = (args.cell_mah, "mAh", "given (--cell-mah)")
    board = load_board(args.board)
    stats = model_stats(args.model)
    chip = chip_model(args.model, board, args.cycles_per_mac, inputs=stats["xq"][:COUNT_SAMPLES])
    e = estimate(args.model, board, args.rate, args.positive_rate, npu_uj_override=args.npu_uj, stats=stats, chip=chip)
    out = Path(args.model) / "power"
    out.mkdir(exist_ok=True)
    e["sweep"] = sweep(chip, board, stats, args.rate, out / "sweep.png", args.positive_rate, args.npu_uj)
    (out / "estimate.json").write_text(json.dumps(e, indent=2, default=float))
    print(table(e))
    print(f"wrote {out / 'estimate.json'}, {out / 'sweep.png'}")
    return 0
