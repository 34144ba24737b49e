"""Flashing through esptool's API, with esptool faked at its boundary: every refusal writes nothing."""
import fcntl
import os
import pty
import struct

import pytest
from esptool import cmds
from esptool.util import FatalError

from ugate import UgateError
from ugate.flash import flash


def image(chip_id=9, size=4096):
    """An ESP bootloader image header: magic 0xE9, then the extended header's chip id at byte 12."""
    h = bytearray(size)
    h[0], h[1] = 0xE9, 3
    struct.pack_into("<H", h, 12, chip_id)
    return bytes(h)


class FakeESP:
    def __init__(self, name):
        self.CHIP_NAME, self.closed, self.bauds = name, False, []
        self._port = self

    def close(self):
        self.closed = True

    def change_baud(self, b):
        self.bauds.append(b)


@pytest.fixture
def port():
    m, s = pty.openpty()
    yield os.ttyname(s)
    os.close(m), os.close(s)


@pytest.fixture
def fake(monkeypatch):
    """esptool.cmds with every call recorded; fake.chip is what detect_chip finds."""
    class Fake:
        chip, calls, esp = "ESP32-S3", [], None
    f = Fake()

    def detect_chip(port, *a, **k):
        f.calls.append(("detect_chip", port))
        f.esp = FakeESP(f.chip)
        return f.esp

    def record(name):
        def call(esp, *a, **k):
            f.calls.append((name, *a, *sorted(k.items())))
            return esp
        return call
    monkeypatch.setattr(cmds, "detect_chip", detect_chip)
    for n in ("run_stub", "attach_flash", "erase_flash", "write_flash", "verify_flash", "reset_chip"):
        monkeypatch.setattr(cmds, n, record(n))
    return f


def names(fake):
    return [c[0] for c in fake.calls]


def test_happy_path(tmp_path, port, fake):
    fw = tmp_path / "ESP32_GENERIC_S3.bin"
    fw.write_bytes(image())
    flash(port, fw, progress=False)
    assert names(fake) == ["detect_chip", "run_stub", "attach_flash", "write_flash", "verify_flash", "reset_chip"]
    write = fake.calls[3]
    assert write[1] == [(0x0, image())] and ("no_progress", True) in write
    assert fake.calls[5][1] == "hard-reset" and fake.esp.closed and fake.esp.bauds == []


def test_erase_and_uart_board(tmp_path, port, fake):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(image())
    flash(port, fw, board="esp32s3-devkitc-1-uart", erase=True, progress=False)
    assert names(fake) == ["detect_chip", "run_stub", "attach_flash", "erase_flash", "write_flash", "verify_flash", "reset_chip"]
    assert fake.esp.bauds == [460800]


def test_wrong_chip_on_port_writes_nothing(tmp_path, port, fake):
    fake.chip = "ESP32-C3"
    fw = tmp_path / "fw.bin"
    fw.write_bytes(image())
    with pytest.raises(UgateError, match=f"{port} has an ESP32-C3, but board esp32s3-devkitc-1 is ESP32-S3: nothing written"):
        flash(port, fw, erase=True, progress=False)
    assert names(fake) == ["detect_chip"] and fake.esp.closed


@pytest.mark.parametrize("content, msg", [
    (b"", "not an ESP firmware image"),
    (b"\x7fELF" + bytes(100), "not an ESP firmware image .first byte 7f"),
    (image(chip_id=0), "built for ESP32, but board esp32s3-devkitc-1 is ESP32-S3"),
    (image(chip_id=5), "built for ESP32-C3"),
])
def test_bad_images_refused_before_the_port(tmp_path, fake, content, msg):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(content)
    with pytest.raises(UgateError, match=msg):
        flash("/dev/ttyNOPE9", fw, progress=False)
    assert fake.calls == []


def test_missing_firmware_says_where_to_get_it(fake):
    with pytest.raises(UgateError, match="ESP32_GENERIC_S3.*ugate does not download firmware") as e:
        flash("/dev/ttyNOPE9", "/nonexistent/fw.bin")
    assert "micropython.org/download/ESP32_GENERIC_S3" in str(e.value) and fake.calls == []


def test_port_problems(tmp_path, port, fake, monkeypatch):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(image())
    with pytest.raises(UgateError, match="no such port /dev/ttyNOPE9"):
        flash("/dev/ttyNOPE9", fw)
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(UgateError, match="is busy"):
            flash(port, fw)
    finally:
        os.close(fd)
    assert fake.calls == []

    def silent(port, *a, **k):
        raise FatalError("Failed to connect to ESP32-S3: No serial data received.")
    monkeypatch.setattr(cmds, "detect_chip", silent)
    with pytest.raises(UgateError, match="no ESP bootloader answers on .*hold BOOT"):
        flash(port, fw)


def test_virtual_board_has_nothing_to_flash(tmp_path, fake):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(image())
    with pytest.raises(UgateError, match="board virtual .* has no firmware to flash"):
        flash("/dev/null", fw, board="virtual")


def test_cli_one_line_error(tmp_path, capsys, fake):
    from ugate.cli import main
    assert main(["flash", "--port", "/dev/ttyNOPE9", "--firmware", str(tmp_path / "x.bin")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ugate flash: error: no firmware file") and err.count("\n") == 1
    fw = tmp_path / "fw.bin"
    fw.write_bytes(image())
    assert main(["flash", "--port", "/dev/ttyNOPE9", "--firmware", str(fw), "--board", "nope"]) == 2
    assert "unknown board 'nope'" in capsys.readouterr().err
