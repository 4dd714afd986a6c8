"""Transcription and evaluation of exported recognisers: batching, audio loading, per-file errors, both CLIs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional

from fvae_asr import FVAELoRAConfig
from fvae_asr.evaluate import main as evaluate_main
from fvae_asr.speech.encoder import Wav2Vec2Encoder
from fvae_asr.speech.evaluation import evaluate_manifest, read_manifest
from fvae_asr.speech.export import export_recognizer
from fvae_asr.speech.metrics import phoneme_error_rate
from fvae_asr.speech.model import CTCRecognizer, configure_training, greedy_decode
from fvae_asr.speech.timit import PHONES_39
from fvae_asr.speech.transcriber import AudioError, Transcriber, load_audio
from fvae_asr.transcribe import main as transcribe_main
from tiny_models import tiny_wav2vec2

LABELS = ["<blank>", *PHONES_39]
RATE = 16000
CD_RATE = 44100


def _exported(directory: Path, kind: str, backbone: Path) -> Path:
    """Export a tiny recogniser of the given kind with trainable weights nudged off their initial values."""
    torch.manual_seed(0)
    model = CTCRecognizer(Wav2Vec2Encoder(backbone), n_tokens=len(LABELS))
    configure_training(model, kind, FVAELoRAConfig(rank=4) if kind == "fvae_lora" else None)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return export_recognizer(model, kind, LABELS, directory)


def _tones(rate: int, seconds: float, freqs: tuple[float, ...] = (220.0, 523.0)) -> np.ndarray:
    """A sum of sines: band-limited, so resampling it from another rate gives back the same samples."""
    t = np.arange(int(rate * seconds)) / rate
    return sum(0.3 / (i + 1) * np.sin(2 * np.pi * f * t) for i, f in enumerate(freqs)).astype(np.float32)


def _decode_directly(transcriber: Transcriber, wav: torch.Tensor) -> list[str]:
    """The loaded model's greedy phones for one unpadded utterance, bypassing the Transcriber."""
    with torch.no_grad():
        log_probs, frame_lens = transcriber.model(wav[None], torch.ones(1))
    return [LABELS[i] for i in greedy_decode(log_probs, frame_lens, blank_index=0)[0]]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A tiny wav2vec2 saved as a local Hugging Face directory: reloads give the same weights in any process."""
    directory = tmp_path_factory.mktemp("backbone")
    tiny_wav2vec2().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, backbone) -> Path:
    return _exported(tmp_path_factory.mktemp("fvae_lora"), "fvae_lora", backbone)


@pytest.fixture(scope="module")
def transcriber(checkpoint) -> Transcriber:
    return Transcriber(checkpoint, batch_size=2)


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    """Good files of different lengths and formats, plus a corrupt one."""
    folder = tmp_path_factory.mktemp("audio")
    files = {name: folder / name for name in ("mono.wav", "short.wav", "stereo.flac", "speech.sph", "corrupt.wav")}
    sf.write(files["mono.wav"], _tones(RATE, 0.8), RATE, subtype="FLOAT")
    sf.write(files["short.wav"], _tones(RATE, 0.3, (300.0,)), RATE, subtype="FLOAT")
    mono = _tones(CD_RATE, 0.8)
    difference = _tones(CD_RATE, 0.8, (700.0,))
    sf.write(files["stereo.flac"], np.stack([mono + difference, mono - difference], axis=1), CD_RATE)
    sf.write(files["speech.sph"], _tones(RATE, 0.5, (440.0,)), RATE, format="NIST", subtype="PCM_16")
    files["corrupt.wav"].write_bytes(b"RIFF\x00\x00 definitely not a wave file")
    return files


def test_transcribe_batch_equals_decoding_each_utterance_alone(transcriber):
    generator = torch.Generator().manual_seed(2)
    wavs = [0.3 * torch.randn(n, generator=generator) for n in (6000, 16000, 9000)]
    phones = transcriber.transcribe_batch(wavs)
    assert phones == [_decode_directly(transcriber, wav) for wav in wavs]
    assert all(phones) and all(p in LABELS[1:] for seq in phones for p in seq)


def test_transcribe_batch_rejects_unusable_waveforms(transcriber):
    assert transcriber.transcribe_batch([]) == []
    with pytest.raises(ValueError, match="waveform 1: expected a 1-D waveform"):
        transcriber.transcribe_batch([torch.zeros(4000), torch.zeros(2, 4000)])
    with pytest.raises(ValueError, match="waveform 0: too short"):
        transcriber.transcribe_batch([torch.zeros(10)])


def test_load_audio_downmixes_and_resamples(audio):
    flac = load_audio(audio["stereo.flac"])
    reference = torch.from_numpy(_tones(RATE, 0.8))
    assert flac.shape == reference.shape and flac.dtype == torch.float32
    assert torch.allclose(flac[100:-100], reference[100:-100], atol=1e-3)  # away from the filter's edge effects
    assert torch.equal(load_audio(audio["mono.wav"]), reference)
    assert load_audio(audio["speech.sph"]).shape == (RATE // 2,)


def test_load_audio_errors_name_the_file(tmp_path, audio):
    empty, non_finite = tmp_path / "empty.wav", tmp_path / "nan.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), RATE)
    sf.write(non_finite, np.array([0.0, np.nan, 0.1], dtype=np.float32), RATE, subtype="FLOAT")
    cases = {audio["corrupt.wav"]: "cannot read audio", tmp_path / "missing.wav": "no such file",
             empty: "no audio samples", non_finite: "non-finite"}  # fmt: skip
    for path, reason in cases.items():
        with pytest.raises(AudioError, match=reason) as caught:
            load_audio(path)
        assert str(path) in str(caught.value) and caught.value.path == str(path)


def test_transcribe_files_reports_failures_and_keeps_input_order(checkpoint, transcriber, audio, tmp_path):
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, np.zeros(20, dtype=np.float32), RATE)
    names = ["stereo.flac", "corrupt.wav", "mono.wav", "speech.sph", "short.wav"]
    paths = [audio[name] for name in names] + [tiny]
    results = transcriber.transcribe_files(paths)

    assert [r.path for r in results] == [str(p) for p in paths]
    failed = {Path(r.path).name: r.error for r in results if r.error is not None}
    assert failed.keys() == {"corrupt.wav", "tiny.wav"} and "too short" in failed["tiny.wav"]
    for result in results:
        assert (result.phones is None) == (result.error is not None)
    one_by_one = Transcriber(checkpoint, batch_size=1)
    assert one_by_one.transcribe_files(paths) == results  # batching and length sorting change nothing


def test_stereo_44k_flac_transcribes_as_its_resampled_mono_mix(transcriber, audio):
    samples, rate = sf.read(audio["stereo.flac"], dtype="float32")
    manual = torchaudio.functional.resample(torch.from_numpy(samples.mean(axis=1)), rate, RATE)
    [result] = transcriber.transcribe_files([audio["stereo.flac"]])
    assert result.phones == transcriber.transcribe_batch([manual])[0]


def test_transcribe_cli_prints_good_files_and_fails_on_a_corrupt_one(checkpoint, transcriber, audio):
    good = [str(audio["mono.wav"]), str(audio["stereo.flac"])]
    expected = [f"{r.path}\t{' '.join(r.phones)}" for r in transcriber.transcribe_files(good)]
    broken = str(audio["corrupt.wav"])
    command = [sys.executable, "-m", "fvae_asr.transcribe", "--checkpoint", str(checkpoint), good[0], broken, good[1]]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == expected
    [error] = proc.stderr.splitlines()  # nothing but the error: no loading chatter
    assert error.startswith(f"{broken}: error: cannot read audio")


def test_transcribe_cli_exit_codes(checkpoint, audio, capsys):
    assert transcribe_main(["--checkpoint", str(checkpoint), "--batch-size", "3", str(audio["short.wav"])]) == 0
    assert capsys.readouterr().out.startswith(f"{audio['short.wav']}\t")
    for usage_error in ([str(audio["short.wav"])], ["--checkpoint", str(checkpoint)],
                        ["--checkpoint", str(checkpoint), "--batch-size", "0", str(audio["short.wav"])]):  # fmt: skip
        with pytest.raises(SystemExit) as caught:
            transcribe_main(usage_error)
        assert caught.value.code == 2
    capsys.readouterr()
    assert transcribe_main(["--checkpoint", str(audio["mono.wav"].parent), str(audio["short.wav"])]) == 1
    assert "recognizer.json" in capsys.readouterr().err


def _write_manifest(path: Path, audio: dict[str, Path]) -> dict[str, dict]:
    manifest = {
        "UTT_A": {"wav": str(audio["mono.wav"]), "duration": 0.8, "phn": "sil aa b sil"},
        "UTT_B": {"wav": str(audio["stereo.flac"]), "duration": 0.8, "phn": "sil iy s sh sil"},
        "UTT_C": {"wav": str(audio["speech.sph"]), "duration": 0.5, "phn": "sil n m ow sil"},
    }
    path.write_text(json.dumps(manifest))
    return manifest


def test_evaluate_cli_reports_per_of_the_transcriptions(checkpoint, transcriber, audio, tmp_path, capsys):
    manifest = _write_manifest(tmp_path / "test.json", audio)
    results = transcriber.transcribe_files(entry["wav"] for entry in manifest.values())
    per = phoneme_error_rate([entry["phn"] for entry in manifest.values()], [r.phones for r in results])

    args = ["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "test.json")]
    outputs = ["--alignments", str(tmp_path / "ali.txt"), "--json", str(tmp_path / "report.json")]
    assert evaluate_main([*args, *outputs]) == 0
    stdout = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["per"] == pytest.approx(per)
    assert report["utterances"] == 3 and report["reference_phones"] == 14
    errors = report["substitutions"] + report["deletions"] + report["insertions"]
    assert report["per"] == pytest.approx(100 * errors / 14)
    assert f"PER {per:.2f}%" in stdout and f"{report['insertions']} insertions" in stdout
    assert report["transcripts"]["UTT_B"]["hyp"] == " ".join(results[1].phones)
    alignment_text = (tmp_path / "ali.txt").read_text()
    assert all(utt_id in alignment_text for utt_id in manifest) and "REF:" in alignment_text


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no manifest at"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("{not json", "invalid JSON"),
        ("[]", "non-empty JSON object"),
        (json.dumps({"U1": {"phn": "sil"}}), "entry 'U1' has no 'wav'"),
        (json.dumps({"U1": {"wav": "x.wav", "phn": ["sil"]}}), "entry 'U1' has no 'phn'"),
    ],
)
def test_bad_manifests_are_named_in_the_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises((FileNotFoundError, ValueError), match=message) as caught:
        read_manifest(path)
    assert str(path) in str(caught.value)


def test_evaluation_errors_name_the_manifest(checkpoint, transcriber, audio, tmp_path, capsys):
    manifest = tmp_path / "broken.json"
    manifest.write_text(json.dumps({"U1": {"wav": str(audio["corrupt.wav"]), "phn": "sil"}}))
    with pytest.raises(ValueError, match="1 file\\(s\\) not transcribed") as caught:
        evaluate_manifest(transcriber, manifest)
    assert str(manifest) in str(caught.value) and str(audio["corrupt.wav"]) in str(caught.value)
    assert evaluate_main(["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "absent.json")]) == 1
    assert str(tmp_path / "absent.json") in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["full", "frozen"])
def test_full_and_frozen_exports_transcribe(tmp_path, kind, backbone, audio):
    transcriber = Transcriber(_exported(tmp_path, kind, backbone))
    assert transcriber.description["adapter"] == kind
    wav = load_audio(audio["mono.wav"])
    [phones] = transcriber.transcribe_batch([wav])
    assert phones and phones == _decode_directly(transcriber, wav)
