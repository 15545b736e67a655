"""Tests of `python -m drsan_jax.summary`: published multiply-adds and the command line."""

import json
import subprocess
import sys

import pytest

from drsan_jax import summary
from drsan_jax.models import build_model

# DRSAN.md: published multiply-adds (G) for one 1280x720 HR output.
PUBLISHED_GMACS = {
    ("48m", 2): 274.6, ("48s", 3): 78.0, ("48m", 3): 133.4,
    ("32s", 4): 30.5, ("32m", 4): 49.0, ("48s", 4): 57.6, ("48m", 4): 88.7,
}


@pytest.mark.parametrize("variant,scale", sorted(PUBLISHED_GMACS))
def test_macs_within_one_percent_of_published(variant, scale):
    gmacs = summary.conv_macs(build_model(variant, scale)) / 1e9
    assert gmacs == pytest.approx(PUBLISHED_GMACS[(variant, scale)], rel=0.01)


def test_macs_follow_ablations():
    # Dropping the 1x1 fusion removes exactly its MACs: (N+1)c * c per LR pixel per DRAG.
    full = summary.conv_macs(build_model("32s", 2))
    no_fusion = summary.conv_macs(build_model("32s", 2, use_fusion=False))
    assert full - no_fusion == pytest.approx(4 * 5 * 32 * 32 * 640 * 360)


def test_json_selection(capsys):
    assert summary.main(["--variant", "32s", "--scale", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"variant": "32s", "scale": 2, "params": 368_427, "macs": rows[0]["macs"]}]
    assert rows[0]["macs"] / 1e9 == pytest.approx(84.9, abs=0.05)


def test_table_lists_every_pair():
    out = subprocess.run([sys.executable, "-m", "drsan_jax.summary"], check=True,
                         capture_output=True, text=True).stdout
    assert len([line for line in out.splitlines() if line.startswith(("32", "48"))]) == 15
    assert "1,270,963" in out


def test_bad_variant_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as err:
        summary.main(["--variant", "64s"])
    assert err.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
