"""Transcription and evaluation of exported recognisers: batching, audio loading, per-file errors, both CLIs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional
from safetensors.torch import load_file, save_file

from fvae_asr.audio import AudioError, load_audio
from fvae_asr.cli.evaluate import main as evaluate_main
from fvae_asr.cli.transcribe import main as transcribe_main
from fvae_asr.speech.data.annotations import SCORING_FIELDS, AnnotationError, read_annotation
from fvae_asr.speech.data.timit import PHONES_39
from fvae_asr.speech.inference.evaluation import evaluate_manifest
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.speech.metrics import phoneme_error_rate
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import export_hf_ctc, export_model, load_recognizer
from fvae_asr.speech.models.recognizer import CTCRecognizer, greedy_decode
from fvae_asr.speech.models.training_methods import configure_training

from tiny_exports import export_tiny_recognizer
from tiny_models import tiny_wav2vec2

LABELS = ["<blank>", *PHONES_39]
RATE = 16000
CD_RATE = 44100


def _exported(directory: Path, kind: str, backbone: Path) -> Path:
    """Export a tiny recogniser of the given kind with trainable weights nudged off their initial values."""
    return export_tiny_recognizer(directory, kind, backbone, LABELS)


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
    cases = {
        audio["corrupt.wav"]: "cannot read audio",
        tmp_path / "missing.wav": "no such file",
        empty: "no audio samples",
        non_finite: "non-finite",
    }
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


@pytest.mark.e2e
def test_transcribe_cli_prints_good_files_and_fails_on_a_corrupt_one(checkpoint, transcriber, audio):
    good = [str(audio["mono.wav"]), str(audio["stereo.flac"])]
    expected = [f"{r.path}\t{' '.join(r.phones)}" for r in transcriber.transcribe_files(good)]
    broken = str(audio["corrupt.wav"])
    command = [
        sys.executable,
        "-m",
        "fvae_asr",
        "transcribe",
        "--checkpoint",
        str(checkpoint),
        good[0],
        broken,
        good[1],
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == expected
    [error] = proc.stderr.splitlines()  # nothing but the error: no loading chatter
    assert error.startswith(f"{broken}: error: cannot read audio")


def test_transcribe_cli_exit_codes(checkpoint, audio, capsys):
    assert transcribe_main(["--checkpoint", str(checkpoint), "--batch-size", "3", str(audio["short.wav"])]) == 0
    assert capsys.readouterr().out.startswith(f"{audio['short.wav']}\t")
    for usage_error in (
        [str(audio["short.wav"])],
        ["--checkpoint", str(checkpoint)],
        ["--checkpoint", str(checkpoint), "--batch-size", "0", str(audio["short.wav"])],
    ):
        with pytest.raises(SystemExit) as caught:
            transcribe_main(usage_error)
        assert caught.value.code == 2
    capsys.readouterr()
    assert transcribe_main(["--checkpoint", str(audio["mono.wav"].parent), str(audio["short.wav"])]) == 1
    assert "model.json" in capsys.readouterr().err


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
        (None, "no such annotation file"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("{not json", "invalid JSON"),
        ("[]", "expected a JSON object"),
        ("{}", "no utterances"),
        (json.dumps({"U1": {"phn": "sil"}}), r"entry \(ID 'U1'\): no 'wav' field"),
        (json.dumps({"U1": {"wav": "x.wav", "phn": ["sil"]}}), r"entry \(ID 'U1'\): 'phn' must be a string"),
        ('{"U1": {"wav": "a.wav", "phn": "sil"}, "U1": {"wav": "b.wav", "phn": "aa"}}', "the key 'U1' is given twice"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_bad_manifests_are_named_in_the_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(AnnotationError, match=message) as caught:
        read_annotation(path, required=SCORING_FIELDS)
    assert str(path) in str(caught.value)


def test_a_json_manifest_repeating_an_id_is_refused_by_evaluate_naming_it(checkpoint, audio, tmp_path, capsys):
    text = (
        f'{{"U1": {{"wav": "{audio["short.wav"]}", "phn": "sil"}}, '
        f'"U1": {{"wav": "{audio["mono.wav"]}", "phn": "sil aa"}}}}'
    )
    (tmp_path / "twice.json").write_text(text)
    code = evaluate_main(["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "twice.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "'U1' is given twice" in err[0] and "twice.json" in err[0]


def test_a_deeply_nested_json_is_one_line_in_evaluate_and_transcribe(checkpoint, audio, tmp_path, capsys):
    nested = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(f'{{"U1": {nested}}}')
    assert evaluate_main(["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "deep.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nested too deeply" in err[0]
    export = tmp_path / "export"
    shutil.copytree(checkpoint, export)
    (export / "model.json").write_text(f'{{"labels": {nested}}}')
    assert transcribe_main(["--checkpoint", str(export), str(audio["short.wav"])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nested too deeply" in err[0]


def test_csv_and_json_manifests_are_read_by_the_same_rules(tmp_path, audio):
    rows = {"U1": (audio["short.wav"], "sil  aa"), "U2": (audio["mono.wav"], "")}
    (tmp_path / "m.json").write_text(json.dumps({i: {"wav": str(w), "phn": p} for i, (w, p) in rows.items()}))
    (tmp_path / "m.csv").write_text("ID,wav,phn\n" + "".join(f"{i},{w},{p}\n" for i, (w, p) in rows.items()))
    read = [read_annotation(tmp_path / name, required=SCORING_FIELDS).entries for name in ("m.json", "m.csv")]
    assert (
        read[0]
        == read[1]
        == {"U1": {"wav": str(audio["short.wav"]), "phn": "sil aa"}, "U2": {"wav": str(audio["mono.wav"]), "phn": ""}}
    )
    (tmp_path / "twice.csv").write_text("ID,wav,phn\nU1,a.wav,sil\nU1,b.wav,aa\n")
    with pytest.raises(AnnotationError, match=r"line 3 \(ID 'U1'\): the ID is used twice"):
        read_annotation(tmp_path / "twice.csv", required=SCORING_FIELDS)


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
    assert transcriber.description["method"] == kind
    wav = load_audio(audio["mono.wav"])
    [phones] = transcriber.transcribe_batch([wav])
    assert phones and phones == _decode_directly(transcriber, wav)


# ---- manifests the model cannot score -------------------------------------------------------------------------


def _manifest_with_bad_references(path: Path, audio: dict[str, Path]) -> None:
    """One good utterance, one with 61-phone TIMIT labels (not in the 39-phone inventory) and one empty."""
    path.write_text(
        json.dumps(
            {
                "UTT_A": {"wav": str(audio["mono.wav"]), "phn": "sil aa b sil"},
                "UTT_61": {"wav": str(audio["stereo.flac"]), "phn": "h# ix n pcl sil"},
                "UTT_EMPTY": {"wav": str(audio["speech.sph"]), "phn": "  "},
            }
        )
    )


def test_references_outside_the_inventory_or_empty_are_errors_naming_them(checkpoint, audio, tmp_path, capsys):
    _manifest_with_bad_references(tmp_path / "test.json", audio)
    args = ["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "test.json")]
    assert evaluate_main([*args, "--json", str(tmp_path / "report.json")]) == 1
    captured = capsys.readouterr()
    [error] = captured.err.splitlines()
    assert "UTT_61: phones outside the model's inventory: h# ix pcl" in error and "UTT_EMPTY: empty reference" in error
    assert "UTT_A" not in error and "--skip-invalid" in error
    assert captured.out == "" and not (tmp_path / "report.json").exists()


def test_skip_invalid_scores_the_rest_and_says_how_many_were_skipped(checkpoint, transcriber, audio, tmp_path, capsys):
    _manifest_with_bad_references(tmp_path / "test.json", audio)
    args = ["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "test.json"), "--skip-invalid"]
    assert evaluate_main([*args, "--json", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    [result] = transcriber.transcribe_files([audio["mono.wav"]])
    assert report["per"] == pytest.approx(phoneme_error_rate(["sil aa b sil"], [result.phones]))
    assert report["utterances"] == 1 and list(report["transcripts"]) == ["UTT_A"]
    assert sorted(report["skipped"]) == ["UTT_61", "UTT_EMPTY"]
    assert "2 utterances skipped" in capsys.readouterr().out


# ---- exports are self-contained and checked on load ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["fvae_lora", "full"])
def test_export_moved_elsewhere_without_its_backbone_source_transcribes_the_same(tmp_path, backbone, audio, kind):
    source = Path(shutil.copytree(backbone, tmp_path / "source_backbone"))
    exported = _exported(tmp_path / "model", kind, source)
    before = Transcriber(exported).transcribe_files([audio["mono.wav"], audio["short.wav"]])
    assert str(tmp_path) not in (exported / "model.json").read_text()

    moved = Path(shutil.move(exported, tmp_path / "elsewhere" / "shared_model"))
    shutil.rmtree(source)
    assert Transcriber(moved).transcribe_files([audio["mono.wav"], audio["short.wav"]]) == before
    assert before[0].phones


def test_a_hub_backbone_is_kept_as_its_hub_id_and_a_failed_load_is_named(tmp_path, backbone, monkeypatch):
    model = CTCRecognizer(SSLEncoder(backbone), n_tokens=len(LABELS))
    model.encoder.source = "some-org/wav2vec2-base"  # as if it had come from the hub
    configure_training(model, "frozen")
    exported = export_model(model, "frozen", LABELS, tmp_path / "model")
    assert json.loads((exported / "model.json").read_text())["backbone"] == "some-org/wav2vec2-base"
    assert not (exported / "backbone").exists()

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr("fvae_asr.speech.models.encoder.AutoConfig.from_pretrained", offline)
    with pytest.raises(ValueError, match="model.json: cannot load backbone 'some-org/wav2vec2-base'"):
        load_recognizer(exported)


def test_a_missing_backbone_folder_is_named_not_looked_up_on_the_hub(tmp_path, backbone):
    exported = _exported(tmp_path / "model", "frozen", backbone)
    shutil.rmtree(exported / "backbone")
    with pytest.raises(FileNotFoundError, match=r"model.json: backbone folder .*backbone does not exist"):
        load_recognizer(exported)


def test_export_files_get_the_umask_permissions(tmp_path, backbone):
    old = os.umask(0o022)
    try:
        exported = _exported(tmp_path / "model", "fvae_lora", backbone)
        frozen = _exported(tmp_path / "frozen", "frozen", backbone)
        hf = export_hf_ctc(CTCRecognizer(SSLEncoder(backbone), n_tokens=len(LABELS)), LABELS, tmp_path / "hf")
    finally:
        os.umask(old)
    files = [f for folder in (exported, frozen, hf) for f in folder.rglob("*") if f.is_file()]
    assert {f.name for f in files} >= {
        "adapter_model.safetensors",
        "trainable_model.safetensors",
        "model.safetensors",
        "model.json",
        "config.json",
    }
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: "0o644" for f in files}


def _poison(path: Path, tensor_name: str | None = None) -> str:
    """Put a NaN into one floating-point tensor of a safetensors file; returns its name."""
    tensors = load_file(str(path))
    name = tensor_name or sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(path))
    return name


@pytest.mark.parametrize(
    "kind, weights_file",
    [
        ("fvae_lora", "adapter_model.safetensors"),
        ("frozen", "trainable_model.safetensors"),
        ("frozen", "backbone/model.safetensors"),
    ],
)
def test_non_finite_weights_are_rejected_naming_file_and_tensor(tmp_path, backbone, kind, weights_file):
    exported = _exported(tmp_path / "model", kind, backbone)
    name = _poison(exported / weights_file)
    with pytest.raises(ValueError, match="non-finite") as caught:
        load_recognizer(exported)
    assert f"'{name}'" in str(caught.value) and weights_file.split("/")[0] in str(caught.value)


def _edit_description(exported: Path, **changes) -> None:
    description = json.loads((exported / "model.json").read_text())
    description.update(changes)
    for field in [field for field, value in changes.items() if value is None]:
        del description[field]
    (exported / "model.json").write_text(json.dumps(description))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"blank_index": 40}, "field 'blank_index' is 40, outside the 40 labels"),
        ({"blank_index": "0"}, "field 'blank_index' must be an integer"),
        ({"labels": LABELS[:-1]}, "field 'labels' has 39 labels but tensor 'head.weight' of .* has 40 rows"),
        ({"labels": [*LABELS[:-1], "aa"]}, "field 'labels' repeats a label: \\['aa'\\]"),
        ({"labels": [*LABELS[:-1], ""]}, "field 'labels' must be a list"),
        ({"labels": None}, "missing field 'labels'"),
        ({"method": "peft"}, "field 'method' must be one of fvae_lora, lora, full, frozen"),
        ({"sample_rate": None}, "missing field 'sample_rate'"),
    ],
)
def test_descriptions_that_do_not_fit_the_model_are_rejected(tmp_path, checkpoint, changes, message):
    exported = Path(shutil.copytree(checkpoint, tmp_path / "model"))
    _edit_description(exported, **changes)
    with pytest.raises(ValueError, match=message) as caught:
        load_recognizer(exported)
    assert str(exported / "model.json") in str(caught.value)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_a_head_that_does_not_fit_the_labels_is_named_for_every_kind(tmp_path, backbone, kind):
    exported = _exported(tmp_path / "model", kind, backbone)  # LoRA's weights carry PEFT's tensor names
    _edit_description(exported, labels=LABELS[:-1])
    with pytest.raises(ValueError, match="field 'labels' has 39 labels but tensor '.*head.weight' of .* has 40 rows"):
        load_recognizer(exported)


# ---- command lines: one-line errors, usage errors exit 2 before anything runs -------------------------------


@pytest.mark.parametrize("device", ["gpu", "cuda:99", "cpu:x"])
def test_a_bad_device_is_a_usage_error(checkpoint, audio, tmp_path, capsys, device):
    evaluate_args = ["--manifest", str(tmp_path / "m.json"), "--json", str(tmp_path / "r.json")]
    for main, extra in ((transcribe_main, [str(audio["mono.wav"])]), (evaluate_main, evaluate_args)):
        with pytest.raises(SystemExit) as caught:
            main(["--checkpoint", str(checkpoint), "--device", device, *extra])
        assert caught.value.code == 2
        [*_, error] = capsys.readouterr().err.splitlines()
        assert "--device" in error and device in error
    assert not (tmp_path / "r.json").exists()


def test_cli_errors_on_bad_checkpoint_files_are_one_line(tmp_path, checkpoint, audio, capsys):
    missing_field = Path(shutil.copytree(checkpoint, tmp_path / "no_labels"))
    _edit_description(missing_field, labels=None)
    config_not_an_object = Path(shutil.copytree(checkpoint, tmp_path / "list_config"))
    (config_not_an_object / "adapter_config.json").write_text("[1, 2]")
    cases = {
        missing_field: "missing field 'labels'",
        config_not_an_object: "adapter_config.json: expected a JSON object",
    }
    for exported, message in cases.items():
        assert transcribe_main(["--checkpoint", str(exported), str(audio["mono.wav"])]) == 1
        [error] = capsys.readouterr().err.splitlines()
        assert error.startswith("error: ") and message in error


def test_a_directory_to_transcribe_is_reported_as_a_directory(transcriber, tmp_path):
    [result] = transcriber.transcribe_files([tmp_path])
    assert result.error == "is a directory, not an audio file"


def test_evaluate_prints_the_per_before_writing_and_keeps_the_old_report_on_failure(
    checkpoint, audio, tmp_path, capsys
):
    _write_manifest(tmp_path / "test.json", audio)
    report = tmp_path / "report.json"
    report.write_text("previous report\n")
    (tmp_path / f".report.json.{os.getpid()}.tmp").mkdir()  # the write cannot happen
    args = ["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "test.json"), "--json", str(report)]
    assert evaluate_main(args) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("PER ") and f"error: cannot write {report}" in captured.err
    assert report.read_text() == "previous report\n"


def test_evaluate_output_in_a_missing_folder_is_a_usage_error(checkpoint, audio, tmp_path, capsys):
    _write_manifest(tmp_path / "test.json", audio)
    args = ["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "test.json")]
    with pytest.raises(SystemExit) as caught:
        evaluate_main([*args, "--json", str(tmp_path / "absent" / "report.json")])
    assert caught.value.code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, target, message",
    [
        ("--json", "test.json/report.json", "test.json is a file, not a folder"),
        ("--sclite", "test.json", "test.json exists and is not a directory"),
        ("--sclite", "test.json/sclite", "test.json is a file, not a folder"),
        ("--sclite", "with_a_folder", "ref.trn is a directory, not a file"),
    ],
)
def test_evaluate_checks_every_output_before_any_work_with_the_right_words(
    checkpoint, audio, tmp_path, capsys, monkeypatch, option, target, message
):
    _write_manifest(tmp_path / "test.json", audio)
    (tmp_path / "with_a_folder" / "ref.trn").mkdir(parents=True)
    monkeypatch.setattr(Transcriber, "__init__", lambda *args, **kwargs: pytest.fail("the work started"))
    args = ["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "test.json")]
    with pytest.raises(SystemExit) as caught:
        evaluate_main([*args, option, str(tmp_path / target)])
    assert caught.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--json", "--alignments"])
def test_evaluate_refuses_an_output_that_is_one_of_its_inputs(checkpoint, audio, tmp_path, capsys, option):
    _write_manifest(tmp_path / "test.json", audio)
    before = (tmp_path / "test.json").read_bytes()
    for target in (tmp_path / "test.json", audio["mono.wav"]):
        code = evaluate_main(
            ["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "test.json"), option, str(target)]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and f"{target} is one of the inputs" in err[0], err
    assert (tmp_path / "test.json").read_bytes() == before


def test_sclite_files_refuse_utterance_ids_with_parentheses(checkpoint, audio, tmp_path, capsys):
    manifest = _write_manifest(tmp_path / "test.json", audio)
    manifest["UTT_(A)"] = manifest.pop("UTT_A")
    (tmp_path / "test.json").write_text(json.dumps(manifest))
    args = ["--checkpoint", str(checkpoint), "--manifest", str(tmp_path / "test.json")]
    assert evaluate_main([*args, "--sclite", str(tmp_path / "sclite")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot contain parentheses" in err[0] and "UTT_(A)" in err[0]
    assert not (tmp_path / "sclite").exists()


@pytest.mark.e2e
def test_loading_a_ctc_checkpoint_as_backbone_prints_nothing_and_restores_logging():
    # A Wav2Vec2ForCTC folder: transformers reports its lm_head as UNEXPECTED for the backbone, with progress bars.
    script = (
        "import transformers\n"
        "from fvae_asr.demo.paths import ASSET_BACKBONE\n"
        "from fvae_asr.speech.models.encoder import SSLEncoder\n"
        "SSLEncoder(ASSET_BACKBONE)\n"
        "print(transformers.logging.get_verbosity() == transformers.logging.WARNING,"
        " transformers.utils.logging.is_progress_bar_enabled())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "True True\n"


def test_a_backbone_missing_weights_is_an_error_not_a_random_init(tmp_path, backbone):
    broken = Path(shutil.copytree(backbone, tmp_path / "broken"))
    tensors = load_file(str(broken / "model.safetensors"))
    victim = sorted(k for k in tensors if k.startswith("encoder.layers.1."))[0]
    del tensors[victim]
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"lacks backbone weights \\['{victim}'\\]"):
        SSLEncoder(broken)


def test_a_fifo_is_refused_by_transcribe_and_in_a_manifest_without_hanging(tmp_path, checkpoint, audio, capsys):
    """A FIFO would block any reader: it is refused by name before anything opens it (a writer-less FIFO would
    otherwise hang the command: the test runs it with an alarm)."""
    import signal

    from fvae_asr.speech.data.annotations import check_audio, read_annotation

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)

    def hung(*_):
        raise TimeoutError("blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        code = transcribe_main(["--checkpoint", str(checkpoint), str(fifo), str(audio["mono.wav"])])
        (tmp_path / "a.csv").write_text(f"ID,duration,wav,phn\nu1,1.0,{fifo},sil\n")
        with pytest.raises(ValueError, match=r"a\.csv, line 2 \(ID 'u1'\): .*pipe\.wav: is not a regular file"):
            check_audio({"train": read_annotation(tmp_path / "a.csv")})
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    assert code == 1 and f"{fifo}: error: is not a regular file (a FIFO, socket or device)" in captured.err
    assert str(audio["mono.wav"]) in captured.out  # the other file is still transcribed


def test_evaluate_resolves_wav_paths_as_the_recipe_does(checkpoint, audio, tmp_path, monkeypatch, capsys):
    """Relative paths start at the manifest's folder (not the working directory) and {data_root} is --data-folder,
    as in the recipe: all three manifests score the same."""
    absolute = _write_manifest(tmp_path / "absolute.json", audio)
    corpus = audio["mono.wav"].parent
    relative = {utt: {**entry, "wav": Path(entry["wav"]).name} for utt, entry in absolute.items()}
    (corpus / "relative.json").write_text(json.dumps(relative))
    rooted = {utt: {**entry, "wav": "{data_root}/" + Path(entry["wav"]).name} for utt, entry in absolute.items()}
    (tmp_path / "rooted.json").write_text(json.dumps(rooted))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    reports = []
    for manifest, extra in (
        (tmp_path / "absolute.json", []),
        (corpus / "relative.json", []),
        (tmp_path / "rooted.json", ["--data-folder", str(corpus)]),
    ):
        report = tmp_path / f"{manifest.stem}.report.json"
        assert (
            evaluate_main(["--checkpoint", str(checkpoint), "--manifest", str(manifest), "--json", str(report), *extra])
            == 0
        ), capsys.readouterr().err
        reports.append(json.loads(report.read_text()))
    assert reports[0]["per"] == reports[1]["per"] == reports[2]["per"] and reports[0]["utterances"] == 3


def test_short_files_go_longest_batch_first_in_the_batches_of_length_sorted_order(transcriber, tmp_path, monkeypatch):
    """The batches are those of the files sorted shortest first (so the outputs do not change), run longest batch
    first: later, shorter batches then fit in memory the allocator already holds instead of growing it."""
    seconds = [0.5, 0.3, 0.7, 0.4, 0.6]
    paths = []
    for index, length in enumerate(seconds):
        paths.append(tmp_path / f"u{index}.wav")
        sf.write(paths[-1], _tones(RATE, length), RATE)
    batches = []
    forward = transcriber._forward
    monkeypatch.setattr(transcriber, "_forward", lambda wavs: batches.append([len(w) for w in wavs]) or forward(wavs))

    order = [index for index, _ in transcriber.transcribe_each(paths)]

    samples = [int(RATE * s) for s in sorted(seconds)]
    assert batches == [samples[4:], samples[2:4], samples[:2]]  # batch size 2
    assert order == [2, 0, 4, 1, 3]


def test_transcription_builds_no_autograd_graph(transcriber, audio):
    """Inference keeps no activations for backward, although the loaded head and adapters are trainable."""
    assert any(param.requires_grad for param in transcriber.model.parameters())
    wav = load_audio(audio["mono.wav"])
    blocks = [*transcriber.frame_log_probs(audio["mono.wav"]), *transcriber._forward([wav, wav[: len(wav) // 2]])]
    assert all(not block.requires_grad and block.grad_fn is None for block in blocks)


def test_transcribe_refuses_an_output_that_is_one_of_its_inputs(checkpoint, audio, tmp_path, capsys):
    named_like_its_output = tmp_path / "take.txt"  # audio whose name is what --format text writes for it
    shutil.copy(audio["mono.wav"], named_like_its_output)
    with pytest.raises(SystemExit) as stopped:
        transcribe_main(["--checkpoint", str(checkpoint), "--out-dir", str(tmp_path), str(named_like_its_output)])
    assert stopped.value.code == 2 and "take.txt is one of the inputs" in capsys.readouterr().err
    assert named_like_its_output.read_bytes() == audio["mono.wav"].read_bytes()
