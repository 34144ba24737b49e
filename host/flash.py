"""Flash MicroPython onto an ESP32-S3 through esptool 5's Python API: detect the chip, load the stub,
attach the flash, optionally erase, write at the board's firmware offset, verify, hard reset.
Everything that can be checked before writing is checked first, so a refusal writes nothing.
ugate never downloads firmware: the user supplies MicroPython's ESP32_GENERIC_S3 image."""
import struct
from pathlib import Path

from ugate import UgateError
from ugate.board import check_port
from ugate.boards import load_board

DOWNLOAD = "https://micropython.org/download/ESP32_GENERIC_S3/"
IMAGE_MAGIC = 0xE9
FAST_BAUD = 460800  # for UART bridges; the native USB port ignores baud


def chip_ids():
    """Chip name -> the chip id an image's extended header carries, from esptool's own table."""
    from esptool.targets import CHIP_DEFS
    return {c.CHIP_NAME: c.IMAGE_CHIP_ID for c in CHIP_DEFS.values() if hasattr(c, "IMAGE_CHIP_ID")}


def check_image(firmware, board):
    """The firmware's bytes, after checking it is an ESP image (magic 0xE9) built for the board's chip."""
    p = Path(firmware)
    if not p.is_file():
        raise UgateError(f"no firmware file {p}: download MicroPython's ESP32_GENERIC_S3 .bin from {DOWNLOAD} "
                         f"(ugate does not download firmware)")
    data = p.read_bytes()
    if len(data) < 24 or data[0] != IMAGE_MAGIC:
        raise UgateError(f"{p} is not an ESP firmware image (first byte {data[:1].hex() or 'missing'}, want e9): "
                         f"use the .bin (not .uf2/.elf/.app-bin) from {DOWNLOAD}")
    if board.firmware_offset == 0:  # a bootloader image: its extended header names the chip
        chip_id, = struct.unpack_from("<H", data, 12)
        ids = chip_ids()
        if chip_id != ids[board.chip]:
            built = next((k for k, v in ids.items() if v == chip_id), f"chip id {chip_id}")
            raise UgateError(f"{p} is built for {built}, but board {board.name} is {board.chip}: use {DOWNLOAD}")
    return data


def flash(port, firmware, board="esp32s3-devkitc-1", erase=False, progress=True):
    b = load_board(board)
    if b.chip not in chip_ids():
        raise UgateError(f"board {b.name} ({b.chip}) has no firmware to flash: pick an ESP32 board (ugate boards)")
    data = check_image(firmware, b)
    check_port(port)
    from esptool import cmds
    from esptool.util import FatalError
    try:
        esp = cmds.detect_chip(port)
    except FatalError as e:
        raise UgateError(f"no ESP bootloader answers on {port}: hold BOOT, press RESET, release BOOT and retry "
                         f"({str(e).strip().splitlines()[0]})") from None
    try:
        if esp.CHIP_NAME != b.chip:
            raise UgateError(f"{port} has an {esp.CHIP_NAME}, but board {b.name} is {b.chip}: nothing written; pick the right --board or port")
        esp = cmds.run_stub(esp)
        if b.console == "uart":
            esp.change_baud(FAST_BAUD)
        cmds.attach_flash(esp)
        if erase:
            cmds.erase_flash(esp)
        cmds.write_flash(esp, [(b.firmware_offset, data)], no_progress=not progress)
        cmds.verify_flash(esp, [(b.firmware_offset, data)])
        cmds.reset_chip(esp, "hard-reset")
    except FatalError as e:
        raise UgateError(f"flashing {port} failed: {e}") from None
    finally:
        esp._port.close()


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port of the board in bootloader mode, e.g. /dev/ttyACM0")
    parser.add_argument("--firmware", required=True, help=f"MicroPython ESP32_GENERIC_S3 .bin (from {DOWNLOAD})")
    parser.add_argument("--board", default="esp32s3-devkitc-1", help="board definition (ugate boards); default esp32s3-devkitc-1")
    parser.add_argument("--erase", action="store_true", help="erase the whole flash first (also wipes the board's files)")


def main(args):
    flash(args.port, args.firmware, args.board, args.erase)
    print(f"{args.port}: flashed {args.firmware} and reset; next: ugate deploy --port {args.port} RUN_DIR")
