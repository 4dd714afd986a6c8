"""The study's corpora: one generated TIMIT-layout corpus per synthetic shift, or the real corpus of the command
line (one with word transcripts, TIMIT or three annotations), checked and identified by its content."""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

from fvae_asr.files import read_json
from fvae_asr.speech.data.annotations import ANNOTATION_KEYS, read_annotation
from fvae_asr.speech.data.timit import SPLITS, prepare_timit
from fvae_asr.speech.data.word_corpus import WORD_ANNOTATIONS, word_corpus_of
from fvae_asr.synthetic import generate_corpus


def real_corpus(args: argparse.Namespace, layout: str | None = None) -> dict[str, Any]:
    """The corpus of the command line: one with word transcripts in ``layout`` (read, pronounced and
    checked), TIMIT at ``--data_folder`` (its manifests prepared under ``--work``, which checks its layout and
    labels) or the three annotations (read and checked). Returns its name, the recipe overrides that name it, and
    its identity for the records: utterances per split and a digest of what the recipe trains on (each
    utterance's id, duration and phones), wherever the files live."""
    annotations = {split: getattr(args, key) for split, key in ANNOTATION_KEYS.items()}
    if layout is not None:
        if args.data_folder is None:
            raise ValueError(f"--corpus {layout} needs --data_folder, the corpus's root")
        root = str(args.data_folder.resolve())
        overrides = {"corpus": layout, "data_folder": root}
        if layout == WORD_ANNOTATIONS:
            overrides.update(
                {key: str(path.resolve()) for key, path in zip(ANNOTATION_KEYS.values(), annotations.values()) if path}
            )
        elif any(annotations.values()):
            raise ValueError(f"--corpus {layout} is not given by annotations: drop them")
        save_folder = args.work / "corpus" / f"{layout}_manifests"  # not written: the runs write their own
        entries = {
            split: a.entries for split, a in word_corpus_of({**overrides, "save_folder": save_folder}).splits.items()
        }
        name = layout
    elif any(annotations.values()):
        missing = [f"--{ANNOTATION_KEYS[split]}" for split, path in annotations.items() if path is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} not given: a corpus given by annotations needs all three")
        root = str(args.data_folder.resolve()) if args.data_folder else None
        entries = {split: read_annotation(path, root).entries for split, path in annotations.items()}
        overrides = {ANNOTATION_KEYS[split]: str(path.resolve()) for split, path in annotations.items()}
        name, overrides = "annotations", {**overrides, **({"data_folder": root} if root else {})}
    elif args.data_folder is not None:
        manifests = prepare_timit(args.data_folder, args.work / "corpus" / "timit_manifests")
        entries = {split: read_json(path, "TIMIT manifest") for split, path in zip(SPLITS, manifests)}
        name, overrides = "timit", {"data_folder": str(args.data_folder.resolve())}
    else:
        raise ValueError(
            "--preset needs a corpus: --data_folder of TIMIT (or of a corpus with word transcripts, with --corpus), "
            "or --train_annotation, --valid_annotation and --test_annotation"
        )
    content = {
        split: sorted((utt, entry["duration"], entry["phn"]) for utt, entry in split_entries.items())
        for split, split_entries in entries.items()
    }
    digest = hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]
    identity = {"name": name, "utterances": {split: len(e) for split, e in entries.items()}, "sha256": digest}
    return {"name": name, "overrides": overrides, "identity": identity}


def prepare_corpora(args: argparse.Namespace) -> dict[str, str]:
    """One generated TIMIT-layout corpus per shift under ``WORK/corpus/<shift>`` (generated once)."""
    size = args.size
    return {
        shift: str(
            generate_corpus(
                args.work / "corpus" / shift,
                seed=args.corpus_seed,
                n_train_speakers=size["train_speakers"],
                n_test_speakers=size["test_speakers"],
                sentences_per_speaker=size["sentences_per_speaker"],
                domain=shift,
            ).resolve()
        )
        for shift in size["shifts"]
    }
