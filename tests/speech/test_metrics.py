"""Phoneme error rate against hand-computed cases and SpeechBrain's ErrorRateStats."""

import random

import pytest
from speechbrain.utils.metric_stats import ErrorRateStats

from fvae_asr.speech.metrics import alignments, error_report, phoneme_error_rate


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("sil sh iy sil", "sil sh iy sil", 0.0),
        ("sil sh iy sil", "sil s iy sil", 25.0),  # one substitution
        ("sil sh iy sil", "sil sh iy hh sil", 25.0),  # one insertion
        ("sil sh iy sil", "sil iy sil", 25.0),  # one deletion
        ("sil sh iy sil", "sh ih sil d", 75.0),  # deletion + substitution + insertion
        ("a b", "c d e f", 200.0),  # above 100 with insertions
        ("a b c", "", 100.0),  # empty hypothesis: all deleted
    ],
)
def test_per_hand_computed(reference, hypothesis, expected):
    assert phoneme_error_rate([reference], [hypothesis]) == pytest.approx(expected)


def test_token_lists_equal_strings():
    refs = [["sil", "sh", "iy", "sil"], "ae d"]
    hyps = ["sil s iy sil", ["ae"]]
    assert phoneme_error_rate(refs, hyps) == phoneme_error_rate(["sil sh iy sil", "ae d"], ["sil s iy sil", "ae"])


def test_aggregated_by_total_reference_length():
    # 1 error in 1 phone (100 %) and 0 errors in 9 phones (0 %): 1/10, not the mean 50 %.
    refs = ["a", "a b c d e f g h i"]
    hyps = ["b", "a b c d e f g h i"]
    assert phoneme_error_rate(refs, hyps) == pytest.approx(10.0)


def test_utterance_with_empty_reference_counts_insertions():
    assert phoneme_error_rate(["a b", ""], ["a b", "x"]) == pytest.approx(50.0)


def test_matches_speechbrain_error_rate_stats():
    rng = random.Random(0)
    phones = ["sil", "aa", "ae", "b", "d", "iy", "sh", "t"]
    refs = [[rng.choice(phones) for _ in range(rng.randint(1, 15))] for _ in range(40)]
    hyps = [[rng.choice(phones) for _ in range(rng.randint(0, 15))] for _ in range(40)]
    stats = ErrorRateStats()
    stats.append([f"utt{i}" for i in range(len(refs))], hyps, refs)
    assert phoneme_error_rate(refs, hyps) == pytest.approx(stats.summarize("error_rate"))


def test_error_report_counts():
    report = error_report(["u1", "u2"], ["a b c", "d e"], ["a x c d", "e"])
    assert report == {
        "per": pytest.approx(60.0),
        "insertions": 1,
        "deletions": 1,
        "substitutions": 1,
        "reference_phones": 5,
        "utterances": 2,
    }


def test_alignments_text():
    text = alignments(["u1", "u2"], ["sil sh iy sil", "a b"], ["sil s iy hh sil", "a b"])
    first, second = text.strip().split("\n\n")
    assert first.splitlines() == [
        "u1: PER 50.00% (S=1 D=0 I=1, 4 phones)",
        "REF: sil sh iy *  sil",
        "HYP: sil s  iy hh sil",
        "ERR:     S     I",
    ]
    assert second.splitlines()[0] == "u2: PER 0.00% (S=0 D=0 I=0, 2 phones)"


@pytest.mark.parametrize("function", [phoneme_error_rate, error_report, alignments])
def test_mismatched_lengths(function):
    args = (["a b", "c"], ["a b"]) if function is phoneme_error_rate else (["u1", "u2"], ["a b", "c"], ["a b"])
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        function(*args)


@pytest.mark.parametrize("function", [error_report, alignments])
def test_mismatched_ids(function):
    with pytest.raises(ValueError, match="1 ids but 2 references"):
        function(["u1"], ["a", "b"], ["a", "b"])


@pytest.mark.parametrize("references", [[], [""], ["", []]])
def test_empty_references(references):
    with pytest.raises(ValueError, match="no phones"):
        phoneme_error_rate(references, ["x"] * len(references))
