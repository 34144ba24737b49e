"""ugate bringup: esptool faked at its boundary (as in test_flash), everything after it on a virtual board."""
import pytest
from test_flash import fake, image  # noqa: F401  (the esptool fake fixture)

from ugate import UgateError
from ugate.board import VirtualBoard
from ugate.bringup import bringup
from ugate.cli import main as cli

pytestmark = pytest.mark.board


def test_every_step_on_a_virtual_board(digits_run, tmp_path, capsys):
    with VirtualBoard(tmp_path / "fs") as vb:
        port = vb.port
        assert cli(["bringup", "--port", port, "--firmware", "unused.bin", "--board", "virtual",
                    "--model", str(digits_run), "--smoke", "20"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[1/5] flash: skipped (virtual has no firmware to flash)"
    assert [line.split(":")[0] for line in out[1:5]] == ["[2/5] wait for the REPL", "[3/5] deploy", "[4/5] board info", "[5/5] HIL smoke run"]
    assert all(": ok, " in line for line in out[1:5]) and "runtime.mpy copied" in out[2] and "20 samples bit for bit" in out[4]
    assert out[5].startswith(f"ugate bringup: {port} is ready")


def test_flashes_then_stops_at_the_first_failure_with_what_to_do(digits_run, tmp_path, fake):
    fw = tmp_path / "ESP32_GENERIC_S3.bin"
    fw.write_bytes(image())
    said = []
    with VirtualBoard(tmp_path / "fs") as vb, pytest.raises(UgateError) as e:
        bringup(vb.port, fw, "esp32s3-devkitc-1", digits_run, say=said.append, smoke=5)
    assert [c[0] for c in fake.calls][-3:] == ["write_flash", "verify_flash", "reset_chip"]
    assert said[0].startswith("[1/5] flash: ok") and said[3].startswith("[4/5] board info: ok")
    assert said[4].startswith("[5/5] HIL smoke run: FAILED") and len(said) == 5   # a virtual board is no ESP32-S3
    assert str(e.value).startswith("bringup stopped at step 5 (HIL smoke run):") and "To do: run the full check" in str(e.value)


def test_a_flash_failure_stops_before_anything_else(digits_run, tmp_path, fake):
    said = []
    with VirtualBoard(tmp_path / "fs") as vb, pytest.raises(UgateError, match=r"step 1 \(flash\): no firmware file .*To do: hold BOOT"):
        bringup(vb.port, tmp_path / "missing.bin", "esp32s3-devkitc-1", digits_run, say=said.append)
    assert len(said) == 1 and fake.calls == []
