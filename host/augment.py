"""Training-time augmentation for small sets and all audio, one function a modality, on a batch (N, C, H, W).

Images: a shift of up to 1/8 of each side (edges repeated, i.e. a small crop of a padded image) and a
horizontal flip. Audio features (standardized log-mel, time along the last axis): a time shift (the
window moves over the clip; the vacated frames get the clip's quietest level), a gain (log power
moves by one constant) and a background mixed in at a random level, another training clip of the
batch's negatives: log(a + b) is approximated by max(log a, log b), which is within log 2 and needs no scale.
Shapes, dtype and labels are unchanged; each call draws from the caller's torch.Generator."""
import torch
import torch.nn.functional as F

SHIFT = 1 / 8              # of each side, images and the time axis of audio
FLIP = 0.5                 # images: probability of a horizontal flip
GAIN = 0.3                 # audio: log power moves by up to this, in standardized units (~ +-4 dB)
MIX, MIX_DROP = 0.5, (1.0, 3.0)    # audio: probability of a background, and how far below it sits


def _shift(x, dy, dx):
    """Each sample moved by its own (dy, dx) pixels, edges repeated."""
    n, _, h, w = x.shape
    py, px = int(dy.abs().max()), int(dx.abs().max())
    if not py and not px:
        return x
    pad = F.pad(x, (px, px, py, py), mode="replicate")
    rows = (torch.arange(h)[None, :] + py - dy[:, None]).clamp(0, h + 2 * py - 1)     # (n, h)
    cols = (torch.arange(w)[None, :] + px - dx[:, None]).clamp(0, w + 2 * px - 1)     # (n, w)
    idx = torch.arange(n)[:, None, None]
    return pad.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _uniform_int(n, limit, gen):
    return torch.randint(-limit, limit + 1, (n,), generator=gen) if limit else torch.zeros(n, dtype=torch.long)


def images(x, y, gen):
    n, _, h, w = x.shape
    x = _shift(x, _uniform_int(n, int(h * SHIFT), gen), _uniform_int(n, int(w * SHIFT), gen))
    flip = torch.rand(n, generator=gen) < FLIP
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def audio(x, y, gen):
    n, _, _, t = x.shape
    floor = x.amin(dim=(1, 2, 3), keepdim=True)
    dt = _uniform_int(n, int(t * SHIFT), gen)
    cols = torch.arange(t)[None, :] - dt[:, None]                  # frame j shows frame j - dt
    x = torch.where(((cols >= 0) & (cols < t))[:, None, None, :],
                    x.gather(3, cols.clamp(0, t - 1)[:, None, None, :].expand_as(x)), floor)
    x = x + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * GAIN
    neg = torch.nonzero(y == 0).flatten()        # a positive under a negative would make it one
    if not len(neg):
        return x
    other = neg[torch.randint(len(neg), (n,), generator=gen)]
    lo, hi = MIX_DROP
    drop = lo + torch.rand(n, 1, 1, 1, generator=gen) * (hi - lo)
    mixed = torch.maximum(x, x[other] - drop)
    return torch.where((torch.rand(n, generator=gen) < MIX)[:, None, None, None], mixed, x)


def for_data(is_audio):
    return audio if is_audio else images
