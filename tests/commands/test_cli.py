"""Tests for drsan_jax.cli: which errors are a user's, how they are printed, config keys."""

import errno
import subprocess
import sys
import textwrap

import pytest
from absl import flags
from conftest import REPO
from ml_collections import config_flags

from drsan_jax import cli, evaluation
from drsan_jax.data import BenchmarkError, ImageReadError
from drsan_jax.training import workdir
from drsan_jax.weights import checkpoints, compact, shipped


@pytest.mark.parametrize("error,status", [
    (ValueError("bad value"), 2),
    (compact.WeightsError("damaged"), 2),
    (shipped.PretrainedError("unknown"), 2),
    (evaluation.EvaluationError("no data"), 2),
    (BenchmarkError("no HR"), 2),
    (ImageReadError("not an image"), 2),
    (workdir.WorkdirError("in use"), 2),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "x.png"), 2),
    (PermissionError(errno.EACCES, "Permission denied", "runs"), 2),
    (FloatingPointError("diverged"), 1),
    (checkpoints.CheckpointSaveError("disk full"), 1),
    (OSError(errno.ENOSPC, "No space left on device"), 1),
    (cli.Failed("converter"), 1),
    (TypeError("bug"), None),
    (AttributeError("bug"), None),
    (KeyError("bug"), None),
])
def test_exit_status_sorts_mistakes_failures_and_bugs(error, status):
    assert cli.exit_status(error) == status


def test_run_prints_one_line_or_the_traceback(capsys):
    def fail():
        raise ValueError("--thing 3: expected one of 1, 2\nsecond line of detail")

    assert cli.run("prog", False, fail) == 2
    assert capsys.readouterr().err == "prog: error: --thing 3: expected one of 1, 2\n"
    assert cli.run("prog", True, fail) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "second line" in err
    assert cli.run("prog", False, lambda: 3) == 3 and cli.run("prog", False, lambda: None) == 0


def test_run_raises_bugs_on():
    def bug():
        return {}["missing"]

    with pytest.raises(KeyError):
        cli.run("prog", False, bug)


def test_argument_parser_errors_are_one_line(capsys):
    parser = cli.ArgumentParser(prog="prog")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--n", "x"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "prog: error: argument --n: invalid int value: 'x'\n"
    assert parser.parse_args(["--verbose"]).verbose


CONFIG = textwrap.dedent("""
    import ml_collections

    def get_config():
        config = ml_collections.ConfigDict()
        config.batch_size = 16
        config.patch_size = 48
        config.model = ml_collections.ConfigDict({"features": 32, "family": "drsan"})
        return config
""")


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    """A config file, and FLAGS with a config flag defined for it (restored afterwards)."""
    path = tmp_path / "config.py"
    path.write_text(CONFIG)
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values, lock_config=True)
    monkeypatch.setattr(flags, "FLAGS", flag_values)
    return path


@pytest.mark.parametrize("override,message", [
    ("--config.bach_size=3", "--config.bach_size: {} has no field 'bach_size'; did you mean "
                             "batch_size or patch_size?"),
    ("--config.model.featurs=8", "--config.model.featurs: {} has no field 'model.featurs'; did "
                                 "you mean model.features?"),
    ("--config.zzz=1", "--config.zzz: {} has no field 'zzz'; the fields of the config are "
                       "batch_size, model, patch_size"),
    ("--config.model.xyz=1", "--config.model.xyz: {} has no field 'model.xyz'; the fields of "
                             "model are family, features (a hint)"),
])
def test_unknown_config_keys_name_the_nearest(config_file, override, message):
    argv = ["train.py", f"--config={config_file}", "--config.batch_size=8", override]
    hint = lambda config, key: "a hint" if key == "model.xyz" else None  # noqa: E731
    assert cli.unknown_config_key(argv, hint=hint) == message.format(config_file)
    assert cli.unknown_config_key(argv[:3]) is None  # every key is a field


def test_absl_flags_parser_reports_an_unknown_key_in_one_line(config_file, monkeypatch,
                                                              capsys):
    parse = cli.absl_flags_parser("train.py")
    argv = ["train.py", f"--config={config_file}", "--config.bach_size=3"]
    monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads the overrides from sys.argv
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (f"train.py: error: --config.bach_size: {config_file} has "
                                       f"no field 'bach_size'; did you mean batch_size or "
                                       f"patch_size?\n")
    monkeypatch.setattr(sys, "argv", [*argv, "--verbose"])
    with pytest.raises(AttributeError):
        parse([*argv, "--verbose"])


def test_a_config_file_that_does_not_exist_is_one_line(config_file, monkeypatch, capsys):
    # ml_collections defers this error to the config's first use, naming it "config_config".
    missing = config_file.parent / "nowhere.py"
    argv = ["train.py", f"--config={missing}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        cli.absl_flags_parser("train.py")(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (f"train.py: error: --config={missing}: cannot load it "
                                       f"([Errno 2] No such file or directory: '{missing}')\n")


@pytest.mark.parametrize("command,flag", [
    ("train.py", "--help"), ("train.py", "-h"), ("eval.py", "--help"), ("eval.py", "--helpfull"),
    ("drsan_jax.upscale", "--help"), ("drsan_jax.export", "--help"), ("drsan_jax.convert", "-h"),
    ("drsan_jax.summary", "--help"), ("drsan_jax.pretrained", "--help"),
])
def test_help_exits_0_lists_every_flag_and_imports_no_jax(command, flag):
    # What the help costs is its imports: JAX and the model zoo are left for the work.
    run = (f"runpy.run_path({str(REPO / command)!r}, run_name='__main__')"
           if command.endswith(".py") else f"runpy.run_module({command!r}, run_name='__main__')")
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = [{command!r}, {flag!r}]
        try:
            {run}
        except SystemExit as e:
            print("exit", e.code, "jax" in sys.modules, "flax" in sys.modules, file=sys.stderr)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.stderr.strip().splitlines()[-1] == "exit 0 False False", result.stderr
    if command != "drsan_jax.pretrained":  # the maintainers' tool has no --verbose to list
        assert "--verbose" in result.stdout or "--[no]verbose" in result.stdout
    if command == "train.py":
        assert "--config" in result.stdout and "--workdir" in result.stdout
