"""HIL defaults that fit a real chip: viper only, a seeded subset sized from the measured speed, the
count and ETA said before the bulk of the run; --all and --kernels both on request."""
import re

import numpy as np
import pytest

from ugate.cli import main as cli
from ugate.hil import PROBE, hil, order

pytestmark = pytest.mark.board


def test_budget_sizes_the_subset_from_the_measured_speed(digits_run, board_port):
    said = []
    rep = hil(digits_run, board_port, progress=False, budget=0.05, log=said.append)
    r, = rep["runs"]
    assert rep["passed"] and r["kernels"] == "viper"
    total = int(re.search(rf"^hil viper on {board_port}: timing {PROBE} of (\d+) samples", said[0])[1])
    m = re.search(r": (\d+) samples \(sized to the time budget\) at (\d+) samples/s, ETA", said[1])
    n, rate = int(m[1]), int(m[2])
    assert r["samples"] == n and abs(n - max(PROBE, 0.05 * rate)) <= 1   # rate as printed (rounded)
    assert n < total   # 0.05 s is under 359 samples on any board


def test_order_prefix_is_the_limit_subset():
    from ugate.run import Experiment
    idx = np.sort(order(397)[:50])
    assert np.array_equal(idx, np.sort(np.random.default_rng(0).permutation(397)[:50]))   # what Experiment(limit=50) keeps
    assert len(set(order(397))) == 397


def test_cli_all_and_both(digits_run, capsys):
    assert cli(["hil", "--model", str(digits_run), "--limit", "30", "--kernels", "both", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "viper     30 samples, 0 mismatches" in out and "portable  30 samples, 0 mismatches" in out
    assert "ETA" in out


def test_cli_refuses_all_with_limit(digits_run):
    with pytest.raises(SystemExit):
        cli(["hil", "--model", str(digits_run), "--all", "--limit", "3"])
