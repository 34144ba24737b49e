"""Networked serial ports: every --port takes a pyserial URL (socket://, rfc2217://) besides a path,
through a local ser2net (Debian's) or a plain TCP bridge, and every failure names the URL."""
import shutil
import socket
import subprocess
import threading
import time
import select

import pytest

from ugate import UgateError
from ugate.board import VirtualBoard, check_port, connect
from ugate.cli import main as cli


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bridge:
    """socket://127.0.0.1:PORT for a local serial device: one client at a time, bytes copied both ways
    (pyserial's tcp_serial_redirect, cut down)."""

    def __init__(self, device):
        import serial
        self.dev = serial.Serial(device, timeout=0)
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.srv.getsockname()[1]}"
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            if not select.select([self.srv], [], [], 0.1)[0]:
                continue
            c, _ = self.srv.accept()
            with c:
                while not self.stop:
                    r, _, _ = select.select([c, self.dev.fd], [], [], 0.1)
                    if c in r:
                        data = c.recv(4096)
                        if not data:
                            break
                        self.dev.write(data)
                    if self.dev.fd in r:
                        c.sendall(self.dev.read(4096))

    def close(self):
        self.stop = True
        self.thread.join()
        self.srv.close()
        self.dev.close()


@pytest.fixture(scope="module")
def vboard(tmp_path_factory):
    with VirtualBoard(tmp_path_factory.mktemp("urlboard")) as vb:
        yield vb


@pytest.fixture(scope="module")
def ser2net(vboard, tmp_path_factory):
    """(socket URL, rfc2217 URL) of the virtual board published by Debian's ser2net."""
    if not shutil.which("ser2net"):
        pytest.skip("ser2net not installed (apt-get install ser2net; scripts/setup does)")
    raw, rfc = free_port(), free_port()
    cfg = tmp_path_factory.mktemp("ser2net") / "ser2net.yaml"
    cfg.write_text(f"connection: &raw\n  accepter: tcp,127.0.0.1,{raw}\n  connector: serialdev,{vboard.port},115200n81,local\n"
                   f"connection: &rfc\n  accepter: telnet(rfc2217),tcp,127.0.0.1,{rfc}\n  connector: serialdev,{vboard.port},115200n81,local\n")
    p = subprocess.Popen(["ser2net", "-n", "-d", "-c", str(cfg), "-P", str(cfg.with_suffix(".pid"))],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in (raw, rfc):   # listening?
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
    time.sleep(0.3)   # ser2net closes the probe connections
    yield f"socket://127.0.0.1:{raw}", f"rfc2217://127.0.0.1:{rfc}?ign_set_control"
    p.terminate()
    p.wait()


def test_socket_url_through_a_tcp_bridge(vboard):
    b = Bridge(vboard.port)
    try:
        with connect(b.url) as t:
            assert t.eval("6*7") == 42
    finally:
        b.close()


def test_ser2net_urls_run_hil_and_info(ser2net, digits_run, capsys):
    raw, rfc = ser2net
    for url in (raw, rfc):
        check_port(url)
        with connect(url) as t:
            assert t.eval("6*7") == 42
    assert cli(["hil", "--model", str(digits_run), "--port", rfc, "--limit", "15", "--quiet"]) == 0
    assert cli(["run", "--model", str(digits_run), "--port", raw, "--limit", "15", "--quiet"]) == 0
    assert cli(["board", "info", "--port", rfc, "--model", str(digits_run)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "matches stage1.blob" in out


def test_rfc2217_without_ign_set_control_says_what_to_add(ser2net):
    with pytest.raises(UgateError, match=r"rfc2217://.*add \?ign_set_control"):
        check_port(ser2net[1].split("?")[0])


@pytest.mark.parametrize("cmd", [["deploy"], ["board", "info"], ["hil", "--model", "M"], ["run", "--model", "M"],
                                 ["npu", "--model", "M"]])
def test_every_command_names_the_url_it_cannot_reach(cmd, digits_run, capsys):
    dead = f"socket://127.0.0.1:{free_port()}"   # nothing listens there
    cmd = [str(digits_run) if a == "M" else a for a in cmd]
    assert cli(cmd + ["--port", dead]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach {dead}" in err, err


def test_bad_url_scheme():
    with pytest.raises(UgateError, match="bad port URL nope://x:1"):
        check_port("nope://x:1")
