"""TIMIT layout writing, manifest preparation, 61 -> 39 folding and error reporting, on tiny corpora."""

import json
import logging
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from fvae_asr.recipes.timit.train import dataio_prepare
from fvae_asr.speech.data.labels import phone_encoder
from fvae_asr.speech.data.timit import (
    CORE_TEST_SPEAKERS,
    DEV_SPEAKERS,
    PHONES_39,
    PHONES_61,
    fold_segments_to_39,
    fold_to_39,
    prepare_timit,
    write_utterance,
)

N_SAMPLES = 9600  # 0.6 s at 16 kHz
SHE_HAD = ["h#", "sh", "iy", "hv", "ae", "dcl", "d", "q", "h#"]
SHE_HAD_39 = "sil sh iy hh ae sil d sil"  # by hand: h#,dcl -> sil; hv -> hh; q dropped
# Their spans in the utterance (``_segments``: 9 equal parts of 9600 samples); q's part [7466, 8533) is no phone's.
SHE_HAD_39_SEGMENTS = [
    [0, 1066, "sil"],
    [1066, 2133, "sh"],
    [2133, 3200, "iy"],
    [3200, 4266, "hh"],
    [4266, 5333, "ae"],
    [5333, 6400, "sil"],
    [6400, 7466, "d"],
    [8533, 9600, "sil"],
]
WORDS = [(800, 4000, "she"), (4000, 8800, "had")]

# (split, dialect, speaker, utterance): two train speakers, a core-test and a dev speaker, SA sentences
# (excluded everywhere) and a TEST speaker in neither the core test nor the dev set (also excluded).
UTTERANCES = [
    ("TRAIN", "DR1", "FCJF0", "SI1027"),
    ("TRAIN", "DR1", "FCJF0", "SX127"),
    ("TRAIN", "DR1", "FCJF0", "SA1"),
    ("TRAIN", "DR2", "MDAC0", "SI1261"),
    ("TEST", "DR1", "FDHC0", "SI1559"),
    ("TEST", "DR1", "FDHC0", "SA2"),
    ("TEST", "DR1", "FAKS0", "SI2203"),
    ("TEST", "DR1", "MABW0", "SI1230"),
]
EXPECTED_SPLITS = {
    "train": {"FCJF0_SI1027", "FCJF0_SX127", "MDAC0_SI1261"},
    "dev": {"FAKS0_SI2203"},
    "test": {"FDHC0_SI1559"},
}


def _segments(labels):
    """Evenly spaced ``(start, end, label)`` segments covering the utterance."""
    bounds = np.linspace(0, N_SAMPLES, len(labels) + 1).astype(int)
    return [(int(start), int(end), label) for start, end, label in zip(bounds[:-1], bounds[1:], labels)]


def _write(root, split, dialect, speaker, utterance, uppercase=True, phones=SHE_HAD):
    """Write one noise utterance saying "she had"."""
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, N_SAMPLES).astype(np.float32)
    return write_utterance(
        root, split, dialect, speaker, utterance, audio, _segments(phones), WORDS, "She had.", uppercase
    )


def _corpus(root, uppercase=True):
    """A tiny corpus with every utterance of ``UTTERANCES``; returns the root."""
    for split, dialect, speaker, utterance in UTTERANCES:
        _write(root, split, dialect, speaker, utterance, uppercase)
    return root


def _load(path):
    return json.loads(path.read_text())


@pytest.fixture
def corpus(tmp_path):
    return _corpus(tmp_path / "TIMIT")


@pytest.fixture
def first_phn(corpus):
    """The .PHN file of the first training utterance."""
    return corpus / "TRAIN" / "DR1" / "FCJF0" / "SI1027.PHN"


def test_constants():
    assert len(PHONES_61) == 61 and len(PHONES_39) == 39
    assert sorted(PHONES_39) == PHONES_39 and "sil" in PHONES_39 and "q" in PHONES_61
    assert set(PHONES_39) <= set(PHONES_61) | {"sil"}
    assert len(CORE_TEST_SPEAKERS) == 24 and len(DEV_SPEAKERS) == 50
    assert not CORE_TEST_SPEAKERS & DEV_SPEAKERS


@pytest.mark.parametrize(
    ("phones", "expected"),
    [
        ("h# sh iy hv ae dcl d q h#", SHE_HAD_39),
        ("h# pau epi sh tcl t h#", "sil sh sil t sil"),  # a run of silences collapses to one
        ("pau q epi ix zh ux en", "sil ih sh uw n"),  # q between two silences: still one sil
        ("ao ax ax-h axr el em eng nx", "aa ah ah er l m ng n"),
        ("ix ih ih", "ih ih ih"),  # only sil runs collapse
    ],
)
def test_fold_to_39(phones, expected):
    assert " ".join(fold_to_39(phones.split())) == expected


def test_fold_segments_to_39_merges_silences_and_leaves_q_uncovered():
    segments = [
        (0, 10, "h#"),
        (10, 20, "bcl"),
        (20, 30, "b"),
        (30, 40, "q"),
        (40, 50, "ix"),
        (50, 60, "pau"),
        (60, 70, "q"),
        (70, 80, "h#"),
    ]
    assert fold_segments_to_39(segments) == [(0, 20, "sil"), (20, 30, "b"), (40, 50, "ih"), (50, 80, "sil")]
    with pytest.raises(ValueError, match="unknown TIMIT phone 'xx'"):
        fold_segments_to_39([(0, 1, "xx")])


def test_fold_unknown_phone():
    with pytest.raises(ValueError, match="unknown TIMIT phone 'xx'"):
        fold_to_39(["h#", "xx"])


@pytest.mark.parametrize(
    ("uppercase", "relative"), [(True, "TRAIN/DR1/FCJF0/SI1027.WAV"), (False, "train/dr1/fcjf0/si1027.wav")]
)
def test_write_utterance_layout(tmp_path, uppercase, relative):
    wav = _write(tmp_path, "TRAIN", "DR1", "FCJF0", "SI1027", uppercase)
    assert wav == tmp_path / relative
    info = sf.info(str(wav))
    assert (info.format, info.subtype, info.samplerate, info.frames) == ("NIST", "PCM_16", 16000, N_SAMPLES)
    suffix = str.upper if uppercase else str.lower
    assert wav.with_suffix(suffix(".txt")).read_text() == f"0 {N_SAMPLES} She had.\n"
    assert wav.with_suffix(suffix(".wrd")).read_text() == "800 4000 she\n4000 8800 had\n"
    phn_lines = wav.with_suffix(suffix(".phn")).read_text().splitlines()
    assert phn_lines[0] == "0 1066 h#" and phn_lines[-1] == f"8533 {N_SAMPLES} h#"


def test_write_utterance_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="split"):
        write_utterance(tmp_path, "DEV", "DR1", "FCJF0", "SI1", np.zeros(10), [], [], "")
    with pytest.raises(ValueError, match="mono"):
        write_utterance(tmp_path, "TRAIN", "DR1", "FCJF0", "SI1", np.zeros((10, 2)), [], [], "")


@pytest.mark.parametrize("uppercase", [True, False])
def test_prepare_splits_and_entries(tmp_path, uppercase):
    root = _corpus(tmp_path / "timit", uppercase)
    paths = prepare_timit(root, tmp_path / "save")
    assert [path.name for path in paths] == ["train.json", "dev.json", "test.json"]
    manifests = dict(zip(["train", "dev", "test"], map(_load, paths)))
    assert {split: set(manifest) for split, manifest in manifests.items()} == EXPECTED_SPLITS
    entry = manifests["dev"]["FAKS0_SI2203"]
    expected_wav = root / ("TEST/DR1/FAKS0/SI2203.WAV" if uppercase else "test/dr1/faks0/si2203.wav")
    assert entry == {
        "wav": str(expected_wav.resolve()),
        "duration": pytest.approx(N_SAMPLES / 16000),
        "spk_id": "FAKS0",
        "phn": SHE_HAD_39,
        "wrd": "she had",
        "phn_segments": SHE_HAD_39_SEGMENTS,
    }


def test_prepare_phn_set_61_keeps_original_labels(corpus, tmp_path):
    train, _, _ = prepare_timit(corpus, tmp_path / "save", phn_set=61)
    entry = _load(train)["FCJF0_SI1027"]
    assert entry["phn"] == " ".join(SHE_HAD)
    assert entry["phn_segments"] == [list(segment) for segment in _segments(SHE_HAD)]


def test_manifests_without_phone_segments_are_rebuilt_and_still_train(corpus, tmp_path, caplog):
    # Manifests written before phn_segments existed: their record has no manifest_format.
    save = tmp_path / "save"
    paths = prepare_timit(corpus, save)
    for path in paths:
        entries = {
            key: {field: value for field, value in entry.items() if field != "phn_segments"}
            for key, entry in _load(path).items()
        }
        path.write_text(json.dumps(entries))
    record = _load(save / "prepare_opts.json")
    del record["manifest_format"]
    (save / "prepare_opts.json").write_text(json.dumps(record))
    # Loaded as they are (skip_prep), they still make training datasets.
    encoder = phone_encoder(tmp_path / "label_encoder.txt", PHONES_39)
    datasets = dataio_prepare({split: _load(path) for split, path in zip(["train", "dev", "test"], paths)}, encoder)
    assert datasets["dev"][0]["phn_list"] == SHE_HAD_39.split()
    # Prepared again, they are rebuilt with their segments, saying why.
    with caplog.at_level(logging.WARNING, logger="fvae_asr.speech.data.timit"):
        prepare_timit(corpus, save)
    assert "Rebuilding the TIMIT manifests" in caplog.text and "manifest_format was None, now 2" in caplog.text
    assert _load(paths[1])["FAKS0_SI2203"]["phn_segments"] == SHE_HAD_39_SEGMENTS


def test_prepare_explicit_layout(corpus, tmp_path):
    prepare_timit(corpus, tmp_path / "upper", uppercase=True)
    with pytest.raises(FileNotFoundError, match="no train folder under .* holds: TEST, TRAIN"):
        prepare_timit(corpus, tmp_path / "lower", uppercase=False)


def test_prepare_reuses_manifests(corpus, tmp_path, caplog):
    paths = prepare_timit(corpus, tmp_path / "save")
    mtimes = [path.stat().st_mtime_ns for path in paths]
    with caplog.at_level(logging.INFO, logger="fvae_asr.speech.data.timit"):
        assert prepare_timit(corpus, tmp_path / "save") == paths
    assert [path.stat().st_mtime_ns for path in paths] == mtimes
    assert "skipping" in caplog.text
    # Another phone set is a different preparation: the manifests are rewritten.
    prepare_timit(corpus, tmp_path / "save", phn_set=61)
    assert _load(paths[0])["FCJF0_SI1027"]["phn"] == " ".join(SHE_HAD)


def test_skip_prep_touches_nothing(tmp_path):
    paths = prepare_timit(tmp_path / "missing", tmp_path / "save", skip_prep=True)
    assert paths[0] == tmp_path / "save" / "train.json"
    assert not (tmp_path / "save").exists()


def test_failed_preparation_keeps_earlier_manifests(corpus, tmp_path, first_phn):
    save = tmp_path / "save"
    train = prepare_timit(corpus, save)[0]
    before = train.read_text()
    first_phn.write_text("0 800 h#\n800 1600 xx\n")
    with pytest.raises(ValueError, match="unknown TIMIT phone"):
        prepare_timit(corpus, save, phn_set=61)
    assert train.read_text() == before
    assert sorted(path.name for path in save.iterdir()) == ["dev.json", "prepare_opts.json", "test.json", "train.json"]


def test_interrupted_write_leaves_no_partial_file(corpus, tmp_path, monkeypatch):
    save = tmp_path / "save"
    train = prepare_timit(corpus, save)[0]
    before = train.read_text()

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        prepare_timit(corpus, save, phn_set=61)
    monkeypatch.undo()
    assert train.read_text() == before
    assert sorted(path.name for path in save.iterdir()) == ["dev.json", "test.json", "train.json"]
    # Without its options file the interrupted preparation is not mistaken for a finished one.
    prepare_timit(corpus, save, phn_set=61)
    assert _load(train)["FCJF0_SI1027"]["phn"] == " ".join(SHE_HAD)


def test_bad_phn_set(corpus, tmp_path):
    with pytest.raises(ValueError, match="phn_set must be one of .* got 48"):
        prepare_timit(corpus, tmp_path / "save", phn_set=48)


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        prepare_timit(missing, tmp_path / "save")


def test_folder_without_timit(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"no TIMIT audio found under {re.escape(str(tmp_path / 'empty'))}"):
        prepare_timit(tmp_path / "empty", tmp_path / "save")


def test_split_folders_without_audio(tmp_path):
    (tmp_path / "timit" / "TRAIN" / "DR1").mkdir(parents=True)
    (tmp_path / "timit" / "TEST").mkdir()
    train = re.escape(str(tmp_path / "timit" / "TRAIN"))
    with pytest.raises(FileNotFoundError, match=f"train split is empty: no \\*.WAV under {train}$"):
        prepare_timit(tmp_path / "timit", tmp_path / "save")


def test_corrupt_audio(corpus, tmp_path):
    (corpus / "TEST" / "DR1" / "FAKS0" / "SI2203.WAV").write_bytes(b"not a sphere file" * 10)
    with pytest.raises(ValueError, match="cannot read audio file .*FAKS0/SI2203.WAV"):
        prepare_timit(corpus, tmp_path / "save")


def test_wrong_sample_rate(corpus, tmp_path):
    wav = corpus / "TRAIN" / "DR2" / "MDAC0" / "SI1261.WAV"
    sf.write(wav, np.zeros(4000, dtype=np.float32), 8000, format="NIST", subtype="PCM_16")
    with pytest.raises(ValueError, match="MDAC0/SI1261.WAV: sample rate 8000 Hz, expected 16000 Hz"):
        prepare_timit(corpus, tmp_path / "save")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1066 2133", "expected 'start end label'"),
        ("1066 2133 sh extra", "expected 'start end label'"),
        ("1066 2x33 sh", "non-integer sample index"),
        ("2133 1066 sh", "end 1066 is before start 2133"),
        ("1066 2133 xx", "unknown TIMIT phone 'xx'"),
    ],
)
def test_malformed_phn_line(corpus, tmp_path, first_phn, line, message):
    lines = first_phn.read_text().splitlines()
    lines[1] = line
    first_phn.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"FCJF0/SI1027.PHN, line 2: {message}"):
        prepare_timit(corpus, tmp_path / "save")


def test_missing_phn_file(corpus, tmp_path, first_phn):
    first_phn.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(first_phn))):
        prepare_timit(corpus, tmp_path / "save")


def _change_added(corpus):
    _write(corpus, "TRAIN", "DR2", "MDAC0", "SX101")
    return "3 added", "TRAIN/DR2/MDAC0/SX101.WAV"


def _change_removed(corpus):
    (corpus / "TRAIN" / "DR1" / "FCJF0" / "SX127.WAV").unlink()  # its .PHN and .WRD are no longer read
    return "3 removed", "TRAIN/DR1/FCJF0/SX127.WAV"


def _change_regenerated(corpus):
    # Same size, new content (a file regenerated in place): only its modification time tells.
    phn = corpus / "TRAIN" / "DR1" / "FCJF0" / "SI1027.PHN"
    phn.write_text(phn.read_text().replace(" iy\n", " ih\n"))
    return "1 modified", "TRAIN/DR1/FCJF0/SI1027.PHN"


@pytest.mark.parametrize("change", [_change_added, _change_removed, _change_regenerated])
def test_prepare_rebuilds_after_the_corpus_changed(corpus, tmp_path, caplog, change):
    save = tmp_path / "save"
    train = prepare_timit(corpus, save)[0]
    count, relative = change(corpus)
    with caplog.at_level(logging.INFO, logger="fvae_asr.speech.data.timit"):
        prepare_timit(corpus, save)
    assert re.search(f"Rebuilding .* corpus changed .*: {count} \\(.*{relative}", caplog.text), caplog.text
    fresh = prepare_timit(corpus, tmp_path / "fresh")[0]
    assert _load(train) == _load(fresh)


def test_prepare_records_the_layout_it_read(tmp_path):
    # Both layouts side by side (a case-sensitive file system): the choice decides what is read.
    root = tmp_path / "timit"
    for split, dialect, speaker, utterance in UTTERANCES:
        _write(root, split, dialect, speaker, utterance, uppercase=False)
    _write(root, "TRAIN", "DR3", "MJEB1", "SI1286")
    _write(root, "TEST", "DR1", "FDHC0", "SI1559")
    _write(root, "TEST", "DR1", "FAKS0", "SI2203")
    train = prepare_timit(root, tmp_path / "save", uppercase=False)[0]
    assert set(_load(train)) == EXPECTED_SPLITS["train"]
    prepare_timit(root, tmp_path / "save", uppercase=True)
    assert set(_load(train)) == {"MJEB1_SI1286"}


@pytest.mark.parametrize("audio_format", ["NIST", "WAV"])
def test_truncated_audio_is_an_error(corpus, tmp_path, audio_format):
    # A copy cut short keeps an intact header; its .PHN then runs past the audio that is left.
    wav = corpus / "TEST" / "DR1" / "FAKS0" / "SI2203.WAV"
    sf.write(wav, np.zeros(N_SAMPLES, dtype=np.float32), 16000, format=audio_format, subtype="PCM_16")
    with open(wav, "r+b") as handle:
        handle.truncate(wav.stat().st_size - 2000)
    phn = re.escape(str(wav.with_suffix(".PHN")))
    with pytest.raises(ValueError, match=f"{phn}, line 9: end {N_SAMPLES} is beyond the 8600 samples of .*SI2203.WAV"):
        prepare_timit(corpus, tmp_path / "save")


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("TRAIN", "no TRAIN folder under .*timit .*holds: TEST"),
        ("TEST", "no TEST folder under .*timit .*holds: TRAIN"),
        ("TEST/DR1/FAKS0", "dev split is empty: .*TEST holds none of the 50 dev speakers"),
        ("TEST/DR1/FDHC0", "test split is empty: .*TEST holds none of the 24 core test speakers"),
    ],
)
def test_missing_split_is_an_error(tmp_path, remove, message):
    root = _corpus(tmp_path / "timit")
    shutil.rmtree(root / remove)
    with pytest.raises(FileNotFoundError, match=message):
        prepare_timit(root, tmp_path / "save")
    assert not (tmp_path / "save").exists()


def test_data_folder_that_is_a_file(tmp_path):
    archive = tmp_path / "timit.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(NotADirectoryError, match=f"{re.escape(str(archive))} is a file, not a folder"):
        prepare_timit(archive, tmp_path / "save")


@pytest.mark.parametrize("record", ["{broken", "[]", '{"data_folder": "elsewhere", "phn_set": 39}'])
def test_prepare_rebuilds_over_an_unusable_record(corpus, tmp_path, caplog, record):
    save = tmp_path / "save"
    train = prepare_timit(corpus, save)[0]
    train.write_text("{}")
    (save / "prepare_opts.json").write_text(record)
    with caplog.at_level(logging.WARNING, logger="fvae_asr.speech.data.timit"):
        prepare_timit(corpus, save)
    assert "Rebuilding the TIMIT manifests" in caplog.text
    assert set(_load(train)) == EXPECTED_SPLITS["train"]
