"""A tiny text-classification task for the Trainer tests: a random tiny BERT with FVAE q/k adapters, no downloads."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

from fvae_asr import AdapterConfig, FVAELoRAConfig, inject

VOCAB, PAD = 50, 0


def tiny_bert_base(seed: int = 0, dropout: float = 0.1) -> BertForSequenceClassification:
    """Tiny random BERT (2 layers, hidden 32) with a 2-class head, no adapters."""
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        pad_token_id=PAD,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(cfg)


def tiny_bert_classifier(
    seed: int = 0, adapter: AdapterConfig | None = None, dropout: float = 0.1
) -> BertForSequenceClassification:
    """``tiny_bert_base`` with adapters (default: FVAE on query/key, aux_weight 0.5, the head trainable)."""
    model = tiny_bert_base(seed, dropout)
    inject(
        model,
        adapter
        or FVAELoRAConfig(rank=4, target_modules=["query", "key"], trainable_modules=["classifier"], aux_weight=0.5),
    )
    return model


def dropout_free_bert_classifier() -> BertForSequenceClassification:
    """``tiny_bert_classifier`` without dropout anywhere (BERT's and the adapters'): a forward's only randomness is
    the latents' sampling noise."""
    return tiny_bert_classifier(
        adapter=FVAELoRAConfig(
            rank=4,
            target_modules=["query", "key"],
            aux_weight=0.5,
            trainable_modules=["classifier"],
            dropout=0.0,
            decoder_dropout=0.0,
        ),
        dropout=0.0,
    )


class ExplicitArgumentsClassifier(nn.Module):
    """A classifier whose ``forward`` names its arguments (no ``**kwargs``): the Trainer passes it no loss kwargs."""

    def __init__(self, bert: BertForSequenceClassification) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def explicit_arguments_classifier() -> ExplicitArgumentsClassifier:
    """A dropout-free tiny BERT behind ``ExplicitArgumentsClassifier``, with the same adapters as
    ``dropout_free_bert_classifier``."""
    model = ExplicitArgumentsClassifier(tiny_bert_base(dropout=0.0))
    inject(
        model,
        FVAELoRAConfig(
            rank=4,
            target_modules=["query", "key"],
            trainable_modules=["classifier"],
            aux_weight=0.5,
            dropout=0.0,
            decoder_dropout=0.0,
        ),
    )
    return model


class ParityTask(Dataset):
    """Token sequences of varied length (padded by the collator); label: whether token 1 occurs in the sequence."""

    def __init__(self, size: int = 32, seed: int = 0, max_len: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        lengths = torch.randint(3, max_len + 1, (size,), generator=g)
        self.items = [torch.randint(1, VOCAB, (int(n),), generator=g) for n in lengths]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        ids = self.items[i]
        return {"input_ids": ids, "labels": int((ids == 1).any() or ids[0] < VOCAB // 2)}


def pad_collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` with PAD and build the matching ``attention_mask``."""
    longest = max(len(item["input_ids"]) for item in items)
    ids = torch.full((len(items), longest), PAD)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        ids[row, :n], mask[row, :n] = item["input_ids"], 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([item["labels"] for item in items])}


def training_args(output_dir, **overrides) -> TrainingArguments:
    """CPU, fixed seed, no reporting integrations: small and deterministic."""
    base = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        max_steps=6,
        logging_steps=2,
        save_strategy="no",
        report_to="none",
        seed=0,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return TrainingArguments(**{**base, **overrides})
