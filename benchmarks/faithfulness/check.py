"""Our FVAE-LoRA layer against the authors' own layer class, same weights, same noise, same dropout masks.

Given a checkout of idiap/FVAE-LoRA (``--authors-repo``; nothing is downloaded), builds their
``FVAEPEFTLoraLayerWrapped`` with the ``FVAEPEFTConfig`` arguments of their ``image_main.py`` (latent_dim = r,
one encoder layer of width r with dropout 0.1, 3 decoder layers of 128 with dropout 0.1, z2 prior mean 1.5,
lambdas 1, and ``lora_alpha`` left at their config's default 8), and ``FVAELoRALinear`` with ``FVAELoRAConfig()``
defaults, on one shared frozen ``nn.Linear``. Their PEFT fork is imported from ``<repo>/peft/src`` (it must not
be shadowed by an already imported ``peft``). Their weights (randomly perturbed from their initialisation so that
no term is trivially zero) are copied into ours; their dropout masks and Gaussian noise are recorded and replayed
into ours (our single dropout draw over both encoders' hidden layers gets their two masks side by side). Prints
the max absolute differences of the train output, the per-layer loss, every gradient and the eval output.

    python -m benchmarks.faithfulness --authors-repo /tmp/fvae-authors --json docs/faithfulness/authors_layer.json
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fvae_asr.adapters.config import FVAELoRAConfig
from fvae_asr.adapters.layers import FVAELoRALinear
from fvae_asr.files import write_json

AUTHORS_LAYER_FILE = Path("peft/src/peft/tuners/fvae_peft/fvae_peft_mlp_layer.py")
_ADAPTER = "default"


class NoiseTape:
    """Records the dropout masks and standard-normal draws of one forward, or replays a given list of them.

    Patches ``torch.nn.functional.dropout`` (what ``nn.Dropout`` calls) and ``torch.randn_like``. In replay each
    call takes the next recorded tensor, which must have the shape the call asks for: the draw order is checked.
    """

    def __init__(self, replay: list[tuple[str, Tensor]] | None = None) -> None:
        self.records: list[tuple[str, Tensor]] = []
        self._replay = list(replay) if replay is not None else None

    def _next(self, kind: str, shape: torch.Size) -> Tensor | None:
        if self._replay is None:
            return None
        if not self._replay:
            raise RuntimeError(f"replay tape is empty at a {kind} call of shape {tuple(shape)}")
        got_kind, value = self._replay.pop(0)
        if got_kind != kind or value.shape != shape:
            raise RuntimeError(
                f"replay tape holds a {got_kind} of shape {tuple(value.shape)} where a {kind} of shape "
                f"{tuple(shape)} was drawn: the draw order differs"
            )
        return value

    def remaining(self) -> int:
        return len(self._replay or [])

    @contextlib.contextmanager
    def active(self) -> Iterator[NoiseTape]:
        real_dropout, real_randn_like = F.dropout, torch.randn_like

        def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
            if not training or p == 0.0:
                return input
            mask = self._next("dropout", input.shape)
            if mask is None:
                mask = torch.bernoulli(torch.full_like(input, 1.0 - p)) / (1.0 - p)
            self.records.append(("dropout", mask))
            return input * mask

        def randn_like(input: Tensor, **kwargs) -> Tensor:
            eps = self._next("randn", input.shape)
            if eps is None:
                eps = real_randn_like(input, **kwargs)
            self.records.append(("randn", eps))
            return eps

        F.dropout, torch.randn_like = dropout, randn_like
        try:
            yield self
        finally:
            F.dropout, torch.randn_like = real_dropout, real_randn_like


def merge_encoder_masks(records: list[tuple[str, Tensor]]) -> list[tuple[str, Tensor]]:
    """Their tape (encoder 1 mask, encoder 2 mask, then the rest) as ours draws it: one mask over both encoders."""
    (kind1, mask1), (kind2, mask2), *rest = records
    if (kind1, kind2) != ("dropout", "dropout"):
        raise RuntimeError(f"expected two encoder dropout masks first, got {kind1} and {kind2}")
    return [("dropout", torch.cat([mask1, mask2], dim=-1)), *rest]


def parameter_map(decoder_layers: int) -> dict[str, str]:
    """Our parameter name -> theirs; every one is the same variable (the decoder std is raw in both)."""
    fvae = f"lora_A.{_ADAPTER}."
    mapping = {"lora_B.weight": f"lora_B.{_ADAPTER}"}
    for index, latent in enumerate(("z1", "z2")):
        theirs = f"{fvae}views_conditionalGaussianEncoders_list.{index}."
        for ours_part, their_part in (("hidden", "layers.0"), ("mean", "mean"), ("logvar", "logvar")):
            for leaf in ("weight", "bias"):
                mapping[f"encoder_{latent}.{ours_part}.{leaf}"] = f"{theirs}{their_part}.{leaf}"
    decoder = f"{fvae}views_conditionalGaussianDecoders."
    for layer in range(decoder_layers + 1):
        their_part = f"layers.{layer}" if layer < decoder_layers else "output_layer"
        for leaf in ("weight", "bias"):
            mapping[f"decoder.{2 * layer}.{leaf}"] = f"{decoder}{their_part}.{leaf}"
    mapping["decoder_std"] = f"{decoder}scale_tril"
    return mapping


def copy_weights(theirs: nn.Module, ours: nn.Module, mapping: dict[str, str]) -> None:
    """Copies their adapter parameters into ours by ``mapping``; every trainable parameter of ours is mapped."""
    their_params, our_params = dict(theirs.named_parameters()), dict(ours.named_parameters())
    unmapped = sorted(n for n, p in our_params.items() if p.requires_grad and n not in mapping)
    if unmapped:
        raise KeyError(f"our parameters with no counterpart in the map: {unmapped}")
    with torch.no_grad():
        for name, their_name in mapping.items():
            our_params[name].copy_(their_params[their_name])


def mapped_differences(
    theirs: nn.Module, ours: nn.Module, mapping: dict[str, str], of: Callable[[Tensor], Tensor | None]
) -> dict[str, dict[str, float]]:
    """Max |ours - theirs| of ``of(parameter)`` (its ``.grad``, or the parameter itself) per mapped parameter:
    "abs", and "rel" to their max |value|."""
    their_params, our_params = dict(theirs.named_parameters()), dict(ours.named_parameters())
    out = {}
    for name, their_name in mapping.items():
        their_value, our_value = of(their_params[their_name]).detach(), of(our_params[name]).detach()
        difference = (our_value - their_value).abs().max().item()
        out[name] = {"abs": difference, "rel": difference / their_value.abs().max().item()}
    return out


def perturb_(module: nn.Module, generator: torch.Generator, std: float = 0.05) -> None:
    """Adds N(0, std) to every trainable parameter (a positive factor for the decoder's raw std), in place."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype) * std
            if name.endswith("scale_tril"):
                param.mul_(torch.exp(noise * 4))
            else:
                param.add_(noise)


def import_authors_layer(repo: Path) -> tuple[type, type]:
    """(FVAEPEFTConfig, FVAEPEFTLoraLayerWrapped) from their PEFT fork under ``repo/peft/src``."""
    if not (repo / AUTHORS_LAYER_FILE).is_file():
        raise FileNotFoundError(f"{repo}: no {AUTHORS_LAYER_FILE}; give a checkout of idiap/FVAE-LoRA")
    src = (repo / "peft/src").resolve()
    loaded = sys.modules.get("peft")
    if loaded is not None and not Path(loaded.__file__).resolve().is_relative_to(src):
        raise RuntimeError(f"another peft is already imported ({loaded.__file__}); run this in a fresh process")
    sys.path.insert(0, str(src))
    from peft import FVAEPEFTConfig
    from peft.tuners.fvae_peft.fvae_peft_mlp_layer import FVAEPEFTLoraLayerWrapped

    return FVAEPEFTConfig, FVAEPEFTLoraLayerWrapped


def build_authors_layer(config_cls: type, layer_cls: type, base: nn.Linear, rank: int) -> nn.Module:
    """Their layer with the FVAEPEFTConfig arguments of their image_main.py (lambdas 1, lora_alpha left default)."""
    config = config_cls(
        peft_type="FVAE_PEFT",
        r=rank,
        latent_dim=rank,
        latent_fusion="concat",
        enc_num_of_layer=1,
        enc_hidden_layer=rank,
        enc_dropout=0.1,
        encoder_use_common_hidden_layer=True,
        dec_num_of_layer=3,
        dec_hidden_layer=128,
        z2_latent_mean=1.5,
        z2_latent_std=1,
        z1z2_orthogonal_reg=0,
        lambda_downstream=1000,
        lambda_reconstruction=1,
        lambda_z2_l2=1,
        lambda_z1_l2=1,
        lambda_kl_z1=1,
        target_modules=["query", "value"],
    )
    # As their FVAEPEFTModel._create_and_replace passes them: r, lora_alpha and lora_dropout from the config.
    return layer_cls(base, _ADAPTER, config, r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout)


def authors_loss(layer: nn.Module) -> Tensor:
    """The per-layer loss their forward stores (lambda_rec * -log p + lambda_z2 * z2_l2 - lambda_z1 * z1_l2 + KL)."""
    return layer.fvae_peft_current_elbo


def run_step(layer: nn.Module, x: Tensor, grad_out: Tensor, tape: NoiseTape, loss_of: Callable) -> dict:
    """One training forward under ``tape``; backward of ``<out, grad_out> + loss``; returns output and loss."""
    layer.train()
    layer.zero_grad(set_to_none=True)
    with tape.active():
        out = layer(x)
    loss = loss_of(layer)
    ((out * grad_out).sum() + loss).backward()
    return {"output": out.detach(), "loss": loss.detach()}


def compare(theirs: nn.Module, ours: FVAELoRALinear, x: Tensor, seed: int) -> dict:
    """Max differences between the two layers on x: train output, loss, every gradient, eval output."""
    mapping = parameter_map(ours.config.decoder_layers)
    copy_weights(theirs, ours, mapping)
    generator = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(x.shape[:-1] + (ours.out_features,), generator=generator).to(x.dtype)
    tape = NoiseTape()
    their_step = run_step(theirs, x, grad_out, tape, authors_loss)
    replay = NoiseTape(merge_encoder_masks(tape.records))
    our_step = run_step(ours, x, grad_out, replay, lambda layer: layer.last_terms["total"])
    if replay.remaining():
        raise RuntimeError(f"our layer drew {replay.remaining()} fewer noise tensors than theirs")
    unused = [
        n
        for n, p in theirs.named_parameters()
        if p.requires_grad and p.grad is not None and n not in set(mapping.values())
    ]
    theirs.eval(), ours.eval()
    with torch.no_grad():
        eval_difference = (theirs(x) - ours(x)).abs().max().item()
    gradients = mapped_differences(theirs, ours, mapping, lambda param: param.grad)
    loss_t, loss_o = their_step["loss"].item(), our_step["loss"].item()
    return {
        "train_output_max_abs_diff": (their_step["output"] - our_step["output"]).abs().max().item(),
        "loss_authors": loss_t,
        "loss_ours": loss_o,
        "loss_abs_diff": abs(loss_t - loss_o),
        "loss_rel_diff": abs(loss_t - loss_o) / abs(loss_t),
        "gradient_max_abs_diff": max(g["abs"] for g in gradients.values()),
        "gradient_max_rel_diff": max(g["rel"] for g in gradients.values()),
        "gradient_max_abs_diff_by_parameter": gradients,
        "eval_output_max_abs_diff": eval_difference,
        "noise_tensors_shared": len(tape.records),
        "their_parameters_with_gradient_not_mapped": unused,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faithfulness", description=__doc__.splitlines()[0])
    parser.add_argument("--authors-repo", type=Path, required=True, help="a checkout of idiap/FVAE-LoRA")
    parser.add_argument("--json", type=Path, help="write the one-step layer comparison here")
    parser.add_argument("--trajectory-json", type=Path, help="write the training-trajectory comparison here")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--double", action="store_true", help="run both sides in float64")
    parser.add_argument("--steps", type=int, default=100, help="training steps of the trajectory (0: none)")
    parser.add_argument("--report-steps", type=int, nargs="+", default=[1, 10, 100])
    args = parser.parse_args(argv)
    try:
        config_cls, layer_cls = import_authors_layer(args.authors_repo)
    except (FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dtype = torch.float64 if args.double else torch.float32
    layer_result = one_step(args, config_cls, layer_cls, dtype)
    if args.json:
        write_json(args.json, layer_result)
    if args.steps > 0:
        trajectory_result = trajectory(args, config_cls, layer_cls, dtype)
        if args.trajectory_json:
            write_json(args.trajectory_json, trajectory_result)
    return 0


def one_step(args: argparse.Namespace, config_cls: type, layer_cls: type, dtype: torch.dtype) -> dict:
    """One training step of their layer and ours from the same weights and noise; printed and returned."""
    torch.manual_seed(args.seed)
    base = nn.Linear(args.features, args.features).requires_grad_(False)
    theirs = build_authors_layer(config_cls, layer_cls, base, args.rank)  # built in float32, as their code builds it
    base, theirs = base.to(dtype), theirs.to(dtype)
    perturb_(theirs, torch.Generator().manual_seed(args.seed + 1))
    config = FVAELoRAConfig(rank=args.rank)
    ours = FVAELoRALinear(base, config, "faithfulness")
    x = torch.randn(args.batch, args.frames, args.features, generator=torch.Generator().manual_seed(args.seed + 2))
    result = compare(theirs, ours, x.to(dtype), args.seed + 3)
    result["setup"] = {
        "rank": args.rank,
        "features": args.features,
        "batch": args.batch,
        "frames": args.frames,
        "seed": args.seed,
        "dtype": str(dtype),
        "our_config": config.to_dict(),
        "their_scaling": theirs.scaling[_ADAPTER] / (args.rank + 1e-5),
        "authors_import": "their PEFT fork from <repo>/peft/src, unmodified",
        "torch": torch.__version__,
    }
    print(f"{'quantity':<34} max |ours - theirs|  (relative)")
    print(f"{'train output':<34} {result['train_output_max_abs_diff']:.3g}")
    print(
        f"{'per-layer loss':<34} {result['loss_abs_diff']:.3g} (relative {result['loss_rel_diff']:.3g}; "
        f"theirs {result['loss_authors']:.6g}, ours {result['loss_ours']:.6g})"
    )
    for name, value in result["gradient_max_abs_diff_by_parameter"].items():
        print(f"{'grad ' + name:<34} {value['abs']:<19.3g} ({value['rel']:.3g})")
    print(f"{'eval output':<34} {result['eval_output_max_abs_diff']:.3g}")
    print(
        f"scale: ours {config.scaling:g}, theirs {result['setup']['their_scaling']:.7g}; "
        f"noise tensors shared {result['noise_tensors_shared']}; their trained parameters not mapped: "
        f"{result['their_parameters_with_gradient_not_mapped'] or 'none'}"
    )
    return result


def trajectory(args: argparse.Namespace, config_cls: type, layer_cls: type, dtype: torch.dtype) -> dict:
    """Their training and ours side by side for ``--steps`` steps (``trajectory.py``); printed and returned."""
    from benchmarks.faithfulness.trajectory import build_pair, random_batches, train_side_by_side

    classes = 4
    theirs, ours = build_pair(config_cls, layer_cls, args.features, classes, args.rank, dtype, args.seed)
    batches = random_batches(args.steps, args.batch, args.frames, args.features, classes, dtype, args.seed + 1)
    print(f"\ntraining {args.steps} steps side by side ({dtype}): largest relative parameter difference")
    print(f"{'step':>6}  {'max rel diff':>12}  {'parameter':<44} {'loss theirs':>12} {'ours x 1000':>12}")

    def show(step: int, report: dict) -> None:
        print(
            f"{step:>6}  {report['largest_relative_difference']:>12.3g}  {report['worst_parameter']:<44} "
            f"{report['loss_authors']:>12.6g} {report['loss_ours_times_1000']:>12.6g}"
        )

    reports = train_side_by_side(theirs, ours, batches, [s for s in args.report_steps if s <= args.steps], show)
    return {
        "reports": reports,
        "setup": {
            "steps": args.steps,
            "rank": args.rank,
            "features": args.features,
            "batch": args.batch,
            "frames": args.frames,
            "classes": classes,
            "seed": args.seed,
            "dtype": str(dtype),
            "our_config": ours.query.config.to_dict(),
            "torch": torch.__version__,
        },
    }
