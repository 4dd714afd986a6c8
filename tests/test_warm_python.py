"""The tests' warm ``python`` (tests/warm_python.py) sets a process up as the interpreter does: the same output,
exit status, ``sys.argv``, ``sys.path``, working folder, environment and standard input as ``subprocess``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from warm_python import run_python

SHOW = (
    "import json, multiprocessing, os, sys\n"
    "print(json.dumps([sys.argv, sys.path, os.getcwd(), os.environ.get('WARM_TEST'), sys.stdin.read(),"
    " multiprocessing.get_start_method(), multiprocessing.parent_process() is None]))\n"
    "sys.exit(int(os.environ.get('WARM_EXIT', '0')))\n"
)


@pytest.mark.e2e
@pytest.mark.parametrize("form", ["-c", "-m", "script"])
def test_a_warm_process_is_set_up_as_the_interpreter_sets_up_a_fresh_one(form, tmp_path):
    (tmp_path / "shown.py").write_text(SHOW)
    args = {"-c": ["-c", SHOW, "a", "b"], "-m": ["-m", "shown", "a", "b"], "script": [str(tmp_path / "shown.py"), "a"]}
    env = {**os.environ, "WARM_TEST": "yes", "WARM_EXIT": "3", "PYTHONPATH": str(tmp_path / "extra")}
    fresh = subprocess.run(
        [sys.executable, *args[form]], cwd=tmp_path, env=env, input="typed\n", capture_output=True, text=True
    )
    warm = run_python(args[form], cwd=tmp_path, env=env, input="typed\n")
    assert (
        (warm.returncode, warm.stdout, warm.stderr)
        == (fresh.returncode, fresh.stdout, fresh.stderr)
        == (
            3,
            fresh.stdout,
            "",
        )
    )


@pytest.mark.e2e
def test_a_warm_process_reports_an_error_a_message_or_a_signal_as_the_interpreter_does():
    for code, status in [("raise SystemExit('stopped')", 1), ("import os; os.kill(os.getpid(), 9)", -9)]:
        fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        warm = run_python(["-c", code])
        assert (warm.returncode, warm.stdout, warm.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
        assert warm.returncode == status
    failed = run_python(["-c", "x = 1\nraise ValueError('boom')"])
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[1:] == ['  File "<string>", line 2, in <module>', "ValueError: boom"]
    with pytest.raises(subprocess.TimeoutExpired):
        run_python(["-c", "import time; time.sleep(30)"], timeout=1)
