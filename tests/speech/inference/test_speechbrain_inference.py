"""Exports through SpeechBrain's own inference interface: ``EncoderASR.from_hparams(source=export)`` transcribes
with the phones ``fvae-asr transcribe`` gives, offline, from a local folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.inference.ASR import EncoderASR
from speechbrain.utils.fetching import LocalStrategy

from fvae_asr.cli.transcribe import main as transcribe_main
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.speech.models.export import load_exported

from tiny_exports import export_tiny_recognizer, save_tiny_wav2vec2

LABELS = ["<blank>", "a", "b", "c", "d", "e"]
RATE = 16000


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("backbone"))


def _export(directory: Path, kind: str, backbone: Path) -> Path:
    return export_tiny_recognizer(directory, kind, backbone, LABELS, step=0.5)  # 0.5: it says different things


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> list[Path]:
    """Noise files of different lengths at the model's rate."""
    folder = tmp_path_factory.mktemp("audio")
    generator = np.random.default_rng(3)
    paths = [folder / f"utt{i}.wav" for i in range(3)]
    for path, seconds in zip(paths, (0.9, 0.45, 0.62)):
        sf.write(path, (0.3 * generator.standard_normal(int(RATE * seconds))).astype(np.float32), RATE, "FLOAT")
    return paths


def _cli_phones(export: Path, wavs: list[Path], capsys) -> list[str]:
    """What ``fvae-asr transcribe`` prints for each file: its phones, space-separated."""
    capsys.readouterr()
    assert transcribe_main(["--checkpoint", str(export), *map(str, wavs)]) == 0
    lines = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    return [lines[str(path)] for path in wavs]


@pytest.mark.parametrize("kind", ["fvae_lora", "lora", "full"])
def test_encoder_asr_transcribes_an_export_as_fvae_asr_transcribe_does(tmp_path, backbone, wavs, kind, capsys):
    export = _export(tmp_path / "export", kind, backbone)
    expected = _cli_phones(export, wavs, capsys)
    assert all(expected) and len(set(expected)) > 1  # it says something, different for each file

    asr = EncoderASR.from_hparams(source=str(export), savedir=str(tmp_path / "savedir"))
    assert [asr.transcribe_file(str(path)) for path in wavs] == expected

    batch = [torch.from_numpy(sf.read(path, dtype="float32")[0]) for path in wavs]
    padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
    lengths = torch.tensor([len(wav) / padded.shape[1] for wav in batch])
    words, ids = asr.transcribe_batch(padded, lengths)
    assert words == expected
    assert [" ".join(LABELS[i] for i in seq) for seq in ids] == expected


def test_the_speechbrain_files_change_nothing_for_our_loader_and_a_copied_pointer_is_named(tmp_path, backbone, wavs):
    export = _export(tmp_path / "export", "fvae_lora", backbone)
    assert json.loads((export / "encoder.ckpt").read_text())["description"] == "model.json"
    model, _ = load_exported(export)
    (export / "hyperparams.yaml").write_text("encoder: !apply:os.system ['touch pwned']\n")  # never read by us
    assert torch.equal(*(load_exported(export)[0].head.weight, model.head.weight))
    assert Transcriber(export).transcribe(wavs[0]).phones is not None

    _export(tmp_path / "export2", "fvae_lora", backbone)
    with pytest.raises(FileNotFoundError, match="the rest of the export is not beside it"):
        EncoderASR.from_hparams(
            source=str(tmp_path / "export2"), savedir=str(tmp_path / "savedir"), local_strategy=LocalStrategy.COPY
        )


def _as_written_before_0_3(export: Path) -> None:
    """An export as 0.2 wrote it: its description in recognizer.json with the method under "adapter"."""
    description = json.loads((export / "model.json").read_text())
    description["adapter"] = description.pop("method")
    (export / "recognizer.json").write_text(json.dumps(description))
    (export / "model.json").unlink()
    (export / "encoder.ckpt").write_text(json.dumps({"format": "fvae-asr export", "description": "recognizer.json"}))


@pytest.mark.parametrize("kind", ["fvae_lora", "full"])
def test_an_export_written_before_the_rename_loads_and_transcribes_as_before(tmp_path, backbone, wavs, kind, capsys):
    export = _export(tmp_path / "export", kind, backbone)
    expected = _cli_phones(export, wavs, capsys)
    model, description = load_exported(export)
    _as_written_before_0_3(export)

    legacy_model, legacy_description = load_exported(export)
    assert legacy_description == description and legacy_description["method"] == kind
    assert all(torch.equal(a, b) for a, b in zip(legacy_model.state_dict().values(), model.state_dict().values()))
    assert _cli_phones(export, wavs, capsys) == expected
    asr = EncoderASR.from_hparams(source=str(export), savedir=str(tmp_path / "savedir"))
    assert [asr.transcribe_file(str(path)) for path in wavs] == expected
