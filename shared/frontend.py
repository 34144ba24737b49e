"""The audio front end: 16 kHz int16 PCM -> one int8 log-mel column a stride. The one definition of
its parameters and its arithmetic (its blob section: shared/blob.py); ugate.frontend (numpy) is the executable
reference, device/audio_kernels.py (viper) and device/audio_portable.py the device's twins.
MicroPython subset: imported as ugate.shared.frontend on the host and as `frontend` on the device.

Parameters (the defaults; the blob carries the values a model was trained with)
  SR 16000 Hz; frame N = 512 samples (32 ms) = the FFT length; stride HOP = 500 samples (31.25 ms,
  32 frames a second); frame t covers samples [t*HOP - PAD, (t+1)*HOP), PAD = N - HOP, zero before
  a clip, so 1 s of audio is exactly 32 frames and a stream's frame t is ready as its stride t ends; 32 mel channels, 60..4000 Hz (the
  Asterisk speech negatives are 8 kHz telephone audio). A model input is (1, N_MELS, 32): mel
  channel by frame, the newest frame last.

Arithmetic (all of it fits int32; the reference asserts every range)
  window   y[i] = (x[i] * win[i] + 2^14) >> 15          win: Hann, Q15 int16 (0..32767); |y| <= 2^15
  FFT      N-point radix-2 decimation in time over y in bit-reversed order (imaginary 0), int32,
           no scaling (|X| <= N * 2^15 = 2^24). Twiddle w = cos - i sin of 2 pi k / N, Q15 int16.
           Every product of a value a by a twiddle w is mul15(a, w) = (a >> 15) * w
           + (((a & 0x7fff) * w + 2^14) >> 15), which is round(a * w / 2^15) (half up) computed in
           32 bits. Butterfly: t = b * w, tr = mul15(br, c) + mul15(bi, s),
           ti = mul15(bi, c) - mul15(br, s); a' = a + t, b' = a - t (c, s: cos and sin at stage size m,
           index k n / m).
  power    bins 0..N/2. s = max(0, bitlen(max |re|, |im| over the bins) - 13): a block exponent so that
           P[k] = (re >> s)^2 + (im >> s)^2 < 2^27.
  mel      per bin k in [k_lo, k_hi): segment c = band[k] (bin between mel edges c and c+1) and the
           rising weight w = weight[k] (Q15, 0..32767). m[c] += mul15(P, w) (channel c rises),
           m[c - 1] += P - mul15(P, w) (channel c - 1 falls); m has N_MELS + 2 slots, channel i in
           slot i + 1, slots 0 and N_MELS + 1 discard. Each channel's weights sum below 16, so m < 2^31.
  log      L = log2(m) in Q8 (0 for m = 0): e = bitlen(m) - 1, u = m normalized to [2^13, 2^14),
           f = u - 2^13, i = f >> 8, L = 256 e + LOG2[i] + (((LOG2[i+1] - LOG2[i]) * (f & 255) + 128) >> 8).
           Then with the block exponent, L += 512 s (power scales by 2^(2s)).
  feature  q = clamp((GAIN * (L - OFFSET) + 128) >> 8, -128, 127): GAIN / 256 int8 steps per
           octave of power (6: half a dB a step), OFFSET = the log2 (Q8) that maps to 0.
           GAIN and OFFSET are the defaults; a model's blob carries its own, fitted on its train
           split (ugate.frontend.fit) so that its features come out standardized.
           The model sees x = q * SCALE (SCALE = 1/32, a power of two: q survives the round trip).

Blob section: shared/blob.py (flag FRONTEND) carries these parameters and the tables, which the host
makes (ugate.frontend.params) from the parameters; the device only reads them, so float on the
chip (single precision) never enters.
"""

try:
    from micropython import const
except ImportError:
    const = lambda x: x

SR = const(16000)
N = const(512)
HOP = const(500)
PAD = const(12)
N_MELS = const(32)
FRAMES = const(32)      # frames a model window (1 s)
FMIN = const(60)
FMAX = const(4000)
GAIN = const(6)
OFFSET = const(7680)    # 30 octaves of power, Q8
SCALE = 1 / 32
NOBAND = const(255)     # band[k] of a bin outside every channel

# LOG2[i] = round(256 * log2(1 + i / 32)), i = 0..32 (tests/test_frontend.py recomputes it)
LOG2 = (0, 11, 22, 33, 44, 54, 63, 73, 82, 92, 100, 109, 118, 126, 134, 142, 150, 157, 165, 172, 179,
        186, 193, 200, 207, 213, 220, 226, 232, 238, 244, 250, 256)

def bitrev(n):
    """rev[i] = i with its log2(n) bits reversed (array 'H'): where window sample i goes for the FFT."""
    from array import array
    bits = 0
    while (1 << bits) < n:
        bits += 1
    rev = array("H", bytes(2 * n))
    for i in range(n):
        r = 0
        for j in range(bits):
            r |= ((i >> j) & 1) << (bits - 1 - j)
        rev[i] = r
    return rev
