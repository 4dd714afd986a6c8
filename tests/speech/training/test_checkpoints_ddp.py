"""Checkpoints under DDP: every process sees the same checkpoints when SpeechBrain's ``delete_checkpoints`` lists
them, since it runs one collective per checkpoint it deletes."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, free_port
from warm_python import run_python

SCRIPT = Path(__file__).with_name("ddp_checkpoints.py")


@pytest.mark.e2e
def test_a_slow_rename_on_the_main_process_does_not_deadlock_the_next_deletion(tmp_path):
    """The main process renames its staged checkpoint after the others have written theirs; a process that lists
    the checkpoints before that rename saw one fewer and waited in another collective than the main process."""
    try:
        done = run_python(
            [str(SCRIPT), str(tmp_path / "save"), str(free_port())],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the two processes deadlocked in save_and_keep_only")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(re.findall(r"rank \d sees \[[^]]*\]", done.stdout)) == ["rank 0 sees [8.0]", "rank 1 sees [8.0]"]
    assert [path.name.startswith("CKPT+") for path in (tmp_path / "save").iterdir()] == [True]
