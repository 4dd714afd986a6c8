"""Transcriptions as text: plain lines, JSON lines, NIST CTM, or a Praat TextGrid (long text format).

Each function renders one successful ``FileTranscription``; ``file_id`` (see ``fvae_asr.cli.transcribe.file_ids``)
is the CTM's first column. Times are seconds from the start of the file: 3 decimals in text and CTM (the encoder's
frames are 20 ms for wav2vec2), 6 in JSON, and exact (the float's shortest round-trip form) in the TextGrid, whose
end is the original file's duration.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from fvae_asr.speech.inference.ctc_segments import PhoneSegment
from fvae_asr.speech.inference.transcriber import FileTranscription

TEXTGRID_TIER = "phones"


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
