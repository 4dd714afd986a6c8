"""A look inside the latents: the ablation switch, the probes, frame labelling, and ``fvae-asr latents``."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fvae_asr import FVAELoRAConfig, FVAELoRALinear, LoRAConfig, adapter_layers, inject, latent_ablation
from fvae_asr.analysis.latents import check_manifest, frame_centers, frame_phones, probe_tasks
from fvae_asr.analysis.probes import UNLABELED, ProbeSettings, ProbeTask, held_out_groups, majority_rate
from fvae_asr.analysis.recorder import LatentRecorder, LayerRecord, record_latents
from fvae_asr.cli.evaluate import main as evaluate_main
from fvae_asr.cli.latents import main as latents_main
from fvae_asr.speech.data.timit import PHONES_39, prepare_timit
from fvae_asr.speech.inference.chunking import FrameGeometry
from fvae_asr.speech.models.classifier import PooledClassifier
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import export_model, load_exported, load_recognizer
from fvae_asr.speech.models.recognizer import CTCRecognizer
from fvae_asr.speech.models.training_methods import configure_training

from tiny_models import WithHead, tiny_inputs, tiny_wav2vec2

TARGETS = ["q_proj", "k_proj", "v_proj"]


def _nudged(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Trainable weights moved off their initial values (zero heads would make every latent mean 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return model


def _fvae_model(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """An FVAE-adapted tiny wav2vec2 with a head (eval mode) and a copy of it without adapters."""
    plain = WithHead(tiny_wav2vec2(seed)).eval()
    model = copy.deepcopy(plain)
    inject(model, FVAELoRAConfig(rank=4, target_modules=TARGETS, trainable_modules=["head"]))
    _nudged(model)
    plain.head.load_state_dict(model.head.state_dict())
    return model.eval(), plain


def test_ablation_of_z1_everywhere_gives_the_base_model_and_is_undone_bit_exactly():
    model, plain = _fvae_model()
    inputs = tiny_inputs("wav2vec2")
    with torch.no_grad():
        before = model(inputs)
        with latent_ablation(model, z1=True) as names:
            ablated = model(inputs)
        after = model(inputs)
        base = plain(inputs)
    assert names == [layer.adapter_name for layer in adapter_layers(model)] and len(names) == 6
    assert torch.equal(before, after)  # bit for bit
    assert not torch.allclose(before, ablated, atol=1e-3)  # the adapters did change the output
    torch.testing.assert_close(ablated, base, rtol=0, atol=1e-6)  # y = W x in every layer
    assert all(layer.ablated_latents == frozenset() for layer in adapter_layers(model))


def test_ablation_of_one_layer_and_of_z2():
    model, _ = _fvae_model()
    inputs = tiny_inputs("wav2vec2")
    layer = adapter_layers(model)[2]
    x = torch.randn(3, 5, layer.in_features)
    with torch.no_grad():
        before, recon = model(inputs), layer.reconstruction(x)
        with latent_ablation(model, z2=True):
            assert torch.equal(model(inputs), before)  # z2 never reaches the output
            mu1, mu2 = layer.latent_means(x)
            assert torch.equal(mu2, torch.full_like(mu2, 1.5)) and mu1.abs().min() > 0
            assert not torch.allclose(layer.reconstruction(x), recon)
        with latent_ablation(model, z1=True, layers=[layer.adapter_name]):
            one = model(inputs)
            with latent_ablation(model, z2=True):  # nested blocks combine, and unwind one at a time
                assert layer.ablated_latents == {"z1", "z2"}
                assert adapter_layers(model)[0].ablated_latents == {"z2"}
            assert layer.ablated_latents == {"z1"} and adapter_layers(model)[0].ablated_latents == frozenset()
        assert torch.equal(model(inputs), before) and torch.equal(layer.reconstruction(x), recon)
    assert not torch.allclose(one, before, atol=1e-4)


def test_ablation_errors():
    model, plain = _fvae_model()
    with pytest.raises(ValueError, match="no FVAE-LoRA layer named 'backbone.nope'; the layers are: backbone"):
        with latent_ablation(model, z1=True, layers=["backbone.nope"]):
            pass
    lora = copy.deepcopy(plain)
    inject(lora, LoRAConfig(rank=4, target_modules=TARGETS))
    for other in (plain, lora):
        with pytest.raises(ValueError, match="no FVAE-LoRA layers"), latent_ablation(other, z1=True):
            pass
    with latent_ablation(model.train(), z1=True), pytest.raises(RuntimeError, match="inference only"):
        model(tiny_inputs("wav2vec2"))
    assert isinstance(adapter_layers(model)[0], FVAELoRALinear)


# ---- recording ---------------------------------------------------------------------------------------------------


def test_recorder_keeps_the_real_frames_of_each_item():
    model, _ = _fvae_model()
    layer = adapter_layers(model)[1]
    inputs = tiny_inputs("wav2vec2")
    seen = []
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(args[0]))

    def run(batch: torch.Tensor) -> torch.Tensor:  # any model: run it, say which frames are real
        model(batch)
        mask = torch.ones(seen[-1].shape[:2], dtype=torch.bool)
        mask[1, 3:] = False  # the second item has 3 real frames
        return mask

    recorder = record_latents(model, [inputs], run)
    handle.remove()
    n_frames = seen[0].shape[1]
    assert recorder.kind == "fvae_lora" and recorder.frames_per_item == [n_frames, 3]
    record = recorder.records[layer.adapter_name]
    with torch.no_grad():
        mu1, mu2 = layer.latent_means(seen[0])
    assert [tuple(t.shape) for t in record.features["z1"]] == [(n_frames, 4), (3, 4)]
    torch.testing.assert_close(record.features["z1"][1], mu1[1, :3])
    torch.testing.assert_close(record.stacked("z2"), torch.cat([mu2[0], mu2[1, :3]]))
    assert record.frames == n_frames + 3 and set(record.squared_error) == {"trained", "z1_prior", "z2_prior"}
    assert all(not layer._forward_hooks for layer in adapter_layers(model))  # the recorder's hooks are gone


def test_layer_record_summaries():
    record = LayerRecord(
        {"z1": [torch.tensor([[1.0, 5.0], [3.0, 5.0]])]},
        {"trained": 8.0},
        torch.tensor([2.0, 0.0]),
        torch.tensor([4.0, 2.0]),
        frames=2,
    )
    assert record.active_units("z1") == 1  # the second dimension never moves
    assert record.reconstruction() == {"mse": {"trained": 2.0}, "input_variance": 1.0}


def test_recorder_needs_adapters():
    with pytest.raises(ValueError, match="no adapter layers"):
        LatentRecorder(WithHead(tiny_wav2vec2()))


# ---- probes -------------------------------------------------------------------------------------------------


def _frames(seed: int, planted: bool) -> ProbeTask:
    """2400 frames of 12 speakers, 4 balanced classes; with ``planted``, feature 3 is the class plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(2400) % 4
    speakers = [f"S{i // 200}" for i in range(2400)]
    held = held_out_groups(speakers, 0.25, seed=0)
    features = torch.randn(2400, 8, generator=generator)
    if planted:
        features[:, 3] += 3 * labels
    task = ProbeTask("label", ["a", "b", "c", "d"], labels, torch.tensor([s in held for s in speakers]), "speakers")
    return task, features


def test_probe_reads_a_planted_label_and_sits_at_chance_on_noise():
    settings = ProbeSettings()
    task, planted = _frames(0, planted=True)
    assert task.summary() == {
        "held_out": "speakers",
        "train_frames": 1800,
        "held_out_frames": 600,
        "classes": 4,
        "chance": 0.25,
    }
    assert task.accuracy(planted, settings) > 0.9
    _, noise = _frames(0, planted=False)
    assert abs(task.accuracy(noise, settings) - 0.25) < 0.06
    assert task.accuracy(planted, settings) == task.accuracy(planted, settings)  # deterministic


def test_majority_rate_and_unlabeled_frames():
    assert majority_rate(torch.tensor([2, 2, 1, 2])) == 0.75
    labels = torch.tensor([0, 1, UNLABELED, 1, 0, UNLABELED])
    task = ProbeTask("p", ["x", "y"], labels, torch.tensor([False, False, False, True, True, True]), "speakers")
    assert task.summary()["train_frames"] == 2 and task.summary()["held_out_frames"] == 2
    with pytest.raises(ValueError, match="probe 'p': no labelled held-out frames"):
        ProbeTask("p", ["x"], torch.tensor([0, UNLABELED]), torch.tensor([False, True]), "speakers")


def test_held_out_groups():
    speakers = ["A", "A", "B", "C", "D"]
    held = held_out_groups(speakers, 0.25, seed=0)
    assert len(held) == 1 and held <= set(speakers)
    assert held_out_groups(speakers, 0.25, seed=0) == held
    # Within strata: every speaker with two utterances or more keeps one in training and gives one to testing.
    utterances = ["A1", "A2", "A3", "A4", "B1", "B2", "C1"]
    strata = ["A", "A", "A", "A", "B", "B", "C"]
    held = held_out_groups(utterances, 0.25, seed=3, strata=strata)
    assert len(held & {"A1", "A2", "A3", "A4"}) == 1 and len(held & {"B1", "B2"}) == 1 and "C1" not in held
    with pytest.raises(ValueError, match="at least two speakers"):
        held_out_groups(["A", "A"], 0.25, seed=0)


# ---- frames and phones ----------------------------------------------------------------------------------------


def test_frames_are_labeled_with_the_phone_at_their_center():
    centers = frame_centers(6, FrameGeometry(hop=320, receptive_field=400))  # wav2vec2: 20 ms hop, 25 ms field
    assert centers.tolist() == [200, 520, 840, 1160, 1480, 1800]
    segments = [[1200, 2000, "s"], [0, 400, "sil"], [400, 1000, "aa"]]  # any order; [1000, 1200) is no phone's
    assert frame_phones(segments, centers) == ["sil", "aa", "aa", None, "s", "s"]
    assert frame_phones([[0, 200, "sil"], [200, 520, "aa"]], centers[:2]) == ["aa", None]  # start in, end out


def _manifest(speakers: int = 4, utterances: int = 2) -> dict[str, dict]:
    return {
        f"S{s}_U{u}": {
            "wav": "x.wav",
            "phn": "sil aa",
            "spk_id": f"S{s}",
            "domain": "ab"[s % 2],
            "phn_segments": [[0, 500, "sil"], [500, 1000, "aa"]],
        }
        for s in range(speakers)
        for u in range(utterances)
    }


def test_probe_tasks_label_every_frame_and_hold_out_whole_groups():
    manifest = _manifest()
    ids = sorted(manifest)
    phone, speaker, domain = probe_tasks(
        manifest, ids, [3] * len(ids), ["phone", "speaker", "domain"], FrameGeometry(320, 400), ProbeSettings()
    )
    assert phone.classes == ["aa", "sil"] and phone.labels.tolist() == [1, 0, 0] * 8  # centres 200, 520, 840
    held_speakers = {ids[i // 3][:2] for i in phone.held_out.nonzero().squeeze(1).tolist()}
    assert len(held_speakers) == 1 and phone.held_out.sum() == 6  # one speaker: 2 utterances of 3 frames
    assert domain.classes == ["a", "b"] and domain.split == "speakers"
    assert speaker.classes == ["S0", "S1", "S2", "S3"] and speaker.split == "utterances of each speaker"
    held_utterances = {ids[i // 3] for i in speaker.held_out.nonzero().squeeze(1).tolist()}
    assert sorted(utt[:2] for utt in held_utterances) == ["S0", "S1", "S2", "S3"]  # one of each speaker's two


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.update(phn_segments=[[0, 500, "sil"], [500, 1000, "iy"]]), "labels of 'phn_segments' are not"),
        (lambda e: e.update(phn_segments=[[600, 500, "sil"], [500, 1000, "aa"]]), r"\[start, end, label\] with 0"),
        (lambda e: e.update(phn_segments="0 500 sil"), "must be a list"),
        (lambda e: e.update(domain=""), "'domain' must be a non-empty string"),
        (lambda e: e.pop("spk_id"), "has no 'spk_id'"),
    ],
)
def test_manifest_checks(change, message):
    manifest = _manifest()
    change(manifest["S1_U0"])
    with pytest.raises(ValueError, match=f"manifest m.json: entry 'S1_U0'.*{message}"):
        check_manifest(manifest, Path("m.json"), ["phone", "speaker", "domain"])


def test_frame_geometry_matches_the_encoders_frame_count():
    model = tiny_wav2vec2()
    geometry = FrameGeometry.from_frame_lengths(model._get_feat_extract_output_lengths)
    stride, field = geometry.hop, geometry.receptive_field
    for samples in (field, field + stride - 1, 16000, 16001):
        expected = int(model._get_feat_extract_output_lengths(torch.tensor(samples)))
        assert (samples - field) // stride + 1 == expected


# ---- the command line -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("backbone")
    tiny_wav2vec2().save_pretrained(directory)
    return directory


def _export(directory: Path, kind: str, backbone: Path) -> Path:
    """A tiny exported recogniser of the given kind, trainable weights moved off their initial values."""
    torch.manual_seed(0)
    model = CTCRecognizer(SSLEncoder(backbone), n_tokens=len(PHONES_39) + 1)
    config = {"fvae_lora": FVAELoRAConfig(rank=4, target_modules=TARGETS), "lora": LoRAConfig(rank=4)}.get(kind)
    configure_training(model, kind, config)
    return export_model(_nudged(model), kind, ["<blank>", *PHONES_39], directory)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, backbone) -> dict[str, Path]:
    return {kind: _export(tmp_path_factory.mktemp(kind), kind, backbone) for kind in ("fvae_lora", "lora", "frozen")}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tone_corpus) -> Path:
    """The tone corpus' train manifest: 3 speakers, 4 utterances each, with phone segments."""
    return prepare_timit(tone_corpus, tmp_path_factory.mktemp("manifests"))[0]


def _run(*argv: str) -> int:
    return latents_main(list(argv))


def test_cli_on_an_fvae_lora_recognizer(exports, manifest, tmp_path):
    out = tmp_path / "out"
    assert (
        _run(
            "--checkpoint",
            str(exports["fvae_lora"]),
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--no-ablations",
            "--probes",
            "phone",
        )
        == 0
    )
    report = json.loads((out / "latents.json").read_text())
    assert sorted(path.name for path in out.iterdir()) == ["latents.json", "probe_accuracy.png", "projection_phone.png"]
    assert report["adapter"] == "fvae_lora" and report["latents"] == ["z1", "z2"] and report["utterances"] == 12
    # Every real frame of every utterance, and only those (the encoder's frame count of each file).
    entries = json.loads(manifest.read_text()).values()
    model = tiny_wav2vec2()
    expected = sum(int(model._get_feat_extract_output_lengths(torch.tensor(sf.info(e["wav"]).frames))) for e in entries)
    assert report["frames"] == expected
    layers = [layer["layer"] for layer in report["layers"]]
    assert len(layers) == 6 and all(name.endswith(tuple(TARGETS)) for name in layers)
    phone = report["probes"]["phone"]
    assert phone["held_out"] == "speakers" and phone["classes"] == 9  # 8 tones and sil
    assert phone["train_frames"] + phone["held_out_frames"] == expected  # every frame lies inside a phone
    for layer in report["layers"]:
        assert set(layer["probe"]) == {"phone"}
        assert set(layer["probe"]["phone"]) == {"z1", "z2", "chance"}
        assert layer["probe"]["phone"]["chance"] == phone["chance"]
        assert all(0 <= layer["probe"]["phone"][latent] <= 1 for latent in ("z1", "z2"))
        mse = layer["reconstruction"]["mse"]
        assert set(mse) == {"trained", "z1_prior", "z2_prior"} and mse["z2_prior"] != mse["trained"]
        assert layer["reconstruction"]["input_variance"] > 0
        assert set(layer["active_units"]) == {"z1", "z2"} and all(0 <= n <= 4 for n in layer["active_units"].values())
    assert "ablations" not in report


@pytest.mark.slow
def test_cli_per_ablations(exports, manifest, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run("--checkpoint", str(exports["fvae_lora"]), "--manifest", str(manifest), "--out", str(out)) == 0
    report = json.loads((out / "latents.json").read_text())
    assert (out / "per_ablation.png").is_file() and (out / "projection_speaker.png").is_file()
    speaker = report["probes"]["speaker"]
    assert speaker["held_out"] == "utterances of each speaker" and speaker["classes"] == 3
    assert speaker["held_out_frames"] < speaker["train_frames"]
    # As trained, the PER is the evaluator's; z1 = 0 in every layer, or in some layer alone, changes it.
    per = report["ablations"]["per"]
    assert evaluate_main(["--checkpoint", str(exports["fvae_lora"]), "--manifest", str(manifest)]) == 0
    assert f"PER {per['trained']:.2f}%" in capsys.readouterr().out
    assert per["z1_prior_all_layers"] != per["trained"]
    assert {layer["per_z1_prior"] for layer in report["layers"]} != {per["trained"]}


def test_cli_on_a_lora_recognizer_probes_ax(exports, manifest, tmp_path):
    out = tmp_path / "out"
    assert (
        _run(
            "--checkpoint", str(exports["lora"]), "--manifest", str(manifest), "--out", str(out), "--probes", "speaker"
        )
        == 0
    )
    report = json.loads((out / "latents.json").read_text())
    assert report["adapter"] == "lora" and report["latents"] == ["Ax"] and "ablations" not in report
    assert [set(layer["probe"]["speaker"]) for layer in report["layers"]] == [{"Ax", "chance"}] * 4  # q, k x 2
    assert "reconstruction" not in report["layers"][0]
    assert sorted(path.name for path in out.iterdir()) == [
        "latents.json",
        "probe_accuracy.png",
        "projection_speaker.png",
    ]


def _without(manifest: Path, tmp_path: Path, field: str) -> Path:
    entries = json.loads(manifest.read_text())
    path = tmp_path / f"no_{field}.json"
    path.write_text(json.dumps({k: {f: v for f, v in e.items() if f != field} for k, e in entries.items()}))
    return path


def test_cli_errors(exports, manifest, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--manifest", str(manifest), "--out", str(out)]
    assert _run("--checkpoint", str(exports["frozen"]), *common) == 1
    assert "is a 'frozen' recogniser: it has no adapter layers" in capsys.readouterr().err
    old = _without(manifest, tmp_path, "phn_segments")
    assert _run("--checkpoint", str(exports["fvae_lora"]), "--manifest", str(old), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert f"manifest {old}: entry 'FCJF0_SX10' has no 'phn_segments' (phone boundaries)" in err
    assert len(err.strip().splitlines()) == 1
    # Without the phone probe, such a manifest is fine; a domain the manifest lacks is not.
    assert (
        _run(
            "--checkpoint",
            str(exports["fvae_lora"]),
            "--manifest",
            str(old),
            "--out",
            str(out),
            "--probes",
            "speaker",
            "--no-ablations",
        )
        == 0
    )
    shutil.rmtree(out)
    assert _run("--checkpoint", str(exports["fvae_lora"]), *common, "--probes", "domain") == 1
    assert "has no 'domain': leave domain out of --probes" in capsys.readouterr().err
    assert _run("--checkpoint", str(tmp_path / "missing"), *common) == 1
    assert not out.exists()  # nothing written on errors
    for bad in (["--probes", "phone,accent"], ["--probes", "phone,phone"], ["--held-out", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            _run("--checkpoint", str(exports["fvae_lora"]), *common, *bad)
        assert exit_info.value.code == 2
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        _run("--checkpoint", str(exports["fvae_lora"]), "--manifest", str(manifest), "--out", str(tmp_path / "file"))
    assert exit_info.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_module_alias_fails_in_one_line(exports, manifest, tmp_path):
    command = [
        sys.executable,
        "-m",
        "fvae_asr",
        "latents",
        "--checkpoint",
        str(exports["frozen"]),
        "--manifest",
        str(manifest),
        "--out",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1 and result.stdout == ""
    [error] = result.stderr.splitlines()  # nothing but the error: no loading chatter
    assert error.startswith(f"error: checkpoint {exports['frozen']} is a 'frozen' recogniser")


# ---- classifiers ------------------------------------------------------------------------------------------------

CLASSES = ["low", "high"]
NUISANCES = {"quiet": 0.01, "noisy": 0.3}  # noise amplitude


def _classifier(kind: str, backbone: Path) -> PooledClassifier:
    """A tiny pooled classifier of the given kind, trainable weights moved off their initial values."""
    torch.manual_seed(0)
    model = PooledClassifier(SSLEncoder(backbone), len(CLASSES))
    config = {
        "fvae_lora": FVAELoRAConfig(rank=4, target_modules=TARGETS, trainable_modules=["head"]),
        "lora": LoRAConfig(rank=4, trainable_modules=["head"]),
    }.get(kind)
    configure_training(model, kind, config)
    return _nudged(model).eval()


@pytest.fixture(scope="module")
def classifier_exports(tmp_path_factory, backbone) -> dict[str, Path]:
    return {
        kind: export_model(_classifier(kind, backbone), kind, CLASSES, tmp_path_factory.mktemp(kind))
        for kind in ("fvae_lora", "lora", "frozen")
    }


@pytest.fixture(scope="module")
def classifier_manifest(tmp_path_factory) -> Path:
    """16 utterances, 4 per (class, nuisance) group: a low or high tone in quiet or loud noise, 0.2 to 0.4 s."""
    folder = tmp_path_factory.mktemp("classifier_manifest")
    rng = np.random.default_rng(0)
    manifest = {}
    for i in range(16):
        label, nuisance = CLASSES[i % 2], list(NUISANCES)[i // 2 % 2]
        samples = int(rng.integers(3200, 6400))
        tone = 0.5 * np.sin(2 * np.pi * (300 if label == "low" else 2000) * np.arange(samples) / 16000)
        audio = (tone + NUISANCES[nuisance] * rng.standard_normal(samples)).astype(np.float32)
        sf.write(folder / f"u{i:02d}.wav", audio, 16000)
        manifest[f"u{i:02d}"] = {
            "wav": str(folder / f"u{i:02d}.wav"),
            "duration": samples / 16000,
            "label": label,
            "nuisance": nuisance,
        }
    path = folder / "test.json"
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("kind", ["fvae_lora", "lora", "full"])
def test_an_exported_classifier_reloads_to_identical_outputs(kind, backbone, tmp_path):
    model = _classifier(kind, backbone)
    exported = export_model(model, kind, CLASSES, tmp_path / "export")
    description = json.loads((exported / "model.json").read_text())
    assert description["task"] == "classification" and description["labels"] == CLASSES
    assert "blank_index" not in description
    reloaded, read = load_exported(exported)
    assert isinstance(reloaded, PooledClassifier) and read["task"] == "classification"
    wavs, lengths = torch.randn(3, 4000), torch.tensor([1.0, 0.8, 0.55])
    with torch.no_grad():
        assert torch.equal(reloaded(wavs, lengths), model(wavs, lengths))
    with pytest.raises(ValueError, match=r"model.json: this export is a 'classification' model"):
        load_recognizer(exported)


def test_an_export_without_a_task_is_a_recognizer_and_a_bad_task_is_named(exports, tmp_path):
    copied = tmp_path / "old"
    shutil.copytree(exports["lora"], copied)
    description = json.loads((copied / "model.json").read_text())
    assert description.pop("task") == "ctc"
    (copied / "model.json").write_text(json.dumps(description))
    model, read = load_recognizer(copied)
    assert isinstance(model, CTCRecognizer) and read["task"] == "ctc"
    for task in ("regression", ["ctc"]):
        (copied / "model.json").write_text(json.dumps({**description, "task": task}))
        with pytest.raises(
            ValueError, match=re.escape(f"field 'task' must be one of ctc, classification, got {task!r}")
        ):
            load_recognizer(copied)


def _frame_count(wav: str) -> int:
    return int(tiny_wav2vec2()._get_feat_extract_output_lengths(torch.tensor(sf.info(wav).frames)))


def test_cli_on_an_fvae_lora_classifier(classifier_exports, classifier_manifest, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        _run(
            "--checkpoint",
            str(classifier_exports["fvae_lora"]),
            "--manifest",
            str(classifier_manifest),
            "--out",
            str(out),
        )
        == 0
    )
    report = json.loads((out / "latents.json").read_text())
    assert sorted(path.name for path in out.iterdir()) == [
        "accuracy_ablation.png",
        "latents.json",
        "probe_accuracy.png",
        "projection_label.png",
        "projection_label_pooled.png",
        "projection_nuisance.png",
        "projection_nuisance_pooled.png",
        "worst_group_accuracy_ablation.png",
    ]
    entries = json.loads(classifier_manifest.read_text())
    frames = sum(_frame_count(e["wav"]) for e in entries.values())
    assert report["adapter"] == "fvae_lora" and report["classes"] == CLASSES and report["utterances"] == 16
    assert report["frames"] == frames
    probes = report["probes"]
    assert list(probes) == ["label", "label_pooled", "nuisance", "nuisance_pooled"]
    # One utterance of each of the 4 (label, nuisance) groups held out (a quarter of 4), frames and pools alike.
    assert probes["label_pooled"]["held_out_frames"] == probes["nuisance_pooled"]["held_out_frames"] == 4
    assert probes["label_pooled"]["train_frames"] == 12 and probes["label_pooled"]["chance"] == 0.5
    assert probes["label"]["train_frames"] + probes["label"]["held_out_frames"] == frames
    for layer in report["layers"]:
        assert set(layer["probe"]) == set(probes)
        assert all(set(accuracies) == {"z1", "z2", "chance"} for accuracies in layer["probe"].values())
        assert set(layer["reconstruction"]["mse"]) == {"trained", "z1_prior", "z2_prior"}
        assert {"accuracy_z1_prior", "worst_group_accuracy_z1_prior"} <= set(layer)
    # As trained: the accuracy of the classifier on each utterance alone, averaged over the 4 groups.
    model, _ = load_exported(classifier_exports["fvae_lora"])
    hits: dict[tuple[str, str], list[bool]] = {}
    with torch.no_grad():
        for e in entries.values():
            wav = torch.from_numpy(sf.read(e["wav"], dtype="float32")[0])[None]
            predicted = CLASSES[int(model(wav, torch.ones(1)).argmax())]
            hits.setdefault((e["label"], e["nuisance"]), []).append(predicted == e["label"])
    groups = [100.0 * sum(h) / len(h) for h in hits.values()]
    accuracy, worst = report["ablations"]["accuracy"], report["ablations"]["worst_group_accuracy"]
    assert accuracy["trained"] == pytest.approx(sum(groups) / 4) and worst["trained"] == pytest.approx(min(groups))
    assert 0 <= worst["z1_prior_all_layers"] <= accuracy["z1_prior_all_layers"] <= 100
    assert f"accuracy {accuracy['trained']:.2f}% as trained" in capsys.readouterr().out


def test_cli_on_a_lora_classifier_probes_ax(classifier_exports, classifier_manifest, tmp_path):
    out = tmp_path / "out"
    assert (
        _run(
            "--checkpoint",
            str(classifier_exports["lora"]),
            "--manifest",
            str(classifier_manifest),
            "--out",
            str(out),
            "--probes",
            "nuisance",
        )
        == 0
    )
    report = json.loads((out / "latents.json").read_text())
    assert (
        report["latents"] == ["Ax"]
        and "ablations" not in report
        and list(report["probes"]) == ["nuisance", "nuisance_pooled"]
    )
    assert [set(layer["probe"]["nuisance_pooled"]) for layer in report["layers"]] == [{"Ax", "chance"}] * 4


def test_cli_errors_on_classifiers(classifier_exports, classifier_manifest, tmp_path, capsys):
    out = tmp_path / "out"
    checkpoint = ["--checkpoint", str(classifier_exports["fvae_lora"])]
    no_nuisance = _without(classifier_manifest, tmp_path, "nuisance")
    assert _run(*checkpoint, "--manifest", str(no_nuisance), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert f"manifest {no_nuisance}: entry 'u00' has no 'nuisance' string (the utterance's spurious attribute)" in err
    assert len(err.strip().splitlines()) == 1
    no_label = _without(classifier_manifest, tmp_path, "label")
    assert _run(*checkpoint, "--manifest", str(no_label), "--out", str(out), "--probes", "nuisance") == 1
    assert "entry 'u00' has no 'label' string (the utterance's class)" in capsys.readouterr().err
    entries = json.loads(classifier_manifest.read_text())
    entries["u03"]["label"] = "middle"
    (tmp_path / "unknown.json").write_text(json.dumps(entries))
    assert _run(*checkpoint, "--manifest", str(tmp_path / "unknown.json"), "--out", str(out)) == 1
    assert "entry 'u03': label 'middle' is not one of the classifier's classes: low, high" in capsys.readouterr().err
    assert _run(*checkpoint, "--manifest", str(classifier_manifest), "--out", str(out), "--probes", "phone") == 1
    assert "probe(s) phone are for recognisers; a classifier's probes are: label, nuisance" in capsys.readouterr().err
    assert (
        _run(
            "--checkpoint", str(classifier_exports["frozen"]), "--manifest", str(classifier_manifest), "--out", str(out)
        )
        == 1
    )
    assert "is a 'frozen' classifier: it has no adapter layers" in capsys.readouterr().err
    assert not out.exists()  # nothing written on errors


def test_cli_shows_progress_over_the_manifest_also_in_a_log_unless_quiet(exports, manifest, tmp_path, capsys):
    """stderr here is no terminal (as in a log file or a job's output): the progress is still written."""
    args = ["--checkpoint", str(exports["lora"]), "--manifest", str(manifest), "--probes", "phone"]
    assert _run(*args, "--out", str(tmp_path / "a")) == 0
    err = capsys.readouterr().err
    assert re.search(r"utterances: 100%.*12/12", err) and re.search(r"probes: 100%.*4/4", err)
    assert _run(*args, "--out", str(tmp_path / "b"), "--quiet") == 0
    assert capsys.readouterr().err == ""
