"""Transcriptions as text: plain lines, JSON lines, NIST CTM, or a Praat TextGrid (long text format).

Each function renders one successful ``FileTranscription``; ``file_id`` (see ``file_ids``) is the CTM's first
column. Times are seconds from the start of the file: 3 decimals in text and CTM (the encoder's
frames are 20 ms for wav2vec2), 6 in JSON, and exact (the float's shortest round-trip form) in the TextGrid, whose
end is the original file's duration.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from fvae_asr.speech.inference.ctc_segments import PhoneSegment
from fvae_asr.speech.inference.transcriber import FileTranscription

TEXTGRID_TIER = "phones"


def file_ids(paths: list[str]) -> list[str]:
    """What names each file's output (the CTM's first column, --out-dir's files): its name without the extension
    when no two inputs share one; otherwise every file's path relative to the inputs' common folder, without the
    extension, folders joined by ``_`` (TIMIT's ``DR1/FCJF0/SA1.WAV`` -> ``DR1_FCJF0_SA1``).

    Args:
        paths: the input files, as given.
    """
    stems = [Path(path).stem for path in paths]
    if len(set(stems)) == len(stems):
        return stems
    absolute = [Path(path).absolute() for path in paths]
    common = Path(os.path.commonpath([path.parent for path in absolute]))
    return ["_".join(path.relative_to(common).with_suffix("").parts) for path in absolute]


def text_lines(result: FileTranscription, file_id: str) -> str:
    """``<path>\\t<phones>``, or with times one ``<path>\\t<start>\\t<end>\\t<phone>`` line per phone."""
    if result.segments is None:
        return f"{result.path}\t{' '.join(result.phones)}\n"
    return "".join(f"{result.path}\t{s.start:.3f}\t{s.end:.3f}\t{s.phone}\n" for s in result.segments)


def json_line(result: FileTranscription, file_id: str) -> str:
    """One JSON object on one line: path, duration, phones and, with times, segments (phone, start, end)."""
    record = {"path": result.path, "duration": _seconds(result.duration), "phones": result.phones}
    if result.segments is not None:
        record["segments"] = [
            {"phone": s.phone, "start": _seconds(s.start), "end": _seconds(s.end)} for s in result.segments
        ]
    return json.dumps(record) + "\n"


def ctm_lines(result: FileTranscription, file_id: str) -> str:
    """NIST CTM: ``<file> 1 <start> <duration> <phone>`` per phone (channel 1: the channels are mixed)."""
    lines = []
    for segment in _segments(result):
        start, end = round(segment.start, 3), round(segment.end, 3)
        lines.append(f"{file_id} 1 {start:.3f} {end - start:.3f} {segment.phone}\n")
    return "".join(lines)


def textgrid(result: FileTranscription, file_id: str) -> str:
    """A Praat TextGrid (long text format) with one interval tier, ``phones``, covering 0 to the file's duration:
    an interval per phone and empty intervals for the time between phones."""
    intervals: list[tuple[float, float, str]] = []
    time = 0.0
    for segment in _segments(result):
        if segment.start > time:
            intervals.append((time, segment.start, ""))
        intervals.append((segment.start, segment.end, segment.phone))
        time = segment.end
    if result.duration > time or not intervals:
        intervals.append((time, result.duration, ""))
    xmax = _number(result.duration)
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0 ",
        f"xmax = {xmax} ",
        "tiers? <exists> ",
        "size = 1 ",
        "item []: ",
        "    item [1]:",
        '        class = "IntervalTier" ',
        f"        name = {_quoted(TEXTGRID_TIER)} ",
        "        xmin = 0 ",
        f"        xmax = {xmax} ",
        f"        intervals: size = {len(intervals)} ",
    ]
    for index, (start, end, label) in enumerate(intervals, 1):
        lines += [
            f"        intervals [{index}]:",
            f"            xmin = {_number(start)} ",
            f"            xmax = {_number(end)} ",
            f"            text = {_quoted(label)} ",
        ]
    return "\n".join(lines) + "\n"


Renderer = Callable[[FileTranscription, str], str]
FORMATS: dict[str, tuple[Renderer, str]] = {  # name -> (renderer, file extension for --out-dir)
    "text": (text_lines, ".txt"),
    "json": (json_line, ".json"),
    "ctm": (ctm_lines, ".ctm"),
    "textgrid": (textgrid, ".TextGrid"),
}
TIMED_FORMATS = ("ctm", "textgrid")  # always carry times (the others only with --timestamps)


def sclite_trn(report: dict, side: str) -> str:
    """One side (``ref`` or ``hyp``) of the transcripts in sclite's trn form: ``<phones> (<utterance id>)``.

    Args:
        report: what ``evaluate_manifest`` returns.
        side: ``ref`` or ``hyp``.
    """
    return "".join(f"{t[side]} ({utt_id})\n" for utt_id, t in report["transcripts"].items())


def sclite_file_ids(manifest: dict[str, dict], manifest_path: Path) -> dict[str, str]:
    """Each utterance's file ID in ref.stm and hyp.ctm: ``transcribe``'s rule (``file_ids``) over the manifest's
    audio files, so that hyp.ctm is what ``transcribe --format ctm`` writes for them.

    Args:
        manifest: a manifest's entries (``read_annotation``).
        manifest_path: its file, named in errors.

    Raises ValueError naming the utterances whose files get one ID (STM and CTM tell utterances apart by file
    only) or the IDs with white space (sclite splits its lines on it).
    """
    names = dict(zip(manifest, file_ids([entry["wav"] for entry in manifest.values()])))
    utterances_of = defaultdict(list)
    for utt_id, name in names.items():
        utterances_of[name].append(utt_id)
    for name, utt_ids in utterances_of.items():
        if len(utt_ids) > 1:
            files = ", ".join(dict.fromkeys(manifest[utt_id]["wav"] for utt_id in utt_ids))
            raise ValueError(
                f"manifest {manifest_path}: utterances {', '.join(utt_ids)} get one file ID, {name} "
                f"({files}), but sclite's STM and CTM (--sclite) tell utterances apart by file only"
            )
    spaced = [repr(text) for utt_id, name in names.items() for text in (utt_id, name) if len(text.split()) != 1]
    if spaced:
        raise ValueError(
            f"manifest {manifest_path}: IDs for sclite (--sclite) cannot contain white space: {', '.join(spaced[:5])}"
        )
    bracketed = [repr(utt_id) for utt_id in names if set(utt_id) & set("()")]
    if bracketed:
        raise ValueError(
            f"manifest {manifest_path}: utterance IDs for sclite (--sclite) cannot contain parentheses, which "
            f"end a .trn line's '(<utterance id>)': {', '.join(bracketed[:5])}"
        )
    return names


def sclite_stm(report: dict, names: dict[str, str]) -> str:
    """The references as NIST STM, one segment per utterance spanning its whole file, sorted by file ID as sclite
    requires: ``<file ID> 1 <utterance id> 0 <duration> <phones>`` (channel 1, as in the CTM).

    Args:
        report: what ``evaluate_manifest`` returns.
        names: each utterance's file ID (``sclite_file_ids``).
    """
    lines = [";; fvae-asr evaluate: <file ID> <channel> <utterance id> <start> <end> <reference phones>\n"]
    for utt_id in sorted(report["transcripts"], key=names.__getitem__):
        transcript = report["transcripts"][utt_id]
        phones = " ".join(transcript["ref"].split())
        lines.append(f"{names[utt_id]} 1 {utt_id} 0 {transcript['duration']:.3f} {phones}\n")
    return "".join(lines)


def sclite_ctm(report: dict, names: dict[str, str]) -> str:
    """The hypotheses as NIST CTM, sorted by file ID and start time, each file's lines as ``transcribe --format ctm``
    writes them; a file with an empty hypothesis has none (sclite warns, then counts its reference phones deleted).

    Args:
        report: what ``evaluate_manifest`` returns, with ``timestamps``.
        names: each utterance's file ID (``sclite_file_ids``).
    """
    transcripts = report["transcripts"]
    return "".join(
        ctm_lines(
            FileTranscription(t["wav"], t["hyp"].split(), duration=t["duration"], segments=t["segments"]), names[utt_id]
        )
        for utt_id, t in sorted(transcripts.items(), key=lambda item: names[item[0]])
    )


def _segments(result: FileTranscription) -> list[PhoneSegment]:
    if result.segments is None:
        raise ValueError(f"{result.path}: transcribed without timestamps; CTM and TextGrid need them")
    return result.segments


def _seconds(value: float) -> float:
    return round(value, 6)


def _number(value: float) -> str:
    """A time as Praat reads it, exactly: the float's shortest round-trip form without a trailing ``.0`` (``0``,
    ``1.25``, ``26.947143125``, ``1e-05``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _quoted(text: str) -> str:
    """A Praat string literal: in double quotes, with any double quote doubled."""
    return '"' + text.replace('"', '""') + '"'
