"""Device end of the wire (MicroPython; frames and payloads: wire.py, sparse.py). Buffers are made
once here; per frame only small objects are allocated (a memoryview slice, crc32's int).

The main loop (device/main.py):

    with Link(sys.stdin.buffer, sys.stdout.buffer, n_in, n_act) as link:   # kbd_intr off inside
        while True:
            t = link.read_frame()             # blocks; None at end of stream
            if t is None: break
            if t == wire.HELLO: link.send_info(version, blob_hash, board, gc.mem_free())
            elif t == wire.VECTOR:            # link.payload: the int8 input (valid until next read)
                ... stage 1, gate ...
                if open:
                    link.encode(act, n_act)   # sparse-encode into the link's buffer
                    link.send_activations()   # retransmits until ACKed; False if never
                link.send_result(logit, open, t_stage1, t_gate, t_encode, t_transmit)
            elif t == wire.STATS: link.send_stats(samples, opens)
            else: link.send_error(wire.E_TYPE, wire.NAMES[t])

ACTIVATIONS go before RESULT so that RESULT carries the encode and transmit times. A repeated
VECTOR (same seq: the host missed our RESULT) is answered here from the cached RESULT frame and
never reaches the main loop; other duplicates, stray ACKs and corrupt frames are dropped and counted.
Frames other than the awaited ACK that arrive during send_activations are dropped.
"""
import select
import time

import micropython
import sparse
import wire
from wire import HEADER


class Link:
    def __init__(self, inp, out, n_in=1024, n_act=1024, ack_ms=200, retries=3):
        self.inp, self.out, self.ack_ms, self.retries = inp, out, ack_ms, retries
        self.n_in, self.n_act = n_in, n_act
        self.rx = bytearray(wire.frame_size(max(n_in, 64)))   # raw frame, then decoded in place
        self.mv = memoryview(self.rx)
        self.lim = self.nxt = 0   # rx[nxt:lim]: bytes read past the last frame (after a corrupt one)
        self.tx = bytearray(wire.frame_size(2 + sparse.size(n_act)))
        self.act = bytearray(2 + sparse.size(n_act))   # u16 vector seq + sparse encoding
        self.amv = memoryview(self.act)[2:]
        self.alen = 0
        self.rp = bytearray(wire.RESULT_SIZE)
        self.res = bytearray(wire.frame_size(wire.RESULT_SIZE))   # the last RESULT frame, resent on a repeated VECTOR
        self.rlen = 0
        self.rseq = -1
        self.seq = 0        # our next seq
        self.last = -1      # the host's previous seq
        self.vseq = -1      # seq of the VECTOR being answered
        self.type = self.n = 0
        self.payload = None
        self.sent = self.received = self.corrupt = self.duplicates = self.retransmits = 0
        self.poll = select.poll()
        self.poll.register(inp, select.POLLIN)

    def __enter__(self):
        micropython.kbd_intr(-1)   # a 0x03 in a binary frame must not raise KeyboardInterrupt
        return self

    def __exit__(self, *exc):
        micropython.kbd_intr(3)

    def _fill(self, w, k):
        # make rx[w:w+k] hold the next k bytes of the stream; False at its end
        while self.lim < w + k:
            got = self.inp.readinto(self.mv[self.lim:w + k])
            if not got:
                return False
            self.lim += got
        return True

    def _raw(self):
        # Read one COBS frame into rx[0:n], its delimiter consumed; the code bytes say how much
        # to read, so nothing past the delimiter is read unless the frame is corrupt.
        # Returns n, -1 at the end of the stream, -2 for a corrupt frame.
        rx, j = self.rx, self.nxt
        if j:   # move bytes read past the previous frame to the front
            for i in range(j, self.lim):
                rx[i - j] = rx[i]
            self.lim -= j
            self.nxt = 0
        w = 0
        while True:
            if not self._fill(w, 1):
                return -1
            c = rx[w]
            if c == 0:
                self.nxt = w + 1
                return w
            if w + c >= len(rx):   # overlong: skip to the next delimiter
                self.lim = 0
                while self._fill(0, 1) and rx[0]:
                    self.lim = 0
                self.lim = 0
                return -2
            if not self._fill(w + 1, c - 1):
                return -1
            z = rx.find(b"\x00", w + 1, w + c)
            if z >= 0:   # the frame ended inside a group: corrupt; the next one starts after z
                self.nxt = z + 1
                return -2
            w += c

    def _recv(self):
        # one frame: its type, -1 if dropped (corrupt or duplicate), None at the end of the stream
        n = self._raw()
        if n == -1:
            return None
        if n == 0:   # idle fill between delimiters
            return -1
        if n == -2:
            self.corrupt += 1
            return -1
        try:
            typ, seq, ln = wire.decode_frame(self.rx, wire.cobs_decode(self.rx, n))
        except ValueError:
            self.corrupt += 1
            return -1
        self.received += 1
        if typ == wire.HELLO:
            self.last = self.vseq = -1
        elif seq == self.last or typ == wire.VECTOR and seq == self.vseq:
            # a retransmission; a repeated VECTOR means the host missed our RESULT
            self.duplicates += 1
            if typ == wire.VECTOR and seq == self.rseq:
                self.out.write(self.res, self.rlen)
                self.sent += 1
            return -1
        self.last = seq
        self.type, self.n = typ, ln
        if typ == wire.VECTOR:
            self.vseq = seq
        return typ

    def read_frame(self):
        """Block until a new frame; return its type (payload in self.payload), None at end of stream."""
        while True:
            t = self._recv()
            if t is None or t >= 0 and t != wire.ACK:
                if t is not None:
                    self.payload = self.mv[HEADER:HEADER + self.n]
                return t

    def send(self, typ, payload, n=-1):
        n = wire.encode_frame(typ, self.seq, payload, self.tx, n)
        self.out.write(self.tx, n)
        self.sent += 1
        self.seq = (self.seq + 1) & 0xFFFF
        return n

    def send_info(self, version, blob_hash, board, heap_free):
        self.send(wire.INFO, wire.wr_info(version, blob_hash, board, heap_free, self.n_in, self.n_act, max(self.n_in, 64)))

    def send_result(self, logit, decision, t_stage1, t_gate, t_encode, t_transmit):
        """RESULT for the last VECTOR, kept for a repeated VECTOR."""
        wire.wr_result(self.vseq, logit, decision, t_stage1, t_gate, t_encode, t_transmit, self.rp)
        self.rlen = wire.encode_frame(wire.RESULT, self.seq, self.rp, self.res)
        self.rseq = self.vseq
        self.out.write(self.res, self.rlen)
        self.sent += 1
        self.seq = (self.seq + 1) & 0xFFFF

    def encode(self, act, n):
        """Sparse-encode act[0:n] for the last VECTOR; returns the encoded bytes."""
        self.act[0] = self.vseq & 0xFF
        self.act[1] = self.vseq >> 8
        self.alen = sparse.encode(act, n, self.amv)
        return self.alen

    def send_activations(self):
        """Send the encoded activations and wait for the ACK, retransmitting up to self.retries
        times after ack_ms each. True once acked."""
        seq = self.seq
        n = self.send(wire.ACTIVATIONS, self.act, 2 + self.alen)
        for attempt in range(self.retries + 1):
            if attempt:
                self.out.write(self.tx, n)
                self.sent += 1
                self.retransmits += 1
            t0 = time.ticks_ms()
            while True:
                left = self.ack_ms - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0 or self.lim == self.nxt and not self.poll.poll(left):
                    break
                t = self._recv()
                if t is None:
                    return False
                if t == wire.ACK and self.n == 2 and (self.rx[HEADER] | self.rx[HEADER + 1] << 8) == seq:
                    return True
        return False

    def send_error(self, code, msg):
        self.send(wire.ERROR, wire.wr_error(code, msg))

    def send_stats(self, samples, opens):
        self.send(wire.STATS, wire.wr_stats(self.sent + 1, self.received, self.corrupt, self.duplicates, self.retransmits, samples, opens))
