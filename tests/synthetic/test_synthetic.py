"""Synthetic TIMIT-layout corpus: eSpeak synthesis, phone mapping and alignment, layout, determinism."""

from __future__ import annotations

import filecmp
import json
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from fvae_asr.speech.data import timit
from fvae_asr.speech.data.espeak_phones import ESPEAK_TO_TIMIT, is_known
from fvae_asr.synthetic import (
    DOMAINS,
    NOISY_ROOM,
    SOURCE,
    TARGET,
    Espeak,
    EspeakError,
    generate_corpus,
    make_sentences,
    make_speaker,
    phone_segments,
    synthesize_utterance,
    to_timit,
)
from fvae_asr.synthetic.__main__ import main
from fvae_asr.synthetic.corpus import OPTIONS_FILE
from fvae_asr.synthetic.sentences import CALIBRATION_SENTENCES, all_words

SENTENCE = "The quiet farmer carried seven heavy baskets across the old bridge."
TINY = dict(seed=3, n_train_speakers=3, n_test_speakers=2, sentences_per_speaker=2)


@pytest.fixture(scope="module")
def espeak():
    with Espeak() as synthesiser:
        yield synthesiser


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, espeak):
    """The tiny corpus twice in the source domain (for determinism) and once in the target domain."""
    root = tmp_path_factory.mktemp("synthetic")
    return {
        name: generate_corpus(root / name, domain=domain, espeak=espeak, **TINY)
        for name, domain in (("source", "source"), ("again", "source"), ("target", "target"))
    }


def _check_segments(phones, words, n_samples, text):
    """Phones tile [0, n) with TIMIT labels and h# edges; words are the text's words, in order, inside the speech."""
    assert phones[0][0] == 0 and phones[-1][1] == n_samples
    assert all(a[1] == b[0] for a, b in zip(phones, phones[1:])), "phones must be contiguous"
    assert all(start <= end for start, end, _ in phones)
    assert phones[0][2] == phones[-1][2] == "h#" and all(label != "h#" for _, _, label in phones[1:-1])
    assert {label for _, _, label in phones} <= set(timit.PHONES_61)
    assert [word for _, _, word in words] == [w.lower() for w in re.findall(r"[A-Za-z']+", text)]
    bounds = [b for start, end, _ in words for b in (start, end)]
    assert bounds == sorted(bounds) and phones[0][1] <= bounds[0] and bounds[-1] <= phones[-1][0]


@pytest.mark.e2e
def test_synthesis_audio_and_events(espeak):
    result = espeak.synthesize(SENTENCE, "en-us+m3")
    assert result.sample_rate == 16000 and result.audio.dtype == np.float32 and result.audio.ndim == 1
    assert 2.0 < len(result.audio) / 16000 < 6.0 and np.abs(result.audio).max() <= 1.0
    starts = [p.sample for p in result.phonemes]
    assert starts == sorted(starts) and starts[0] >= 0 and starts[-1] <= len(result.audio)
    assert len(result.words) == len(SENTENCE.split())
    assert all(is_known(p.mnemonic) for p in result.phonemes)


@pytest.mark.e2e
def test_synthesis_depends_only_on_its_arguments(espeak):
    first = espeak.synthesize(SENTENCE, "en-us+f3", pitch=60, seed=7)
    espeak.synthesize("Something else in between.", "en-gb-scotland+travis", rate=210)
    assert np.array_equal(first.audio, espeak.synthesize(SENTENCE, "en-us+f3", pitch=60, seed=7).audio)


@pytest.mark.e2e
@pytest.mark.parametrize("domain", [SOURCE, TARGET, NOISY_ROOM], ids=lambda d: d.name)
def test_utterance_alignment(espeak, domain):
    text = "Laura and the doctor said that the kettle was broken, then walked to the harbour."
    speaker = make_speaker("FABC0", "TRAIN", "DR1", domain, seed=0)
    utterance = synthesize_utterance(espeak, text, speaker, domain, np.random.default_rng(0))
    _check_segments(utterance.phones, utterance.words, len(utterance.audio), text)
    assert "pau" in {label for _, _, label in utterance.phones}  # the comma
    assert {"kcl", "k"} <= {label for _, _, label in utterance.phones}  # stops get their closure


@pytest.mark.e2e
def test_every_voice_exists(espeak):
    for domain in (SOURCE, TARGET):
        for language in domain.languages:
            for variant in domain.male_variants + domain.female_variants:
                assert len(espeak.synthesize("Hello.", f"{language}+{variant}").audio) > 0


@pytest.mark.e2e
def test_every_produced_mnemonic_is_in_the_table(espeak):
    """No phoneme of our vocabulary, in any accent we use, may reach the silent fallback."""
    words = all_words()
    texts = [" ".join(words[i : i + 15]) + "." for i in range(0, len(words), 15)]
    texts += [*CALIBRATION_SENTENCES, *make_sentences(20, seed=11)]
    languages = sorted({language for domain in DOMAINS.values() for language in domain.languages})
    unknown = {
        (phoneme.mnemonic, language)
        for language in languages
        for text in texts
        for phoneme in espeak.synthesize(text, language).phonemes
        if not is_known(phoneme.mnemonic)
    }
    assert not unknown


def test_mapping_targets_are_timit_phones():
    assert {phone for phones in ESPEAK_TO_TIMIT.values() for phone in phones} <= set(timit.PHONES_61)
    assert to_timit("'A@") == ("aa", "r") and to_timit(",i:") == ("iy",) and to_timit("p") == ("pcl", "p")
    with pytest.warns(UserWarning, match="not in the TIMIT table"):
        assert to_timit("aI3#") == to_timit("aI3")


def test_phone_segments_edges_closures_and_pauses():
    events = [(100, "_"), (200, "p"), (230, "'a"), (400, ";"), (450, "_:"), (500, "_"), (600, "t"), (700, "_")]
    assert phone_segments(events, 1000) == [
        (0, 200, "h#"),
        (200, 220, "pcl"),
        (220, 230, "p"),
        (230, 450, "ae"),
        (450, 600, "pau"),
        (600, 666, "tcl"),
        (666, 700, "t"),
        (700, 1000, "h#"),
    ]


@pytest.mark.e2e
def test_corpus_layout(corpora):
    root = corpora["source"]
    wavs = sorted(root.glob("*/DR[1-8]/*/*.WAV"))
    assert {wav.parts[-4] for wav in wavs} == {"TRAIN", "TEST"}
    speakers = {wav.parent.name for wav in wavs}
    assert all(re.fullmatch(r"[FM][A-Z0-9]{3}[0-9]", speaker) for speaker in speakers)
    test_speakers = {wav.parent.name for wav in wavs if wav.parts[-4] == "TEST"}
    assert test_speakers & timit.CORE_TEST_SPEAKERS and test_speakers & timit.DEV_SPEAKERS
    assert len(speakers) == TINY["n_train_speakers"] + TINY["n_test_speakers"]
    for speaker_dir in {wav.parent for wav in wavs}:
        names = sorted(wav.stem for wav in speaker_dir.glob("*.WAV"))
        assert names[:2] == ["SA1", "SA2"] and len(names) == 2 + TINY["sentences_per_speaker"]
        assert {name[:2] for name in names[2:]} <= {"SI", "SX"}
    for wav in wavs:
        info = sf.info(str(wav))
        assert info.samplerate == 16000 and info.channels == 1 and info.format == "NIST"
        phones = [line.split() for line in wav.with_suffix(".PHN").read_text().splitlines()]
        words = [line.split() for line in wav.with_suffix(".WRD").read_text().splitlines()]
        text = wav.with_suffix(".TXT").read_text().split(maxsplit=2)[2].strip()
        _check_segments(
            [(int(a), int(b), p) for a, b, p in phones], [(int(a), int(b), w) for a, b, w in words], info.frames, text
        )
    sa1 = {wav.with_suffix(".TXT").read_text().split(maxsplit=2)[2] for wav in wavs if wav.stem == "SA1"}
    assert len(sa1) == 1


@pytest.mark.e2e
def test_same_options_give_identical_files(corpora):
    def differences(comparison: filecmp.dircmp) -> list[str]:
        found = comparison.left_only + comparison.right_only + comparison.diff_files + comparison.funny_files
        return found + [d for sub in comparison.subdirs.values() for d in differences(sub)]

    comparison = filecmp.dircmp(corpora["source"], corpora["again"], ignore=[])
    assert not differences(comparison)
    wav = next(corpora["source"].glob("TRAIN/*/*/SX*.WAV"))
    assert filecmp.cmp(wav, corpora["again"] / wav.relative_to(corpora["source"]), shallow=False)


@pytest.mark.e2e
def test_target_differs_from_source(corpora):
    source, target = corpora["source"], corpora["target"]
    source_wavs = sorted(path.relative_to(source) for path in source.glob("*/*/*/*.WAV"))
    assert source_wavs == sorted(path.relative_to(target) for path in target.glob("*/*/*/*.WAV"))
    assert not any(filecmp.cmp(source / relative, target / relative, shallow=False) for relative in source_wavs)


@pytest.mark.e2e
def test_timit_preparation_reads_the_corpus(corpora, tmp_path):
    splits = timit.prepare_timit(corpora["target"], tmp_path)
    manifests = [json.loads(path.read_text()) for path in splits]
    assert all(manifests), "train, dev and test must all be non-empty"
    assert len(manifests[0]) == TINY["n_train_speakers"] * TINY["sentences_per_speaker"]
    assert not any(key.endswith(("_SA1", "_SA2")) for manifest in manifests for key in manifest)


@pytest.mark.e2e
def test_existing_corpus_is_reused_and_other_folders_refused(corpora, tmp_path, espeak):
    marker = corpora["source"] / OPTIONS_FILE
    stamp = marker.stat().st_mtime_ns
    assert generate_corpus(corpora["source"], domain="source", espeak=espeak, **TINY) == corpora["source"]
    assert marker.stat().st_mtime_ns == stamp
    (tmp_path / "notes.txt").write_text("not a corpus")
    with pytest.raises(FileExistsError, match=r"holds no synthetic corpus \(pass overwrite=True to replace it\)"):
        generate_corpus(tmp_path, espeak=espeak, **TINY)
    other = dict(TINY, seed=TINY["seed"] + 1)
    with pytest.raises(FileExistsError, match="generated with other options: seed"):
        generate_corpus(corpora["source"], domain="source", espeak=espeak, **other)
    with pytest.raises(ValueError, match="n_test_speakers"):
        generate_corpus(tmp_path / "new", n_test_speakers=1, espeak=espeak)


@pytest.mark.e2e
def test_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--train-speakers" in capsys.readouterr().out
    out = tmp_path / "cli"
    args = [
        "--out",
        str(out),
        "--domain",
        "target",
        "--train-speakers",
        "1",
        "--test-speakers",
        "2",
        "--sentences",
        "1",
        "--snr-db",
        "20",
        "--lowercase",
        "--quiet",
    ]
    assert main(args) == 0
    assert sorted(path.name for path in out.iterdir()) == [OPTIONS_FILE, "test", "train"]
    assert len(list(out.glob("*/dr*/*/*.wav"))) == 3 * 3
    assert all(json.loads(path.read_text()) for path in timit.prepare_timit(out, tmp_path / "prepared"))


@pytest.mark.e2e
def test_errors_name_the_library(tmp_path):
    with pytest.raises(EspeakError, match="not found: .*missing.so"):
        Espeak(library_path=str(tmp_path / "missing.so"))
    with pytest.raises(EspeakError, match="phontab.*libespeak-ng"):
        Espeak(data_path=str(tmp_path))


def _cli_error(args, capsys):
    """Exit status and standard error of a command line that must fail."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def test_command_line_errors_name_what_to_type(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a corpus")
    status, err = _cli_error(["--out", str(tmp_path)], capsys)
    assert status == 2 and "(pass --overwrite to replace it)" in err and "overwrite=True" not in err
    status, err = _cli_error(["--out", str(tmp_path / "notes.txt")], capsys)
    assert status == 2 and f"{tmp_path / 'notes.txt'} is a file, not a folder" in err
    status, err = _cli_error(["--out", str(tmp_path / "new"), "--test-speakers", "1"], capsys)
    assert status == 2 and "n_test_speakers must be in [2, 48], got 1" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.e2e
def test_unreadable_corpus_record_is_named(tmp_path, espeak):
    (tmp_path / OPTIONS_FILE).write_text("{truncated")
    with pytest.raises(FileExistsError, match=f"holds an unreadable {OPTIONS_FILE} .*line 1.*pass overwrite=True"):
        generate_corpus(tmp_path, espeak=espeak, **TINY)


@pytest.mark.e2e
def test_corpus_record_that_is_not_an_object(tmp_path, espeak):
    (tmp_path / OPTIONS_FILE).write_text("[]")
    with pytest.raises(FileExistsError, match=f"holds an unreadable {OPTIONS_FILE} .*expected a JSON object"):
        generate_corpus(tmp_path, espeak=espeak, **TINY)


@pytest.mark.e2e
def test_a_corpus_missing_a_file_is_not_taken_as_generated(corpora, tmp_path, espeak):
    copy = tmp_path / "copy"
    shutil.copytree(corpora["source"], copy)
    deleted = sorted(copy.rglob("*.WAV"))[0]
    deleted.unlink()
    with pytest.raises(FileExistsError, match=rf"1 file\(s\) missing or changed .*{deleted.name}.*overwrite=True"):
        generate_corpus(copy, domain="source", espeak=espeak, **TINY)
    assert generate_corpus(copy, domain="source", espeak=espeak, overwrite=True, **TINY) == copy
    assert deleted.is_file() and deleted.read_bytes() == (corpora["source"] / deleted.relative_to(copy)).read_bytes()
