"""Board definitions: one TOML file a board in boards/ (chip, console, baud, firmware offset, heap budget,
power table). `load_board(name_or_path)` returns a checked Board; `ugate boards` lists them.

boards/ sits at the repository root beside host/ (the package is installed editable); UGATE_BOARDS names
another folder."""
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ugate import UgateError

ROOT = Path(__file__).resolve().parent.parent
CONSOLES = ("usb-cdc", "uart", "pty")
POWER_KEYS = ("active_idle_ma", "active_busy_ma", "light_sleep_ma", "deep_sleep_ma")
# field -> accepted types; every field is required
FIELDS = {"chip": str, "console": str, "baud": int, "firmware_offset": int, "heap_budget": int,
          "power": dict, "notes": str}
# optional fields -> (type, default): the duty-cycled stream's sleep policy between samples ("light":
# machine.lightsleep, for boards whose link survives it; "idle": stay awake), its marker GPIO (high while
# awake) and phase GPIO (toggled at each phase boundary) for a meter's logic inputs (-1: none); [mic]: an
# I2S microphone's GPIOs sck, ws, sd (+ shift) for ugate listen --mic
OPTIONAL = {"sleep": (str, "idle"), "marker_pin": (int, -1), "phase_pin": (int, -1), "mic": (dict, None)}
SLEEPS = ("idle", "light")


@dataclass(frozen=True)
class Board:
    name: str
    chip: str               # "ESP32-S3", as esptool names it; "virtual" for the unix port
    console: str            # "usb-cdc" | "uart" | "pty"
    baud: int
    firmware_offset: int
    heap_budget: int        # bytes
    power: dict             # state -> mA at 3.3 V, keys POWER_KEYS
    notes: str
    path: Path
    sleep: str = "idle"
    marker_pin: int = -1
    phase_pin: int = -1
    mic: dict = None        # {"sck", "ws", "sd", "shift"?} or None


def boards_dir():
    d = Path(os.environ.get("UGATE_BOARDS") or ROOT / "boards")
    if not d.is_dir():
        raise UgateError(f"no boards folder at {d}: set UGATE_BOARDS to the folder of board .toml files")
    return d


def list_boards():
    return sorted(p.stem for p in boards_dir().glob("*.toml"))


def load_board(name_or_path):
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = boards_dir() / f"{name_or_path}.toml"
        if not p.is_file():
            raise UgateError(f"unknown board {name_or_path!r}; one of: {', '.join(list_boards())} (or a path to a .toml)")
    try:
        d = tomllib.loads(p.read_text())
    except OSError as e:
        raise UgateError(f"cannot read board file {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise UgateError(f"{p}: not valid TOML: {e}") from None
    for k, t in FIELDS.items():
        if k not in d:
            raise UgateError(f"{p}: missing field {k!r}")
        if not isinstance(d[k], t) or isinstance(d[k], bool):
            raise UgateError(f"{p}: field {k!r} must be {t.__name__}, got {type(d[k]).__name__} {d[k]!r}")
    for k, (t, _) in OPTIONAL.items():
        if k in d and (not isinstance(d[k], t) or isinstance(d[k], bool)):
            raise UgateError(f"{p}: field {k!r} must be {t.__name__}, got {type(d[k]).__name__} {d[k]!r}")
    if d.get("sleep", "idle") not in SLEEPS:
        raise UgateError(f"{p}: field 'sleep' must be one of {', '.join(SLEEPS)}, got {d['sleep']!r}")
    if unknown := set(d) - set(FIELDS) - set(OPTIONAL):
        raise UgateError(f"{p}: unknown field {sorted(unknown)[0]!r}; fields: {', '.join([*FIELDS, *OPTIONAL])}")
    mic = d.get("mic", {"sck": 0, "ws": 0, "sd": 0})
    if not {"sck", "ws", "sd"} <= set(mic) or any(
            k not in ("sck", "ws", "sd", "shift") or not isinstance(v, int) or isinstance(v, bool) for k, v in mic.items()):
        raise UgateError(f"{p}: [mic] needs GPIO numbers sck, ws, sd (and optionally shift), got {mic!r}")
    if d["console"] not in CONSOLES:
        raise UgateError(f"{p}: field 'console' must be one of {', '.join(CONSOLES)}, got {d['console']!r}")
    for k in ("baud", "heap_budget"):
        if d[k] <= 0:
            raise UgateError(f"{p}: field {k!r} must be positive, got {d[k]}")
    if d["firmware_offset"] < 0:
        raise UgateError(f"{p}: field 'firmware_offset' must be >= 0, got {d['firmware_offset']}")
    for k in POWER_KEYS:
        v = d["power"].get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise UgateError(f"{p}: field 'power.{k}' must be a number of mA >= 0, got {v!r}")
    return Board(name=p.stem, path=p, **d)


def add_arguments(parser):
    parser.add_argument("--dir", help="folder of board .toml files (default: boards/ in the repository, or $UGATE_BOARDS)")


def main(args):
    if args.dir:
        os.environ["UGATE_BOARDS"] = args.dir
    rows = [load_board(n) for n in list_boards()]
    print(f"{'board':<26} {'chip':<9} {'console':<8} {'baud':>7} {'offset':>7} {'heap':>8} {'idle mA':>8} {'busy mA':>8} {'light mA':>9} {'deep mA':>8}")
    for b in rows:
        p = b.power
        print(f"{b.name:<26} {b.chip:<9} {b.console:<8} {b.baud:>7} {b.firmware_offset:>#7x} {b.heap_budget // 1024:>7}K "
              f"{p['active_idle_ma']:>8.1f} {p['active_busy_ma']:>8.1f} {p['light_sleep_ma']:>9.2f} {p['deep_sleep_ma']:>8.3f}")
    print(f"({boards_dir()})")
