"""ugate listen: the detection rule, the long-recording scorer on cases with a known answer, the
generator, and a short recording through the virtual board, checked against the host reference."""
import csv
import json

import numpy as np
import pytest
from scipy.io import wavfile

from ugate import UgateError, cli, listen
from ugate import frontend as H
from ugate.shared import frontend as F
from test_data import needs_tts


def test_detect_rule():
    o = np.zeros(100, bool)
    o[[10, 11, 12, 20, 50, 52, 53, 90]] = True
    assert listen.detect(o, refractory=0) == ([10, 11, 12, 20, 50, 52, 53, 90],) * 2
    sent, wakes = listen.detect(o, refractory=5)       # a wake holds the gate open 5 more strides
    assert wakes == [10, 20, 50, 90] and sent == [*range(10, 16), *range(20, 26), *range(50, 56), *range(90, 96)]
    assert listen.detect(o, need=2, of=3, refractory=5)[1] == [11, 52]    # 10+11; 50+52 (51 closed)
    assert listen.detect(o, every=2, refractory=0)[1] == [10, 12, 20, 50, 52, 90]   # odd strides not run
    assert listen.detect(o, every=2, refractory=4)[0] == [10, 12, 14, 20, 22, 24, 50, 52, 54, 90, 92, 94]
    assert listen.confirmed([10, 20, 50], {12: 1, 13: 1, 21: 0, 56: 1}, 5) == [12]   # 56 is past 50's hold


def test_score_known_answer():
    events = [(1.0, 1.5, "k"), (5.0, 5.6, "k"), (9.0, 9.4, "k"), (20.0, 20.5, "k")]
    times = [1.6, 1.7,          # one hit, then a repeat of the same word: a false accept
             6.5,               # second word: 1.5 s after onset
             12.0,              # nothing there: false accept
             20.5 + 1.0 + listen.SLACK]   # the last moment the fourth word still counts
    s = listen.score(times, events, 3600)
    assert (s["keywords"], s["detected"], s["misses"], s["false_accepts"]) == (4, 3, 1, 2)
    assert s["missed_onsets_s"] == [9.0] and s["false_accepts_per_hour"] == 2
    assert s["false_accept_times_s"] == [1.7, 12.0]
    assert s["latency_s"]["max"] == pytest.approx(1.75) and s["latency_s"]["median"] == pytest.approx(1.5)
    assert listen.score([], events, 60)["miss_rate"] == 1 and listen.score([], [], 60)["latency_s"] is None


def test_windows_are_clips():
    """The host's stream windows equal the features of each 1 s clip the window covers."""
    P = H.params()
    rng = np.random.default_rng(0)
    pcm = H.to_pcm(0.1 * rng.standard_normal(3 * F.SR))
    win = listen.windows(H.compute(H.frames(pcm, P).reshape(-1, F.N), P))
    assert win.shape == (3 * F.SR // F.HOP, 1, F.N_MELS, F.FRAMES)
    assert np.array_equal(win[F.FRAMES - 1, 0], H.features(pcm[:F.SR], P))
    assert (win[0, 0, :, :-1] == -128).all()          # before the recording: silence


def test_labels_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("time,what\n1,marvin\n")
    with pytest.raises(UgateError, match="onset_s, end_s, word"):
        listen.read_labels(tmp_path / "bad.csv")
    with pytest.raises(UgateError, match="no labels file"):
        listen.read_labels(tmp_path / "none.csv")


TONE = 2500


def tone_recording(path, labels, seconds=8, onsets=(1.5, 4.0, 6.2)):
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * F.SR)) / F.SR
    a = 0.005 * rng.standard_normal(len(t)) + 0.2 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0)
    for on in onsets:
        i = int(on * F.SR)
        a[i:i + 6400] += 0.4 * np.sin(2 * np.pi * TONE * t[:6400])
    wavfile.write(path, F.SR, H.to_pcm(a))
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("onset_s", "end_s", "word"))
        w.writerows((on, on + 0.4, "tone") for on in onsets)


@pytest.fixture(scope="module")
def tone_model(tmp_path_factory):
    """A gated model trained on a WAV folder of 1 s clips: a 2.5 kHz tone (positive) vs hum and noise."""
    from ugate.export import export
    from ugate.train import train
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(F.SR) / F.SR
    for cls in ("tone", "other"):
        (root / "data" / cls).mkdir(parents=True)
        for i in range(40):
            a = 0.005 * rng.standard_normal(F.SR) + rng.uniform(0, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 600) * t)
            if cls == "tone":
                at = rng.integers(0, F.SR - 6400)
                a[at:at + 6400] += rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * TONE * t[:6400])
            wavfile.write(root / "data" / cls / f"{i}.wav", F.SR, H.to_pcm(a))
    run = root / "run"
    # 10 epochs: at 4 the 64 training clips left the baseline at chance (0.625), so a pass was luck
    train(str(root / "data"), run, epochs=10, positive="tone", quiet=True, target_recall=0.95)
    export(run, quiet=True)
    return run


def test_listen_through_the_virtual_board(tone_model, tmp_path, capsys):
    tone_recording(tmp_path / "rec.wav", tmp_path / "rec.csv")
    assert cli.main(["listen", "--model", str(tone_model), "--port", "virtual", "--wav", str(tmp_path / "rec.wav"),
                     "--labels", str(tmp_path / "rec.csv")]) == 0
    lines = capsys.readouterr().err.splitlines()
    out = json.loads((tone_model / "listen.json").read_text())
    assert out["device_equals_host"] and out["first_difference"] is None and out["lost"] == 0
    assert out["strides"] == out["board_strides"] == 8 * F.SR // F.HOP and out["dropped_strides"] == 0
    assert out["gate"]["keywords"] == 3 and out["gate"]["misses"] == 0 and out["confirmed"]["misses"] == 0
    assert len(out["wakes_s"]) == out["gate"]["detected"] + out["gate"]["false_accepts"]
    assert len(out["detections_s"]) == out["confirmed"]["detected"] + out["confirmed"]["false_accepts"]
    assert sum("<- detection" in ln for ln in lines) >= len(out["detections_s"])
    assert sum(" wake " in ln for ln in lines) == len(out["wakes_s"])
    assert out["runs"] == out["strides"] and out["per_stride_us"]["frontend"] > 0
    tone_recording(tmp_path / "short.wav", tmp_path / "short.csv", seconds=3, onsets=(1.0,))
    rt = listen.run("virtual", tone_model, tmp_path / "short.wav", realtime=True, every=2)   # at the microphone's pace
    assert rt["late_strides"] == 0 and rt["dropped_strides"] == 0 and rt["device_equals_host"]
    assert 0.95 <= rt["real_time_factor"] < 1.5 and rt["runs"] == rt["strides"] // 2 and "gate" not in rt


def test_listen_cli_errors(digits_run, tmp_path, capsys):
    tone_recording(tmp_path / "rec.wav", tmp_path / "rec.csv")
    assert cli.main(["listen", "--wav", str(tmp_path / "rec.wav")]) == 2
    assert cli.main(["listen", "--model", str(digits_run), "--wav", str(tmp_path / "rec.wav")]) == 2
    assert cli.main(["listen", "--model", str(digits_run), "--wav", str(tmp_path / "none.wav")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "needs --model" in err[0] and "no audio front end" in err[1]
    assert "Traceback" not in "".join(err)


@needs_tts
def test_generate_labels(tmp_path):
    k = listen.generate(tmp_path / "g.wav", tmp_path / "g.csv", seconds=20, seed=2)
    sr, a = wavfile.read(tmp_path / "g.wav")
    rows = listen.read_labels(tmp_path / "g.csv")
    assert sr == F.SR and a.dtype == np.int16 and len(a) == 20 * F.SR
    assert k == sum(r[2] == "marvin" for r in rows) >= 1
    kw = [r for r in rows if r[2] == "marvin"]
    for on, end, _ in kw:        # a second of background alone on either side of each keyword
        assert all(e <= on - 1.0 + 1e-3 or o >= end + 1.0 - 1e-3 for o, e, w in rows if (o, e) != (on, end))
    assert np.abs(a[int(kw[0][0] * F.SR):int(kw[0][1] * F.SR)]).max() > 5 * np.abs(a[:int(0.4 * F.SR)]).max()


def test_hil_compares_the_front_end(tone_model, tmp_path):
    """ugate hil on an audio model also checks the board's front end bit for bit; a board whose mel
    kernel is off by one is caught and the stage named."""
    from conftest import ROOT
    from ugate import hil, reference
    from ugate.board import VirtualBoard
    from ugate.deploy import deploy
    rep = hil.hil(tone_model, "virtual", ("viper",), limit=10, progress=False)
    fe, = rep["frontend"]
    assert rep["passed"] and fe["mismatched_strides"] == 0 and fe["strides"] == fe["board_strides"] == 10 * F.SR // F.HOP
    bad = (ROOT / "device" / "audio_kernels.py").read_text().replace("y[c + 1] += up\n", "y[c + 1] += up + 1\n")
    assert "up + 1" in bad
    with VirtualBoard(tmp_path / "board") as vb:
        deploy(vb.port, tone_model, progress=False)
        (tmp_path / "board" / "audio_kernels.py").write_text(bad)
        fe = reference.load(tone_model / "stage1.blob")[1]["frontend"]
        r = hil.frontend_check(vb.port, fe, hil.test_signal(3), "viper")
    assert r["mismatched_strides"] > 0 and "first difference at mel channel" in r["first_difference"]


def test_mic_pins_from_the_board_file(tmp_path):
    from ugate.boards import load_board
    assert set(load_board("esp32s3-devkitc-1").mic) >= {"sck", "ws", "sd"} and load_board("virtual").mic is None
    src = (load_board("virtual").path).read_text()
    (tmp_path / "bad.toml").write_text(src + '\n[mic]\nsck = 4\nws = "five"\nsd = 6\n')
    with pytest.raises(UgateError, match=r"\[mic\] needs GPIO numbers"):
        load_board(tmp_path / "bad.toml")
    with pytest.raises(UgateError, match="no \\[mic\\] section"):
        listen.live("virtual", tmp_path, "virtual")
