"""Duty-cycled stream (main.stream(rate=...)): one input a period, stage 1 and the gate, positives
sent, then wait for the next period: in machine.lightsleep on boards whose link survives it (the
UART-bridge board; boards/*.toml `sleep`), else awake. Phase boundaries are marked (shared/marks.py):
a marker GPIO (boards/*.toml `marker_pin`) is high while awake, for meters with a logic input; a
phase GPIO (`phase_pin`) starts each wake low and toggles at each boundary within it (stage 1 | gate
| encode | transmit), so a meter's second logic input cuts a wake into its phases; a side-channel file gets one record a boundary (the virtual board's stand-in for the pin, followed by
the virtual meters). A period that overruns starts the next sample at once (no catching up)."""
import time

import marks
from marks import GATE, ENCODE, GUARD_US, SLEEP, STAGE1, START, STOP, TRANSMIT


class Duty:
    def __init__(self, rate, sleep="idle", marker=-1, side=None, nogate=False, phase=-1):
        if rate <= 0:
            raise ValueError("rate must be positive, not %r" % (rate,))
        self.period = int(1000000 / rate)
        self.flags = marks.MODE_NOGATE if nogate else 0
        self.policy = marks.SLEEP_LIGHT if sleep == "light" else marks.SLEEP_IDLE
        self.lightsleep = None
        if self.policy == marks.SLEEP_LIGHT:
            try:
                from machine import lightsleep
                self.lightsleep = lightsleep
            except ImportError:   # the unix port has none: it waits awake, the marks say light
                pass
        self.pin = None
        if marker >= 0:
            from machine import Pin
            self.pin = Pin(marker, Pin.OUT, value=0)
        self.phase_pin = None
        self.level = 0
        if phase >= 0:
            from machine import Pin
            self.phase_pin = Pin(phase, Pin.OUT, value=0)
        self.side = open(side, "ab") if side else None   # appended: one file a session of streams
        self.rec = bytearray(marks.SIZE)
        self.sample = 0
        self.t0 = 0
        now = time.ticks_us()
        self.next = time.ticks_add(now, GUARD_US)   # the first sample after the guard, asleep
        self.mark(START, now, self.period)
        self.mark(SLEEP, now, self.policy)

    def mark(self, phase, ticks, value=0):
        if self.side is not None:
            marks.pack_into(self.rec, phase, self.flags, self.sample, ticks, value)
            self.side.write(self.rec)

    def toggle(self):
        """A phase boundary within the wake (runtime.Model.phase calls it)."""
        self.level ^= 1
        self.phase_pin.value(self.level)

    def wait(self):
        """Until the next period is due, by the sleep policy."""
        left = time.ticks_diff(self.next, time.ticks_us())
        if left > 0:
            if self.lightsleep is not None and left >= 2000:
                self.lightsleep(left // 1000)
            else:
                time.sleep_us(left)

    def wake(self):
        """The period's sample begins: wait until it is due, then marker high."""
        self.wait()
        now = time.ticks_us()
        if time.ticks_diff(now, self.next) > self.period:   # overran: the schedule restarts from now
            self.next = now
        if self.phase_pin is not None:
            self.level = 0
            self.phase_pin.value(0)
        if self.pin is not None:
            self.pin.value(1)
        self.t0 = now
        self.mark(STAGE1, now)

    def done(self, times, opened, t_encode, nbytes):
        """The sample's work is done: its phase marks from the measured times, marker low, sleep mark."""
        t = time.ticks_add(self.t0, times["stage1"])
        self.mark(GATE, t)
        if opened:
            t = time.ticks_add(t, times["gate"])
            self.mark(ENCODE, t)
            self.mark(TRANSMIT, time.ticks_add(t, t_encode), nbytes)
        if self.pin is not None:
            self.pin.value(0)
        self.mark(SLEEP, time.ticks_us(), self.policy)
        self.sample += 1
        self.next = time.ticks_add(self.next, self.period)

    def close(self):
        """The stream ends with its last period slept out, then the guard: n samples take n periods
        between two guards."""
        self.next = time.ticks_add(self.next, GUARD_US)
        self.wait()
        self.mark(STOP, time.ticks_us(), self.sample)
        if self.side is not None:
            self.side.close()


def sleep_only(seconds, sleep="idle", marker=-1, side=None):
    """The board's floor: no samples, only the sleep policy's waits for `seconds` (the 'sleep only'
    power scenario), marked as a stream would be."""
    d = Duty(1, sleep, marker, side)
    end = time.ticks_add(time.ticks_us(), int(seconds * 1000000))
    while time.ticks_diff(end, time.ticks_us()) > 0:
        d.next = time.ticks_add(time.ticks_us(), min(d.period, time.ticks_diff(end, time.ticks_us())))
        d.wait()
    d.close()
