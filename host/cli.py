"""`ugate` command line: a thin layer over the public functions of each stage's module.

Each subcommand lives in its own module, imported only when used (torch and tinygrad are slow to
import), and supplies two functions: add_arguments(parser) and main(args)."""
import argparse
import importlib
import sys

from ugate import UgateError, __version__

# name -> (module, one-line help), in data-path order
COMMANDS = {
    "demo":   ("ugate.demo",    "the main job: train, export, run on a virtual board with the NPU stand-in, report"),
    "train":  ("ugate.train",   "train the baseline and the gated model on a dataset, calibrate the gate"),
    "export": ("ugate.export",  "quantize stage 1 + gate to int8 and write the device blob and stage 2"),
    "boards": ("ugate.boards",  "list the board definitions in boards/"),
    "board":  ("ugate.board",   "start a virtual board, or report on a connected one"),
    "flash":  ("ugate.flash",   "flash MicroPython firmware onto an ESP32-S3 (esptool)"),
    "deploy": ("ugate.deploy",  "copy the device files and a model blob to a board, verified by hash"),
    "npu":    ("ugate.npu",     "NPU stand-in: read activations from a serial port, run stage 2 in tinygrad"),
    "run":    ("ugate.run",     "end to end: device (or virtual board) -> wire -> NPU stand-in -> report"),
    "hil":    ("ugate.hil",     "hardware-in-the-loop: compare a board bit for bit with the host reference"),
    "split":  ("ugate.split",   "train a gated model per cut point, compare accuracy, S3 time and energy per stopped negative"),
    "bringup": ("ugate.bringup", "a new board in one command: flash, REPL, deploy, board info, HIL smoke run"),
    "power":  ("ugate.power",   "energy: estimate from the datasheet and chip model, or measure with a USB meter"),
    "meter":  ("ugate.vmeter",  "virtual USB power meters (um25c, fnb58, ppk2) serving their real protocols"),
    "listen": ("ugate.listen",  "always-on audio: replay a long recording as a board's microphone, score its detections"),
}


def _usage():
    lines = [f"ugate {__version__}: gated-compression always-on models on microcontrollers", "",
             "usage: ugate COMMAND [options]   (ugate COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Quick start:  ugate train --dataset fashion-mnist --out runs/fm && ugate run --model runs/fm --port virtual"]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"ugate: error: unknown command {name!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"ugate {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return module.main(args) or 0
    except UgateError as e:
        print(f"ugate {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ugate {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
