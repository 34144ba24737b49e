"""HIL over a labgrid farm on this machine: labgrid-coordinator, an exporter publishing virtual boards
through Debian's ser2net, one place a board. Places are acquired, split, merged and always released."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ugate import UgateError
from ugate.farm import acquired, hil_farm, local_farm, missing_tools
from ugate.hil import hil

pytestmark = pytest.mark.board


@pytest.fixture(scope="module")
def farm():
    if gone := missing_tools():
        pytest.skip(f"needs {', '.join(gone)} (bash scripts/setup installs them)")
    with local_farm(3) as f:
        yield f


def test_split_across_places_merges_to_the_one_board_report(farm, digits_run, board_port):
    address, names = farm
    one = hil(digits_run, board_port, limit=90, progress=False)["runs"][0]
    rep = hil_farm(digits_run, names, address, limit=90, progress=False, board="virtual")
    many = rep["runs"][0]
    assert rep["passed"] and rep["port"] == "places ugate-0, ugate-1, ugate-2"
    for k in ("kernels", "samples", "positives", "mismatches", "first_mismatch", "board"):
        assert many[k] == one[k], k
    assert [p["samples"] for p in many["places"]] == [30, 30, 30]
    assert acquired(address) == []


def test_failure_on_one_place_releases_every_place(farm, digits_run):
    address, names = farm
    with pytest.raises(UgateError, match="not a ESP32-S3"):   # the virtual boards are not the S3 asked for
        hil_farm(digits_run, names[:2], address, limit=10, progress=False, board="esp32s3-devkitc-1")
    assert acquired(address) == []


def test_a_place_held_by_someone_else_is_one_line_and_nothing_stays_acquired(farm, digits_run):
    address, names = farm
    client = [str(Path(sys.executable).parent / "labgrid-client"), "-x", address, "-p", names[1]]
    subprocess.run(client + ["acquire"], check=True, capture_output=True)
    try:
        with pytest.raises(UgateError, match=f"cannot acquire place {names[1]}.*already acquired"):
            hil_farm(digits_run, names[:2], address, limit=10, progress=False)
        assert acquired(address) == [names[1]]   # ugate-0, acquired first, was released
    finally:
        subprocess.run(client + ["release"], check=True, capture_output=True)


def test_ctrl_c_during_a_farm_run_leaves_no_place_acquired(farm, digits_run):
    address, names = farm
    ugate = str(Path(sys.executable).parent / "ugate")
    p = subprocess.Popen([ugate, "hil", "--model", str(digits_run), "--all", "--kernels", "portable", "--quiet",
                          "--coordinator", address] + [a for n in names for a in ("--place", n)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("places: "), line + p.stderr.read()
        assert acquired(address) == names
        time.sleep(1.5)   # deploying or streaming
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 130, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
    assert acquired(address) == []


def test_board_tests_run_on_a_place_through_lg_env(farm, tmp_path):
    """`pytest --lg-env env.yaml`: the board tests take the env's main target (here a RemotePlace) as the board."""
    address, names = farm
    env = tmp_path / "env.yaml"
    env.write_text(f"targets:\n  main:\n    resources:\n      RemotePlace:\n        name: {names[2]}\n")
    client = [str(Path(sys.executable).parent / "labgrid-client"), "-x", address, "-p", names[2]]
    subprocess.run(client + ["acquire"], check=True, capture_output=True)
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--lg-env", str(env),
                            "--lg-coordinator", address, str(Path(__file__).parent / "test_deploy.py"), "-k", "import_and_verify"],
                           capture_output=True, text=True, env=dict(os.environ, LG_COORDINATOR=address))
    finally:
        subprocess.run(client + ["release"], check=True, capture_output=True)
    assert "1 passed" in r.stdout, r.stdout[-3000:]


def test_the_documented_exporter_config_parses():
    from labgrid.remote.config import ResourceConfig
    from ugate.boards import ROOT
    data = ResourceConfig(str(ROOT / "boards" / "exporter.yaml")).data
    assert all("ID_SERIAL_SHORT" in g["USBSerialPort"]["match"] for g in data.values())
