"""What the text and image classification examples share: flags, adapter configs, training and the report.

Each example supplies only its task: the model, the train/eval sets and a collator. Defaults follow the
FVAE-LoRA paper where they apply (AdamW, linear schedule, warm-up 0.1, weight decay 0.01, rank 16,
lambda 1e-3, LoRA alpha 16 and dropout 0.1, lr 5e-3 and batch 32); the paper's 30 epochs are --epochs 30,
the default 8 suits the built-in synthetic tasks.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import TrainingArguments

from fvae_asr import AdapterConfig, FVAELoRAConfig, LoRAConfig, inject
from fvae_asr.files import write_json
from fvae_asr.integrations.transformers import FVAETrainer

METHODS = ("fvae_lora", "lora", "full")
# Attention projections by naming scheme: BERT-style (query/key/value) and q_proj/k_proj/v_proj
# (ViT, wav2vec2 and most models in transformers 5).
PROJECTION_NAMES = {"query": ("query", "key", "value"), "q_proj": ("q_proj", "k_proj", "v_proj")}
TARGET_CHOICES = {"qk": (0, 1), "qv": (0, 2), "qkv": (0, 1, 2)}


def build_parser(description: str, learning_rate: float, epochs: float, batch_size: int) -> argparse.ArgumentParser:
    """The flags every example takes; an example adds its own task flags to the returned parser."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--method", choices=METHODS, default="fvae_lora", help="what to train (default fvae_lora)")
    parser.add_argument("--output_dir", required=True, help="where the adapter (or full model) and results go")
    parser.add_argument("--model", help="hub id or local directory; default: a tiny random model built offline")
    parser.add_argument(
        "--dataset",
        help="a Hugging Face `datasets` name or local data files (needs --model); "
        "default: a small synthetic task generated offline",
    )
    parser.add_argument("--dataset_config", help="the dataset's configuration name, e.g. sst2 for glue")
    parser.add_argument(
        "--targets",
        choices=sorted(TARGET_CHOICES),
        default="qk",
        help="attention projections to adapt: qk (the paper, default) or qv (the authors' image code)",
    )
    parser.add_argument("--rank", type=int, default=16, help="adapter rank r (default 16)")
    parser.add_argument("--aux_weight", type=float, default=1e-3, help="FVAE lambda (default 1e-3)")
    parser.add_argument("--learning_rate", type=float, default=learning_rate, help=f"default {learning_rate:g}")
    parser.add_argument("--epochs", type=float, default=epochs, help=f"default {epochs:g}")
    parser.add_argument("--batch_size", type=int, default=batch_size, help=f"default {batch_size}")
    parser.add_argument("--warmup_ratio", type=float, default=0.1, help="default 0.1")
    parser.add_argument("--weight_decay", type=float, default=0.01, help="default 0.01")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check the common flags; usage errors exit 2 before anything is written."""
    args = parser.parse_args(argv)
    if not 0 <= args.warmup_ratio < 1:
        parser.error(f"--warmup_ratio must be in [0, 1), got {args.warmup_ratio}")
    if args.dataset and not args.model:
        parser.error("--dataset needs --model (its tokenizer or image processor prepares the data)")
    if args.rank <= 0:
        parser.error(f"--rank must be a positive integer, got {args.rank}")
    if args.dataset:
        try:
            import datasets  # noqa: F401
        except ImportError:
            parser.error("--dataset needs the `datasets` package: pip install datasets")
    return args


DATA_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_dataset(args: argparse.Namespace, label_column: str) -> tuple[Any, Any, int]:
    """Train and eval splits of ``--dataset`` (a `datasets` name, a local directory or a data file) and the
    number of classes; eval is the validation (else test) split, or a seeded tenth of train if there is none."""
    import datasets

    path = Path(args.dataset)
    if path.is_file():
        if path.suffix not in DATA_FILE_BUILDERS:
            raise SystemExit(f"{path}: unknown data file type; use one of {', '.join(DATA_FILE_BUILDERS)}")
        splits = datasets.load_dataset(DATA_FILE_BUILDERS[path.suffix], data_files=str(path))
    else:
        splits = datasets.load_dataset(args.dataset, args.dataset_config)
    if "train" not in splits:
        raise SystemExit(f"{args.dataset}: no train split; it has {', '.join(splits)}")
    eval_name = next((name for name in ("validation", "test") if name in splits), None)
    if eval_name is None:
        parts = splits["train"].train_test_split(test_size=0.1, seed=args.seed)
        train, evaluation = parts["train"], parts["test"]
    else:
        train, evaluation = splits["train"], splits[eval_name]
    if label_column not in train.column_names:
        raise SystemExit(f"{args.dataset}: no column {label_column!r}; columns: {', '.join(train.column_names)}")
    feature = train.features[label_column]
    if hasattr(feature, "num_classes"):  # a ClassLabel: already numbered 0..num_classes-1
        return train, evaluation, feature.num_classes
    names = sorted(set(train[label_column]))
    return number_labels(train, label_column, names), number_labels(evaluation, label_column, names), len(names)


def number_labels(split: Any, label_column: str, names: list[Any]) -> Any:
    """``split`` with its labels (words, or integers not counting from 0) replaced by their index in ``names``,
    the training split's sorted labels, so that train and eval number every class alike."""
    import datasets

    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(split[label_column]) - index.keys(), key=str)
    if unknown:
        raise SystemExit(f"labels {unknown} in column {label_column!r} are not in the training split's labels: {names}")
    features = split.features.copy()  # without new features, map would cast the indices back to the column's type
    features[label_column] = datasets.ClassLabel(names=[str(name) for name in names])
    return split.map(
        lambda batch: {label_column: [index[v] for v in batch[label_column]]}, batched=True, features=features
    )


def pretrained_classifier(auto_class: Any, name: str, num_labels: int) -> nn.Module:
    """A hub or local checkpoint with a fresh head of ``num_labels`` classes (its own head may have another size)."""
    return auto_class.from_pretrained(
        name, num_labels=num_labels, ignore_mismatched_sizes=True, trust_remote_code=False
    )


def attention_targets(model: nn.Module, choice: str) -> list[str]:
    """Module-name suffixes of the chosen attention projections, in whichever naming scheme the model uses."""
    suffixes = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for first, names in PROJECTION_NAMES.items():
        if first in suffixes:
            return [names[i] for i in TARGET_CHOICES[choice]]
    raise ValueError(
        f"no attention projections named {sorted(PROJECTION_NAMES)} in the model; "
        f"its linear layers end in: {', '.join(sorted(suffixes))}"
    )


def adapter_config(args: argparse.Namespace, targets: list[str], head: list[str]) -> AdapterConfig | None:
    """The adapter config for ``args.method`` (None for full fine-tuning); the head always trains."""
    if args.method == "fvae_lora":
        return FVAELoRAConfig(
            rank=args.rank, target_modules=targets, trainable_modules=head, aux_weight=args.aux_weight
        )
    if args.method == "lora":
        return LoRAConfig(rank=args.rank, lora_alpha=16.0, dropout=0.1, target_modules=targets, trainable_modules=head)
    return None


def accuracy(eval_pred: Any) -> dict[str, float]:
    """Share of eval examples whose arg-max logit is the label."""
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


@dataclass
class Task:
    """What an example hands to ``run``: a model with a classification head and its data."""

    model: nn.Module
    head: list[str]  # module names of the classification head (trained by every method)
    train_set: Any
    eval_set: Any
    collator: Callable | None = None


def training_arguments(args: argparse.Namespace) -> Any:
    """TrainingArguments with the paper's optimiser and schedule; no intermediate checkpoints."""
    return TrainingArguments(
        output_dir=args.output_dir,
        learning_rate=args.learning_rate,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        optim="adamw_torch",
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_ratio,  # transformers 5 reads a float < 1 as a ratio of the training steps
        weight_decay=args.weight_decay,
        seed=args.seed,
        data_seed=args.seed,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinned memory serves a GPU; on a CPU it only warns
    )


def run(args: argparse.Namespace, task: Task) -> dict[str, float]:
    """Inject the method's adapters, train, evaluate, save, and write ``eval_results.json``; returns the metrics."""
    torch.manual_seed(args.seed)
    config = adapter_config(args, attention_targets(task.model, args.targets), task.head)
    if config is not None:
        adapted = inject(task.model, config)
        print(f"{args.method}: adapted {len(adapted)} layers ({', '.join(config.target_modules)})")
    trainable = sum(p.numel() for p in task.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in task.model.parameters())
    print(f"trainable parameters: {trainable} of {total}")
    trainer = FVAETrainer(  # for full fine-tuning (no adapters) it trains and saves as the plain Trainer
        model=task.model,
        args=training_arguments(args),
        train_dataset=task.train_set,
        eval_dataset=task.eval_set,
        data_collator=task.collator,
        compute_metrics=accuracy,
    )
    start = time.perf_counter()
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(args.output_dir)
    results = {
        "method": args.method,
        "eval_accuracy": metrics["eval_accuracy"],
        "eval_loss": metrics["eval_loss"],
        "trainable_parameters": trainable,
        "train_seconds": round(time.perf_counter() - start, 2),
    }
    path = Path(args.output_dir) / "eval_results.json"
    write_json(path, results)
    print(f"eval accuracy: {results['eval_accuracy']:.4f} (written to {path})")
    trainer.end()  # under torchrun: destroys the process group, as torch.distributed asks before exit
    return results
