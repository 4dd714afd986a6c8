"""The authors' optimiser set-up in our loss units: AdamW's eps, gradient clipping and weight-decay groups.

The authors train ``1000 * task + aux`` with the gradient norm clipped at 1 and AdamW's eps 1e-8. We train
``task + 1e-3 * aux``: every gradient is 1000 times smaller, so their clipping is norm 1e-3 here, and Adam's eps
must shrink by the same factor, or it swamps the many per-parameter gradients that sit near 1e-8 after clipping
(the VAE then barely trains). The rule: eps = their eps times the clipping norm, relative to their norm of 1.
With it AdamW takes the same steps as theirs (Adam is invariant to the loss's scale when eps scales with it).

Weight decay skips biases and normalisation weights, as their ``configure_optimizers`` does (their name list,
``bias`` and ``LayerNorm.weight``, read here by module type so that it holds for every model's names); every
other trainable parameter decays, the decoder's learned std included.
"""

from __future__ import annotations

from torch import nn
from torch.optim import AdamW

AUTHORS_ADAM_EPS = 1e-8  # their AdamW eps (image_model.py), on gradients clipped at norm AUTHORS_MAX_GRAD_NORM
AUTHORS_MAX_GRAD_NORM = 1.0  # their Lightning gradient_clip_val, on 1000 * task + aux
MAX_GRAD_NORM = 1e-3  # their clipping in our units (task + 1e-3 * aux): the recipe's and the studies' default
# What a run records of this rule, so that a run trained under another (0.2: eps 1e-8, every parameter decayed,
# the decoder's log-std) never resumes under this one.
OPTIMIZER_RULE = "authors: AdamW eps 1e-8 x max_grad_norm, no decay on biases and norms, raw decoder std"
NORMALIZATION_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm)


def adam_eps(max_grad_norm: float = MAX_GRAD_NORM) -> float:
    """Adam's eps that behaves as the authors' 1e-8 did, for gradients clipped at ``max_grad_norm``.

    Args:
        max_grad_norm: the clipping norm of the loss that trains (1e-3 in our units gives 1e-11).
    """
    if not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 for the authors' eps rule, got {max_grad_norm!r}")
    return AUTHORS_ADAM_EPS * max_grad_norm / AUTHORS_MAX_GRAD_NORM


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Names of the trainable parameters that the authors exempt from weight decay: biases and the parameters
    of normalisation layers."""
    names = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad and (name == "bias" or isinstance(module, NORMALIZATION_LAYERS)):
                names.add(f"{module_name}.{name}" if module_name else name)
    return names


def weight_decay_groups(model: nn.Module, weight_decay: float | None = None) -> list[dict]:
    """The trainable parameters in two AdamW groups: decayed, then exempt (weight decay 0).

    Args:
        model: the model whose ``requires_grad`` parameters train.
        weight_decay: the decayed group's rate; None leaves it to the optimiser's default (as a SpeechBrain
            ``opt_class`` partial sets it).
    """
    exempt = no_decay_parameter_names(model)
    trainable = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    decayed = {"params": [param for name, param in trainable if name not in exempt]}
    if weight_decay is not None:
        decayed["weight_decay"] = weight_decay
    return [decayed, {"params": [param for name, param in trainable if name in exempt], "weight_decay": 0.0}]


def authors_adamw(
    model: nn.Module, lr: float, weight_decay: float = 0.01, max_grad_norm: float = MAX_GRAD_NORM
) -> AdamW:
    """AdamW over the model's trainable parameters as the authors set it up, for gradients clipped at
    ``max_grad_norm`` (clip them yourself, e.g. ``torch.nn.utils.clip_grad_norm_``).

    Args:
        model: the model; its ``requires_grad`` parameters train.
        lr: the learning rate.
        weight_decay: decoupled weight decay of the decayed group (the authors': 0.01).
        max_grad_norm: the clipping norm, which sets eps (see ``adam_eps``).
    """
    return AdamW(weight_decay_groups(model, weight_decay), lr=lr, eps=adam_eps(max_grad_norm))
