"""Our transcripts read by the field's own tools: Praat reads every TextGrid we write with the same intervals, and
NIST SCTK's ctmValidator.pl accepts our CTM. CI installs both (.ci/run); there these tests fail, never skip."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fvae_asr.cli.evaluate import main as evaluate_main
from fvae_asr.cli.transcribe import main as transcribe_main
from test_long_transcription import checkpoint_and_short_file, local_checkpoint, parse_textgrid  # noqa: F401 (fixtures)
from test_transcribe import _write_manifest, audio, backbone, checkpoint  # noqa: F401 (fixtures)

PRAAT_SCRIPT = Path(__file__).parent / "praat" / "intervals.praat"
SCTK_BIN = Path("/usr/lib/sctk/bin")


def tool(name: str) -> str:
    """The tool's path; missing, a failure under CI (it installs them) and a skip elsewhere."""
    found = shutil.which(name) or (str(SCTK_BIN / name) if (SCTK_BIN / name).exists() else None)
    if found is None:
        message = f"{name} is not installed (apt-get install praat sctk)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return found


def praat_intervals(path: Path) -> list[tuple[float, float, str]]:
    """The intervals of a one-tier TextGrid as Praat itself reads them."""
    out = subprocess.run([tool("praat"), "--run", str(PRAAT_SCRIPT), str(path)], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()  # fmt: skip
    assert out[0] == "tiers 1"
    rows = [line.split("\t") for line in out[1:]]
    return [(float(start), float(end), label) for start, end, label in rows]


def test_praat_reads_our_textgrids_with_the_same_intervals(local_checkpoint, checkpoint_and_short_file, tmp_path):
    _, short = checkpoint_and_short_file
    assert transcribe_main(["--checkpoint", str(local_checkpoint), "--format", "textgrid", "--out-dir", str(tmp_path),
                            str(short)]) == 0  # fmt: skip
    [grid] = tmp_path.glob("*.TextGrid")
    ours = parse_textgrid(grid.read_text())[2]
    read = praat_intervals(grid)
    assert [label for *_, label in read] == [label for *_, label in ours] and len(ours) > 1
    assert [t for row in read for t in row[:2]] == pytest.approx([t for row in ours for t in row[:2]], abs=1e-12)


def test_ctm_validator_accepts_our_ctm(local_checkpoint, checkpoint_and_short_file, tmp_path, capsys):
    _, short = checkpoint_and_short_file
    assert transcribe_main(["--checkpoint", str(local_checkpoint), "--format", "ctm", str(short)]) == 0
    ctm = tmp_path / "out.ctm"
    ctm.write_text(capsys.readouterr().out)
    assert ctm.read_text().strip()
    result = subprocess.run([tool("ctmValidator.pl"), "-i", str(ctm)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Validated" in result.stdout, result.stdout + result.stderr


def test_sclites_error_rate_on_our_evaluate_output_equals_ours(checkpoint, audio, tmp_path):
    """``evaluate --sclite DIR`` writes ref/hyp in sclite's trn form; sclite's total error rate equals our PER."""
    sclite = tool("sclite")
    _write_manifest(tmp_path / "test.json", audio)
    assert evaluate_main(["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "test.json"),
                          "--json", str(tmp_path / "report.json"), "--sclite", str(tmp_path / "sclite")]) == 0  # fmt: skip
    ours = json.loads((tmp_path / "report.json").read_text())
    result = subprocess.run([sclite, "-r", str(tmp_path / "sclite" / "ref.trn"), "trn", "-h",
                             str(tmp_path / "sclite" / "hyp.trn"), "trn", "-i", "wsj", "-o", "sum", "stdout"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    # | Sum/Avg | #snt #wrd | Corr Sub Del Ins Err S.Err |
    total = next(line for line in result.stdout.splitlines() if "Sum/Avg" in line)
    numbers = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", total)]
    assert numbers[:2] == [ours["utterances"], ours["reference_phones"]]
    assert ours["per"] > 0 and numbers[-2] == pytest.approx(ours["per"], abs=0.05)  # sclite prints one decimal


def test_praat_reads_the_textgrids_of_align_with_the_same_intervals(checkpoint, tone_corpus, tmp_path):
    from fvae_asr.cli.align import main as align_main

    wav = sorted((tone_corpus / "TEST").rglob("*.WAV"))[0]
    assert align_main(["--checkpoint", str(checkpoint), "--out-dir", str(tmp_path), str(wav)]) == 0
    [grid] = tmp_path.glob("*.TextGrid")
    ours = parse_textgrid(grid.read_text())[2]
    read = praat_intervals(grid)
    assert [label for *_, label in read] == [label for *_, label in ours] and len(ours) > 1
    assert [t for row in read for t in row[:2]] == pytest.approx([t for row in ours for t in row[:2]], abs=1e-12)
