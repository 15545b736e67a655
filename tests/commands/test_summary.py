"""Tests of `python -m drsan_jax.summary`: published multiply-adds and the command line.

Every family's golden counts are in tests/models/test_zoo.py.
"""

import json
import os
import subprocess
import sys

import pytest

from drsan_jax import summary
from drsan_jax.models import MODEL_NAMES, build_model
from drsan_jax.source_cache import SourceCache, source_key

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


def test_table_lists_every_pair(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    first, second = (subprocess.run([sys.executable, "-m", "drsan_jax.summary"], check=True,
                                    capture_output=True, text=True, env=env) for _ in range(2))
    # The first run traces every pair and keeps the counts; the second reads them back.
    assert first.stderr.startswith(f"tracing {len(MODEL_NAMES) * 3} model/scale pair(s)")
    assert second.stderr == "" and second.stdout == first.stdout
    out = first.stdout
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


def test_cached_counts_are_read_back_without_tracing(tmp_path, monkeypatch, capsys):
    pairs = [("32s", 2), ("drsan-32s", 3)]
    traced = summary.summarize_all(pairs, SourceCache("summary", "k", root=tmp_path))
    assert "tracing 2 model/scale pair(s)" in capsys.readouterr().err
    monkeypatch.setattr(summary, "summarize", lambda *a: pytest.fail(f"traced {a} again"))
    # A fresh cache object reads the file; the short and the full name are one entry.
    again = summary.summarize_all([("drsan-32s", 2), ("32s", 3)],
                                  SourceCache("summary", "k", root=tmp_path))
    assert again == traced and capsys.readouterr().err == ""
    assert traced[0]["params"] == 368_427


def test_a_damaged_cache_file_is_reported_and_rewritten(tmp_path, capsys):
    cache = SourceCache("summary", "k", root=tmp_path)
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text('{"drsan-32s x2": ')
    rows = summary.summarize_all([("32s", 2)], cache)
    err = capsys.readouterr().err
    assert f"ignoring the damaged cache file {cache.path}" in err and "tracing 1 " in err
    assert rows[0]["params"] == 368_427
    assert SourceCache("summary", "k", root=tmp_path).get("drsan-32s x2") == rows[0]


def test_the_cache_key_follows_every_source_byte(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    key = source_key([a, b], ("jax",))
    assert source_key([b, a], ("jax",)) == key  # order does not matter
    b.write_text("y = 3\n")
    assert source_key([a, b], ("jax",)) != key
    assert source_key([a, b], ("jax", "flax")) != source_key([a, b], ("jax",))


def test_caching_off_by_environment(monkeypatch, capsys):
    monkeypatch.setenv("DRSAN_JAX_CACHE_DIR", "none")
    cache = SourceCache("summary", "k")
    assert cache.path is None
    summary.summarize_all([("32s", 2)], cache)
    assert "kept in" not in capsys.readouterr().err
