"""Forced alignment: phone boundaries for known phones through torchaudio's CTC forced_align, per-file errors,
the command line (manifest or TIMIT label files), and the accuracy script."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks.alignment import accuracy as accuracy
from fvae_asr.cli.align import main as align_main
from fvae_asr.cli.align import timit_phones
from fvae_asr.speech.data.timit import prepare_timit
from fvae_asr.speech.inference import forced_alignment
from fvae_asr.speech.inference.ctc_segments import PhoneSegment
from fvae_asr.speech.inference.forced_alignment import AlignmentError, align_log_probs
from fvae_asr.speech.inference.transcriber import Transcriber

from test_transcribe import _exported, backbone  # noqa: F401 (fixture)

LABELS = ["<blank>", "a", "b"]


def _log_probs(best: list[int]) -> torch.Tensor:
    """(T, 3) log-probabilities where frame t clearly prefers label best[t]."""
    logits = torch.full((len(best), len(LABELS)), -5.0)
    logits[torch.arange(len(best)), torch.tensor(best)] = 5.0
    return logits.log_softmax(-1)


def test_each_phone_runs_from_its_onset_to_the_next_phones_onset():
    #            0  1  2  3  4  5  6  7  8  9
    frames = [0, 0, 1, 1, 0, 0, 2, 2, 0, 0]
    segments = align_log_probs(_log_probs(frames), ["a", "b"], LABELS, 0, 0.02)
    assert segments == [PhoneSegment("a", 0.04, 0.12), PhoneSegment("b", 0.12, 0.16)]


def test_the_known_phones_are_kept_even_where_the_model_hears_others():
    frames = [0, 2, 2, 2, 0, 0, 0, 0]  # the model hears only b; the reference says a b a
    segments = align_log_probs(_log_probs(frames), ["a", "b", "a"], LABELS, 0, 0.02)
    assert [s.phone for s in segments] == ["a", "b", "a"]
    assert all(a.end == b.start for a, b in zip(segments, segments[1:])) and segments[0].start < segments[-1].end


@pytest.mark.parametrize(
    "phones,frames,message",
    [
        (["a", "x"], 10, "phones outside the model's inventory: x"),
        (["a", "a", "a"], 4, r"3 phones \(2 repeated\) need at least 5 frames; the audio gives 4"),
        ([], 4, "no phones"),
    ],
)
def test_unalignable_phones_are_named(phones, frames, message):
    with pytest.raises(AlignmentError, match=message):
        align_log_probs(_log_probs([0] * frames), phones, LABELS, 0, 0.02)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tone_corpus) -> Path:
    """TIMIT preparation of the tone corpus: test.json with phn_segments."""
    return prepare_timit(tone_corpus, tmp_path_factory.mktemp("prepared"))[2]


def test_align_writes_a_textgrid_per_utterance_and_names_the_ones_it_cannot_align(tmp_path, backbone, prepared, capsys):
    model = _exported(tmp_path / "model", "fvae_lora", backbone)
    manifest = json.loads(prepared.read_text())
    bad_id = sorted(manifest)[0]
    manifest[bad_id]["phn"] += " zz"
    (tmp_path / "test.json").write_text(json.dumps(manifest))
    code = align_main(
        ["--checkpoint", str(model), "--manifest", str(tmp_path / "test.json"), "--out-dir", str(tmp_path / "grids")]
    )
    assert code == 1 and "error: phones outside the model's inventory: zz" in capsys.readouterr().err
    written = sorted(path.stem for path in (tmp_path / "grids").glob("*.TextGrid"))
    assert written == sorted(set(manifest) - {bad_id})
    grid = (tmp_path / "grids" / f"{written[0]}.TextGrid").read_text()
    phones = manifest[written[0]]["phn"].split()
    labels = [line.split('"')[1] for line in grid.splitlines() if line.strip().startswith("text =")]
    assert [label for label in labels if label] == phones


def test_align_reads_timit_label_files_beside_the_audio_and_folds_them(tmp_path, backbone, tone_corpus, capsys):
    model = _exported(tmp_path / "model", "fvae_lora", backbone)
    wavs = sorted((tone_corpus / "TEST").rglob("*.WAV"))[:2]
    assert align_main(["--checkpoint", str(model), "--format", "ctm", *map(str, wavs)]) == 0
    ctm = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert len({row[0] for row in ctm}) == 2  # one ID per file
    assert "h#" not in {row[4] for row in ctm} and "sil" in {row[4] for row in ctm}  # 61 -> 39 folded
    starts = [(row[0], float(row[2])) for row in ctm]
    assert starts == sorted(starts)  # sorted by file and time, as sclite needs


def test_accuracy_script_reports_the_share_within_tolerance(tmp_path, backbone, prepared, capsys):
    model = _exported(tmp_path / "model", "fvae_lora", backbone)
    figures = accuracy.main(
        ["--checkpoint", str(model), "--manifest", str(prepared), "--json", str(tmp_path / "figures.json")]
    )
    assert figures == json.loads((tmp_path / "figures.json").read_text())
    assert figures["boundaries"] > 0 and 0 <= figures["within_tolerance"] <= 1
    assert math.isfinite(figures["median_error_s"]) and figures["utterances"] == 4 and not figures["failed"]
    assert accuracy.summary([0.01, 0.03, 0.02], 0.02)["within_tolerance"] == pytest.approx(2 / 3)
    assert "boundaries in 4 utterances" in capsys.readouterr().out


@pytest.fixture(scope="module")
def aligner(tmp_path_factory, backbone) -> Path:
    return _exported(tmp_path_factory.mktemp("aligner") / "model", "fvae_lora", backbone)


@pytest.mark.parametrize(
    "utt_id, form, message",
    [
        ("../escaped", "textgrid", "cannot name a file in"),
        ("{outside}/escaped", "textgrid", "cannot name a file in"),
        ("a b", "ctm", "a CTM file name cannot contain white space"),
    ],
    ids=["parent", "absolute", "space"],
)
def test_align_refuses_manifest_ids_that_would_leave_out_dir_or_break_a_ctm(
    tmp_path, aligner, prepared, capsys, utt_id, form, message
):
    manifest = json.loads(prepared.read_text())
    first = sorted(manifest)[0]
    manifest[utt_id.format(outside=tmp_path)] = manifest.pop(first)
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    out = tmp_path / "sub" / "out"
    out.parent.mkdir()
    code = align_main(
        ["--checkpoint", str(aligner), "--manifest", str(tmp_path / "m.json"), "--format", form, "--out-dir", str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not list(tmp_path.rglob("escaped*")) and not out.exists()


def test_align_refuses_files_that_share_an_id_as_transcribe_does(tmp_path, aligner, tone_corpus, capsys):
    wav = sorted((tone_corpus / "TEST").rglob("*.WAV"))[0]
    for folder in (tmp_path / "a_b", tmp_path / "a" / "b"):
        folder.mkdir(parents=True)
        shutil.copy(wav, folder / "x.WAV")
        shutil.copy(wav.with_suffix(".PHN"), folder / "x.PHN")
    for form in ("ctm", "textgrid"):
        with pytest.raises(SystemExit) as stopped:
            align_main(
                ["--checkpoint", str(aligner), "--format", form, "--out-dir", str(tmp_path / form)]
                + [str(tmp_path / "a_b" / "x.WAV"), str(tmp_path / "a" / "b" / "x.WAV")]
            )
        assert stopped.value.code == 2 and "several inputs share the name a_b_x" in capsys.readouterr().err
        assert not (tmp_path / form).exists()


def test_align_refuses_an_output_that_is_its_manifest(tmp_path, aligner, prepared, capsys):
    manifest = json.loads(prepared.read_text())
    first = sorted(manifest)[0]
    manifest["m"] = manifest.pop(first)
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    before = (tmp_path / "m.json").read_bytes()
    code = align_main(
        ["--checkpoint", str(aligner), "--manifest", str(tmp_path / "m.json"), "--format", "json"]
        + ["--out-dir", str(tmp_path)]
    )
    assert code == 2 and "is one of the inputs" in capsys.readouterr().err
    assert (tmp_path / "m.json").read_bytes() == before


def _spiky_log_probs(frames: int, silence: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """(frames, 3) log-probabilities of a noisy model hearing a or b every few frames, except in ``silence``."""
    generator = torch.Generator().manual_seed(seed)
    best = torch.zeros(frames, dtype=torch.long)
    spikes = [t for t in range(3, frames - 3, 7) if not silence[0] <= t < silence[1]]
    best[spikes] = torch.randint(1, 3, (len(spikes),), generator=generator)
    logits = 2.0 * torch.randn(frames, len(LABELS), generator=generator)
    logits[torch.arange(frames), best] += 6.0
    return logits.log_softmax(-1), [LABELS[int(label)] for label in best[spikes]]


def test_a_long_file_is_aligned_in_bounded_blocks_to_the_path_of_a_whole_alignment(monkeypatch):
    log_probs, phones = _spiky_log_probs(3000, silence=(1000, 1900))
    whole = align_log_probs(log_probs, phones, LABELS, 0, 0.02)
    monkeypatch.setattr(forced_alignment.taf, "forced_align", lambda *args, **kwargs: pytest.fail("a whole table"))
    blocks = align_log_probs(log_probs, phones, LABELS, 0, 0.02, window_frames=100)
    assert blocks == whole and len(whole) == len(phones) >= 300


def test_align_file_aligns_a_long_file_block_by_block_as_a_whole_alignment_would(aligner, tone_corpus, monkeypatch):
    wav = sorted((tone_corpus / "TEST").rglob("*.WAV"))[0]
    phones = timit_phones(wav, fold=True)
    chunked = Transcriber(aligner, chunk_seconds=0.05, context_seconds=0.01)  # the file is many chunks long
    log_probs = torch.cat(list(chunked.frame_log_probs(wav)))
    assert len(log_probs) > 4 * chunked.chunk_frames
    whole = align_log_probs(log_probs, phones, chunked.labels, chunked.blank_index, chunked.seconds_per_frame)
    monkeypatch.setattr(forced_alignment.taf, "forced_align", lambda *args, **kwargs: pytest.fail("a whole table"))
    result = forced_alignment.align_file(chunked, wav, phones)
    assert result.error is None and result.segments == whole


def test_a_long_alignment_that_cannot_fit_in_free_memory_is_refused_in_one_line(monkeypatch):
    log_probs, phones = _spiky_log_probs(3000, silence=(1000, 1900))
    monkeypatch.setattr(forced_alignment, "free_memory", lambda: 10 * 2**20)
    with pytest.raises(AlignmentError, match=r"needs about 1\d MiB, more than the 10 MiB free: split the file"):
        align_log_probs(torch.cat([log_probs] * 20), phones * 20, LABELS, 0, 0.02, window_frames=1000)
