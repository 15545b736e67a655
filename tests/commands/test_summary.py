"""Tests of `python -m drsan_jax.summary`: published multiply-adds and the command line.

Every family's golden counts are in tests/models/test_zoo.py.
"""

import json
import subprocess
import sys

import pytest

from drsan_jax import summary
from drsan_jax.models import MODEL_NAMES, build_model

# docs/networks/drsan.md: published multiply-adds (G) for one 1280x720 HR output.
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
    assert summary.main(["--model", "32s", "--scale", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"model": "drsan-32s", "scale": 2, "params": 368_427,
                     "params_total": 368_427, "macs": rows[0]["macs"]}]
    assert rows[0]["macs"] / 1e9 == pytest.approx(84.9, abs=0.05)


def test_multi_scale_rows_give_the_path_and_the_whole_model(capsys):
    assert summary.main(["--model", "mdsr-baseline", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["scale"], r["params"], r["params_total"]) for r in rows] == [
        (2, 1_779_715, 3_227_203), (3, 1_964_355, 3_227_203), (4, 1_927_427, 3_227_203)]


def test_table_lists_every_pair():
    out = subprocess.run([sys.executable, "-m", "drsan_jax.summary"], check=True,
                         capture_output=True, text=True).stdout
    rows = [line for line in out.splitlines() if line.split()[:1] and line.split()[1:2]
            and line.split()[1] in ("x2", "x3", "x4")]
    assert len(rows) == len(MODEL_NAMES) * 3
    assert "1,270,963" in out and "40,729,603" in out and "1,254,080" in out
    assert "197,328" in out and "150,688" in out and "237,000" in out  # SMFANet, SPAN, SAFMN


def test_bad_model_is_a_usage_error_listing_the_models(capsys):
    assert summary.main(["--model", "edsr-basline"]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and message.startswith("python -m drsan_jax.summary: error:")
    assert "unknown model 'edsr-basline' (did you mean edsr-baseline" in message
    assert "'lesrcnn-s'" in message


@pytest.mark.parametrize("args,message", [
    (["--scale", "5"], "--scale 5: expected one of 2, 3, 4"),
    (["--model", "48x"], "--model: unknown model '48x'"),
])
def test_bad_input_through_the_command_line_is_one_line(args, message):
    result = subprocess.run([sys.executable, "-m", "drsan_jax.summary", *args],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("python -m drsan_jax.summary: error: ")
    assert message in result.stderr
