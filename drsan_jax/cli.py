"""How every command line reports a mistake: one line on stderr, the traceback only on request.

train.py, eval.py and `python -m drsan_jax.{upscale,summary,pretrained,convert,export}` all
run their work through `run`, which sorts what went wrong into

- a mistake in what the user gave (exit status `USAGE`, 2): a ValueError (every error class of
  this package that describes a bad flag, file or value derives from it: `WeightsError`,
  `PretrainedError`, `EvaluationError`, `BenchmarkError`, `ImageReadError`, `ExportError`,
  `WorkdirError`, ...) or an OSError about a file (not found, not allowed, a file where a
  folder was expected);
- a run that started and could not finish (exit status `FAILED`, 1): FloatingPointError (a
  diverged training run), `Failed`, and any other OSError (a full disk, an I/O error);
- anything else, a bug (TypeError, AttributeError, KeyError, ... from our own code): it is
  raised on with its whole traceback, since one line would hide where it happened.

The first two print `<prog>: error: <the message's first line>` on stderr and nothing else;
a run stopped on request after saving (`Stopped`: SIGTERM or Ctrl-C during training) prints
`<prog>: <what was saved>` and exits with 128 + the signal's number, and an unhandled Ctrl-C
elsewhere prints `<prog>: interrupted (Ctrl-C)` (status 130);
with `--verbose` the whole traceback is printed instead. The absl programs (train.py, eval.py)
also parse their flags through `absl_flags_parser`, so a bad flag (an unknown `--config.*` key
above all, which ml_collections reports as a chain of tracebacks) is one line too.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from drsan_jax import logs

USAGE = 2
FAILED = 1
VERBOSE_HELP = "on an error, print the whole traceback instead of one line"
# OSErrors that say the user named a file or folder that cannot be used as given.
_USAGE_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                    NotADirectoryError)


class Failed(Exception):
    """A run that started and could not finish for a reason outside the program (exit 1)."""


class UsageError(ValueError):
    """A command line this program cannot run (exit 2)."""


class Stopped(Exception):  # noqa: N818 - a request fulfilled, not an error
    """A run stopped on request (a signal) after saving its work; reported in one line.

    Attributes:
      exit_status: 128 + the signal's number, as a shell reports a process the signal ended.
    """

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_status = 128 + signal_number


def exit_status(error: BaseException) -> int | None:
    """`USAGE` or `FAILED` for an expected error (see the module docstring), None for a bug."""
    if isinstance(error, (FloatingPointError, Failed)):
        return FAILED
    if isinstance(error, (ValueError, *_USAGE_OS_ERRORS)):
        return USAGE
    if isinstance(error, OSError):
        return FAILED
    return None


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message (its type's name when it has none)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def report(prog: str, error: BaseException, verbose: bool = False) -> None:
    """Prints an expected error as `prog: error: ...` (one line), or its traceback if verbose."""
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    else:
        print(f"{prog}: error: {first_line(error)}", file=sys.stderr)


def run(prog: str, verbose: bool, body: Callable[[], int | None]) -> int:
    """Runs a command's work; an expected error is reported (`report`) and becomes its status.

    Args:
      prog: the command's name as the user typed it ("train.py", "python -m drsan_jax.upscale").
      verbose: print tracebacks instead of one line.
      body: the work; returns an exit status (None: 0).

    Returns:
      The exit status: body's, or `USAGE` / `FAILED` for an expected error.

    Raises:
      Whatever body raises that is not expected (a bug), unchanged.
    """
    try:
        # The errors Orbax logs from its threads reach `body` as exceptions: reported below.
        with logs.quiet_library_logs(errors=not verbose):
            return body() or 0
    except Stopped as stopped:
        print(f"{prog}: {first_line(stopped)}", file=sys.stderr)
        return stopped.exit_status
    except KeyboardInterrupt:
        # Ctrl-C where nothing catches it (training catches it while it steps): one line.
        if verbose:
            raise
        print(f"{prog}: interrupted (Ctrl-C)", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`... | head`): nothing is wrong and nothing more can be said.
        # Point stdout at nothing so that Python's exit flush does not fail on the pipe too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:  # noqa: BLE001 - sorted by exit_status, bugs raised on
        status = exit_status(error)
        if status is None:
            raise
        report(prog, error, verbose)
        return status


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a `--verbose` flag, whose usage errors are one line (exit 2).

    A program with sub-commands passes `verbose=False` here and gets the flag on each
    sub-command (`parser_class=cli.ArgumentParser`): argparse lets a sub-command's default
    overwrite a value its parent parsed.
    """

    def __init__(self, *args: Any, verbose: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if verbose:
            self.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def define_verbose_flag() -> None:
    """Defines absl's `--verbose` (see `VERBOSE_HELP`) for train.py and eval.py.

    As a flag of the calling program (absl would file it under this module), so that its
    `--help` lists it.
    """
    from absl import flags

    flags.DEFINE_bool("verbose", False, VERBOSE_HELP, module_name=sys.argv[0])


_SHORT_HELP = {"--help", "-h", "-?", "--helpshort"}
_FULL_HELP = {"--helpfull"}


def _wants_verbose(argv: Sequence[str]) -> bool:
    """Whether argv asks for --verbose, read before absl could parse it."""
    return any(re.fullmatch(r"--?verbose(=(true|1|yes))?", arg, re.IGNORECASE) for arg in argv)


def absl_flags_parser(prog: str, config_flag: str = "config",
                      hint: Callable[[Any, str], str | None] | None = None
                      ) -> Callable[[list[str]], list[str]]:
    """A `flags_parser` for `absl.app.run` that reports bad flags in one line (exit 2).

    Args:
      prog: the program's name, for the message.
      config_flag: the name of an ml_collections config flag, whose unknown override keys
        (`--config.bach_size=8`) are reported with the nearest valid keys.
      hint: optional `hint(config, key)` adding a sentence about an unknown key (e.g. that it
        belongs to another model family), or None.
    """

    def parse(argv: list[str]) -> list[str]:
        from absl import app, flags

        # absl's own --help exits with status 1 (scripts that check it see a failure); this
        # one prints the same text and exits with 0.
        asked = {arg.split("=")[0] for arg in argv[1:]} & {*_SHORT_HELP, *_FULL_HELP}
        if asked:
            app.usage(shorthelp=not asked & _FULL_HELP, writeto_stdout=True, exitcode=0)
        try:
            args = flags.FLAGS(argv)
            _check_config_loaded(argv, config_flag)
            return args
        except flags.Error as error:
            if _wants_verbose(argv):
                raise
            text = str(error)
            if "Error whilst parsing config file" in text:
                # ml_collections puts the config file's own traceback in the message: its last
                # line is the error the file raised.
                lines = [line.strip() for line in text.splitlines() if line.strip()]
                reason = re.sub(r"^\w+(Error|Exception): ", "", lines[-1])
                print(f"{prog}: error: {lines[0].split(': Error whilst')[0]}: {reason}",
                      file=sys.stderr)
            else:
                report(prog, error)
        except Exception:  # noqa: BLE001 - ml_collections raises AttributeError or KeyError
            # A config file that does not load fails the first override as an OSError.
            problem = (config_load_problem(argv, config_flag)
                       or unknown_config_key(argv, config_flag, hint))
            if problem is None or _wants_verbose(argv):
                raise
            print(f"{prog}: error: {problem}", file=sys.stderr)
        sys.exit(USAGE)

    return parse


def _check_config_loaded(argv: Sequence[str], config_flag: str) -> None:
    """Raises flags.Error for a config file that did not load.

    ml_collections defers that error to the first use of the config, and then names the file
    only as "config_config".
    """
    from absl import flags

    config = flags.FLAGS[config_flag].value if config_flag in flags.FLAGS else None
    if config is None:
        return
    try:
        config.keys()
    except OSError as error:
        raise flags.Error(config_load_problem(argv, config_flag) or first_line(error)) from error


def config_load_problem(argv: Sequence[str], config_flag: str = "config") -> str | None:
    """Describes why the config file named by `--<config_flag>` in argv does not load, or None.

    Returns:
      "--config=<path>: cannot load it (<the reason>)", with the nearest file names of its
      folder for a file that does not exist; None when it loads (or no file is named).
    """
    from absl import flags

    path = _flag_value(argv, config_flag)
    if path is None or config_flag not in flags.FLAGS:
        return None
    try:
        # ml_collections defers a load failure to the first use of what it returns.
        flags.FLAGS[config_flag].parser.parse(path).keys()
    except Exception as error:  # noqa: BLE001 - whatever the file raised is the reason
        cause = error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        reason = re.sub(r"^\w+(Error|Exception): ", "", lines[-1] if lines else type(cause).__name__)
        message = f"--{config_flag}={path}: cannot load it ({reason})"
        file = path.partition(":")[0]
        if not os.path.exists(file):
            folder = os.path.dirname(file) or "."
            names = sorted(n for n in os.listdir(folder) if n.endswith(".py")) \
                if os.path.isdir(folder) else []
            nearest = difflib.get_close_matches(os.path.basename(file), names, n=3, cutoff=0.6)
            if nearest:
                message += "; did you mean " + " or ".join(
                    os.path.join(os.path.dirname(file), n) for n in nearest) + "?"
        return message
    return None


def unknown_config_key(argv: Sequence[str], config_flag: str = "config",
                       hint: Callable[[Any, str], str | None] | None = None) -> str | None:
    """Describes the first `--<config_flag>.<key>` of argv that its config file does not have.

    Returns:
      "--config.<key>: <file> has no field <key>; did you mean ...?" with the nearest valid
      keys (difflib), or None when every override names a field (or the config file itself
      cannot be loaded: absl reports that).
    """
    from absl import flags

    path = _flag_value(argv, config_flag)
    if path is None or config_flag not in flags.FLAGS:
        return None
    try:
        config = flags.FLAGS[config_flag].parser.parse(path)
    except Exception:  # noqa: BLE001 - absl reports a config file that does not load
        return None
    fields = _field_paths(config)
    for arg in argv:
        match = re.match(rf"^--?(?:no)?{re.escape(config_flag)}\.([^=]+)", arg)
        if match is None or match.group(1) in fields:
            continue
        key = match.group(1)
        parent, _, name = key.rpartition(".")
        siblings = sorted(f.rpartition(".")[2] for f in fields if f.rpartition(".")[0] == parent)
        # A misspelt field beside the others, else a field put at the wrong level.
        nearest = [f"{parent}.{n}" if parent else n
                   for n in difflib.get_close_matches(name, siblings, n=3, cutoff=0.6)]
        if not nearest:
            by_name = {}
            for field in sorted(fields):
                by_name.setdefault(field.rpartition(".")[2], []).append(field)
            nearest = [f for n in difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.8)
                       for f in by_name[n]]
        message = f"--{config_flag}.{key}: {path} has no field {key!r}"
        if nearest:
            message += "; did you mean " + " or ".join(nearest) + "?"
        elif parent in fields or not parent:
            message += f"; the fields of {parent or 'the config'} are {', '.join(siblings)}"
        extra = hint(config, key) if hint is not None else None
        return f"{message} ({extra})" if extra else message
    return None


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of `--name=VALUE` or `--name VALUE` in argv, or None."""
    for i, arg in enumerate(argv):
        match = re.match(rf"^--?{re.escape(name)}(=(.*))?$", arg)
        if match:
            if match.group(1) is not None:
                return match.group(2)
            return argv[i + 1] if i + 1 < len(argv) else None
    return None


def _field_paths(config: Any, prefix: str = "") -> set[str]:
    """Every dotted field path of a ConfigDict, the nested dicts' own paths included."""
    paths = set()
    for key, value in config.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if hasattr(value, "items") and callable(value.items):
            paths |= _field_paths(value, f"{path}.")
    return paths


__all__ = ["ArgumentParser", "FAILED", "Failed", "Stopped", "USAGE", "UsageError", "VERBOSE_HELP",
           "absl_flags_parser", "config_load_problem", "define_verbose_flag", "exit_status", "first_line", "report",
           "run", "unknown_config_key"]
