"""ugate device main loop (MicroPython): input vectors in, gate decisions and compressed activations out.

The host starts it over the raw REPL (`import main; main.serve()`), speaks first (HELLO), then sends
VECTOR frames; each gets a RESULT, and an open gate sends the sparse activations first. BYE ends
the session and returns to the REPL. Not run at boot on purpose: binary streaming turns Ctrl-C off,
and a board that streams from power-on could not be deployed to again without a reset.
"""
import gc
import os
import sys
import time

import wire
from link import Link
from runtime import Model

VERSION = "0.1.0"


def serve(blob="model.blob", kernels="viper", inp=None, out=None):
    try:
        model = Model(blob, kernels)
        problem = None
    except Exception as e:   # a bad blob is reported to the host, which shows it; we stay up
        model, problem = None, "%s: %s" % (blob, e)
    n_in = model.in_size if model else 64
    n_act = model.act_size if model else 64
    board = os.uname().machine if hasattr(os, "uname") else sys.implementation._machine
    samples = opens = 0
    gc.collect()
    with Link(inp or sys.stdin.buffer, out or sys.stdout.buffer, n_in, n_act) as link:
        link.out.write(b"\x00")   # ready: Ctrl-C is off now, so the host may send binary (idle fill)
        while True:
            t = link.read_frame()
            if t is None or t == wire.BYE:
                if t is not None:
                    link.send(wire.ACK, wire.wr_ack(link.last))
                return
            if problem is not None and t != wire.STATS:
                link.send_error(wire.E_MODEL, problem)
            elif t == wire.HELLO:
                link.send_info(VERSION, model.hash, board, gc.mem_free())
            elif t == wire.VECTOR:
                if link.n != n_in:
                    link.send_error(wire.E_LENGTH, "vector of %d bytes, model takes %d" % (link.n, n_in))
                    continue
                logit = model.run(link.payload)
                times = model.times
                t_encode = t_transmit = 0
                samples += 1
                if model.open:
                    opens += 1
                    t0 = time.ticks_us()
                    link.encode(model.act, n_act)
                    t1 = time.ticks_us()
                    link.send_activations()
                    t_encode = time.ticks_diff(t1, t0) + times["compress"]
                    t_transmit = time.ticks_diff(time.ticks_us(), t1)
                link.send_result(logit, model.open, times["stage1"], times["gate"], t_encode, t_transmit)
            elif t == wire.STATS:
                link.send_stats(samples, opens)
            else:
                link.send_error(wire.E_TYPE, wire.NAMES.get(t, str(t)))
