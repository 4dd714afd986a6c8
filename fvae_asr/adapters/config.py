"""Adapter configurations: plain LoRA (the baseline) and FVAE-LoRA, with the paper's defaults."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

TargetSpec = list[str] | str
MAX_DECODER_LAYERS = 32  # a bound that keeps a loaded config from building a million layers before its check

logger = logging.getLogger(__name__)


def _check_positive_int(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{type(owner).__name__}.{name} must be a positive integer, got {value!r}")


def _check_finite_number(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{type(owner).__name__}.{name} must be a finite number, got {value!r}")


def _check_non_negative(owner: object, name: str) -> None:
    _check_finite_number(owner, name)
    value = getattr(owner, name)
    if not value >= 0:
        raise ValueError(f"{type(owner).__name__}.{name} must be a number >= 0, got {value!r}")


def _check_probability(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{type(owner).__name__}.{name} must be in [0, 1), got {value!r}")


def _check_module_spec(owner: object, name: str, allow_empty: bool) -> None:
    """A module spec is a regex (full match on the module name) or a list of name suffixes."""
    value = getattr(owner, name)
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"{type(owner).__name__}.{name} is not a valid regex: {err}") from err
        return
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(
            f"{type(owner).__name__}.{name} must be a regex string or a list of module-name suffixes, got {value!r}"
        )
    if not value and not allow_empty:
        raise ValueError(f"{type(owner).__name__}.{name} must name at least one module")
    setattr(owner, name, list(value))


# PEFT's LoraConfig names of our fields: a PEFT user's keywords build the same config.
PEFT_FIELD_NAMES = {"r": "rank", "lora_dropout": "dropout", "modules_to_save": "trainable_modules"}


def accepts_peft_names(cls: type) -> type:
    """Make a config dataclass also accept PEFT's keywords (``r``, ``lora_dropout``, ``modules_to_save``); giving a
    field under both names is a TypeError naming both."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for peft_name, ours in PEFT_FIELD_NAMES.items():
            if peft_name in kwargs:
                if ours in kwargs:
                    raise TypeError(f"{cls.__name__} got both '{peft_name}' (PEFT's name) and '{ours}': give one")
                kwargs[ours] = kwargs.pop(peft_name)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


@dataclass
class AdapterConfig:
    """Fields shared by every adapter kind: where to inject and what else stays trainable. ``LoRAConfig`` and
    ``FVAELoRAConfig`` document them with their own defaults."""

    adapter_type: ClassVar[str] = ""
    absent_in_old_files: ClassVar[dict[str, Any]] = {}
    # Fields that change how the adapter computes (memory, speed), never the values it computes.
    computation_only: ClassVar[frozenset[str]] = frozenset()

    rank: int = 16
    lora_alpha: float = 16.0
    target_modules: TargetSpec = field(default_factory=lambda: ["q_proj", "k_proj"])
    trainable_modules: TargetSpec = field(default_factory=list)
    check_finite: bool = True

    def __post_init__(self) -> None:
        _check_positive_int(self, "rank")
        _check_non_negative(self, "lora_alpha")
        _check_module_spec(self, "target_modules", allow_empty=False)
        _check_module_spec(self, "trainable_modules", allow_empty=True)
        if not isinstance(self.check_finite, bool):
            raise ValueError(f"{type(self).__name__}.check_finite must be a bool, got {self.check_finite!r}")

    @property
    def scaling(self) -> float:
        """LoRA's output scale s = lora_alpha / r."""
        return self.lora_alpha / self.rank

    @property
    def r(self) -> int:
        """``rank`` under PEFT's name."""
        return self.rank

    @property
    def lora_dropout(self) -> float:
        """``dropout`` under PEFT's name: LoRA's input dropout; FVAE-LoRA's dropout after each encoder's hidden
        layer (its adapter branch's dropout)."""
        return self.dropout

    @property
    def modules_to_save(self) -> TargetSpec:
        """``trainable_modules`` under PEFT's name."""
        return self.trainable_modules

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus the adapter type, as written to ``adapter_config.json``."""
        return {"adapter_type": self.adapter_type, **dataclasses.asdict(self)}


@accepts_peft_names
@dataclass
class LoRAConfig(AdapterConfig):
    """Plain LoRA with PEFT's maths: kaiming-uniform A, zero B, scale lora_alpha/r (or /sqrt(r) with rsLoRA).

    Attributes:
        rank: r, the inner dimension of ``B A``.
        lora_alpha: the update's scale is ``lora_alpha / rank`` (16 / 16 = 1: the authors' LoRA baseline and PEFT's
            convention).
        target_modules: the ``nn.Linear`` modules to adapt: a list of module-name suffixes (``["q_proj", "k_proj"]``)
            or a regex that must match a whole module name.
        trainable_modules: other modules that train with the adapters (a task head: ``["classifier"]``), named as
            ``target_modules``; everything else is frozen.
        check_finite: raise on a non-finite layer input instead of letting NaN or Inf flow on silently.
        dropout: dropout on the adapter's input (``lora_dropout`` in PEFT).
        use_rslora: rank-stabilised LoRA: scale ``lora_alpha / sqrt(rank)``.
    """

    adapter_type: ClassVar[str] = "lora"

    dropout: float = 0.0
    use_rslora: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_probability(self, "dropout")

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (self.rank**0.5 if self.use_rslora else self.rank)


@accepts_peft_names
@dataclass
class FVAELoRAConfig(AdapterConfig):
    """FVAE-LoRA: the LoRA update is driven by z1 of a two-latent VAE over the layer input.

    Per adapted layer and real frame, the auxiliary loss is
    ``alpha * NLL(x) + beta * KL(q1 || N(0, I)) - delta * Gamma (+ beta_z2 * KL(q2 || p2))`` with the
    single-sample ``Gamma = log p2(z2) - log p1(z1)`` in nats (see docs/method.md).

    Defaults reproduce what the authors' released code ran (idiap/FVAE-LoRA, ``image_main.py``), not only the
    paper's table: rank 16, z2_dim = rank, encoder_hidden = rank, prior mean of z2 = 1.5, alpha = beta = 1,
    lambda = 1e-3, ``delta = 2 / rank``; a decoder of 3 hidden layers of 128 with dropout 0.1 after each; the
    update scale ``lora_alpha / rank`` with ``lora_alpha = 8`` (s = 0.5 at rank 16: their FVAE-LoRA never passes
    ``lora_alpha``, so their config's default 8 applies); log-variances clamped to [-20, 20]. The paper's table
    variant is ``decoder_layers=1, decoder_dropout=0.0``.

    The authors write the repulsion as ``mean((z2 - 1.5)^2) - mean(z1^2)``, means over latent elements, which
    equals ``-(2 / rank) * Gamma`` when z2_dim = rank: so their weight 1 is our delta = 2 / rank, and the default
    loss equals theirs.

    The paper's literal ``delta = 1`` (= beta) degenerates: in expectation under q1, ``-delta * Gamma`` holds
    ``+delta * E[log p1(z1)]``, which cancels the cross-entropy part of ``beta * KL(q1 || p1)`` and leaves only
    ``-beta * H(q1)``, so the z1 variance grows until ``logvar_clamp``. It stays allowed, with a warning,
    whenever delta >= beta. ``beta_z2 > 0`` with ``delta = 0`` gives the VAE2LAT ablation;
    ``prior_mean_z2 = 0`` gives identical priors (no factorisation).

    Attributes:
        rank: r, the size of the task-salient latent z1 (and of ``B``'s input).
        lora_alpha: the update's scale is ``lora_alpha / rank``; 8 gives 0.5 at rank 16, as the authors' code ran.
        target_modules: the ``nn.Linear`` modules to adapt: a list of module-name suffixes (``["q_proj", "k_proj"]``)
            or a regex that must match a whole module name.
        trainable_modules: other modules that train with the adapters (a task head: ``["classifier"]``), named as
            ``target_modules``; everything else is frozen.
        check_finite: raise on a non-finite layer input instead of letting NaN or Inf flow on silently.
        z2_dim: the size of the residual latent z2; None means equal to ``rank``.
        encoder_hidden: the width of each encoder's hidden layer; None means equal to ``rank``.
        decoder_hidden: the width of the decoder's hidden layers.
        decoder_layers: the decoder's hidden layers (the authors' code: 3; the paper's table: 1).
        dropout: dropout after each encoder's hidden layer.
        decoder_dropout: dropout after each of the decoder's hidden layers.
        prior_mean_z2: the mean of z2's prior ``N(prior_mean_z2, I)``; 0 gives the identical-priors ablation.
        alpha: the weight of the reconstruction's negative log-likelihood.
        beta: the weight of ``KL(q1 || N(0, I))``.
        delta: the weight of the repulsive term Gamma; None means ``2 / rank`` (the authors' weight).
        beta_z2: the weight of ``KL(q2 || p2)``: the VAE2LAT ablation, 0 in FVAE-LoRA.
        aux_weight: lambda in ``L = L_task + lambda * aux``, read by the recipe, ``FVAETrainer`` and ``aux_weight``.
        logvar_clamp: log-variances are clamped to ``[-logvar_clamp, logvar_clamp]``.
        b_init_std: ``B`` starts as ``N(0, b_init_std)``, as in the authors' code (a fresh adapter's eval output
            still equals the base model's: the encoder heads start at zero).
        recompute_scoring: recompute the scoring branch (encoders, decoder, loss terms) in the backward pass instead
            of keeping its activations: less training memory for more step time, the same loss and gradients
            (docs/performance.md).
    """

    adapter_type: ClassVar[str] = "fvae_lora"
    # Fields that files written by older versions lack, with the value those versions used (not today's default).
    absent_in_old_files: ClassVar[dict[str, Any]] = {"decoder_dropout": 0.0}
    computation_only: ClassVar[frozenset[str]] = frozenset({"recompute_scoring"})

    lora_alpha: float = 8.0
    z2_dim: int | None = None
    encoder_hidden: int | None = None
    decoder_hidden: int = 128
    decoder_layers: int = 3
    dropout: float = 0.1
    decoder_dropout: float = 0.1
    prior_mean_z2: float = 1.5
    alpha: float = 1.0
    beta: float = 1.0
    delta: float | None = None
    beta_z2: float = 0.0
    aux_weight: float = 1e-3
    logvar_clamp: float = 20.0
    b_init_std: float = 0.02
    recompute_scoring: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.z2_dim is None:
            self.z2_dim = self.rank
        if self.encoder_hidden is None:
            self.encoder_hidden = self.rank
        if self.delta is None:
            self.delta = 2.0 / self.rank
        for name in ("z2_dim", "encoder_hidden", "decoder_hidden", "decoder_layers"):
            _check_positive_int(self, name)
        for name in ("alpha", "beta", "delta", "beta_z2", "aux_weight", "b_init_std"):
            _check_non_negative(self, name)
        if self.decoder_layers > MAX_DECODER_LAYERS:
            raise ValueError(
                f"FVAELoRAConfig.decoder_layers must be at most {MAX_DECODER_LAYERS} (the authors' "
                f"code uses 3), got {self.decoder_layers!r}"
            )
        _check_probability(self, "dropout")
        _check_probability(self, "decoder_dropout")
        _check_finite_number(self, "prior_mean_z2")
        if not isinstance(self.recompute_scoring, bool):
            raise ValueError(f"FVAELoRAConfig.recompute_scoring must be a bool, got {self.recompute_scoring!r}")
        if not (isinstance(self.logvar_clamp, (int, float)) and 0 < self.logvar_clamp <= 30):
            raise ValueError(f"FVAELoRAConfig.logvar_clamp must be in (0, 30], got {self.logvar_clamp!r}")
        if self.delta > 0 and self.delta >= self.beta:
            logger.warning(
                "FVAELoRAConfig: delta = %g >= beta = %g degenerates: the repulsive term cancels the KL's pull "
                "on z1, which leaves -beta * H(q1), so the z1 variance grows until logvar_clamp. The authors' "
                "code weights it as delta = 2 / rank = %g.",
                self.delta,
                self.beta,
                2.0 / self.rank,
            )


CONFIG_TYPES: dict[str, type[AdapterConfig]] = {c.adapter_type: c for c in (LoRAConfig, FVAELoRAConfig)}


def config_from_dict(data: dict[str, Any]) -> AdapterConfig:
    """Rebuild a config from ``to_dict`` output; unknown types or fields raise ValueError naming them.

    A field that a file written by an older version lacks takes the value that version used, not today's default,
    so an old adapter loads as it trained (``absent_in_old_files``).
    """
    data = dict(data)
    kind = data.pop("adapter_type", None)
    if kind not in CONFIG_TYPES:
        raise ValueError(f"adapter_type must be one of {sorted(CONFIG_TYPES)}, got {kind!r}")
    cls = CONFIG_TYPES[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return cls(**{**cls.absent_in_old_files, **data})
