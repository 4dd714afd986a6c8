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
import torch

from fvae_asr.cli.evaluate import main as evaluate_main
from fvae_asr.cli.transcribe import main as transcribe_main
from fvae_asr.speech.inference.transcriber import Transcriber

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
    out = subprocess.run(
        [tool("praat"), "--run", str(PRAAT_SCRIPT), str(path)], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0] == "tiers 1"
    rows = [line.split("\t") for line in out[1:]]
    return [(float(start), float(end), label) for start, end, label in rows]


def test_praat_reads_our_textgrids_with_the_same_intervals(local_checkpoint, checkpoint_and_short_file, tmp_path):
    _, short = checkpoint_and_short_file
    assert (
        transcribe_main(
            ["--checkpoint", str(local_checkpoint), "--format", "textgrid", "--out-dir", str(tmp_path), str(short)]
        )
        == 0
    )
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


def sclite_total(ref: Path, ref_form: str, hyp: Path, hyp_form: str, *options: str) -> list[float]:
    """The numbers of sclite's ``Sum/Avg`` row: #snt #wrd Corr Sub Del Ins Err S.Err."""
    result = subprocess.run(
        [tool("sclite"), "-r", str(ref), ref_form, "-h", str(hyp), hyp_form, *options, "-o", "sum", "stdout"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    total = next(line for line in result.stdout.splitlines() if "Sum/Avg" in line)
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", total)]


def evaluate(checkpoint: Path, manifest: Path, *options: str) -> int:
    """``fvae-asr evaluate --checkpoint CHECKPOINT --manifest MANIFEST OPTIONS...``: its exit code."""
    return evaluate_main(["--checkpoint", str(checkpoint), "--manifest", str(manifest), *options])


def test_sclites_error_rate_on_our_evaluate_output_equals_ours(checkpoint, audio, tmp_path):
    """``evaluate --sclite DIR`` writes ref/hyp in sclite's trn form; sclite's total error rate equals our PER."""
    _write_manifest(tmp_path / "test.json", audio)
    options = ["--json", str(tmp_path / "report.json"), "--sclite", str(tmp_path / "sclite")]
    assert evaluate(checkpoint, tmp_path / "test.json", *options) == 0
    ours = json.loads((tmp_path / "report.json").read_text())
    numbers = sclite_total(tmp_path / "sclite" / "ref.trn", "trn", tmp_path / "sclite" / "hyp.trn", "trn", "-i", "wsj")
    assert numbers[:2] == [ours["utterances"], ours["reference_phones"]]
    assert ours["per"] > 0 and numbers[-2] == pytest.approx(ours["per"], abs=0.05)  # sclite prints one decimal


def _silent_for(monkeypatch, suffix: str) -> None:
    """Every frame of the files whose path ends with ``suffix`` decodes to blank: an empty hypothesis."""
    decode = Transcriber._result

    def blank_frames(self, path, frame_ids, samples, timestamps):
        if path.endswith(suffix):
            frame_ids = torch.full_like(frame_ids, self.blank_index)
        return decode(self, path, frame_ids, samples, timestamps)

    monkeypatch.setattr(Transcriber, "_result", blank_frames)


def test_sclite_scores_our_stm_and_ctm_with_our_per_including_empty_hypotheses(
    checkpoint, audio, tmp_path, monkeypatch
):
    """``evaluate --sclite DIR`` also writes ref.stm and hyp.ctm: ctmValidator accepts the CTM and sclite counts the
    same utterances, reference phones and error rate as our PER, with one hypothesis empty (no CTM line for its
    file) and one empty reference left out by --skip-invalid (nor in the STM)."""
    manifest = _write_manifest(tmp_path / "test.json", audio)
    manifest["UTT_EMPTY"] = {"wav": str(audio["short.wav"]), "phn": ""}
    (tmp_path / "test.json").write_text(json.dumps(manifest))
    _silent_for(monkeypatch, ".sph")
    scl = tmp_path / "sclite"
    options = ["--skip-invalid", "--json", str(tmp_path / "report.json"), "--sclite", str(scl)]
    assert evaluate(checkpoint, tmp_path / "test.json", *options) == 0
    ours = json.loads((tmp_path / "report.json").read_text())
    assert ours["transcripts"]["UTT_C"]["hyp"] == "" and ours["transcripts"]["UTT_A"]["hyp"]
    assert ours["utterances"] == 3 and list(ours["skipped"]) == ["UTT_EMPTY"]

    stm = [line.split() for line in (scl / "ref.stm").read_text().splitlines() if not line.startswith(";;")]
    assert [row[:4] for row in stm] == [
        ["mono", "1", "UTT_A", "0"],
        ["speech", "1", "UTT_C", "0"],
        ["stereo", "1", "UTT_B", "0"],
    ]  # sorted by file ID
    assert [float(row[4]) for row in stm] == [0.8, 0.5, 0.8]
    assert [" ".join(row[5:]) for row in stm] == [manifest[utt]["phn"] for utt in ("UTT_A", "UTT_C", "UTT_B")]
    ctm_files = [line.split()[0] for line in (scl / "hyp.ctm").read_text().splitlines()]
    assert set(ctm_files) == {"mono", "stereo"} and ctm_files == sorted(ctm_files)

    validated = subprocess.run(
        [tool("ctmValidator.pl"), "-i", str(scl / "hyp.ctm")], capture_output=True, text=True, timeout=60
    )
    assert validated.returncode == 0 and "Validated" in validated.stdout, validated.stdout + validated.stderr
    numbers = sclite_total(scl / "ref.stm", "stm", scl / "hyp.ctm", "ctm")
    assert numbers[:2] == [ours["utterances"], ours["reference_phones"]] == [3, 14]
    assert ours["per"] > 0 and numbers[-2] == pytest.approx(ours["per"], abs=0.05)  # sclite prints one decimal
    assert sclite_total(scl / "ref.trn", "trn", scl / "hyp.trn", "trn", "-i", "wsj") == numbers


def test_evaluates_ctm_is_transcribes_ctm_with_the_same_unique_file_ids(checkpoint, audio, tmp_path, capsys):
    """Files that share a name (TIMIT's SA1.WAV under each speaker) get transcribe's unique IDs, in the STM and the
    CTM alike, and the CTM is the one ``transcribe --format ctm`` writes for the same files."""
    wavs = [tmp_path / "DR1" / speaker / "SA1.WAV" for speaker in ("FCJF0", "MDAB0")]
    for wav, source in zip(wavs, ("mono.wav", "stereo.flac")):
        wav.parent.mkdir(parents=True)
        shutil.copy(audio[source], wav)
    manifest = {
        "second": {"wav": str(wavs[1]), "phn": "sil iy s sh sil"},
        "first": {"wav": str(wavs[0]), "phn": "sil aa b sil"},
    }
    (tmp_path / "test.json").write_text(json.dumps(manifest))
    assert evaluate(checkpoint, tmp_path / "test.json", "--sclite", str(tmp_path / "scl")) == 0
    assert transcribe_main(["--checkpoint", str(checkpoint), "--format", "ctm", *map(str, wavs)]) == 0
    ctm = (tmp_path / "scl" / "hyp.ctm").read_text()
    assert ctm == capsys.readouterr().out.split("\n", 1)[1] and ctm.strip()  # after the evaluation's summary line
    stm = [line.split() for line in (tmp_path / "scl" / "ref.stm").read_text().splitlines() if not line.startswith(";")]
    assert [row[:3] for row in stm] == [["FCJF0_SA1", "1", "first"], ["MDAB0_SA1", "1", "second"]]
    assert {line.split()[0] for line in ctm.splitlines()} == {"FCJF0_SA1", "MDAB0_SA1"}


@pytest.mark.parametrize(
    ("utterance", "same_file", "named"),
    [
        ("UTT_A2", True, "utterances UTT_A, UTT_A2 get one file ID, mono"),  # STM and CTM name files, not utterances
        ("UTT A", False, "cannot contain white space: 'UTT A'"),  # sclite splits its lines on white space
    ],
)
def test_sclite_files_refuse_ids_sclite_cannot_tell_apart_before_anything_is_written(
    checkpoint, audio, tmp_path, capsys, utterance, same_file, named
):
    manifest = _write_manifest(tmp_path / "test.json", audio)
    manifest[utterance] = {"wav": str(audio["mono.wav" if same_file else "short.wav"]), "phn": "sil aa sil"}
    (tmp_path / "test.json").write_text(json.dumps(manifest))
    code = evaluate(
        checkpoint, tmp_path / "test.json", "--json", str(tmp_path / "report.json"), "--sclite", str(tmp_path / "scl")
    )
    captured = capsys.readouterr()
    [error] = captured.err.splitlines()
    assert code == 1 and named in error and str(tmp_path / "test.json") in error
    assert captured.out == "" and not (tmp_path / "report.json").exists() and not (tmp_path / "scl").exists()


def test_praat_reads_the_textgrids_of_align_with_the_same_intervals(checkpoint, tone_corpus, tmp_path):
    from fvae_asr.cli.align import main as align_main

    wav = sorted((tone_corpus / "TEST").rglob("*.WAV"))[0]
    assert align_main(["--checkpoint", str(checkpoint), "--out-dir", str(tmp_path), str(wav)]) == 0
    [grid] = tmp_path.glob("*.TextGrid")
    ours = parse_textgrid(grid.read_text())[2]
    read = praat_intervals(grid)
    assert [label for *_, label in read] == [label for *_, label in ours] and len(ours) > 1
    assert [t for row in read for t in row[:2]] == pytest.approx([t for row in ours for t in row[:2]], abs=1e-12)
