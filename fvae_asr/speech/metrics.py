"""Phoneme error rate (PER) and per-utterance error reports, computed with jiwer.

PER = (substitutions + deletions + insertions) / total reference phones * 100, aggregated over the whole
set (not averaged per utterance), as SpeechBrain's ``ErrorRateStats`` reports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jiwer

PhoneSequence = str | Sequence[str]

_OPERATION_MARKS = {"equal": "", "substitute": "S", "delete": "D", "insert": "I"}
_ROW_NAMES = ("REF", "HYP", "ERR")


def _process(references: Sequence[PhoneSequence], hypotheses: Sequence[PhoneSequence]) -> jiwer.WordOutput:
    """Validate the inputs and align them with jiwer (each item: space-separated string or list of phones)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"got {len(references)} references but {len(hypotheses)} hypotheses")
    refs = [_as_text(seq) for seq in references]
    hyps = [_as_text(seq) for seq in hypotheses]
    if not any(ref.split() for ref in refs):
        raise ValueError("references contain no phones: the error rate is undefined")
    return jiwer.process_words(refs, hyps)


def _as_text(sequence: PhoneSequence) -> str:
    """A phone sequence as the space-separated string jiwer tokenises."""
    return sequence if isinstance(sequence, str) else " ".join(sequence)


def _check_ids(ids: Sequence[str], references: Sequence[PhoneSequence]) -> None:
    """Every utterance needs exactly one id."""
    if len(ids) != len(references):
        raise ValueError(f"got {len(ids)} ids but {len(references)} references")


def phoneme_error_rate(references: Sequence[PhoneSequence], hypotheses: Sequence[PhoneSequence]) -> float:
    """PER in percent (0-100, can exceed 100 with many insertions) over all utterances together."""
    return 100.0 * _process(references, hypotheses).wer


def error_report(ids: Sequence[str], references: Sequence[PhoneSequence], hypotheses: Sequence[PhoneSequence]) -> dict:
    """PER with its edit counts: ``per``, ``insertions``, ``deletions``, ``substitutions``,
    ``reference_phones`` and ``utterances``."""
    _check_ids(ids, references)
    output = _process(references, hypotheses)
    return {
        "per": 100.0 * output.wer,
        "insertions": output.insertions,
        "deletions": output.deletions,
        "substitutions": output.substitutions,
        "reference_phones": output.hits + output.substitutions + output.deletions,
        "utterances": len(ids),
    }


def alignments(ids: Sequence[str], references: Sequence[PhoneSequence], hypotheses: Sequence[PhoneSequence]) -> str:
    """Human-readable per-utterance alignments (REF / HYP / edit marks), one block per utterance id."""
    _check_ids(ids, references)
    output = _process(references, hypotheses)
    blocks = [
        _render(utt_id, ref, hyp, chunks)
        for utt_id, ref, hyp, chunks in zip(ids, output.references, output.hypotheses, output.alignments)
    ]
    return "\n\n".join(blocks) + "\n"


def _render(utt_id: str, ref: list[str], hyp: list[str], chunks: list[jiwer.AlignmentChunk]) -> str:
    """One utterance: a header with its edit counts, then aligned REF, HYP and S/D/I mark rows."""
    columns: list[tuple[str, str, str]] = []
    for chunk in chunks:
        ref_part = ref[chunk.ref_start_idx : chunk.ref_end_idx]
        hyp_part = hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
        width = max(len(ref_part), len(hyp_part))
        ref_part += ["*"] * (width - len(ref_part))
        hyp_part += ["*"] * (width - len(hyp_part))
        columns += [(r, h, _OPERATION_MARKS[chunk.type]) for r, h in zip(ref_part, hyp_part)]
    counts = {mark: sum(column[2] == mark for column in columns) for mark in "SDI"}
    errors = sum(counts.values())
    rate = f"{100.0 * errors / len(ref):.2f}%" if ref else "n/a"
    header = f"{utt_id}: PER {rate} (S={counts['S']} D={counts['D']} I={counts['I']}, {len(ref)} phones)"
    widths = [max(len(cell) for cell in column) for column in columns]
    rows = [
        (f"{name}: " + " ".join(column[row].ljust(width) for column, width in zip(columns, widths))).rstrip()
        for row, name in enumerate(_ROW_NAMES)
    ]
    return "\n".join([header, *rows])
