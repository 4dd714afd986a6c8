"""FVAE-LoRA (or LoRA, or full fine-tuning) on a Vision Transformer for image classification.

Offline by default: a tiny random ViT and a synthetic colour task, in well under a minute on CPU.
With --model and --dataset: any AutoModelForImageClassification checkpoint on a `datasets` dataset
with an image column and a label column.

    python examples/image_classification.py --output_dir runs/image
    python examples/image_classification.py --model google/vit-base-patch16-224-in21k --dataset cifar10 \
        --image_column img --targets qv --output_dir runs/cifar10
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared module, however this script is loaded

from common import Task, build_parser, load_dataset, parse_args, pretrained_classifier, run

IMAGE_SIZE, PATCH_SIZE = 32, 8
COLORS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0))  # the class is the square's colour


def synthetic_color_task(n: int, seed: int, size: int = IMAGE_SIZE) -> list[dict[str, torch.Tensor]]:
    """Noisy grey RGB images holding one square (a quarter of the side, on the patch grid) at a random place;
    the label is the square's colour (red, green, blue or yellow)."""
    g = torch.Generator().manual_seed(seed)
    square = size // 4
    examples = []
    for _ in range(n):
        label = int(torch.randint(len(COLORS), (1,), generator=g))
        image = 0.5 + 0.1 * torch.randn(3, size, size, generator=g)
        top, left = (square * int(torch.randint(4, (1,), generator=g)) for _ in range(2))
        image[:, top : top + square, left : left + square] = torch.tensor(COLORS[label]).view(3, 1, 1)
        examples.append({"pixel_values": image, "labels": torch.tensor(label)})
    return examples


def tiny_vit(num_labels: int, seed: int) -> torch.nn.Module:
    """A 2-layer ViT with random weights over 8x8 patches of 32x32 images, built from a config (no download)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    # initializer_range 0.2 as in the text example's tiny BERT: a 0.02-init random encoder is too flat to adapt
    config = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=3,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=num_labels,
        initializer_range=0.2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ViTForImageClassification(config)


def pretrained_task(args) -> Task:
    """A hub or local checkpoint and its image processor on the --dataset's image and label columns."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    train_set, eval_set, num_labels = load_dataset(args, args.label_column)
    processor = AutoImageProcessor.from_pretrained(args.model, trust_remote_code=False)

    def preprocess(batch):
        images = [image.convert("RGB") for image in batch[args.image_column]]
        return {"pixel_values": processor(images)["pixel_values"], "labels": batch[args.label_column]}

    columns = train_set.column_names
    train_set = train_set.map(preprocess, batched=True, remove_columns=columns).with_format("torch")
    eval_set = eval_set.map(preprocess, batched=True, remove_columns=columns).with_format("torch")
    model = pretrained_classifier(AutoModelForImageClassification, args.model, num_labels)
    return Task(model, ["classifier"], train_set, eval_set)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(__doc__.splitlines()[0], learning_rate=5e-3, epochs=8, batch_size=32)
    parser.add_argument("--image_column", default="image", help="with --dataset (default image)")
    parser.add_argument("--label_column", default="label", help="with --dataset (default label)")
    parser.add_argument("--train_size", type=int, default=512, help="synthetic training examples (default 512)")
    args = parse_args(parser, argv)
    if args.dataset:
        task = pretrained_task(args)
    else:
        if args.model:
            from transformers import AutoModelForImageClassification

            model = pretrained_classifier(AutoModelForImageClassification, args.model, len(COLORS))
        else:
            model = tiny_vit(len(COLORS), args.seed)
        size = model.config.image_size  # the synthetic images are drawn at the model's input size
        train = synthetic_color_task(args.train_size, seed=args.seed, size=size)
        evaluation = synthetic_color_task(256, seed=args.seed + 1, size=size)
        task = Task(model, ["classifier"], train, evaluation)
    run(args, task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
