"""Transcription of real recordings: streamed reading, chunked inference stitched back to whole-file frames,
phone times from CTC frames, the output formats (text, JSON lines, CTM, TextGrid) and their command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

import fvae_asr
from fvae_asr.audio import AudioReader, load_audio
from fvae_asr.cli.transcribe import main as transcribe_main
from fvae_asr.speech.inference.chunking import FrameGeometry, plan_chunks
from fvae_asr.speech.inference.ctc_segments import PhoneSegment, frame_runs, greedy_phones, phone_segments
from fvae_asr.speech.inference.transcriber import FileTranscription, Transcriber
from fvae_asr.speech.inference.transcript_formats import ctm_lines, file_ids, json_line, text_lines, textgrid
from fvae_asr.speech.models.recognizer import greedy_decode

from test_transcribe import LABELS, _exported, _tones
from tiny_models import TINY_WAV2VEC2

RATE = 16000
# Two convolutions (kernels 10, 8 with strides 5, 4): 20 samples a frame, many frames in each short chunk
FINE_FRAMES = {**TINY_WAV2VEC2, "conv_dim": (16, 16), "conv_stride": (5, 4), "conv_kernel": (10, 8)}
TINY_HOP, TINY_FIELD = 20, 45
LOCAL_CONTEXT = 0.01  # 8 tiny frames: more than the 4 frames either side its positional convolution reaches


def _backbone(folder: Path, layers: int) -> Path:
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**{**FINE_FRAMES, "num_hidden_layers": layers})).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def local_checkpoint(tmp_path_factory) -> Path:
    """A recogniser without transformer layers: each frame's output depends on a few neighbouring frames only."""
    return _exported(tmp_path_factory.mktemp("local"), "frozen", _backbone(tmp_path_factory.mktemp("bb0"), 0))


@pytest.fixture(scope="module")
def attention_checkpoint(tmp_path_factory) -> Path:
    """A recogniser with two transformer layers attending to the whole input."""
    return _exported(tmp_path_factory.mktemp("global"), "frozen", _backbone(tmp_path_factory.mktemp("bb2"), 2))


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> Path:
    """3.2 s at 44.1 kHz stereo: eight tone pairs of different loudness, concatenated."""
    rng = np.random.default_rng(0)
    wav = np.concatenate([_tones(44100, 0.4, (f, 2 * f)) * rng.uniform(0.2, 2) for f in rng.uniform(100, 900, 8)])
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, np.stack([wav, 0.5 * wav], axis=1), 44100)
    return path


def _whole_file_log_probs(transcriber: Transcriber, path: Path) -> torch.Tensor:
    """The model's log-probabilities for the whole file in one pass, bypassing the chunking."""
    with torch.no_grad():
        log_probs, _ = transcriber.model(load_audio(path)[None], torch.ones(1))
    return log_probs[0]


# ---- reading pieces of a file -------------------------------------------------------------------------------


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2), (8000, 1), (22050, 2)])
def test_audio_reader_segments_are_slices_of_the_whole_file(tmp_path, rate, channels):
    rng = np.random.default_rng(rate)
    path = tmp_path / "noise.wav"
    sf.write(path, rng.uniform(-0.5, 0.5, (int(1.3 * rate), channels)).astype(np.float32), rate, subtype="FLOAT")
    whole = load_audio(path)
    with AudioReader(path) as reader:
        assert reader.samples == whole.shape[0] and reader.duration == pytest.approx(1.3, abs=1 / rate)
        for start, stop in [(0, 5), (0, whole.shape[0]), (777, 4321), (9000, whole.shape[0]), (16000, 16001)]:
            torch.testing.assert_close(reader.segment(start, stop), whole[start:stop], atol=1e-6, rtol=0)
        with pytest.raises(ValueError, match="outside"):
            reader.segment(100, whole.shape[0] + 1)


# ---- where chunks start and what they keep -------------------------------------------------------------------


def test_frame_geometry_is_read_off_the_encoder():
    tiny = Wav2Vec2Model(Wav2Vec2Config(**FINE_FRAMES))
    assert FrameGeometry.from_frame_lengths(tiny._get_feat_extract_output_lengths) == FrameGeometry(20, 45)
    base = Wav2Vec2Config()  # wav2vec2-base's convolutions, without building its 95M parameters

    def base_lengths(samples):
        return Wav2Vec2Model._get_feat_extract_output_lengths(type("M", (), {"config": base})(), samples)

    assert FrameGeometry.from_frame_lengths(base_lengths) == FrameGeometry(hop=320, receptive_field=400)
    with pytest.raises(ValueError, match="strided convolution"):
        FrameGeometry.from_frame_lengths(lambda n: n // 300 + (n > 5000).long())


@pytest.mark.parametrize("samples", [45, 64, 999, 20000, 20019])
@pytest.mark.parametrize("chunk_frames, context_frames", [(1, 0), (7, 3), (50, 0), (50, 200), (2000, 5)])
def test_chunks_keep_every_frame_once_with_the_context_asked_for(samples, chunk_frames, context_frames):
    geometry = FrameGeometry(TINY_HOP, TINY_FIELD)
    total = geometry.frames(samples)
    chunks = plan_chunks(samples, geometry, chunk_frames, context_frames)
    kept = [chunk.first_frame + i for chunk in chunks for i in range(chunk.keep_from, chunk.keep_to)]
    assert kept == list(range(total))
    assert len(chunks) == -(-total // chunk_frames)
    for chunk in chunks:
        assert chunk.start == chunk.first_frame * TINY_HOP and 0 <= chunk.start < chunk.stop <= samples
        assert geometry.frames(chunk.stop - chunk.start) >= chunk.keep_to  # the chunk computes what it keeps
        first_kept = chunk.first_frame + chunk.keep_from
        assert chunk.keep_from == min(context_frames, first_kept)
        right = geometry.frames(chunk.stop - chunk.start) - chunk.keep_to
        assert right >= min(context_frames, total - first_kept - (chunk.keep_to - chunk.keep_from))
    assert plan_chunks(44, geometry, 10, 2) == []


# ---- phones and their times from CTC frames ------------------------------------------------------------------


def test_phone_times_follow_the_frame_runs():
    labels = ["_", "a", "b", "c"]
    frame_ids = torch.tensor([0, 0, 1, 1, 0, 1, 2, 2, 2, 0, 0, 3])
    runs = [run.tolist() for run in frame_runs(frame_ids, blank_index=0)]
    assert runs == [[1, 1, 2, 3], [2, 5, 6, 11], [4, 6, 9, 12]]  # labels, first frames, ends
    assert_same_segments(
        phone_segments(frame_ids, labels, 0, 0.02),
        [("a", 0.04, 0.08), ("a", 0.10, 0.12), ("b", 0.12, 0.18), ("c", 0.22, 0.24)],
    )
    assert phone_segments(torch.tensor([3, 3, 0]), labels, 3, 0.5) == [PhoneSegment("_", 1.0, 1.5)]  # blank 3
    assert phone_segments(torch.zeros(5, dtype=torch.long), labels, 0, 0.02) == []


def test_phones_from_frame_runs_are_greedy_ctc_decoding():
    generator = torch.Generator().manual_seed(0)
    log_probs = (3 * torch.randn(4, 60, 6, generator=generator)).log_softmax(-1)
    frame_lens = torch.tensor([60, 41, 17, 1])
    decoded = greedy_decode(log_probs, frame_lens, blank_index=2)
    for utterance, frames in enumerate(frame_lens.tolist()):
        frame_ids = log_probs[utterance, :frames].argmax(-1)
        assert frame_runs(frame_ids, blank_index=2)[0].tolist() == decoded[utterance]
        assert greedy_phones(frame_ids, "abcdef", blank_index=2) == ["abcdef"[i] for i in decoded[utterance]]


# ---- chunked transcription = whole-file transcription --------------------------------------------------------


def test_a_file_shorter_than_a_chunk_is_transcribed_whole(checkpoint_and_short_file):
    transcriber, path = checkpoint_and_short_file
    [block] = list(transcriber.frame_log_probs(path))
    assert torch.equal(block, _whole_file_log_probs(transcriber, path))
    result = transcriber.transcribe(path, timestamps=True)
    assert result.phones == transcriber.transcribe_batch([load_audio(path)])[0]
    assert result == transcriber.transcribe_files([path], timestamps=True)[0]


@pytest.fixture(scope="module")
def checkpoint_and_short_file(local_checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("short") / "short.wav"
    sf.write(path, _tones(RATE, 0.7), RATE, subtype="FLOAT")
    return Transcriber(local_checkpoint, chunk_seconds=0.7), path


def test_chunks_stitch_to_the_whole_file_exactly_when_the_model_is_local(local_checkpoint, long_file):
    transcriber = Transcriber(local_checkpoint, chunk_seconds=0.25, context_seconds=LOCAL_CONTEXT)
    blocks = list(transcriber.frame_log_probs(long_file))
    chunked, whole = torch.cat(blocks), _whole_file_log_probs(transcriber, long_file)
    assert len(blocks) == 13 and chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=0)  # normalisation statistics summed differently
    assert torch.equal(chunked.argmax(-1), whole.argmax(-1))
    assert transcriber.transcribe(long_file).phones == transcriber.transcribe_batch([load_audio(long_file)])[0]
    # Without context the positional convolution sees zeros past each chunk's edge: the stitching is what matters.
    no_context = torch.cat(
        list(Transcriber(local_checkpoint, chunk_seconds=0.25, context_seconds=0).frame_log_probs(long_file))
    )
    assert (no_context - whole).abs().max() > 0.1


def test_chunks_agree_with_the_whole_file_when_attention_is_global(attention_checkpoint, long_file):
    """Rule: with global attention a chunk sees only its context, so frames may differ; on this random model 99.4%
    of the frames keep their best label (at least 97% asserted) and the phones stay within 3% edits."""
    transcriber = Transcriber(attention_checkpoint, chunk_seconds=0.25, context_seconds=0.1)
    chunked = torch.cat(list(transcriber.frame_log_probs(long_file)))
    whole = _whole_file_log_probs(transcriber, long_file)
    assert (chunked.argmax(-1) == whole.argmax(-1)).float().mean() >= 0.97
    reference = " ".join(transcriber.transcribe_batch([load_audio(long_file)])[0])
    assert fvae_asr.phoneme_error_rate([reference], [transcriber.transcribe(long_file).phones]) <= 3.0


def test_timestamps_of_a_long_file_are_its_frame_runs(local_checkpoint, long_file):
    transcriber = Transcriber(local_checkpoint, chunk_seconds=0.25, context_seconds=LOCAL_CONTEXT)
    result = transcriber.transcribe(long_file, timestamps=True)
    frame_ids = torch.cat([block.argmax(-1) for block in transcriber.frame_log_probs(long_file)])
    runs = zip(*(run.tolist() for run in frame_runs(frame_ids, 0)))
    expected = [(LABELS[label], start * 20 / RATE, end * 20 / RATE) for label, start, end in runs]
    assert_same_segments(result.segments, expected)
    assert result.phones == [s.phone for s in result.segments]
    assert result.duration == pytest.approx(3.2, abs=1e-4) and result.segments[-1].end <= result.duration
    assert transcriber.transcribe(long_file).segments is None


def test_transcribe_files_chunks_the_long_files_and_batches_the_short(
    local_checkpoint, long_file, checkpoint_and_short_file
):
    _, short = checkpoint_and_short_file
    transcriber = Transcriber(local_checkpoint, chunk_seconds=0.25, context_seconds=LOCAL_CONTEXT, batch_size=2)
    results = transcriber.transcribe_files([long_file, short, long_file.parent / "missing.wav"], timestamps=True)
    assert results[0] == transcriber.transcribe(long_file, timestamps=True)
    assert results[1].phones == transcriber.transcribe_batch([load_audio(short)])[0]
    assert results[2].error == "no such file"


def test_transcriber_rejects_bad_chunk_settings(local_checkpoint):
    for settings in ({"chunk_seconds": 0}, {"chunk_seconds": float("nan")}, {"context_seconds": -1}):
        with pytest.raises(ValueError, match=next(iter(settings))):
            Transcriber(local_checkpoint, **settings)


@pytest.mark.e2e
def test_transcriber_is_exported_lazily():
    assert fvae_asr.Transcriber is Transcriber and "Transcriber" in fvae_asr.__all__
    script = "import sys, fvae_asr\nprint(sorted(m for m in sys.modules if m.startswith('fvae_asr.speech')))\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout == "[]\n", proc.stderr  # importing the package loads no speech code


# ---- output formats, parsed back -----------------------------------------------------------------------------

SEGMENTS = [PhoneSegment("sil", 0.0, 0.12), PhoneSegment("aa", 0.2, 0.26), PhoneSegment("b", 0.26, 0.3)]
RESULT = FileTranscription("in/utt.wav", phones=["sil", "aa", "b"], duration=0.5, segments=SEGMENTS)


TEXTGRID_HEADER = re.compile(
    r'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = (\S+) \nxmax = (\S+) \ntiers\? <exists> \n'
    r'size = 1 \nitem \[\]: \n    item \[1\]:\n        class = "IntervalTier" \n        name = "phones" \n'
    r"        xmin = (\S+) \n        xmax = (\S+) \n        intervals: size = (\d+) \n"
)
TEXTGRID_INTERVAL = re.compile(
    r"        intervals \[(\d+)\]:\n            xmin = (\S+) \n            xmax = (\S+) \n"
    r'            text = "((?:[^"]|"")*)" \n'
)


def parse_textgrid(text: str) -> tuple[float, float, list[tuple[float, float, str]]]:
    """(xmin, xmax, intervals) of a one-tier long-format TextGrid as Praat writes one, checking that the tier
    spans the grid, that the stated interval count and numbering are right and that nothing else is there."""
    header = TEXTGRID_HEADER.match(text)
    assert header, text[:400]
    xmin, xmax, tier_xmin, tier_xmax, size = header.groups()
    assert (tier_xmin, tier_xmax) == (xmin, xmax)
    intervals, position = [], header.end()
    while match := TEXTGRID_INTERVAL.match(text, position):
        number, start, end, label = match.groups()
        assert int(number) == len(intervals) + 1
        intervals.append((float(start), float(end), label.replace('""', '"')))
        position = match.end()
    assert position == len(text) and len(intervals) == int(size)
    return float(xmin), float(xmax), intervals


def assert_same_segments(actual, expected) -> None:
    """Same phones, times equal to float rounding."""
    assert [s[0] for s in actual] == [s[0] for s in expected]
    assert [t for s in actual for t in s[1:]] == pytest.approx([t for s in expected for t in s[1:]], abs=1e-9)


def test_textgrid_intervals_cover_the_file_without_gaps():
    xmin, xmax, intervals = parse_textgrid(textgrid(RESULT, "utt"))
    assert (xmin, xmax) == (0.0, 0.5)
    assert intervals == [(0.0, 0.12, "sil"), (0.12, 0.2, ""), (0.2, 0.26, "aa"), (0.26, 0.3, "b"), (0.3, 0.5, "")]
    for (_, end, _), (start, _, _) in zip(intervals, intervals[1:]):
        assert end == start
    assert all(start < end for start, end, _ in intervals)
    silent = FileTranscription("x.wav", phones=[], duration=0.04, segments=[])
    assert parse_textgrid(textgrid(silent, "x"))[2] == [(0.0, 0.04, "")]
    quoted = FileTranscription("q.wav", phones=['a"b'], duration=0.5, segments=[PhoneSegment('a"b', 0.0, 0.5)])
    assert '"a""b"' in textgrid(quoted, "q")


def test_ctm_json_and_text_carry_the_same_phones_and_times():
    ctm = [line.split() for line in ctm_lines(RESULT, "utt").splitlines()]
    assert [row[:2] for row in ctm] == [["utt", "1"]] * 3 and [row[4] for row in ctm] == RESULT.phones
    assert_same_segments([(row[4], float(row[2]), float(row[2]) + float(row[3])) for row in ctm], SEGMENTS)
    record = json.loads(json_line(RESULT, "utt"))
    assert record["path"] == "in/utt.wav" and record["phones"] == RESULT.phones and record["duration"] == 0.5
    assert_same_segments([(s["phone"], s["start"], s["end"]) for s in record["segments"]], SEGMENTS)
    rows = [line.split("\t") for line in text_lines(RESULT, "utt").splitlines()]
    assert_same_segments([(row[3], float(row[1]), float(row[2])) for row in rows], SEGMENTS)
    untimed = FileTranscription("in/utt.wav", phones=["sil", "aa"], duration=0.5)
    assert text_lines(untimed, "utt") == "in/utt.wav\tsil aa\n" and "segments" not in json_line(untimed, "utt")
    with pytest.raises(ValueError, match="without timestamps"):
        ctm_lines(untimed, "utt")


# ---- the command line -----------------------------------------------------------------------------------------


def test_cli_writes_a_textgrid_per_file_and_reports_a_bad_one_after_the_others(
    local_checkpoint, long_file, checkpoint_and_short_file, tmp_path, capsys
):
    _, short = checkpoint_and_short_file
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00 not a wave file")
    chunking = ["--chunk-seconds", "0.25", "--context-seconds", str(LOCAL_CONTEXT)]
    args = ["--checkpoint", str(local_checkpoint), *chunking, "--format", "textgrid"]
    assert transcribe_main([*args, "--out-dir", str(tmp_path / "grids"), str(corrupt), str(long_file), str(short)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"{corrupt}: error: cannot read audio")
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == ["long.TextGrid", "short.TextGrid"]
    expected = Transcriber(local_checkpoint, chunk_seconds=0.25, context_seconds=LOCAL_CONTEXT).transcribe(
        long_file, timestamps=True
    )
    _, xmax, intervals = parse_textgrid((tmp_path / "grids" / "long.TextGrid").read_text())
    assert xmax == pytest.approx(expected.duration)
    assert [label for _, _, label in intervals if label] == expected.phones
    assert intervals[0][0] == 0 and intervals[-1][1] == xmax

    assert transcribe_main([*args, str(short)]) == 0  # one file: the TextGrid on stdout
    assert (
        parse_textgrid(capsys.readouterr().out)[2]
        == parse_textgrid((tmp_path / "grids" / "short.TextGrid").read_text())[2]
    )


def test_cli_json_and_ctm_on_stdout_keep_the_input_order(
    local_checkpoint, long_file, checkpoint_and_short_file, capsys
):
    _, short = checkpoint_and_short_file
    args = ["--checkpoint", str(local_checkpoint), "--chunk-seconds", "0.25", str(long_file), str(short)]
    assert transcribe_main([*args, "--format", "json", "--timestamps"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == [str(long_file), str(short)]  # the short one is done first
    assert all(len(r["segments"]) == len(r["phones"]) for r in records)
    assert transcribe_main([*args, "--format", "ctm"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [row[4] for row in rows] == records[0]["phones"] + records[1]["phones"]
    assert {row[0] for row in rows} == {"long", "short"} and {row[1] for row in rows} == {"1"}


def test_cli_a_file_that_cannot_be_written_is_reported_and_the_others_are_written(
    local_checkpoint, long_file, checkpoint_and_short_file, tmp_path, capsys
):
    _, short = checkpoint_and_short_file
    (tmp_path / "long.json").write_text("previous\n")
    (tmp_path / f".long.json.{os.getpid()}.tmp").mkdir()  # the write cannot happen
    args = ["--checkpoint", str(local_checkpoint), "--format", "json", "--out-dir", str(tmp_path)]
    assert transcribe_main([*args, str(long_file), str(short)]) == 1
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith(f"{long_file}: error: cannot write {tmp_path / 'long.json'}")
    assert (tmp_path / "long.json").read_text() == "previous\n"
    assert json.loads((tmp_path / "short.json").read_text())["path"] == str(short)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "textgrid", "a.wav", "b.wav"], "give --out-dir"),
        (["--format", "ctm", "x/a.wav", "x/a.flac"], "share the name a"),
        (["--out-dir", "{tmp}/out", "x/a.wav", "x/a.flac"], "share the name a"),
        (["--format", "ctm", "my file.wav"], "white space"),
        (["--chunk-seconds", "0", "a.wav"], "--chunk-seconds"),
        (["--context-seconds", "-1", "a.wav"], "--context-seconds"),
        (["--chunk-seconds", "nan", "a.wav"], "finite"),
        (["--format", "praat", "a.wav"], "--format"),
        (["--out-dir", "{tmp}/no/such/folder", "a.wav"], "does not exist"),
    ],
)
def test_cli_usage_errors_exit_2_before_loading_anything(tmp_path, capsys, extra, message):
    extra = [arg.replace("{tmp}", str(tmp_path)) for arg in extra]
    with pytest.raises(SystemExit) as caught:
        transcribe_main(["--checkpoint", str(tmp_path / "not_loaded"), *extra])
    assert caught.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---- memory -----------------------------------------------------------------------------------------------------

PEAK_RSS_SCRIPT = """
import resource, sys
from fvae_asr import Transcriber
result = Transcriber(sys.argv[1]).transcribe(sys.argv[2], timestamps=True)  # 20 s chunks, 2 s context
print(len(result.phones), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_length_of_the_file(tmp_path):
    """1 and 10 minutes of 44.1 kHz stereo: reading the 10 minutes whole would take 200 MiB more (float32, two
    channels); streamed in 20 s chunks they take the same memory (measured: +5 MiB)."""
    torch.manual_seed(0)
    wav2vec2_frames = {"conv_dim": (16,) * 4, "conv_stride": (5, 4, 4, 4), "conv_kernel": (10, 8, 4, 4)}  # 320 hop
    Wav2Vec2Model(Wav2Vec2Config(**{**TINY_WAV2VEC2, **wav2vec2_frames})).save_pretrained(tmp_path / "backbone")
    checkpoint = _exported(tmp_path / "model", "frozen", tmp_path / "backbone")
    ten_seconds = np.repeat(_tones(44100, 10.0)[:, None], 2, axis=1)
    peaks = {}
    for minutes in (1, 10):
        path = tmp_path / f"{minutes}min.wav"
        with sf.SoundFile(path, "w", 44100, 2, subtype="PCM_16") as handle:
            for _ in range(6 * minutes):
                handle.write(ten_seconds)
        proc = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_SCRIPT, str(checkpoint), str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        phones, peaks[minutes] = map(int, proc.stdout.split())
        assert phones > 0
    assert peaks[10] - peaks[1] < 30, peaks  # MiB


# ---- what sclite and Praat need (issue 20) --------------------------------------------------------------------


def test_textgrid_times_are_written_at_full_precision():
    exact = FileTranscription(
        "u.wav", phones=["aa"], duration=26.947143125, segments=[PhoneSegment("aa", 0.1234567891, 0.3)]
    )
    xmin, xmax, intervals = parse_textgrid(textgrid(exact, "u"))
    assert xmax == 26.947143125 and intervals[1][0] == 0.1234567891


def test_file_ids_are_unique_for_the_timit_layout():
    paths = ["c/TRAIN/DR1/FCJF0/SA1.WAV", "c/TRAIN/DR1/MDAB0/SA1.WAV", "c/TRAIN/DR2/FAEM0/SI1.WAV"]
    assert file_ids(paths) == ["DR1_FCJF0_SA1", "DR1_MDAB0_SA1", "DR2_FAEM0_SI1"]
    assert file_ids(["x/a.wav", "x/b.flac"]) == ["a", "b"] and file_ids(["only/one.wav"]) == ["one"]


def test_cli_ctm_is_sorted_by_file_and_start(local_checkpoint, long_file, checkpoint_and_short_file, tmp_path, capsys):
    _, short = checkpoint_and_short_file
    first = tmp_path / "zz.wav"
    first.write_bytes(Path(short).read_bytes())
    assert transcribe_main(["--checkpoint", str(local_checkpoint), "--format", "ctm", str(first), str(long_file)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    keys = [(row[0], float(row[2])) for row in rows]
    assert keys == sorted(keys) and {row[0] for row in rows} == {"long", "zz"}


def test_textgrid_xmax_is_the_original_files_duration(local_checkpoint, tmp_path):
    odd = tmp_path / "odd.wav"
    sf.write(odd, _tones(44100, 0.6, (300, 600))[:22051], 44100)  # 0.500023 s: 8000.36 samples at 16 kHz
    result = Transcriber(local_checkpoint).transcribe(odd, timestamps=True)
    assert result.duration == 22051 / 44100  # not the resampled length, 8001 / 16000
    assert parse_textgrid(textgrid(result, "odd"))[1] == 22051 / 44100
