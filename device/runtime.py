# Stage 1 + the GC layer on the device: parse and check a blob once, allocate every buffer once,
# then run(inp) per sample without allocating. Weights stay in the blob's buffer (memoryview
# slices), so RAM holds one copy of the model.
from array import array
import time

import blob


def kernel_set(name, viper="kernels", portable="kernels_portable"):
    """The kernels `name` ("viper" or "portable"): (name used, the KERNELS tuple, its prepare() or None).
    `viper` and `portable` name the modules (the stage-1 kernels by default; audio_kernels and
    audio_portable for the audio front end). The viper module is imported only for viper, since a
    port without viper cannot compile it; then the portable set is used, with a message saying so."""
    if name not in ("viper", "portable"):
        raise ValueError("kernels %r: viper or portable" % (name,))
    if name == "viper":
        try:
            mod = __import__(viper)
            return name, mod.KERNELS, getattr(mod, "prepare", None)
        except (ImportError, SyntaxError, ValueError) as e:   # no native emitter, or an .mpy for another arch
            print("viper kernels unavailable (%s): using the portable ones" % e)
    mod = __import__(portable)
    return "portable", mod.KERNELS, getattr(mod, "prepare", None)


class Model:
    def __init__(self, src, kernels="viper"):
        # src: the blob (bytes, bytearray) or a path to it. The blob buffer should come from the
        # heap (read(), bytearray): the int32 biases need 2-byte alignment for 16-bit loads.
        if isinstance(src, str):
            with open(src, "rb") as f:
                src = f.read()
        m = blob.parse(src)
        self.kernels, fns, prepare = kernel_set(kernels)
        self.hash = m["hash"]
        self.frontend = m["frontend"]              # the audio front end's parameters and tables, or None
        self.thr = m["thr"]
        self.in_scale, self.act_scale = m["in_scale"], m["act_scale"]
        self.names = [b[0] for b in m["bufs"]]      # buffers in run order, the input first
        mem = [array("i", [0]) if kind == blob.I32 else bytearray(c * h * w * (2 if kind == blob.I16 else 1))
               for _, c, h, w, kind in m["bufs"]]
        self._bufs = dict(zip(self.names, mem))
        bv = memoryview(src)
        dummy = bytearray(4)
        self._plan = ([], [], [])                   # per phase: (kernel, x, y, w, b, s, params)
        act = None
        for op, si, di, phase, relu, stride, k, j, mm, wo, bo, so in m["ops"]:
            _, c, h, w, kind = m["bufs"][si]
            _, co, ho, wo_, _ = m["bufs"][di]
            nw, nb, ns = blob._extents(op, m["bufs"][si], m["bufs"][di], stride)[0]
            p = {blob.CONV: (c, h, w, co, stride, ho, wo_, relu), blob.MAXPOOL: (c, h, w),
                 blob.GPOOL: (c, h * w, mm, k, j), blob.DENSE: (c * h * w, co, relu), blob.LOGIT: (c * h * w,),
                 blob.COMPRESS: (c, h * w), blob.S2D: (c, h, w)}[op]
            sl = lambda off, n: bv[off:off + n] if n else dummy
            k = 8 if kind == blob.I16 else op            # 8: dense over a GPOOL's int16
            self._plan[phase].append((fns[k - 1], mem[si], mem[di]) + prepare(k, sl(wo, nw), sl(bo, nb), sl(so, ns), array("i", p)))
            if op == blob.LOGIT:
                self._logit = mem[di]
            elif op == blob.COMPRESS:
                act = di
        name, c, h, w, _ = m["bufs"][0]
        self.in_shape, self.in_size = (c, h, w), c * h * w
        self._in = memoryview(mem[0])
        name, c, h, w, _ = m["bufs"][act]
        self.act_shape, self.act_size = (c, h, w), c * h * w
        self.act = memoryview(mem[act])
        self.times = {"stage1": 0, "gate": 0, "compress": 0}
        self.logit = 0
        self.open = False
        self.phase = None   # called at each phase boundary (device/duty.py toggles its phase pin)

    def buffer(self, name):
        """A layer's output (memoryview of its bytes, CHW, int16 little-endian for I16; the logit as
        array('i'))."""
        b = self._bufs[name]
        return b if isinstance(b, array) else memoryview(b)

    def run(self, inp, gate=True, hold=False):
        """inp: C*H*W int8 bytes (CHW). Returns the gate logit; sets open, logit, act, times.
        gate False: the gate is skipped and every sample goes on (the no-gate baseline, logit 0).
        hold: the gate is held open whatever the logit (always-on audio after a wake, main.listen)."""
        if len(inp) != self.in_size:
            raise ValueError("input has %d bytes, the model takes %d" % (len(inp), self.in_size))
        self._in[:] = inp
        t0 = time.ticks_us()
        for f, x, y, w, b, s, p in self._plan[0]:
            f(x, y, w, b, s, p)
        t1 = time.ticks_us()
        if gate and self.phase is not None:
            self.phase()
        if gate:
            for f, x, y, w, b, s, p in self._plan[1]:
                f(x, y, w, b, s, p)
            self.logit = self._logit[0]
            self.open = self.logit >= self.thr or hold
        else:
            self.logit, self.open = 0, True
        t2 = time.ticks_us()
        if self.open and self.phase is not None:
            self.phase()
        if self.open:
            for f, x, y, w, b, s, p in self._plan[2]:
                f(x, y, w, b, s, p)
        t3 = time.ticks_us()
        self.times["stage1"] = time.ticks_diff(t1, t0)
        self.times["gate"] = time.ticks_diff(t2, t1)
        self.times["compress"] = time.ticks_diff(t3, t2)
        return self.logit

