"""``python SCRIPT``, ``python -m MODULE`` and ``python -c CODE`` for the tests, each in a process of its own but
forked from multiprocessing's fork server once it has imported the recipe (torch, transformers and SpeechBrain
with it), instead of paying those 3 to 4 s of imports in every process.

A run keeps what the tests check of a process: its exit status (minus the signal number when one killed it, as
``subprocess`` says), its working folder, environment, ``sys.path`` and ``sys.argv`` as the interpreter would set
them, its standard streams, and its exit handlers. What it cannot show is what a fresh interpreter imports or
prints while importing: tests of that (lazy imports, output with nothing but an error) and tests of another
interpreter (the installed wheel) use ``subprocess``.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
import types
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

# What the server imports once: the recipe, and the study worker the benchmarks' own fork server would preload
# (in one pytest worker both use the one server, started by whichever asks first).
PRELOAD = ["fvae_asr.recipes.timit.train", "benchmarks.compare.training"]


def run_python(
    args: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str = "",
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([sys.executable, *args], capture_output=True, text=True, ...)``, in a warm process."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # read when the server starts
    command = [sys.executable, *map(str, args)]
    with tempfile.TemporaryDirectory(prefix="warm-python-") as folder:
        streams = [Path(folder, name) for name in ("stdin", "stdout", "stderr")]
        for stream, text in zip(streams, (input, "", ""), strict=True):
            stream.write_text(text, encoding="utf-8")
        env = dict(os.environ if env is None else env)
        extra = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
        search_path = [*extra, *_fresh_path(sys.executable)]
        process = context.Process(
            target=_interpreter, args=(command[1:], str(cwd or os.getcwd()), env, search_path, streams)
        )
        process.start()
        process.join(timeout)
        timed_out = process.exitcode is None
        if timed_out:
            process.kill()
            process.join()
        stdout, stderr = (path.read_text(encoding="utf-8", errors="replace") for path in streams[1:])
    if timed_out:
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(command, process.exitcode, stdout, stderr)


@cache
def _fresh_path(python: str) -> list[str]:
    """``sys.path`` after its first entry in a fresh interpreter without PYTHONPATH (site-packages and the
    editable install's paths included)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    code = "import json, sys; print(json.dumps(sys.path[1:]))"
    return json.loads(subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)


def _interpreter(args: list[str], cwd: str, env: dict[str, str], base: list[str], streams: list[Path]) -> None:
    """In the forked process: set it up as the interpreter would for ``args`` (``base``: ``sys.path`` after its
    first entry), run them, exit as it would."""
    for fd, path, flags in zip((0, 1, 2), streams, (os.O_RDONLY, os.O_WRONLY, os.O_WRONLY), strict=True):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - the process's own stdin, never closed
    # the main process of its own program: no parent process, and the platform's default start method for the
    # processes it starts (fork, as the recipe's DataLoader workers need), not the fork server's
    current = multiprocessing.current_process()
    current.name, current._parent_pid, current._parent_name = "MainProcess", None, None
    multiprocessing.process._parent_process = None
    multiprocessing.set_start_method(None, force=True)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    try:
        if args[0] == "-c":
            sys.argv, sys.path[:] = ["-c", *args[2:]], ["", *base]
            main = types.ModuleType("__main__")
            sys.modules["__main__"] = main
            exec(compile(args[1], "<string>", "exec"), main.__dict__)
        elif args[0] == "-m":
            sys.argv, sys.path[:] = [args[1], *args[2:]], [os.getcwd(), *base]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            script = os.path.realpath(args[0])
            sys.argv, sys.path[:] = list(args), [os.path.dirname(script), *base]
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = _exit_status(stop.code)
    except BaseException as error:
        traceback.print_exception(error.__class__, error, error.__traceback__.tb_next)  # from the code's frame on
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _exit_status(code: object) -> int:
    """The status the interpreter exits with for ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1
