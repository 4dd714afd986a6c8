"""FVAE-LoRA (or LoRA, or full fine-tuning) on a BERT-style encoder for sequence classification.

Offline by default: a tiny random BERT and a synthetic keyword task, in well under a minute on CPU.
With --model and --dataset: any AutoModelForSequenceClassification checkpoint on a `datasets` dataset
with a text column and a label column.

    python examples/text_classification.py --output_dir runs/text
    python examples/text_classification.py --model bert-base-uncased --dataset glue --dataset_config sst2 \
        --text_column sentence --output_dir runs/sst2
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared module, however this script is loaded

from common import Task, build_parser, load_dataset, parse_args, pretrained_classifier, run

VOCAB_SIZE = 64
KEYWORDS = (4, 5, 6, 7)  # token ids whose presence decides the class; fillers are drawn from 10..VOCAB_SIZE-1
CLS_ID, PAD_ID = 2, 0
MAX_LENGTH = 16


def synthetic_keyword_task(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Padded token sequences of random length; the label is which keyword token occurs in it (exactly one does)."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        label = int(torch.randint(len(KEYWORDS), (1,), generator=g))
        length = int(torch.randint(6, MAX_LENGTH + 1, (1,), generator=g))
        tokens = torch.randint(10, VOCAB_SIZE, (length,), generator=g)
        tokens[0] = CLS_ID
        tokens[int(torch.randint(1, length, (1,), generator=g))] = KEYWORDS[label]
        input_ids = torch.full((MAX_LENGTH,), PAD_ID)
        input_ids[:length] = tokens
        attention_mask = (torch.arange(MAX_LENGTH) < length).long()
        examples.append({"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor(label)})
    return examples


def tiny_bert(num_labels: int, seed: int) -> torch.nn.Module:
    """A 2-layer BERT with random weights, built from a config (no download)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    # initializer_range 0.2, not BERT's 0.02: a random encoder that flat barely tells the keywords apart
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=MAX_LENGTH,
        num_labels=num_labels,
        pad_token_id=PAD_ID,
        initializer_range=0.2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def pretrained_task(args) -> Task:
    """A hub or local checkpoint and its tokenizer on the --dataset's text and label columns."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    train_set, eval_set, num_labels = load_dataset(args, args.label_column)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=False)

    def tokenize(batch):
        encoded = tokenizer(batch[args.text_column], truncation=True, max_length=args.max_length)
        return {**encoded, "labels": batch[args.label_column]}

    columns = train_set.column_names
    train_set = train_set.map(tokenize, batched=True, remove_columns=columns)
    eval_set = eval_set.map(tokenize, batched=True, remove_columns=columns)
    model = pretrained_classifier(AutoModelForSequenceClassification, args.model, num_labels)
    return Task(model, ["classifier"], train_set, eval_set, DataCollatorWithPadding(tokenizer))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(__doc__.splitlines()[0], learning_rate=5e-3, epochs=8, batch_size=32)
    parser.add_argument("--text_column", default="text", help="with --dataset (default text)")
    parser.add_argument("--label_column", default="label", help="with --dataset (default label)")
    parser.add_argument("--max_length", type=int, default=128, help="tokens per example with --dataset")
    parser.add_argument("--train_size", type=int, default=512, help="synthetic training examples (default 512)")
    args = parse_args(parser, argv)
    if args.dataset:
        task = pretrained_task(args)
    else:
        train = synthetic_keyword_task(args.train_size, seed=args.seed)
        evaluation = synthetic_keyword_task(256, seed=args.seed + 1)
        if args.model:
            from transformers import AutoModelForSequenceClassification

            model = pretrained_classifier(AutoModelForSequenceClassification, args.model, len(KEYWORDS))
        else:
            model = tiny_bert(len(KEYWORDS), args.seed)
        task = Task(model, ["classifier"], train, evaluation)
    run(args, task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
