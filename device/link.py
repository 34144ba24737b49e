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
VECTOR (same seq: the host missed our answer) is answered here from the cached ACTIVATIONS and
RESULT frames and never reaches the main loop; other duplicates and stray ACKs are dropped and
counted; a corrupt frame is counted and answered with NAK at once, so the host resends without
waiting out a timeout. A reliable frame (_deliver) is retransmitted as soon as a NAK, a corrupt
frame or a repeat of the request arrives, after ack_ms otherwise. A BYE that arrives while we wait
(or, in stream mode, between samples: idle()) sets .bye; read_frame then returns BYE.
"""
import select
import time

import micropython
import sparse
import wire
from wire import HEADER

# the largest control payload we send: INFO (20 bytes + version + board name, cut to fit; ERROR
# and STATS are smaller), so a tiny model's buffers still take it
CONTROL = 128


class Link:
    def __init__(self, inp, out, n_in=1024, n_act=1024, ack_ms=100, retries=10):
        self.inp, self.out, self.ack_ms, self.retries = inp, out, ack_ms, retries
        self.n_in, self.n_act = n_in, n_act
        self.rx = bytearray(wire.frame_size(max(n_in, 64)))   # raw frame, then decoded in place
        self.mv = memoryview(self.rx)
        self.lim = self.nxt = 0   # rx[nxt:lim]: bytes read past the last frame (after a corrupt one)
        # every frame buffer has one byte more: the IDLE 0x00 written after each frame (wire.py)
        self.tx = bytearray(wire.frame_size(max(2 + sparse.size(n_act), CONTROL)) + 1)
        self.txn = 0
        self.txv = -1       # the vector seq whose ACTIVATIONS frame tx holds
        self.ctl = bytearray(wire.frame_size(2) + 1)   # ACK and NAK, so tx keeps what may be resent
        self.cp = bytearray(2)
        self.act = bytearray(2 + sparse.size(n_act))   # u16 vector seq + sparse encoding
        self.amv = memoryview(self.act)[2:]
        self.alen = 0
        self.rp = bytearray(wire.RESULT_SIZE)
        self.res = bytearray(wire.frame_size(wire.RESULT_SIZE) + 1)   # the last RESULT frame, resent on a repeated VECTOR
        self.rlen = 0
        self.rseq = -1
        self.ropen = 0
        self.seq = 0        # our next seq
        self.last = -1      # the host's previous seq
        self.vseq = -1      # seq of the VECTOR being answered
        self.type = self.n = 0
        self.payload = None
        self.nbytes = 0     # bytes written, every frame (duty.py's transmit marks)
        self.sent = self.received = self.corrupt = self.duplicates = self.retransmits = self.undelivered = 0
        self.bye = False
        self.careful = True   # _fill: one byte at a time, never blocking past ack_ms
        self.poll = select.poll()
        self.poll.register(inp, select.POLLIN)

    def __enter__(self):
        micropython.kbd_intr(-1)   # a 0x03 in a binary frame must not raise KeyboardInterrupt
        return self

    def __exit__(self, *exc):
        micropython.kbd_intr(3)

    def _fill(self, w, k):
        # Make rx[w:w+k] hold the next k bytes of the stream: True (also when a 0x00 came early: the
        # caller finds it), False at its end, None when careful and the line went quiet mid-frame.
        # MicroPython's readinto waits for all it is asked, so careful reads (while we wait for an
        # ACK, or between stream samples, when the peer sends only small frames) take one byte at a
        # time: a code byte damaged on the line must not hold us until the peer's next frame.
        while self.lim < w + k:
            a = self.lim
            if self.careful:
                if not self.poll.poll(self.ack_ms):
                    return None
                got = self.inp.readinto(self.mv[a:a + 1])
            else:
                got = self.inp.readinto(self.mv[a:w + k])
            if not got:
                return False
            self.lim += got
            if self.careful and not self.rx[a]:
                return True
        return True

    def _raw(self):
        # Read one COBS frame into rx[0:n], its delimiter consumed; the code bytes say how much
        # to read, so nothing past the delimiter is read unless the frame is corrupt.
        # Returns n, -1 at the end of the stream, -2 for a corrupt frame, -4 for nothing (careful).
        rx, j = self.rx, self.nxt
        if j:   # move bytes read past the previous frame to the front
            for i in range(j, self.lim):
                rx[i - j] = rx[i]
            self.lim -= j
            self.nxt = 0
        w = 0
        while True:
            r = self._fill(w, 1)
            if r is False:
                return -1
            if r is None:   # quiet mid-frame: drop what we have
                self.lim = 0
                return -2 if w else -4
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
            r = self._fill(w + 1, c - 1)
            if r is False:
                return -1
            z = rx.find(b"\x00", w + 1, min(w + c, self.lim))
            if z >= 0:   # the frame ended inside a group: corrupt; the next one starts after z
                self.nxt = z + 1
                return -2
            if r is None:
                self.lim = 0
                return -2
            w += c

    def _write(self, buf, n):
        buf[n] = 0   # IDLE: a lost delimiter costs this frame only
        self.out.write(buf, n + 1)
        self.sent += 1
        self.nbytes += n + 1

    def _ctl(self, typ, seq):
        # ACK or NAK of seq from its own buffer
        wire.wr_ack(seq, self.cp)
        self._write(self.ctl, wire.encode_frame(typ, self.seq, self.cp, self.ctl))
        self.seq = (self.seq + 1) & 0xFFFF

    def _recv(self):
        # One frame: its type; -1 if dropped (idle fill, duplicate), -2 if corrupt (NAK sent), -3
        # for a repeat of the VECTOR we are still answering; None at the end of the stream.
        n = self._raw()
        if n == -1:
            return None
        if n == 0 or n == -4:   # idle fill between delimiters, or nothing came
            return -1
        if n > 0:
            try:
                typ, seq, ln = wire.decode_frame(self.rx, wire.cobs_decode(self.rx, n))
            except ValueError:
                n = -2
        if n == -2:
            self.corrupt += 1
            self._ctl(wire.NAK, self.last)
            return -2
        self.received += 1
        if typ == wire.HELLO:
            self.last = self.vseq = self.rseq = -1
        elif typ == wire.VECTOR and seq == self.vseq:
            # a repeated VECTOR: the host missed our answer, or it is not made yet
            self.duplicates += 1
            self.last = seq
            if seq != self.rseq:
                return -3
            if self.ropen and self.txv == seq:
                self._write(self.tx, self.txn)
            self._write(self.res, self.rlen)
            return -1
        elif seq == self.last and typ != wire.STATS:   # a retransmission we already have
            self.duplicates += 1
            return -1
        self.last = seq
        self.type, self.n = typ, ln
        if typ == wire.VECTOR:
            self.vseq = seq
        return typ

    def read_frame(self):
        """Block until a new frame; return its type (payload in self.payload), None at end of stream."""
        self.careful = False   # the host's requests may be large; it resends (with RESYNC) if we stall
        while not self.bye:
            t = self._recv()
            if t is None or t >= 0 and t != wire.ACK and t != wire.NAK:
                if t is not None:
                    self.payload = self.mv[HEADER:HEADER + self.n]
                self.careful = True
                return t
        self.careful = True
        return wire.BYE

    def idle(self):
        """Between samples of a stream: take the frames already waiting (a BYE sets .bye), never block
        for a new one."""
        while not self.bye and (self.lim > self.nxt or self.poll.poll(0)):
            t = self._recv()
            if t is None:
                return
            self.bye = t == wire.BYE

    def _deliver(self, buf, n, seq):
        # Write frame seq (buf[0:n]) and wait for its ACK. True once acked; False after every retry
        # or on a BYE (.bye set) or the end of input.
        self._write(buf, n)
        k = 0
        while True:
            t0 = time.ticks_ms()
            while True:
                left = self.ack_ms - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0 or self.lim == self.nxt and not self.poll.poll(left):
                    break
                t = self._recv()
                if t is None:
                    return False
                if t == wire.BYE:
                    self.bye = True
                    return False
                if t == wire.ACK and self.n == 2 and (self.rx[HEADER] | self.rx[HEADER + 1] << 8) == seq:
                    return True
                if t == wire.NAK or t == -2 or t == -3 or t == wire.HELLO:   # the peer lost a frame: resend now
                    break
            if k == self.retries:
                return False
            k += 1
            self._write(buf, n)
            self.retransmits += 1

    def send(self, typ, payload, n=-1, reliable=False):
        seq = self.seq
        self.txn = wire.encode_frame(typ, seq, payload, self.tx, n)
        self.txv = -1
        self.seq = (seq + 1) & 0xFFFF
        if reliable:
            return self._deliver(self.tx, self.txn, seq)
        self._write(self.tx, self.txn)
        return True

    def send_info(self, version, blob_hash, board, heap_free, reliable=False):
        board = board[:CONTROL - 20 - len(version)]
        return self.send(wire.INFO, wire.wr_info(version, blob_hash, board, heap_free, self.n_in, self.n_act,
                                                 max(self.n_in, 64)), -1, reliable)

    def send_result(self, logit, decision, t_stage1, t_gate, t_encode, t_transmit, reliable=False):
        """RESULT for the last VECTOR, kept for a repeated VECTOR. reliable: wait for the ACK."""
        wire.wr_result(self.vseq, logit, decision, t_stage1, t_gate, t_encode, t_transmit, self.rp)
        seq = self.seq
        self.rlen = wire.encode_frame(wire.RESULT, seq, self.rp, self.res)
        self.rseq, self.ropen = self.vseq, decision
        self.seq = (seq + 1) & 0xFFFF
        if reliable:
            return self._deliver(self.res, self.rlen, seq)
        self._write(self.res, self.rlen)
        return True

    def encode(self, act, n, dense=False):
        """Sparse-encode act[0:n] for the last VECTOR (dense: in sparse's DENSE mode, as a link
        without the GC layer's compression would); returns the encoded bytes."""
        self.act[0] = self.vseq & 0xFF
        self.act[1] = self.vseq >> 8
        if dense:
            a = self.amv
            nnz = 0
            for i in range(n):
                a[sparse.HEADER + i] = act[i]
                nnz += act[i] != 0
            a[0], a[1], a[2], a[3], a[4] = sparse.DENSE, n & 0xFF, n >> 8, nnz & 0xFF, nnz >> 8
            self.alen = sparse.HEADER + n
        else:
            self.alen = sparse.encode(act, n, self.amv)
        return self.alen

    def send_activations(self):
        """Send the encoded activations and wait for the ACK (_deliver). True once acked."""
        ok = self.send(wire.ACTIVATIONS, self.act, 2 + self.alen, True)
        self.txv = self.vseq   # tx keeps them for a repeated VECTOR
        return ok

    def send_error(self, code, msg):
        self.send(wire.ERROR, wire.wr_error(code, msg))

    def send_stats(self, samples, opens, reliable=False):
        return self.send(wire.STATS, wire.wr_stats(self.sent + 1, self.received, self.corrupt, self.duplicates,
                                                   self.retransmits, samples, opens, self.undelivered), -1, reliable)
