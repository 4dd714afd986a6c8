"""Files from elsewhere never run code and never reach outside their folder: a model folder whose config asks for
remote code, a description pointing outside its export, an adapter config built to hang or exhaust memory, a
pickle planted in a checkpoint (even with torch's weights-only default switched off)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

from fvae_asr import FVAELoRAConfig, inject, load_adapter, save_adapter
from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.data.timit import PHONES_39
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import export_model, load_recognizer
from fvae_asr.speech.models.recognizer import CTCRecognizer
from fvae_asr.speech.models.training_methods import configure_training

from conftest import HPARAMS, recipe_overrides
from tiny_models import WithHead, tiny_wav2vec2
from warm_python import run_python

LABELS = ["<blank>", *PHONES_39]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    backbone = tmp_path_factory.mktemp("backbone")
    tiny_wav2vec2().save_pretrained(backbone)
    model = CTCRecognizer(SSLEncoder(backbone), n_tokens=len(LABELS))
    configure_training(model, "fvae_lora", FVAELoRAConfig(rank=4))
    return export_model(model, "fvae_lora", LABELS, tmp_path_factory.mktemp("export") / "model")


def _plant_remote_code(folder: Path, marker: Path) -> None:
    """A config.json with an unknown model_type and an auto_map to a module that leaves ``marker`` if it runs."""
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")


@pytest.mark.e2e
def test_a_backbone_asking_for_remote_code_is_refused_before_transformers_sees_it(tmp_path, exported, capsys):
    model = Path(shutil.copytree(exported, tmp_path / "model"))
    marker = tmp_path / "RAN"
    _plant_remote_code(model / "backbone", marker)
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")  # never read: the model fails to load first
    code = run_python(
        ["-m", "fvae_asr", "transcribe", "--checkpoint", str(model), str(wav)], input="y\n", timeout=300
    )  # a "y" waits on stdin, as a careless user would type it
    assert not marker.exists()
    assert code.returncode != 0 and "[y/N]" not in code.stdout + code.stderr
    assert "model_type must be one of wav2vec2, hubert, wavlm, data2vec-audio; got 'evil'" in code.stderr


def test_init_head_from_an_untrusted_ctc_folder_never_runs_its_code(tmp_path, exported):
    from fvae_asr.speech.models.recognizer import init_head_from_checkpoint

    folder = Path(shutil.copytree(exported / "backbone", tmp_path / "ctc"))
    marker = tmp_path / "RAN"
    _plant_remote_code(folder, marker)
    model, _ = load_recognizer(exported)
    with pytest.raises(ValueError, match="got 'evil'"):
        init_head_from_checkpoint(model, folder, LABELS)
    assert not marker.exists()


@pytest.mark.parametrize("backbone", ["/tmp", "../../elsewhere", "backbone/../../outside"])
def test_a_backbone_path_outside_the_export_is_refused(tmp_path, exported, backbone):
    model = Path(shutil.copytree(exported, tmp_path / "exports" / "model"))
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(exported / "backbone", tmp_path / "exports" / "outside")
    description = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**description, "backbone": backbone}))
    with pytest.raises(ValueError, match="field 'backbone'.*outside the export"):
        load_recognizer(model)


def test_a_backbone_folder_linked_outside_the_export_is_refused(tmp_path, exported):
    model = Path(shutil.copytree(exported, tmp_path / "model"))
    outside = Path(shutil.move(model / "backbone", tmp_path / "outside"))
    (model / "backbone").symlink_to(outside)
    with pytest.raises(ValueError, match="field 'backbone'.*outside the export"):
        load_recognizer(model)


def test_a_hub_id_backbone_is_still_named_as_a_hub_id(tmp_path, exported, monkeypatch):
    model = Path(shutil.copytree(exported, tmp_path / "model"))
    description = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**description, "backbone": "some-org/wav2vec2-base"}))

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr("fvae_asr.speech.models.encoder.AutoConfig.from_pretrained", offline)
    with pytest.raises(ValueError, match="cannot load backbone 'some-org/wav2vec2-base'"):
        load_recognizer(model)


def _saved_adapter(tmp_path: Path) -> Path:
    model = WithHead(tiny_wav2vec2(seed=0))
    inject(model, FVAELoRAConfig(rank=4, trainable_modules=["head"]))
    return save_adapter(model, tmp_path / "adapter")


def _edit_config(directory: Path, **fields) -> None:
    path = directory / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_a_catastrophic_target_pattern_is_never_run_on_load(tmp_path):
    directory = _saved_adapter(tmp_path)
    _edit_config(directory, target_modules="(.*.*)*Z", trainable_modules="(.*.*)*Z")

    def too_long(*_):
        raise TimeoutError("load_adapter ran the saved pattern")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(30)
    try:
        adapted = load_adapter(WithHead(tiny_wav2vec2(seed=0)), directory)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert len(adapted) == 4 and all(name.endswith(("q_proj", "k_proj")) for name in adapted)


@pytest.mark.parametrize(
    "field,value",
    [("rank", 10**9), ("encoder_hidden", 10**9), ("decoder_hidden", 10**9), ("decoder_layers", 32), ("z2_dim", 10**9)],
)
def test_config_sizes_that_do_not_fit_the_saved_weights_allocate_nothing(tmp_path, field, value):
    directory = _saved_adapter(tmp_path)
    _edit_config(directory, **{field: value})
    with pytest.raises(ValueError, match=rf"adapter_config.json: its sizes \(.*{field} {value}.*\) need tensor"):
        load_adapter(WithHead(tiny_wav2vec2(seed=0)), directory)


def test_a_decoder_deeper_than_any_the_method_uses_is_refused_by_name(tmp_path):
    directory = _saved_adapter(tmp_path)
    _edit_config(directory, decoder_layers=10**6)
    with pytest.raises(ValueError, match=r"adapter_config.json: FVAELoRAConfig.decoder_layers must be at most 32"):
        load_adapter(WithHead(tiny_wav2vec2(seed=0)), directory)


@pytest.mark.e2e
def test_a_pickle_planted_in_a_checkpoint_never_runs_even_with_weights_only_off(tmp_path, tone_corpus, monkeypatch):
    overrides = recipe_overrides(tone_corpus, tmp_path / "run", number_of_epochs=1)
    run(HPARAMS, {"noprogressbar": True}, overrides)
    (checkpoint,) = sorted((tmp_path / "run" / "save").glob("CKPT+*"))
    marker = tmp_path / "RAN"

    class Planted:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"planted": Planted()}, checkpoint / "scheduler.ckpt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(Exception, match="scheduler.ckpt|could be loaded|Weights only load failed"):
        run(HPARAMS, {"noprogressbar": True}, {**overrides, "number_of_epochs": 2})
    assert not marker.exists()
