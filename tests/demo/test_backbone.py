"""``python -m fvae_asr.demo.backbone``: the shipped backbone's builder, and the candidate of the real-speech
study's backbone check, trained on the corpora of several synthetic domains at once."""

from __future__ import annotations

import pytest
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from fvae_asr.demo.backbone import SMALL_BACKBONE_CONFIG, TINY_BACKBONE_CONFIG, build_backbone, main
from fvae_asr.files import read_json
from fvae_asr.speech.data.timit import PHONES_39

from tiny_models import TINY_ENCODERS

DOMAINS = ("source", "noisy_room")


@pytest.mark.e2e
def test_a_backbone_of_several_domains_trains_on_every_utterance_of_each(tmp_path):
    work = tmp_path / "work"
    out = build_backbone(
        tmp_path / "backbone",
        work,
        epochs=1,
        train_speakers=2,
        sentences_per_speaker=1,
        test_speakers=2,
        domains=DOMAINS,
        encoder_config=TINY_ENCODERS["wav2vec2"],
    )
    for split in ("train", "dev", "test"):
        own = {domain: read_json(work / "annotations" / domain / f"{split}.json", split) for domain in DOMAINS}
        merged = read_json(work / "annotations" / f"{split}.json", split)
        assert merged == {f"{domain}_{utt}": entry for domain in DOMAINS for utt, entry in own[domain].items()}
        assert {entry["wav"].split("/")[-5] for entry in merged.values()} == {f"{d}_corpus" for d in DOMAINS}
    assert len(read_json(work / "annotations" / "train.json", "train")) == 2 * 2 * 1  # SA1 and SA2 are left out
    tested = read_json(work / "pretrain" / "test_results.json", "the run's test results")
    assert tested["utterances"] == len(read_json(work / "annotations" / "test.json", "test"))  # both domains'
    model = Wav2Vec2ForCTC.from_pretrained(out)
    assert model.config.hidden_size == TINY_ENCODERS["wav2vec2"]["hidden_size"]
    assert set(read_json(out / "vocab.json", "vocab")) - set(PHONES_39) == {"<blank>"}  # the shipped backbone's


def test_an_unknown_domain_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"domains: unknown studio; choose from \['accented', 'noisy_room'"):
        build_backbone(tmp_path / "out", tmp_path / "work", domains=("source", "studio"))
    assert not (tmp_path / "work").exists()
    with pytest.raises(SystemExit):
        main(["--domains", "studio"])


def test_the_candidate_has_the_shipped_ones_frames_and_the_parameters_the_docs_give():
    sizes = {}
    for name, config in (("tiny", TINY_BACKBONE_CONFIG), ("small", SMALL_BACKBONE_CONFIG)):
        settings = {key: value for key, value in config.items() if key != "model_type"}
        model = Wav2Vec2ForCTC(Wav2Vec2Config(**settings, vocab_size=len(PHONES_39) + 1))
        sizes[name] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    assert sizes == {"tiny": 0.94, "small": 3.11}  # docs/demo.md, docs/real-speech.md
    assert SMALL_BACKBONE_CONFIG["conv_stride"] == TINY_BACKBONE_CONFIG["conv_stride"]  # 20 ms frames
