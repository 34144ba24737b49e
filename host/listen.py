"""`ugate listen`: always-on audio through a board, judged the way wake-word engines are: a long
recording is replayed as the board's microphone (device/main.py listen(): the integer front end a
stride, stage 1 and the gate on the sliding window; a wake holds the gate open for a while and
stage 2 confirms the word on the windows sent), detections are printed live and matched
against the labelled keyword onsets: misses, false accepts per hour, latency, per-stride cost,
real-time factor -> listen.json.

The host computes the same stream with its integer reference (ugate.frontend, ugate.reference) and
the same detection rule, so every detection the board sends is checked bit for bit (stride and gate
logit). `generate` makes long labelled recordings: Asterisk speech, synthesized other words and
coloured noise as the background, the keywords at random times with a second of background only on
each side (the window a detection looks at)."""
import csv
import json
import sys
from pathlib import Path

import numpy as np

from ugate import UgateError
from ugate.shared import frontend as F

SLACK = 0.25    # s: a detection may come this long after the word has left the 1 s window


# --- long labelled recordings ---------------------------------------------------------------------

def generate(wav, labels, seconds=600, positive="marvin", per_minute=10, seed=0, progress=False):
    """Write a `seconds`-long 16 kHz int16 WAV and its labels CSV (onset_s, end_s, word): `per_minute`
    keywords (`positive`), each with 1 s of background alone on either side, between them other words
    and Asterisk speech, over continuous noise. Returns the number of keywords inserted."""
    from scipy.io import wavfile
    from tqdm import tqdm
    from ugate import frontend, keywords
    if positive not in keywords.WORDS:
        raise UgateError(f"unknown keyword {positive!r}; one of: {', '.join(keywords.WORDS)}")
    if seconds < 5:
        raise UgateError(f"a recording of {seconds} s is too short: at least 5 s")
    rng = np.random.default_rng(seed)
    sr = F.SR
    n = int(seconds * sr)
    noise_level = np.exp(rng.uniform(np.log(2e-3), np.log(1e-2)))
    audio = np.concatenate([keywords._noise(rng, sr) for _ in range(-(-n // sr))])[:n] * noise_level
    rows, at, gap = [], 0.5, 60 / per_minute
    others = [w for w in keywords.WORDS if w != positive]
    bar = tqdm(total=int(seconds), desc="generating recording", unit="s", disable=not progress)
    while at < seconds - 3:
        if rng.random() < 0.5:      # a keyword, alone in its window
            a = keywords._speak(positive, rng)
            start = at + 1.0
            a = a * rng.uniform(0.1, 0.9) / (np.abs(a).max() + 1e-9)
            a *= max(1.0, noise_level * 10 ** (rng.uniform(10, 40) / 20) / (np.sqrt(np.mean(a ** 2)) + 1e-12))
            word, end_gap = positive, 1.0
        elif rng.random() < 0.5:    # another word
            a, start, end_gap = keywords._speak(others[rng.integers(len(others))], rng), at, 0.2
            a = a * rng.uniform(0.1, 0.9) / (np.abs(a).max() + 1e-9)
            word = "word"
        else:                       # a stretch of real speech
            s = keywords.read_wav(keywords.speech_files()[rng.integers(len(keywords.speech_files()))])
            a, start, end_gap, word = s[:int(rng.uniform(1, 4) * sr)], at, 0.2, "speech"
            a = a * rng.uniform(0.1, 0.9) / (np.abs(a).max() + 1e-9)
        i = int(start * sr)
        if i + len(a) >= n - int(end_gap * sr):
            break
        audio[i:i + len(a)] += a
        end = start + len(a) / sr
        rows.append((round(start, 4), round(end, 4), word if word != "word" else "other"))
        nxt = end + end_gap + rng.uniform(0.2, gap if word == positive else gap / 2)
        bar.update(int(nxt) - int(at))
        at = nxt
    bar.close()
    wavfile.write(wav, sr, frontend.to_pcm(np.clip(audio, -1, 1)))
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("onset_s", "end_s", "word"))
        w.writerows(rows)
    return sum(r[2] == positive for r in rows)


def read_labels(path, words=None):
    """A labels CSV (onset_s, end_s, word) -> [(onset, end, word)], the rows whose word is in `words`
    (all if None). One clear error if the file is not that."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        out = [(float(r["onset_s"]), float(r["end_s"]), r["word"]) for r in rows]
    except FileNotFoundError:
        raise UgateError(f"no labels file {path}") from None
    except (KeyError, ValueError, TypeError, csv.Error) as e:
        raise UgateError(f"{path}: not a labels CSV with columns onset_s, end_s, word ({e})") from None
    return [r for r in out if words is None or r[2] in words]


def read_pcm(path):
    """A WAV file -> int16 PCM at 16 kHz (16-bit mono 16 kHz is taken as is, sample for sample)."""
    from scipy.io import wavfile
    from ugate import frontend, keywords
    try:
        sr, a = wavfile.read(path)
    except FileNotFoundError:
        raise UgateError(f"no recording {path}") from None
    except Exception as e:
        raise UgateError(f"cannot read {path} as WAV: {e}") from None
    if sr == F.SR and a.dtype == np.int16 and a.ndim == 1:
        return a
    return frontend.to_pcm(keywords.read_wav(path))


# --- what the board should do: the host's reference, stride by stride ----------------------------

def windows(features, frames=F.FRAMES):
    """(strides, n_mels) int8 columns -> (strides, 1, n_mels, frames) model inputs: the window at
    stride t is columns t - frames + 1 .. t, silence (-128) before the first (device/audio.py)."""
    pad = np.full((frames - 1, features.shape[1]), -128, np.int8)
    a = np.concatenate([pad, features])
    w = np.lib.stride_tricks.sliding_window_view(a, frames, axis=0)    # (strides, n_mels, frames)
    return w[:, None]


def detect(open_, every=1, need=1, of=1, refractory=32):
    """The board's rule (device/main.py listen()) on per-stride gate decisions (bool array): a wake is
    `need` open gates of the last `of` runs (every `every` strides); the gate then stays open for
    `refractory` strides and each run in them is sent too. Returns (strides sent, strides of wakes)."""
    sent, wakes, hist, wait, mask = [], [], 0, 0, (1 << of) - 1
    for t, o in enumerate(open_):
        held = wait > 0
        if held:
            wait -= 1
        if t % every:
            continue
        if held:
            sent.append(t)
            continue
        hist = ((hist << 1) | int(o)) & mask
        if bin(hist).count("1") >= need:
            sent.append(t)
            wakes.append(t)
            hist, wait = 0, refractory
    return sent, wakes


def confirmed(wakes, classes, refractory):
    """Per wake, the first stride sent in its hold period [wake, wake + refractory] that stage 2 calls
    positive (classes: stride -> class): the detections of the whole system."""
    out = []
    for w in wakes:
        k = next((t for t in range(w, w + refractory + 1) if classes.get(t, 0) > 0), None)
        if k is not None:
            out.append(k)
    return out


def reference_stream(raw, fe, pcm, progress=False):
    """Host reference of a recording: (gate logits per stride int64, open per stride bool, the
    compressed activations per stride int8 (strides, ...), what the board sends when it sends)."""
    from ugate import frontend, reference
    cols = frontend.compute(frontend.frames(pcm, fe).reshape(-1, fe["n"]), fe)
    win = windows(cols)
    rs = [reference.run(raw, np.ascontiguousarray(win[i:i + 4096]), progress=False) for i in range(0, len(win), 4096)]
    logit = np.concatenate([r["logit"] for r in rs]).astype(np.int64).reshape(-1)
    return logit, np.concatenate([r["open"] for r in rs]).reshape(-1), np.concatenate([r["act"] for r in rs])


# --- scoring --------------------------------------------------------------------------------------

def score(times, events, seconds, window=1.0, slack=SLACK):
    """Match detection times (s, the end of their window) to labelled events [(onset, end, word)]: a
    detection at t matches an unmatched event with onset < t <= end + window + slack (the word is in
    the window), earliest first. Returns misses, false accepts (and per hour), latencies (s from
    onset to detection)."""
    events = sorted(events)
    used = [False] * len(events)
    lat, false = [], []
    for t in sorted(times):
        k = next((i for i, (on, end, _) in enumerate(events) if not used[i] and on < t <= end + window + slack), None)
        if k is None:
            false.append(round(t, 3))
        else:
            used[k] = True
            lat.append(t - events[k][0])
    n = len(events)
    missed = [round(events[i][0], 3) for i in range(n) if not used[i]]
    lat = np.array(lat)
    return {"keywords": n, "detected": n - len(missed), "misses": len(missed),
            "miss_rate": len(missed) / n if n else 0.0, "missed_onsets_s": missed,
            "false_accepts": len(false), "false_accepts_per_hour": len(false) * 3600 / max(seconds, 1e-9),
            "false_accept_times_s": false,
            "latency_s": {k: round(float(f(lat)), 3) for k, f in
                          (("median", np.median), ("mean", np.mean), ("p90", lambda v: np.percentile(v, 90)),
                           ("max", np.max))} if len(lat) else None}


# --- through a board ------------------------------------------------------------------------------

def run(port, model_dir, wav, labels=None, realtime=False, kernels="viper", every=1, need=1, of=1,
        refractory=32, emit=lambda line: None, progress=False):
    """Replay `wav` through the board on `port` ("virtual": one started for the call) as its microphone;
    return the listen.json dict (also written to MODEL_DIR/listen.json)."""
    import contextlib
    import time
    from ugate import model as M
    from ugate import npu, reference
    from ugate.board import VirtualBoard, connect
    from ugate.deploy import deploy
    from ugate.export import check_run_folder
    from ugate.run import check_port_first
    from ugate.session import session
    model_dir = Path(model_dir)
    for name, v in (("every", every), ("need", need), ("of", of)):
        if v < 1:
            raise UgateError(f"--{name} must be at least 1, not {v}")
    if need > of or of > 30:
        raise UgateError(f"--need {need} of --of {of}: need <= of <= 30")
    if refractory < 0:
        raise UgateError(f"--refractory must be >= 0, not {refractory}")
    check_port_first(port)
    meta = check_run_folder(model_dir)
    raw, parsed = reference.load(model_dir / "stage1.blob")
    fe = parsed["frontend"]
    if fe is None:
        raise UgateError(f"{model_dir} has no audio front end in its blob: train on keywords or a WAV folder "
                         "and export again")
    pcm = read_pcm(wav)
    seconds = len(pcm) / fe["sr"]
    ck = M.load(model_dir / "model.pt")[1]
    positive = (ck.get("class_names") or [])[1:]
    events = read_labels(labels, set(positive)) if labels else None
    hop_s = fe["hop"] / fe["sr"]
    logit, open_, _ = reference_stream(raw, fe, pcm, progress)
    want, wakes = detect(open_, every, need, of, refractory)
    stage2 = npu.load_stage2(model_dir / "stage2.npz")
    class_names = ck.get("class_names") or [f"class {k}" for k in range(stage2.n_classes)]
    stage2(np.zeros((1, int(np.prod(stage2.act_shape))), np.int8))   # compile before the board streams
    got = []

    wake_set = set(wakes)

    def on_window(d):
        d["time_s"] = round((d["sample"] + 1) * hop_s, 3)
        got.append(d)
        if d["sample"] in wake_set or d.get("class", 0) > 0:
            emit(f"{d['time_s']:9.2f} s  {'wake' if d['sample'] in wake_set else '    '} gate logit {d['gate_logit']:>7}, "
                 f"stage 2: {d.get('label', 'nothing (lost)')}{'  <- detection' if d.get('class', 0) > 0 else ''}")

    vb = VirtualBoard() if port == "virtual" else contextlib.nullcontext()
    with vb:
        p = vb.port if port == "virtual" else port
        deploy(p, model_dir, progress=progress)
        if port == "virtual":   # the board's filesystem is a folder here: no 20 MB over the REPL
            (vb.dir / "audio.pcm").write_bytes(pcm.astype("<i2").tobytes())
        else:
            with connect(p) as t:
                t.fs_writefile("audio.pcm", pcm.astype("<i2").tobytes())
        opts = {"every": every, "need": need, "of": of, "refractory": refractory, "realtime": bool(realtime)}
        with session(p, kernels, blob_hash=meta["hash"], entry="listen", options=opts) as (link, info):
            emit(f"ugate listen: {p} ({info['board']}), {seconds:.1f} s of audio, "
                 f"{'at real-time pace' if realtime else 'as fast as the board goes'}")
            t0 = time.perf_counter()
            stats = npu.listen(link, stage2, class_names, on_window, give_up=max(30.0, 2 * seconds))
            host_s = time.perf_counter() - t0
        with connect(p) as t:
            cost = json.loads(t.fs_readfile("listen.txt").decode())
    strides = len(pcm) // fe["hop"]
    board = [(d["sample"], d["gate_logit"]) for d in got]
    host = [(t, int(logit[t])) for t in want]
    det = confirmed(wakes, {d["sample"]: d.get("class", 0) for d in got}, refractory)
    n = max(cost["strides"], 1)
    per = {k: cost[f"{k}_us"] / max(cost["runs"] if k != "frontend" else n, 1) for k in ("frontend", "stage1", "gate")}
    out = {"recording": str(wav), "seconds": round(seconds, 3), "strides": strides, "stride_s": hop_s,
           "board_strides": cost["strides"], "dropped_strides": strides - cost["strides"], "late_strides": cost["late"],
           "kernels": cost["kernels"], "rule": {"every": every, "need": need, "of": of, "refractory": refractory},
           "wakes_s": [round((t + 1) * hop_s, 3) for t in wakes],
           "detections_s": [round((t + 1) * hop_s, 3) for t in det],
           "sent": [{k: d.get(k) for k in ("sample", "time_s", "gate_logit", "label")} for d in got],
           "device_equals_host": board == host, "host_sent": len(host),
           "first_difference": next(({"board": b, "host": h} for b, h in zip(board + [None] * len(host), host + [None] * len(board))
                                     if b != h), None),
           "lost": stats["lost"],
           "per_stride_us": {**{k: round(v, 1) for k, v in per.items()},
                             "frontend_max": cost["frontend_max_us"], "note": "this host's CPU running the virtual "
                             "board, not the chip: see bench/listen.py for the S3 cycle model"
                             if port == "virtual" else "measured on the board"},
           "runs": cost["runs"], "board_wall_s": round(cost["wall_us"] / 1e6, 3), "host_wall_s": round(host_s, 3),
           "real_time_factor": round(cost["wall_us"] / 1e6 / seconds, 4)}
    if events is not None:
        out["gate"] = score(out["wakes_s"], events, seconds)        # the board's wakes alone
        out["confirmed"] = score(out["detections_s"], events, seconds)   # wakes stage 2 confirmed
    (model_dir / "listen.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def live(port, model_dir, board, kernels="viper", every=1, need=1, of=1, refractory=32, emit=lambda line: None):
    """Listen to the board's own I2S microphone (pins: the board file's [mic]) until Ctrl-C, printing
    detections as they come. Returns the detections."""
    from ugate import model as M
    from ugate import npu
    from ugate.boards import load_board
    from ugate.deploy import deploy
    from ugate.export import check_run_folder
    from ugate.run import check_port_first
    from ugate.session import session
    b = load_board(board)
    if not b.mic:
        raise UgateError(f"board {b.name} has no [mic] section (sck, ws, sd GPIOs) in {b.path}")
    if port == "virtual":
        raise UgateError("a virtual board has no microphone: replay a recording with --wav")
    check_port_first(port)
    meta = check_run_folder(model_dir)
    if meta["frontend"] is None:
        raise UgateError(f"{model_dir} has no audio front end in its blob: train on keywords or a WAV folder")
    stage2 = npu.load_stage2(Path(model_dir) / "stage2.npz")
    names = M.load(Path(model_dir) / "model.pt")[1].get("class_names") or [f"class {k}" for k in range(stage2.n_classes)]
    hop_s = meta["frontend"]["hop"] / meta["frontend"]["sr"]
    deploy(port, model_dir, progress=False)
    pins = (b.mic["sck"], b.mic["ws"], b.mic["sd"], b.mic.get("shift", 16))
    got = []

    def on_window(d):
        got.append(d)
        if d.get("class", 0) > 0:
            emit(f"{(d['sample'] + 1) * hop_s:9.2f} s  detection: gate logit {d['gate_logit']}, stage 2: {d['label']}")

    opts = {"every": every, "need": need, "of": of, "refractory": refractory, "mic": pins}
    with session(port, kernels, blob_hash=meta["hash"], entry="listen", options=opts) as (link, info):
        emit(f"ugate listen: {port} ({info['board']}) listening on its microphone {pins[:3]}; Ctrl-C ends")
        try:
            npu.listen(link, stage2, names, on_window, give_up=float("inf"))
        except KeyboardInterrupt:
            pass
    return got


def add_arguments(parser):
    parser.add_argument("--model", help="run folder (ugate export) of a model trained on audio")
    parser.add_argument("--port", default="virtual", help="serial port of a board, or virtual (default)")
    parser.add_argument("--wav", help="the recording to replay as the board's microphone (16 kHz mono best)")
    parser.add_argument("--labels", help="labels CSV (onset_s, end_s, word): score misses and false accepts")
    parser.add_argument("--realtime", action="store_true", help="replay at the microphone's pace (default: as fast as possible)")
    parser.add_argument("--kernels", default="viper", choices=("viper", "portable"))
    parser.add_argument("--every", type=int, default=1, help="run stage 1 and the gate every N strides (default 1)")
    parser.add_argument("--need", type=int, default=1, help="a detection needs NEED open gates ... (default 1)")
    parser.add_argument("--of", type=int, default=1, help="... of the last OF runs (default 1)")
    parser.add_argument("--refractory", type=int, default=32, help="strides the gate stays open after a wake, so stage 2 sees the word complete (default 32 = 1 s)")
    parser.add_argument("--generate", metavar="SECONDS", type=float,
                        help="instead: write a labelled recording of this length to --wav and --labels")
    parser.add_argument("--positive", default="marvin", help="the keyword --generate inserts (default marvin)")
    parser.add_argument("--seed", type=int, default=0, help="--generate's seed")
    parser.add_argument("--mic", action="store_true", help="instead: listen to the board's I2S microphone (pins: "
                        "--board's [mic]) until Ctrl-C")
    parser.add_argument("--board", help="board name from boards/ (for --mic)")


def main(args):
    say = lambda line: print(line, file=sys.stderr, flush=True)
    if args.generate is not None:
        if not args.wav or not args.labels:
            raise UgateError("--generate needs --wav and --labels to write")
        k = generate(args.wav, args.labels, args.generate, args.positive, seed=args.seed, progress=True)
        say(f"ugate listen: wrote {args.wav} ({args.generate:g} s, {k} keywords) and {args.labels}")
        return 0
    if args.mic:
        if not args.model or not args.board:
            raise UgateError("ugate listen --mic needs --model and --board (its [mic] pins)")
        got = live(args.port, args.model, args.board, args.kernels, args.every, args.need, args.of, args.refractory, say)
        say(f"ugate listen: {sum(d.get('class', 0) > 0 for d in got)} windows stage 2 called positive")
        return 0
    if not args.model or not args.wav:
        raise UgateError("ugate listen needs --model and --wav (or --generate SECONDS --wav --labels)")
    out = run(args.port, args.model, args.wav, args.labels, args.realtime, args.kernels, args.every, args.need,
              args.of, args.refractory, emit=say, progress=False)
    line = (f"ugate listen: {out['seconds']:.0f} s, {len(out['wakes_s'])} wakes, {len(out['detections_s'])} detections, "
            f"board == host reference: "
            f"{out['device_equals_host']}, dropped strides {out['dropped_strides']}, late {out['late_strides']}, "
            f"per stride {out['per_stride_us']['frontend']:.0f} us front end + {out['per_stride_us']['stage1']:.0f} us "
            f"stage 1 + {out['per_stride_us']['gate']:.0f} us gate (this host), real-time factor {out['real_time_factor']:.3f}")
    for k in ("gate", "confirmed"):
        if k in out:
            g = out[k]
            line += (f"; {k}: misses {g['misses']}/{g['keywords']} ({g['miss_rate']:.1%}), false accepts "
                     f"{g['false_accepts']} ({g['false_accepts_per_hour']:.1f}/h)")
    say(line)
    say(f"wrote {Path(args.model) / 'listen.json'}")
    return 0 if out["device_equals_host"] and not out["lost"] else 1
