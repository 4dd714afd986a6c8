"""The benchmarks package: every study and benchmark runs as ``python -m benchmarks.<name>`` from the repository
root."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

COMMANDS = [
    "alignment",
    "compare",
    "faithfulness",
    "speed.adapter_speed",
    "speed.layer_speed",
    "speed.transcribe_speed",
    "spurious",
]


# Runs each module as ``python -m`` does (runpy, as __main__, from the repository root) in one interpreter: one
# start of torch and SpeechBrain instead of one per module. Prints, per module, its exit code and the output's ends.
RUN_AS_MAIN = """\
import contextlib, io, json, runpy, sys
results = {}
for name, *args in json.loads(sys.argv[1]):
    sys.argv = [name, *args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            code = stop.code
    results[name + " " + " ".join(args)] = [code, out.getvalue()[:200], err.getvalue()[-300:]]
print(json.dumps(results))
"""


@pytest.mark.e2e
def test_each_script_runs_as_a_module_of_the_package_from_the_repository_root() -> None:
    runs = [[f"benchmarks.{name}", "--help"] for name in COMMANDS] + [["benchmarks.spurious", "--epochs", "0"]]
    done = subprocess.run(
        [sys.executable, "-c", RUN_AS_MAIN, json.dumps(runs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    assert len(results) == len(runs)
    for name in COMMANDS:
        code, out, err = results[f"benchmarks.{name} --help"]
        assert code == 0 and out.startswith("usage: "), (name, err)
    # a usage error names the module as the user typed it
    code, _, err = results["benchmarks.spurious --epochs 0"]
    assert code == 2
    assert err.splitlines()[-1] == (
        "python -m benchmarks.spurious: error: --epochs, --jobs and --test-per-group must be at least 1"
    )
