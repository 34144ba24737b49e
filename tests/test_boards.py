"""Board definitions: the shipped files load, and every malformed file is one UgateError naming file and field."""
import pytest

from ugate import UgateError
from ugate.boards import list_boards, load_board

GOOD = """chip = "ESP32-S3"
console = "uart"
baud = 115200
firmware_offset = 0x0
heap_budget = 262144
notes = "n"
[power]
active_idle_ma = 32.9
active_busy_ma = 51.2
light_sleep_ma = 0.24
deep_sleep_ma = 0.008
"""


def test_shipped_boards():
    names = list_boards()
    assert {"esp32s3-devkitc-1", "esp32s3-devkitc-1-uart", "esp32s3-devkitc-1-n8r8", "virtual"} <= set(names)
    for n in names:
        b = load_board(n)
        assert b.name == n and b.firmware_offset == 0 and b.power["active_busy_ma"] == 51.2
    assert load_board("esp32s3-devkitc-1").console == "usb-cdc" and load_board("esp32s3-devkitc-1-uart").console == "uart"
    assert load_board("esp32s3-devkitc-1").chip == "ESP32-S3" and load_board("virtual").heap_budget == 256 * 1024
    assert "deep sleep" in load_board("esp32s3-devkitc-1").notes
    # the duty loop's sleep policy: light sleep only where the link survives it (the UART bridge)
    assert load_board("esp32s3-devkitc-1-uart").sleep == "light" and load_board("esp32s3-devkitc-1").sleep == "idle"
    assert load_board("esp32s3-devkitc-1-uart").marker_pin >= 0


def test_sleep_and_marker_are_optional(tmp_path):
    (tmp_path / "mine.toml").write_text(GOOD)
    b = load_board(tmp_path / "mine.toml")
    assert (b.sleep, b.marker_pin) == ("idle", -1)


def test_load_by_path_and_env(tmp_path, monkeypatch):
    (tmp_path / "mine.toml").write_text(GOOD)
    assert load_board(tmp_path / "mine.toml").baud == 115200
    monkeypatch.setenv("UGATE_BOARDS", str(tmp_path))
    assert list_boards() == ["mine"] and load_board("mine").console == "uart"


@pytest.mark.parametrize("edit, msg", [
    (lambda s: s.replace('chip = "ESP32-S3"\n', ""), "missing field 'chip'"),
    (lambda s: s.replace("baud = 115200", 'baud = "fast"'), "field 'baud' must be int"),
    (lambda s: s.replace("heap_budget = 262144", "heap_budget = true"), "field 'heap_budget' must be int"),
    (lambda s: s.replace('console = "uart"', 'console = "wifi"'), "field 'console' must be one of"),
    (lambda s: s.replace("baud = 115200", "baud = 0"), "field 'baud' must be positive"),
    (lambda s: s.replace("deep_sleep_ma = 0.008", ""), "field 'power.deep_sleep_ma'"),
    (lambda s: s.replace("light_sleep_ma = 0.24", 'light_sleep_ma = "low"'), "field 'power.light_sleep_ma'"),
    (lambda s: "colour = 1\n" + s, "unknown field 'colour'"),
    (lambda s: s.replace("baud = 115200", "baud = "), "not valid TOML"),
    (lambda s: 'sleep = "deep"\n' + s, "field 'sleep' must be one of idle, light"),
    (lambda s: 'marker_pin = "GPIO4"\n' + s, "field 'marker_pin' must be int"),
])
def test_rejections(tmp_path, edit, msg):
    p = tmp_path / "bad.toml"
    p.write_text(edit(GOOD))
    with pytest.raises(UgateError, match=msg) as e:
        load_board(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_unknown_board_and_missing_dir(tmp_path, monkeypatch):
    with pytest.raises(UgateError, match="unknown board 'nope'; one of: .*virtual"):
        load_board("nope")
    monkeypatch.setenv("UGATE_BOARDS", str(tmp_path / "absent"))
    with pytest.raises(UgateError, match="no boards folder"):
        list_boards()


def test_cli_table(capsys):
    from ugate.cli import main
    assert main(["boards"]) == 0
    out = capsys.readouterr().out
    assert "esp32s3-devkitc-1-uart" in out and "51.2" in out and "usb-cdc" in out
