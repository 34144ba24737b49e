"""Deploy: copy the device files, the shared format modules and a model blob flat into a board's root over
the raw REPL (mpremote's SerialTransport), and verify each by a sha256 computed on the board. A file whose
hash on the board already matches is skipped, so a redeploy after a retrain sends only model.blob."""
import hashlib
from pathlib import Path

from ugate import UgateError
from ugate.board import board_hashes, connect
from ugate.boards import ROOT

CHUNK = 1024  # bytes a raw-REPL write; its repr is at most 4 KB on the board's heap


def device_files():
    """The host files a board needs, copied flat: device/*.py and shared/*.py (not the package's __init__)."""
    import ugate.shared
    shared = Path(ugate.shared.__file__).parent
    return sorted((ROOT / "device").glob("*.py")) + sorted(p for p in shared.glob("*.py") if p.name != "__init__.py")


def deploy(port, model_dir=None, files=None, progress=True):
    """Copy `files` (default device_files()) and DIR/stage1.blob (as model.blob) to the board on `port`.
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
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args):
    result = deploy(args.port, args.model, progress=not args.quiet)
    copied = [n for n, s in result.items() if s == "copied"]
    print(f"{args.port}: {len(copied)} copied ({', '.join(copied) or 'none'}), "
          f"{len(result) - len(copied)} unchanged; all verified by sha256 on the board")
