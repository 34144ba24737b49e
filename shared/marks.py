"""Phase marks of the duty-cycled device loop (device/duty.py): one fixed-size record per phase
boundary, so a power trace can be cut into phases. MicroPython subset: imported as
ugate.shared.marks on the host and as `marks` on the device.

On a board the boundaries toggle a marker GPIO (high while awake) that a meter's logic input
records; on the virtual board the same calls append these records to a side channel (a file in the
board's folder), which the virtual meters follow.

Record (little-endian, SIZE bytes): u8 phase, u8 flags, u16 sample, u32 ticks_us, u32 value.
    START     value: the period in µs; flags: MODE_* bits        (the stream begins, GUARD_US asleep)
    STAGE1    value: 0                                           (a sample's work begins)
    GATE      value: 0
    ENCODE    value: 0                                           (open gate, or no gate: every sample)
    TRANSMIT  value: bytes written to the link for this sample
    SLEEP     value: SLEEP_IDLE or SLEEP_LIGHT, the policy used until the next period
    STOP      value: samples done
ticks_us is the device's time.ticks_us() modulo TICKS_PERIOD (2**30, as on the ESP32 port): unwrap by
difference.
"""
import struct

try:
    from micropython import const
except ImportError:
    const = lambda x: x

START = const(0)
STAGE1 = const(1)
GATE = const(2)
ENCODE = const(3)
TRANSMIT = const(4)
SLEEP = const(5)
STOP = const(6)
NAMES = ("start", "stage1", "gate", "encode", "transmit", "sleep", "stop")

SLEEP_IDLE = const(0)    # the core waits awake (a link that does not survive light sleep)
SLEEP_LIGHT = const(1)   # machine.lightsleep between samples
MODE_NOGATE = const(1)   # every sample sent dense to the NPU, the gate skipped

SIZE = const(12)
_FMT = "<BBHII"
TICKS_PERIOD = const(1 << 30)
# a duty-cycled stream sleeps this long before its first sample and after its last period, so a
# meter's window that misses the stream's edges by up to half of it still holds every sample's work
# and, around it, only sleep (the host knows the start only to a link round trip)
GUARD_US = const(100000)


def pack_into(buf, phase, flags, sample, ticks, value):
    struct.pack_into(_FMT, buf, 0, phase, flags, sample & 0xFFFF, ticks & (TICKS_PERIOD - 1), value & 0xFFFFFFFF)


def unpack(buf, at=0):
    """-> (phase, flags, sample, ticks_us, value); ValueError for an unknown phase."""
    r = struct.unpack_from(_FMT, buf, at)
    if r[0] > STOP:
        raise ValueError("marks: offset %d: unknown phase %d" % (at, r[0]))
    return r
