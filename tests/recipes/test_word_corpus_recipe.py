"""The recipe on corpora with word transcripts (``corpus:`` in the yaml): one command trains, tests and exports
with no phone file made by hand; the targets are part of the settings a resumed run must match; bad input stops
the run before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from word_corpora import ESPEAK_WORDS, SENTENCES, make_word_corpus, word_settings

from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.data.annotations import AnnotationError
from fvae_asr.speech.data.word_corpus import RECORD_NAME
from fvae_asr.speech.training.run_folder import resolved_settings

from conftest import HPARAMS, REPO, recipe_overrides
from warm_python import run_python

QUIET = {"noprogressbar": True}


def _overrides(root: Path, layout: str, output: Path, **extra) -> dict:
    settings = word_settings(root, layout, output / "save")
    del settings["save_folder"], settings["data_folder"]  # the recipe's own: output_folder/save
    return {**recipe_overrides(root, output, number_of_epochs=1), **settings, **extra}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["librispeech", "common_voice", "word_annotations"])
def test_a_word_transcribed_corpus_trains_tests_and_exports(tmp_path, layout):
    root = make_word_corpus(tmp_path / "corpus", layout)
    result = run(HPARAMS, QUIET, _overrides(root, layout, tmp_path / "run", method="lora"))

    assert result["test"]["utterances"] == 1 and result["test"]["reference_phones"] == len(SENTENCES[5][2].split())
    manifest = json.loads(Path(result["manifests"]["train"]).read_text())
    assert sorted(entry["wrd"] for entry in manifest.values()) == sorted(s[1] for s in SENTENCES[:4])
    record = json.loads((tmp_path / "run" / "save" / RECORD_NAME).read_text())
    assert record["espeak_words"]["words"] == ESPEAK_WORDS
    assert (tmp_path / "run" / "model").is_dir()


@pytest.mark.slow
def test_one_command_trains_on_an_arctic_voice(tmp_path):
    """The layout of the real-speech study's corpus (a .txt beside each stereo recording), from the shell."""
    root = make_word_corpus(tmp_path / "corpus", "arctic_txt")
    overrides = _overrides(root, "arctic_txt", tmp_path / "run", method="fvae_lora")
    args = [f"--{key}={json.dumps(value) if isinstance(value, dict) else value}" for key, value in overrides.items()]
    command = [str(REPO / "recipes/timit/train.py"), str(HPARAMS), *args, "--noprogressbar"]
    process = run_python(command, cwd=tmp_path, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert report["reference_phones"] == len(SENTENCES[5][2].split())


@pytest.mark.e2e
def test_changed_transcripts_change_the_runs_settings(tmp_path):
    root = make_word_corpus(tmp_path / "corpus", "arctic")
    overrides = _overrides(root, "arctic", tmp_path / "run")
    before = resolved_settings(HPARAMS, overrides, {})
    assert before["corpus"] == "arctic" and before["n_tokens"] == 40
    narrowed = resolved_settings(HPARAMS, {**overrides, "corpus_splits": {"train": "arctic_a000[12]"}}, {})
    assert narrowed["corpus_splits.train"] == "arctic_a000[12]" and narrowed["corpus_splits.dev"] is None
    assert narrowed["word_targets<sha256>"] != before["word_targets<sha256>"]  # 2 training prompts, not 4
    prompts = root / "etc" / "txt.done.data"
    prompts.write_text(prompts.read_text().replace("dark suit", "dark coat"), encoding="utf-8")
    after = resolved_settings(HPARAMS, overrides, {})
    assert after["word_targets<sha256>"] != before["word_targets<sha256>"]
    assert {key for key in before if before[key] != after.get(key)} == {"word_targets<sha256>"}


@pytest.mark.e2e
def test_bad_transcript_stops_the_run_before_anything_is_written(tmp_path):
    root = make_word_corpus(tmp_path / "corpus", "common_voice")
    tsv = root / "test.tsv"
    tsv.write_text(tsv.read_text().replace("go home", "go h\u00f3me \u6771"), encoding="utf-8")
    with pytest.raises(AnnotationError, match=f"{tsv}, line 2 .*character '\u6771'"):
        run(HPARAMS, QUIET, _overrides(root, "common_voice", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "corpus, extra, message",
    [
        ("arctic", {"train_annotation": "a.csv", "valid_annotation": "b.csv", "test_annotation": "c.csv"}, "must not"),
        ("word_annotations", {}, "needs all of"),
        ("wsj", {}, "corpus must be one of"),
        ("timit", {"corpus_splits": {"train": "x"}}, "corpus_splits is for corpus librispeech"),
        ("arctic", {"corpus_splits": {"valid": "arctic_b*"}}, "corpus_splits names corpus_splits.valid"),
    ],
)
def test_a_corpus_that_contradicts_its_settings_is_refused(tmp_path, corpus, extra, message):
    overrides = {**recipe_overrides(tmp_path, tmp_path / "run"), "corpus": corpus, **extra}
    with pytest.raises(ValueError, match=message):
        run(HPARAMS, QUIET, overrides)
    assert not (tmp_path / "run").exists()
