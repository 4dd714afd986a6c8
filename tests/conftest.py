"""Shared fixtures: a tiny learnable TIMIT-layout corpus (one tone per phone), recipe overrides, a 2-process launch;
and the guard that keeps ``make test-fast`` fast: a test that trains end to end must say so (``@pytest.mark.e2e``)."""

from __future__ import annotations

import atexit
import importlib
import multiprocessing.process
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tiny_models, for every test module

from fvae_asr.speech.data.timit import write_utterance

from tiny_models import TINY_ENCODERS


def _answer_pip_freeze_at_once() -> None:
    """SpeechBrain's ``create_experiment_directory`` runs ``pip freeze`` through the shell for each run's env.log
    (0.7 s, a third of a tiny recipe run); no test reads that list, so a ``pip`` first on PATH, for this process
    and the ones it starts, answers at once. Tests that need pip run ``python -m pip``."""
    if os.environ.get("FVAE_ASR_TEST_SHIMS"):  # set by the pytest process that started this one (xdist)
        return
    folder = Path(tempfile.mkdtemp(prefix="fvae-asr-test-shims-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    (folder / "pip").write_text("#!/bin/sh\necho '# pip freeze: skipped in the tests (tests/conftest.py)'\n")
    (folder / "pip").chmod(0o755)
    os.environ["FVAE_ASR_TEST_SHIMS"] = str(folder)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


_answer_pip_freeze_at_once()

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: one thread per worker (and its subprocesses), not N each
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
HPARAMS = REPO / "recipes" / "timit" / "hparams" / "train.yaml"
TONE_PHONES = ["sh", "iy", "ae", "s", "aa", "n", "m", "ow"]
SPEAKERS = [
    ("TRAIN", "DR1", "FCJF0"),
    ("TRAIN", "DR2", "MDAC0"),
    ("TRAIN", "DR3", "MJEB1"),
    ("TEST", "DR1", "FAKS0"),
    ("TEST", "DR1", "FDHC0"),
]  # two dev/core-test ids from the TEST folder


def _tone_utterance(rng: np.random.Generator, n_phones: int) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """Silence-phones-silence, each phone a sine of its own pitch: easy enough for a tiny model to learn."""
    labels = ["h#", *rng.choice(TONE_PHONES, n_phones), "h#"]
    pieces, segments, start = [], [], 0
    for label in labels:
        n = int(rng.integers(1200, 2000))
        t = np.arange(n) / 16000
        freq = 0 if label == "h#" else 300 + 150 * TONE_PHONES.index(label)
        pieces.append(0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n))
        segments.append((start, start + n, str(label)))
        start += n
    return np.concatenate(pieces).astype(np.float32), segments


def make_tone_corpus(root: Path, utterances_per_speaker: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, dialect, speaker in SPEAKERS:
        for i in range(utterances_per_speaker):
            audio, phones = _tone_utterance(rng, int(rng.integers(3, 6)))
            words = [(phones[1][0], phones[-2][1], "tones")]
            write_utterance(root, split, dialect, speaker, f"SX{i + 10}", audio, phones, words, "tones")
    return root


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory) -> Path:
    return make_tone_corpus(tmp_path_factory.mktemp("corpus") / "TIMIT")


def free_port() -> int:
    """A free port on 127.0.0.1 (torch.distributed.run with --master_port=0 hangs on rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun_on_two_cpu_processes(script: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """``torch.distributed.run --nproc_per_node=2 script args`` on a free port, one thread per process."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        str(script),
        *args,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def recipe_overrides(corpus: Path, output: Path, **extra) -> dict:
    """Overrides that make the recipe tiny: random-init wav2vec2 from a config, a few epochs, small rank."""
    return {
        "data_folder": str(corpus),
        "output_folder": str(output),
        "encoder_config": TINY_ENCODERS["wav2vec2"],
        "rank": 4,
        "number_of_epochs": 2,
        "batch_size": 4,
        "lr": 0.005,
        "mask_time_prob": 0.0,
        "train_dataloader_opts": {"batch_size": 4, "num_workers": 0},
        "valid_dataloader_opts": {"batch_size": 4, "num_workers": 0},
        **extra,
    }


# What "trains end to end" means for the e2e mark: fitting a SpeechBrain Brain (the recipe and the studies run it),
# training with the Hugging Face Trainer, or starting a Python process (each imports torch and the libraries anew).
TRAINING_ENTRY_POINTS = {"speechbrain.core": ("Brain", "fit"), "transformers.trainer": ("Trainer", "train")}
_running: list[pytest.Item] = []  # the test whose setup, call or teardown runs now


_refused: dict[str, str] = {}  # test id -> why: the test fails even if the code under test caught the error


class UnmarkedEndToEndTest(RuntimeError):
    """A test without the e2e (or slow) mark trained end to end: ``make test-fast`` would not stay fast. The test
    fails even where the code under test catches this error (``pytest_runtest_makereport``)."""


def _check_marked(what: str) -> None:
    item = _running[-1] if _running else None
    if item is not None and not (item.get_closest_marker("e2e") or item.get_closest_marker("slow")):
        _refused[item.nodeid] = (
            f"{item.nodeid} {what} (here or in a fixture it uses): mark it @pytest.mark.e2e, which make test-fast "
            "leaves out, or make it train nothing"
        )
        raise UnmarkedEndToEndTest(_refused[item.nodeid])


def _guarded(function, what: str):
    def guarded(*args, **kwargs):
        _check_marked(what)
        return function(*args, **kwargs)

    guarded.__wrapped__ = function
    return guarded


def _guard_training_entry_points() -> None:
    """Wrap each entry point once its module is imported (transformers' Trainer is too slow to import for this)."""
    for module_name, (class_name, method) in TRAINING_ENTRY_POINTS.items():
        if module_name in sys.modules:
            owner = getattr(importlib.import_module(module_name), class_name)
            if not hasattr(getattr(owner, method), "__wrapped__"):
                setattr(owner, method, _guarded(getattr(owner, method), f"calls {class_name}.{method}"))


_popen_init = subprocess.Popen.__init__


def _python_popen_init(self, args, *rest, **kwargs):
    program = args[0] if isinstance(args, (list, tuple)) and args else args
    if os.path.basename(str(program)).startswith("python"):
        _check_marked("starts a Python process")
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _python_popen_init
_process_start = multiprocessing.process.BaseProcess.start


def _guarded_process_start(self):
    _check_marked("starts a Python process")  # a multiprocessing worker: fork or spawn, a pool's included
    _process_start(self)


multiprocessing.process.BaseProcess.start = _guarded_process_start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _running.append(item)
    try:
        yield
    finally:
        _running.pop()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _guard_training_entry_points()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    _guard_training_entry_points()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if item.nodeid in _refused and report.passed and report.when == "call":
        report.outcome, report.longrepr = "failed", _refused[item.nodeid]
