"""`ugate bringup`: a new board from firmware to a passing HIL smoke run in one command. Each step is
printed with its result; the first failure stops the rest and says what to do about it."""
import time

from ugate import UgateError

SMOKE = 50   # HIL samples in the smoke run: a minute at most on an S3


def wait_repl(port, timeout=30):
    """After a flash the chip resets (a native USB port leaves and comes back): retry until the raw REPL
    answers. Returns the firmware's version line."""
    from ugate.board import connect
    end = time.monotonic() + timeout
    while True:
        try:
            with connect(port) as t:
                return t.eval("__import__('sys').version")
        except UgateError:
            if time.monotonic() > end:
                raise
            time.sleep(1)


def bringup(port, firmware, board, model_dir, say=print, smoke=SMOKE):
    """flash, REPL, deploy (.mpy), board info, HIL smoke run; UgateError names the step that failed."""
    from ugate import board as B
    from ugate.boards import load_board
    from ugate.deploy import deploy
    from ugate.flash import chip_ids, flash
    from ugate.hil import hil
    b = load_board(board)

    def blob_matches():
        d = B.info(port, model_dir)
        if d["blob_sha256"] != d["local_sha256"]:
            raise UgateError(f"model.blob on the board is {d['blob_sha256']}, not {d['local_sha256']}")
        return f"{d['micropython']} ({d['machine']}), heap {d['heap_free']} B free, model.blob matches"

    def smoke_run():
        rep = hil(model_dir, port, limit=smoke, deploy_first=False, progress=False, board=board)
        r = rep["runs"][0]
        if not rep["passed"]:
            raise UgateError(f"{r['mismatches']} of {r['samples']} samples differ from the host reference"
                             + (f"; {r['first_difference']}" if "first_difference" in r else ""))
        return f"{r['samples']} samples bit for bit, {r['samples'] / r['seconds']:.0f} samples/s"

    steps = [
        ("flash", (lambda: flash(port, firmware, board, progress=False) or f"{firmware} written and verified")
         if b.chip in chip_ids() else None,
         f"hold BOOT, press RESET, release BOOT and run again; or flash by hand: ugate flash --port {port} --firmware {firmware}"),
        ("wait for the REPL", lambda: wait_repl(port),
         "press RESET; on the native USB port check the board came back (ls /dev/ttyACM*); the firmware must be MicroPython's ESP32_GENERIC_S3"),
        ("deploy", lambda: ", ".join(f"{n} {s}" for n, s in deploy(port, model_dir, progress=False, mpy=True, log=say).items()),
         f"check free flash (ugate board info --port {port}); retry: ugate deploy --port {port} {model_dir}"),
        ("board info", blob_matches, f"deploy again: ugate deploy --port {port} {model_dir}"),
        ("HIL smoke run", smoke_run, f"run the full check for details: ugate hil --model {model_dir} --port {port} --board {board}"),
    ]
    for k, (name, fn, fix) in enumerate(steps, 1):
        head = f"[{k}/{len(steps)}] {name}"
        if fn is None:
            say(f"{head}: skipped ({b.name} has no firmware to flash)")
            continue
        t0 = time.perf_counter()
        try:
            result = fn()
        except UgateError as e:
            say(f"{head}: FAILED: {e}")
            raise UgateError(f"bringup stopped at step {k} ({name}): {e}. To do: {fix}") from None
        say(f"{head}: ok, {result} ({time.perf_counter() - t0:.1f} s)")


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port of the board (path or rfc2217:// / socket:// URL)")
    parser.add_argument("--firmware", required=True, help="MicroPython ESP32_GENERIC_S3 .bin (ugate flash --help)")
    parser.add_argument("--board", default="esp32s3-devkitc-1", help="board definition (ugate boards); default esp32s3-devkitc-1")
    parser.add_argument("--model", required=True, help="run folder with stage1.blob (ugate export)")
    parser.add_argument("--smoke", type=int, default=SMOKE, help=f"HIL samples in the smoke run (default {SMOKE})")


def main(args):
    bringup(args.port, args.firmware, args.board, args.model, smoke=args.smoke)
    print(f"ugate bringup: {args.port} is ready: ugate hil --model {args.model} --port {args.port} --board {args.board}")
