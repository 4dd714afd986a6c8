"""Any phone-labelled corpus: annotations (SpeechBrain CSV or JSON manifests) read and checked before a run,
audio of other rates and channel counts in the data pipeline, an inventory from the training annotation, the
settings check on resume, and the recipe end to end on a non-TIMIT corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fvae_asr.cli.evaluate import main as evaluate_main
from fvae_asr.recipes.timit.train import dataio_prepare, main, run
from fvae_asr.speech.data.annotations import AnnotationError, corpus_of, read_annotation, read_inventory
from fvae_asr.speech.data.labels import labels_of, phone_encoder
from fvae_asr.speech.data.timit import PHONES_39
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.speech.models.export import load_recognizer
from fvae_asr.speech.training.run_folder import RunSettingsError, check_resumable, plan_run, record_settings

from conftest import HPARAMS, recipe_overrides
from ipa_corpus import IPA_PHONES, ROWS, make_ipa_corpus

QUIET = {"noprogressbar": True}


@pytest.fixture(scope="module")
def ipa_corpus(tmp_path_factory) -> Path:
    return make_ipa_corpus(tmp_path_factory.mktemp("ipa"))


def _annotated(corpus: Path, output: Path, **extra) -> dict:
    """Recipe overrides for the IPA corpus (data_folder is the CSVs' $data_root)."""
    return recipe_overrides(
        corpus,
        output,
        train_annotation=str(corpus / "train.csv"),
        valid_annotation=str(corpus / "dev.csv"),
        test_annotation=str(corpus / "test.json"),
        **extra,
    )


def _copy_corpus(ipa_corpus: Path, tmp_path: Path) -> Path:
    """A private copy of the corpus, for tests that spoil it."""
    import shutil

    return Path(shutil.copytree(ipa_corpus, tmp_path / "corpus"))


def _csv_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---- reading annotations ---------------------------------------------------------------------------------------


def test_csv_and_json_annotations_resolve_their_audio_paths(ipa_corpus):
    train = read_annotation(ipa_corpus / "train.csv")  # relative to the CSV's folder
    dev = read_annotation(ipa_corpus / "dev.csv", data_root=str(ipa_corpus))  # $data_root
    test = read_annotation(ipa_corpus / "test.json")
    for annotation, split in ((train, "train"), (dev, "dev"), (test, "test")):
        assert list(annotation.entries) == [f"{split}{i}" for i in range(ROWS[split])]
        entry = annotation.entries[f"{split}1"]
        assert entry["wav"] == str(ipa_corpus / "wavs" / f"{split}1.wav")
        assert entry["duration"] == pytest.approx(sf.info(entry["wav"]).duration, abs=1e-4)
        assert set(entry["phn"].split()) <= set(IPA_PHONES)
    assert train.where("train3") == f"{ipa_corpus / 'train.csv'}, line 5 (ID 'train3')"


def test_the_inventory_is_the_sorted_phones_of_the_training_annotation(ipa_corpus):
    settings = _annotated(ipa_corpus, ipa_corpus / "out")
    corpus = corpus_of(settings)
    train_phones = {p for e in read_annotation(ipa_corpus / "train.csv").entries.values() for p in e["phn"].split()}
    assert corpus.phones == sorted(train_phones) and corpus.settings["n_tokens"] == len(train_phones) + 1
    assert set(corpus.splits) == {"train", "dev", "test"}


def test_the_label_encoder_depends_on_the_inventory_alone(tmp_path):
    first = phone_encoder(tmp_path / "a.txt", ["ʃ", "æ", "n", "iː"])
    second = phone_encoder(tmp_path / "b.txt", ["iː", "n", "æ", "ʃ"])
    assert labels_of(first) == labels_of(second)
    # SpeechBrain's construction, as for TIMIT before (its label files and checkpoints stay valid): the blank
    # inserted at 0 moves the first sorted phone to the end.
    assert labels_of(first) == ["<blank>", "n", "æ", "ʃ", "iː"]  # sorted: iː n æ ʃ
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == (tmp_path / "b.txt").read_text(encoding="utf-8")
    assert first.encode_sequence(["n", "ʃ"]) == [labels_of(first).index("n"), labels_of(first).index("ʃ")]
    with pytest.raises(ValueError, match=r"a\.txt: lists other labels .*extra: iː; missing: s"):
        phone_encoder(tmp_path / "a.txt", ["ʃ", "æ", "n", "s"])  # the file of another inventory


def test_a_training_utterance_too_short_for_its_phones_is_refused_before_training(ipa_corpus, tmp_path):
    """CTC needs a frame per phone: a shorter utterance would train with a zero loss (zero_infinity), silently."""
    corpus = _copy_corpus(ipa_corpus, tmp_path)
    short = corpus / "wavs" / "train1.wav"
    audio, rate = sf.read(short)
    sf.write(short, audio[: int(0.002 * rate)], rate)  # 2 ms: no encoder frame for its phones
    lines = _csv_lines(corpus / "train.csv")
    with pytest.raises(
        AnnotationError,
        match=r"train\.csv, line 3 \(ID 'train1'\): .*train1\.wav lasts 0\.002 s, "
        r"0 encoder frames, fewer than the \d+ its \d+ phones need for CTC "
        r"\(at least 0\.\d+ s\)",
    ):
        run(HPARAMS, QUIET, _annotated(corpus, tmp_path / "out"))
    assert not list((tmp_path / "out").glob("save/CKPT+*")) and lines == _csv_lines(corpus / "train.csv")


def _with_field(lines: list[str], line: int, column: int, value: str) -> list[str]:
    """The CSV lines with one field of line ``line`` (1-based, the header is line 1) replaced."""
    fields = lines[line - 1].split(", ")
    fields[column] = value
    return [*lines[: line - 1], ", ".join(fields), *lines[line:]]


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda lines: _with_field(lines, 1, 3, "phones"), r"dev\.csv, line 1: no phn column"),
        (
            lambda lines: _with_field(lines, 3, 3, "ʔ"),
            r"dev\.csv, line 3 \(ID 'dev1'\): phone 'ʔ' is not in the inventory \(the phones of .*train\.csv: ",
        ),
        (
            lambda lines: _with_field(lines, 4, 2, "wavs/gone.wav"),
            r"dev\.csv, line 4 \(ID 'dev2'\): .*gone\.wav: no such audio file",
        ),
        (
            lambda lines: _with_field(lines, 3, 2, "dev.csv"),
            r"dev\.csv, line 3 \(ID 'dev1'\): .*dev\.csv: cannot read audio",
        ),
        (
            lambda lines: _with_field(lines, 5, 2, "$corpus_root/wavs/dev3.wav"),
            r"dev\.csv, line 5 \(ID 'dev3'\): unknown placeholder '\$corpus_root'",
        ),
        (lambda lines: _with_field(lines, 3, 0, "dev0"), r"dev\.csv, line 3 \(ID 'dev0'\): the ID is used twice"),
        (
            lambda lines: _with_field(lines, 3, 1, "-1"),
            r"dev\.csv, line 3 \(ID 'dev1'\): duration must be a non-negative number",
        ),
        (lambda lines: _with_field(lines, 3, 3, ""), r"dev\.csv, line 3 \(ID 'dev1'\): empty phn"),
        (lambda lines: [*lines[:2], "dev1, 0.5", *lines[3:]], r"dev\.csv, line 3: fewer fields than the header's 5"),
        (
            lambda lines: [*lines[:2], lines[2] + ", ʃ", *lines[3:]],
            r"dev\.csv, line 3 \(ID 'dev1'\): more fields than the header's 5 \(an unquoted comma",
        ),
        (lambda lines: _with_field(lines, 1, 4, "phn"), r"dev\.csv, line 1: the header names phn twice"),
        (lambda lines: _with_field(lines, 3, 0, ""), r"dev\.csv, line 3 \(ID ''\): empty ID"),
    ],
    ids=[
        "missing-column",
        "unknown-dev-phone",
        "missing-wav",
        "unreadable-wav",
        "unknown-placeholder",
        "repeated-id",
        "bad-duration",
        "empty-phn",
        "short-row",
        "long-row",
        "repeated-column",
        "empty-id",
    ],
)
def test_a_bad_dev_annotation_is_refused_naming_its_row_before_anything_is_written(
    ipa_corpus, tmp_path, spoil, message
):
    corpus = _copy_corpus(ipa_corpus, tmp_path)
    (corpus / "dev.csv").write_text("\n".join(spoil(_csv_lines(corpus / "dev.csv"))) + "\n", encoding="utf-8")
    output = tmp_path / "out"
    with pytest.raises(AnnotationError, match=message):
        run(HPARAMS, QUIET, _annotated(corpus, output))
    assert not output.exists()


def test_an_annotation_error_is_one_line_exit_1_and_missing_settings_exit_2(ipa_corpus, tmp_path, capsys):
    corpus = _copy_corpus(ipa_corpus, tmp_path)
    (corpus / "wavs" / "dev2.wav").unlink()
    args = [str(HPARAMS), f"--output_folder={tmp_path / 'out'}", "--noprogressbar"]
    annotations = [
        f"--train_annotation={corpus / 'train.csv'}",
        f"--valid_annotation={corpus / 'dev.csv'}",
        f"--test_annotation={corpus / 'test.json'}",
    ]
    for extra, code, expected in [
        ([f"--data_folder={corpus}", *annotations], 1, "dev.csv, line 4 (ID 'dev2'): "),
        ([f"--data_folder={corpus}", *annotations[:2]], 2, "test_annotation not set"),
        ([], 2, "data_folder not set"),
        (annotations, 2, "data_folder not set"),  # the yaml leaves it to the command line (!PLACEHOLDER)
        ([f"--data_folder={corpus}", *annotations[:1], *annotations[2:]], 2, "valid_annotation not set"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            main([*args, *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert stopped.value.code == code and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_an_annotation_that_is_not_utf8_text_is_an_error_naming_it(ipa_corpus, tmp_path):
    for name, data in (
        ("latin1.csv", "ID, duration, wav, phn\nu1, 1.0, a.wav, \xe6\n".encode("latin-1")),
        ("latin1.json", '{"u1": {"duration": 1, "wav": "a.wav", "phn": "\xe6"}}'.encode("latin-1")),
    ):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AnnotationError, match=rf"{name}: (cannot read|not UTF-8)"):
            read_annotation(tmp_path / name)


def test_a_csv_with_a_byte_order_mark_is_read(ipa_corpus, tmp_path):
    text = (ipa_corpus / "train.csv").read_text(encoding="utf-8")
    (tmp_path / "bom.csv").write_text("\ufeff" + text.replace("wavs/", f"{ipa_corpus}/wavs/"), encoding="utf-8")
    assert read_annotation(tmp_path / "bom.csv").entries == read_annotation(ipa_corpus / "train.csv").entries


def test_data_root_needs_a_data_folder(ipa_corpus, tmp_path):
    with pytest.raises(AnnotationError, match=r"dev\.csv, line 2 \(ID 'dev0'\): wav uses \$data_root but data_folder"):
        read_annotation(ipa_corpus / "dev.csv")


def test_a_named_phone_inventory_is_used_and_checked(ipa_corpus, tmp_path):
    inventory = tmp_path / "phones.txt"
    inventory.write_text("\n".join([*IPA_PHONES, "ʒ", ""]) + "\n", encoding="utf-8")
    corpus = corpus_of({**_annotated(ipa_corpus, tmp_path), "phone_inventory": str(inventory)})
    assert corpus.phones == sorted([*IPA_PHONES, "ʒ"])  # a phone no annotation uses is kept
    inventory.write_text("ʃ\niː\n", encoding="utf-8")
    with pytest.raises(
        AnnotationError,
        match=r"train\.csv, line 2 \(ID 'train0'\): phone '.*' is not in the "
        r"inventory \(.*phones\.txt: iː ʃ\)",
    ):
        corpus_of({**_annotated(ipa_corpus, tmp_path), "phone_inventory": str(inventory)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\nb c\n", "line 2: holds more than one phone"),
        ("a\n\nb\na\n", "line 4: repeats line 1"),
        ("<blank>\n", "line 1: <blank> is the CTC blank"),
        ("\n", "no phones"),
    ],
)
def test_a_bad_phone_inventory_names_its_line(tmp_path, text, message):
    (tmp_path / "phones.txt").write_text(text, encoding="utf-8")
    with pytest.raises(AnnotationError, match=message):
        read_inventory(tmp_path / "phones.txt")


# ---- the data pipeline ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_the_pipeline_downmixes_and_resamples_to_16_khz(tmp_path, rate):
    t = np.arange(rate) / rate  # one second
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "same.wav", np.stack([tone, tone], axis=1), rate, subtype="FLOAT")
    sf.write(tmp_path / "opposite.wav", np.stack([tone, -tone], axis=1), rate, subtype="FLOAT")
    entries = {
        name: {"wav": str(tmp_path / f"{name}.wav"), "duration": 1.0, "phn": "a"} for name in ("same", "opposite")
    }
    encoder = phone_encoder(tmp_path / "labels.txt", ["a"])
    dataset = dataio_prepare({"test": entries}, encoder)["test"]
    items = {item["id"]: item for item in dataset}
    same, opposite = items["same"]["sig"], items["opposite"]["sig"]
    assert same.shape == opposite.shape == (16000,) and same.dtype == torch.float32
    assert opposite.abs().max() < 1e-6  # channels averaged
    spectrum = torch.fft.rfft(same).abs()  # 1 Hz bins at 16 kHz over one second
    assert int(spectrum.argmax()) == 440 and same.abs().max() == pytest.approx(0.5, abs=0.02)
    assert items["same"]["phn_encoded"].tolist() == [labels_of(encoder).index("a")]


# ---- the settings check on resume -------------------------------------------------------------------------------


def test_resuming_with_a_changed_annotation_is_refused(ipa_corpus, tmp_path):
    corpus = _copy_corpus(ipa_corpus, tmp_path)
    overrides = _annotated(corpus, tmp_path / "out")
    plan = plan_run(HPARAMS, overrides, QUIET)
    record_settings(plan)
    (plan.save_folder / "CKPT+1").mkdir()  # as if the run had checkpointed
    check_resumable(plan, HPARAMS, overrides, QUIET)  # unchanged: resumes
    lines = _csv_lines(corpus / "dev.csv")
    (corpus / "dev.csv").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # a row fewer, same path
    with pytest.raises(RunSettingsError, match=r"other settings \(valid_annotation<sha256>: '[0-9a-f]{64}' -> "):
        check_resumable(plan, HPARAMS, overrides, QUIET)


# ---- end to end -------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_recipe_trains_tests_exports_and_evaluates_a_non_timit_corpus(ipa_corpus, tmp_path, capsys):
    output = tmp_path / "out"
    (output / "save").mkdir(parents=True)
    (output / "save" / "label_encoder.txt").write_text("'stale' => 0\n", encoding="utf-8")  # no checkpoint uses it
    result = run(HPARAMS, QUIET, _annotated(ipa_corpus, output, number_of_epochs=1))

    train_phones = sorted(
        {p for e in read_annotation(ipa_corpus / "train.csv").entries.values() for p in e["phn"].split()}
    )
    report = json.loads((output / "test_results.json").read_text(encoding="utf-8"))
    assert report["utterances"] == ROWS["test"] and report["reference_phones"] > 0
    assert result["manifests"] == {
        "train": str(ipa_corpus / "train.csv"),
        "dev": str(ipa_corpus / "dev.csv"),
        "test": str(ipa_corpus / "test.json"),
    }
    labels = labels_of(phone_encoder(output / "save" / "label_encoder.txt", train_phones))
    assert labels[0] == "<blank>" and sorted(labels[1:]) == train_phones

    model, description = load_recognizer(result["export"])
    assert description["labels"] == labels and model.head.out_features == len(train_phones) + 1
    (transcription,) = Transcriber(result["export"]).transcribe_files([str(ipa_corpus / "wavs" / "test0.wav")])
    assert transcription.error is None and set(transcription.phones) <= set(train_phones)

    assert evaluate_main(["--checkpoint", result["export"], "--manifest", str(ipa_corpus / "test.json")]) == 0
    assert f"on {ROWS['test']} utterances" in capsys.readouterr().out
    dev_csv = ["--checkpoint", result["export"], "--manifest", str(ipa_corpus / "dev.csv")]  # wav: $data_root/...
    assert evaluate_main([*dev_csv, "--data-folder", str(ipa_corpus)]) == 0
    assert f"on {ROWS['dev']} utterances" in capsys.readouterr().out
    assert evaluate_main(dev_csv) == 1 and "data_root" in capsys.readouterr().err
    manifest = json.loads((ipa_corpus / "test.json").read_text(encoding="utf-8"))
    manifest["test0"]["phn"] += " ʔ"
    (tmp_path / "other.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert evaluate_main(["--checkpoint", result["export"], "--manifest", str(tmp_path / "other.json")]) == 1
    assert "test0: phones outside the model's inventory: ʔ" in capsys.readouterr().err


def test_a_run_recorded_before_the_annotation_settings_existed_resumes(tone_corpus, tmp_path):
    """Settings added since a run started, at their null defaults, are not changes; other values still are."""
    overrides = recipe_overrides(tone_corpus, tmp_path)
    plan = plan_run(HPARAMS, overrides, QUIET)
    record_settings(plan)
    (plan.save_folder / "CKPT+1").mkdir()
    record_file = plan.save_folder / "run_config.json"
    record = json.loads(record_file.read_text(encoding="utf-8"))
    for key in ("train_annotation", "valid_annotation", "test_annotation", "phone_inventory"):
        del record[key]
    record_file.write_text(json.dumps(record), encoding="utf-8")
    check_resumable(plan, HPARAMS, overrides, QUIET)
    inventory = tmp_path / "phones.txt"
    inventory.write_text("\n".join(PHONES_39) + "\n", encoding="utf-8")
    with pytest.raises(RunSettingsError, match=r"phone_inventory: '<unset>' -> '.*phones\.txt'"):
        check_resumable(plan, HPARAMS, {**overrides, "phone_inventory": str(inventory)}, QUIET)
