"""Wire frames between the device and the host: the one definition of the layout and the type table.
MicroPython subset: imported as ugate.shared.wire on the host and as `wire` on the device.

On the wire a frame is COBS(body) + b"\\x00"; 0x00 never occurs inside a frame, so a receiver
resynchronises at the next 0x00 after any garbage. Empty frames (0x00 0x00) are idle fill.

body (little-endian):
    offset 0  type  u8     one of the table below
    offset 1  seq   u16    sender's sequence number; a retransmission repeats it
    offset 3  len   u16    payload length
    offset 5  payload      len bytes
    offset 5+len  crc32 u32  binascii.crc32 over type..payload

COBS: each group is a code byte c (1..255) and c-1 nonzero data bytes, followed by an implied 0x00
unless c == 255 or the group ends the frame. The encoded frame is at most body + 1 + body // 254.

Payloads, by type (direction; layout):
    HELLO        host -> device: u8 wire VERSION. Starts a session: both sides reset their
                 duplicate filter; the device answers INFO.
    INFO         device -> host: u8 VERSION, 8s blob hash, u32 heap free, u16 input bytes,
                 u16 activation bytes, u16 max payload the device accepts (its window),
                 u8 n + firmware version (n bytes), board name (the rest). UTF-8.
    VECTOR       host -> device: the int8 input, input-bytes long. Answered by RESULT (and
                 ACTIVATIONS before it when the gate opens). A repeated seq gets the cached RESULT.
    RESULT       device -> host: u16 vector seq, i32 gate logit, u8 decision (1 = gate open),
                 u32 times in us: stage 1, gate, encode, transmit.
    ACTIVATIONS  device -> host: u16 vector seq + the sparse encoding (shared/sparse.py). The
                 receiver answers ACK; the sender retransmits a bounded number of times.
    ACK          receiver -> sender: u16 acked seq.
    ERROR        either way: u8 code (E_*) + a short UTF-8 message.
    STATS        host -> device: empty (a request); device -> host: u32 counters, STATS_FIELDS.
    BYE          host -> device: empty. Ends the session: the device acknowledges with ACK and
                 returns to its REPL (binary streaming blocks Ctrl-C, so this is the way out).
    NAK          receiver -> sender: u16 seq of the last good frame it had from the sender. "A frame
                 just arrived corrupt": a sender waiting for an ACK retransmits at once, not after
                 its timeout. Sent once per corrupt frame, never acknowledged.

A receiver drops a frame whose seq repeats the previous frame's seq (a retransmission it already
has), except HELLO and STATS (a request answered again costs nothing). A frame failing COBS, length
or CRC is counted as corrupt and never decoded, and answered with NAK.

Recovery (docs/design.md): senders follow each frame with one extra 0x00 (IDLE), so a frame whose
delimiter was lost is cut off by the next byte, not by the peer's next frame. Reliable frames
(ACTIVATIONS; in stream mode also RESULT and the closing STATS) are retransmitted on NAK at once,
on their timeout otherwise. A host that restarts talking to a board in an unknown state first writes
RESYNC zero bytes: each ends whatever group a stray code byte opened (a group spans at most 254
bytes), so the frame that follows is read whole.
"""
import struct

try:
    from binascii import crc32
except ImportError:   # a MicroPython build without binascii.crc32: the same CRC from a table
    _T = []
    for _i in range(256):
        _c = _i
        for _ in range(8):
            _c = (_c >> 1) ^ 0xEDB88320 if _c & 1 else _c >> 1
        _T.append(_c)

    def crc32(data, crc=0):
        crc ^= 0xFFFFFFFF
        for b in data:
            crc = _T[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF

try:
    from micropython import const
except ImportError:
    const = lambda x: x

VERSION = const(2)   # 2: NAK, STATS "undelivered", IDLE after each frame

# the type table: one number per frame type, shared by both ends
HELLO = const(1)
INFO = const(2)
VECTOR = const(3)
RESULT = const(4)
ACTIVATIONS = const(5)
ACK = const(6)
ERROR = const(7)
STATS = const(8)
BYE = const(9)
NAK = const(10)
NAMES = {HELLO: "HELLO", INFO: "INFO", VECTOR: "VECTOR", RESULT: "RESULT",
         ACTIVATIONS: "ACTIVATIONS", ACK: "ACK", ERROR: "ERROR", STATS: "STATS", BYE: "BYE", NAK: "NAK"}

# ERROR codes
E_TYPE = const(1)      # a frame type the receiver does not take
E_LENGTH = const(2)    # a payload of the wrong length
E_MODEL = const(3)     # no model loaded, or the model failed
E_INTERNAL = const(4)  # an exception on the device
ERRORS = {E_TYPE: "unexpected frame type", E_LENGTH: "wrong payload length",
          E_MODEL: "model", E_INTERNAL: "internal"}

HEADER = const(5)
CRC = const(4)
_INFO = "<B8sIHHH"
_RESULT = "<HiBIIII"
RESULT_SIZE = const(23)
# undelivered: reliable frames given up after every retry (a positive the host may not have)
STATS_FIELDS = ("sent", "received", "corrupt", "duplicates", "retransmits", "samples", "opens", "undelivered")
_STATS = "<8I"
RESYNC = const(256)   # zero bytes that end any partial frame at the receiver


def frame_size(n):
    """Bytes a frame with an n-byte payload can take on the wire, delimiter included."""
    m = HEADER + n + CRC
    return m + m // 254 + 2


def cobs_decode(buf, n, out=None):
    """Decode buf[0:n] (one frame, delimiter excluded) into out (default: buf itself, in place;
    decoding only shrinks). Returns the decoded length; ValueError names the offset."""
    if out is None:
        out = buf
    r = w = 0
    while r < n:
        code = buf[r]
        if code == 0:
            raise ValueError("cobs: offset %d: 0x00 inside a frame" % r)
        end = r + code
        if end > n:
            raise ValueError("cobs: offset %d: group of %d bytes runs past the frame end at %d" % (r, code, n))
        r += 1
        while r < end:
            c = buf[r]
            if c == 0:
                raise ValueError("cobs: offset %d: 0x00 inside a frame" % r)
            out[w] = c
            w += 1
            r += 1
        if code < 0xFF and r < n:
            out[w] = 0
            w += 1
    return w


def encode_frame(typ, seq, payload, out=None, n=-1):
    """Frame payload[0:n] (n = -1: all of it) as type/seq into out (default: a new bytearray of
    frame_size(n)). Returns (out, length) when out is None, else the length written."""
    if n < 0:
        n = len(payload)
    m = HEADER + n + CRC
    ret = out is None
    if ret:
        out = bytearray(frame_size(n))
    # lay the body down at k, then COBS-encode in place from 0: the write position never passes
    # the read position because k covers every code byte the encoding adds
    k = 1 + m // 254
    struct.pack_into("<BHH", out, k, typ, seq & 0xFFFF, n)
    out[k + HEADER:k + HEADER + n] = payload if n == len(payload) else memoryview(payload)[:n]
    struct.pack_into("<I", out, k + HEADER + n, crc32(memoryview(out)[k:k + HEADER + n]) & 0xFFFFFFFF)
    cp, w, code = 0, 1, 1
    for r in range(k, k + m):
        c = out[r]
        if c == 0:
            out[cp] = code
            cp, w, code = w, w + 1, 1
        else:
            out[w] = c
            w += 1
            code += 1
            if code == 0xFF:
                out[cp] = code
                cp, w, code = w, w + 1, 1
    out[cp] = code
    out[w] = 0
    return (out, w + 1) if ret else w + 1


def decode_frame(buf, n):
    """Check a COBS-decoded body buf[0:n]: length field and CRC. Returns (type, seq, payload length);
    the payload is buf[HEADER:HEADER + length]. ValueError names the offset and what failed."""
    if n < HEADER + CRC:
        raise ValueError("frame: %d bytes, shorter than header + crc (%d)" % (n, HEADER + CRC))
    ln = buf[3] | buf[4] << 8
    if ln != n - HEADER - CRC:
        raise ValueError("frame: offset 3: length field %d but %d payload bytes" % (ln, n - HEADER - CRC))
    got = struct.unpack_from("<I", buf, n - CRC)[0]
    want = crc32(memoryview(buf)[:n - CRC]) & 0xFFFFFFFF
    if got != want:
        raise ValueError("frame: offset %d: crc32 0x%08x, computed 0x%08x" % (n - CRC, got, want))
    if buf[0] not in NAMES:
        raise ValueError("frame: offset 0: unknown type %d" % buf[0])
    return buf[0], buf[1] | buf[2] << 8, ln


class Decoder:
    """Streaming decoder: feed(bytes) returns the complete good frames as (type, seq, payload).
    Bad frames are counted in .corrupt, the reason kept in .error, and skipped."""

    def __init__(self, max_payload=4096):
        self.max = frame_size(max_payload)
        self.buf = bytearray()
        self.corrupt = 0
        self.error = None
        self.wire_bytes = {}   # type -> bytes of good frames of that type, delimiters included
        self._skip = False   # inside an overlong frame: drop bytes up to the next 0x00

    def feed(self, data):
        frames = []
        self.buf += data
        start = 0
        while True:
            z = self.buf.find(b"\x00", start)
            if z < 0:
                break
            if self._skip:
                self._skip = False
            elif z > start:
                f = self._frame(bytearray(self.buf[start:z]))
                if f:
                    frames.append(f)
                    self.wire_bytes[f[0]] = self.wire_bytes.get(f[0], 0) + z - start + 1
            start = z + 1
        self.buf = self.buf[start:]
        if len(self.buf) > self.max:
            self._bad("frame: over %d bytes without a delimiter" % self.max)
            self.buf = bytearray()
            self._skip = True
        return frames

    def _bad(self, msg):
        self.corrupt += 1
        self.error = msg

    def _frame(self, body):
        try:
            typ, seq, ln = decode_frame(body, cobs_decode(body, len(body)))
        except ValueError as e:
            self._bad(str(e))
            return None
        return typ, seq, bytes(body[HEADER:HEADER + ln])


def _need(name, p, n):
    if len(p) < n:
        raise ValueError("%s: payload of %d bytes, expected %d" % (name, len(p), n))


def wr_hello():
    return bytes([VERSION])


def wr_info(version, blob_hash, board, heap_free, n_in, n_act, max_payload):
    v, b = version.encode(), board.encode()
    return struct.pack(_INFO, VERSION, blob_hash[:8], heap_free, n_in, n_act, max_payload) + bytes([len(v)]) + v + b


def rd_info(p):
    _need("INFO", p, 20)
    ver, h, heap, n_in, n_act, mx = struct.unpack_from(_INFO, p)
    nv = p[19]
    _need("INFO", p, 20 + nv)
    return {"wire": ver, "blob_hash": bytes(h), "heap_free": heap, "n_in": n_in, "n_act": n_act,
            "max_payload": mx, "version": bytes(p[20:20 + nv]).decode(), "board": bytes(p[20 + nv:]).decode()}


def wr_result(vseq, logit, decision, t_stage1, t_gate, t_encode, t_transmit, out=None):
    """Into out (returns RESULT_SIZE) or as new bytes (out None)."""
    if out is None:
        return struct.pack(_RESULT, vseq, logit, decision, t_stage1, t_gate, t_encode, t_transmit)
    struct.pack_into(_RESULT, out, 0, vseq, logit, decision, t_stage1, t_gate, t_encode, t_transmit)
    return RESULT_SIZE


def rd_result(p):
    _need("RESULT", p, RESULT_SIZE)
    v = struct.unpack_from(_RESULT, p)
    return {"seq": v[0], "logit": v[1], "decision": v[2], "t_stage1": v[3], "t_gate": v[4],
            "t_encode": v[5], "t_transmit": v[6]}


def wr_activations(vseq, sparse):
    return struct.pack("<H", vseq) + bytes(sparse)


def rd_activations(p):
    """-> (vector seq, sparse payload)."""
    _need("ACTIVATIONS", p, 2)
    return p[0] | p[1] << 8, p[2:]


def wr_ack(seq, out=None):
    if out is None:
        return struct.pack("<H", seq & 0xFFFF)
    struct.pack_into("<H", out, 0, seq & 0xFFFF)
    return 2


def rd_ack(p):
    _need("ACK", p, 2)
    return p[0] | p[1] << 8


def wr_error(code, msg):
    return bytes([code]) + msg.encode()[:64]


def rd_error(p):
    """-> (code, message)."""
    _need("ERROR", p, 1)
    return p[0], bytes(p[1:]).decode()


def wr_stats(sent, received, corrupt, duplicates, retransmits, samples, opens, undelivered):
    return struct.pack(_STATS, sent, received, corrupt, duplicates, retransmits, samples, opens, undelivered)


def rd_stats(p):
    _need("STATS", p, 32)
    return dict(zip(STATS_FIELDS, struct.unpack_from(_STATS, p)))
