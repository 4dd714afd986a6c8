"""PEFT's verbs for our adapters, FVAE-LoRA and LoRA alike: ``get_fvae_model`` returns a ``PeftModel``-like
``FVAEModel`` (named adapters, ``disable_adapter``, ``save_pretrained``/``from_pretrained``, ``merge_and_unload``),
and ``inject_adapter_in_model`` takes PEFT's arguments in PEFT's order.

Upstream PEFT cannot take a third-party method without an entry in its closed ``PeftType`` enum, so a PEFT user's
script runs here with ``peft.get_peft_model`` swapped for ``get_fvae_model``. Several adapters share one base: the
model holds the active adapter's layers (and its own copies of the trainable modules, PEFT's ``modules_to_save``),
the wrapper keeps the others aside and swaps them in; ``disable_adapter`` puts the base modules themselves back,
so its outputs are the base model's bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fvae_asr.adapters.checkpoint import CONFIG_NAME, _saved_config, load_adapter, read_adapter_config, save_adapter
from fvae_asr.adapters.config import AdapterConfig, LoRAConfig, TargetSpec
from fvae_asr.adapters.layers import AdaptedLinear
from fvae_asr.adapters.model import (
    ADAPTER_STATE_ATTR,
    AdapterState,
    _set_submodule,
    adapter_state,
    has_adapters,
    inject,
    merge_adapters,
    module_matches,
)

DEFAULT_ADAPTER = "default"  # PEFT's name of the first adapter; saved in the folder itself, others in subfolders
MODEL_CARD_NAME = "README.md"


@dataclass(frozen=True)
class _Adapter:
    """One named adapter: what ``inject`` recorded, and the module each path of the model holds while it is active
    (an adapter layer, or this adapter's copy of a trainable module with any adapter layers inside it)."""

    state: AdapterState
    modules: dict[str, nn.Module]


def _outermost(names: list[str]) -> list[str]:
    """The names not inside another of the names (a module and its children: the module)."""
    return [name for name in names if not any(name.startswith(f"{other}.") for other in names)]


class FVAEModel(nn.Module):
    """A model with named adapters and PEFT's ``PeftModel`` verbs; build it with ``get_fvae_model``.

    ``forward`` and unknown attributes go to the wrapped model (``get_base_model()``), which holds the active
    adapter, so ``fvae_asr.aux_loss``, ``save_adapter`` and ``FVAETrainer`` work on either. Only the active
    adapter's weights are among the wrapped model's parameters; ``to()``, ``train()`` and ``eval()`` on this
    wrapper move and switch the others too.
    """

    def __init__(self, model: nn.Module, peft_config: AdapterConfig, adapter_name: str = DEFAULT_ADAPTER) -> None:
        """Args:
        model: the model to adapt, in place (as PEFT's ``get_peft_model`` does).
        peft_config: the first adapter's ``FVAELoRAConfig`` or ``LoRAConfig``.
        adapter_name: its name.
        """
        self._start(model)
        self.add_adapter(adapter_name, peft_config)
        self.set_adapter(adapter_name)

    def _start(self, model: nn.Module) -> None:
        nn.Module.__init__(self)
        if has_adapters(model):
            raise ValueError("the model already has adapters; wrap a fresh model")
        self.base_model = model  # PEFT nests it one level deeper (base_model.model); get_base_model() is the API
        self._adapters: dict[str, _Adapter] = {}
        self._originals: dict[str, nn.Module] = {}  # path -> the base model's own module there
        self._installed: str | None = None  # the adapter whose modules the model holds; None: the base modules
        self._inference_only: set[str] = set()  # loaded with is_trainable=False: never trainable
        self.active_adapter: str | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("base_model"), name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward, with the active adapter (none inside ``disable_adapter``)."""
        return self.base_model(*args, **kwargs)

    @property
    def peft_config(self) -> dict[str, AdapterConfig]:
        """Each adapter's config by name, as ``PeftModel.peft_config``."""
        return {name: adapter.state.config for name, adapter in self._adapters.items()}

    @property
    def active_adapters(self) -> list[str]:
        return [] if self.active_adapter is None else [self.active_adapter]

    def get_base_model(self) -> nn.Module:
        """The wrapped model (with the active adapter's layers in it)."""
        return self.base_model

    def add_adapter(self, adapter_name: str, peft_config: AdapterConfig) -> None:
        """Add a fresh adapter; as in PEFT it is not made active (``set_adapter`` does) and its weights stay frozen.

        Args:
            adapter_name: a new name.
            peft_config: its ``FVAELoRAConfig`` or ``LoRAConfig`` (FVAE-LoRA and LoRA adapters may be mixed).
        """
        if not isinstance(peft_config, AdapterConfig):
            raise TypeError(
                f"peft_config must be an fvae_asr FVAELoRAConfig or LoRAConfig, got {type(peft_config).__name__}: "
                "ours take PEFT's field names, e.g. LoRAConfig(r=16, lora_alpha=16, target_modules=[...])"
            )
        self._add(adapter_name, lambda model: inject(model, peft_config), peft_config.trainable_modules)

    def load_adapter(self, model_id: str | Path, adapter_name: str, is_trainable: bool = False) -> None:
        """Add an adapter from a ``save_pretrained`` folder (ours, or a PEFT LoRA adapter); not made active.

        Args:
            model_id: the folder.
            adapter_name: a new name.
            is_trainable: keep its weights trainable once active (PEFT's default False: inference only, and the
                model goes to eval mode).
        """
        directory = Path(model_id)
        config, _ = _saved_config(read_adapter_config(directory), directory / CONFIG_NAME)
        self._add(adapter_name, lambda model: load_adapter(model, directory), config.trainable_modules)
        if not is_trainable:
            self._inference_only.add(adapter_name)
            self.eval()

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, model_id: str | Path, adapter_name: str = DEFAULT_ADAPTER, is_trainable: bool = False
    ) -> FVAEModel:
        """The model with the adapter saved in ``model_id`` active (``PeftModel.from_pretrained``'s arguments).

        Args:
            model: the base model (changed in place).
            model_id: a ``save_pretrained`` folder, ours or PEFT's (LoRA).
            adapter_name: the name to give the adapter.
            is_trainable: keep its weights trainable; by default, as in PEFT, they are frozen and the model is in
                eval mode.
        """
        wrapper = cls.__new__(cls)
        wrapper._start(model)
        wrapper.load_adapter(model_id, adapter_name, is_trainable)
        wrapper.set_adapter(adapter_name)
        return wrapper

    def set_adapter(self, adapter_name: str) -> None:
        """Make ``adapter_name`` the active adapter, and the only trainable one (unless loaded for inference)."""
        self._check_known(adapter_name)
        for adapter in self._adapters.values():
            for module in adapter.modules.values():
                module.requires_grad_(False)
        if adapter_name not in self._inference_only:
            _mark_trainable(self._adapters[adapter_name])
        self._install(adapter_name)
        self.active_adapter = adapter_name

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter; if it was active, the first remaining one becomes active (none left: the base model)."""
        self._check_known(adapter_name)
        if self._installed == adapter_name:
            self._install(None)
        self._adapters.pop(adapter_name).state.forward_hook.remove()
        self._inference_only.discard(adapter_name)
        if self.active_adapter == adapter_name:
            self.active_adapter = None
            if self._adapters:
                self.set_adapter(next(iter(self._adapters)))

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Within the block the model holds the base model's own modules, hence gives its outputs bit for bit."""
        self._install(None)
        try:
            yield
        finally:
            self._install(self.active_adapter)

    def merge_and_unload(self) -> nn.Module:
        """Fold the active LoRA adapter into the base weights and return the plain model (its trainable modules
        are the adapter's copies, as in PEFT); other adapters are dropped. FVAE-LoRA is refused before any change."""
        config = self._adapters[self._active()].state.config
        if not isinstance(config, LoRAConfig):
            raise TypeError(
                f"adapter '{self.active_adapter}' is FVAE-LoRA, which cannot be merged: its update s * B mu1(x) "
                "depends nonlinearly on the input (use unload() to remove it)"
            )
        merge_adapters(self.base_model)
        return self._drop_all()

    def unload(self) -> nn.Module:
        """Remove every adapter layer without merging and return the plain model; as in PEFT, the trainable
        modules stay the active adapter's copies."""
        active = self._adapters[self._active()]
        kept = {path: active.modules[path] for path in _trainable_paths(active)}
        self._install(None)
        for path, module in kept.items():
            _set_submodule(self.base_model, path, _without_adapter_layers(module))
        return self._drop_all()

    def save_pretrained(self, save_directory: str | Path, selected_adapters: list[str] | None = None) -> None:
        """Save each adapter (or those selected) as PEFT does: ``default`` in ``save_directory``, any other in a
        subfolder of its name, each as ``adapter_config.json`` + ``adapter_model.safetensors`` (LoRA in PEFT's
        format); and a model card ``README.md`` in ``save_directory`` (one already there is kept).

        Args:
            save_directory: the folder (created if needed).
            selected_adapters: the names to save (default: all).
        """
        names = list(self._adapters) if selected_adapters is None else list(selected_adapters)
        for name in names:
            self._check_known(name)
        directory = Path(save_directory)
        for name in names:
            with self._installed_for(name):
                save_adapter(self.base_model, directory if name == DEFAULT_ADAPTER else directory / name)
        _write_model_card(directory, {name: self._adapters[name].state.config for name in names})

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts over the base model and every adapter, as PEFT counts them (which
        includes the base model's own copy of each trainable module)."""
        params = {id(p): p for p in self.parameters()}
        params.update({id(p): p for module in self._aside() for p in module.parameters()})
        trainable = sum(p.numel() for p in params.values() if p.requires_grad)
        return trainable, sum(p.numel() for p in params.values())

    def print_trainable_parameters(self) -> None:
        """Print PEFT's line: trainable params, all params, trainable%."""
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        )

    def _apply(self, fn: Callable, recurse: bool = True) -> FVAEModel:
        """``to()``, ``half()``...: the modules kept aside (other adapters, displaced base modules) follow."""
        super()._apply(fn, recurse)
        for module in self._aside():
            module._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> FVAEModel:
        super().train(mode)
        for module in self._aside():
            module.train(mode)
        return self

    def _add(self, name: str, adapt: Callable[[nn.Module], Any], trainable_spec: TargetSpec) -> None:
        """Adapt the bare base model with ``adapt`` (which injects), the new adapter having its own copies of the
        trainable modules; record what it put where, then set the previously installed adapter back."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"adapter name must be a non-empty string without '.', got {name!r}")
        if name in self._adapters:
            raise ValueError(f"adapter '{name}' already exists")
        previous = self._installed
        self._install(None)
        model = self.base_model
        trainable = _outermost([n for n, _ in model.named_modules() if n and module_matches(n, trainable_spec)])
        for path in trainable:
            original = self._originals.setdefault(path, model.get_submodule(path))
            _set_submodule(model, path, copy.deepcopy(original))
            original.requires_grad_(False)  # frozen like the rest of the base model; the copy trains
        try:
            adapt(model)
        except BaseException:
            self._undo_failed_add(trainable)
            self._install(previous)
            raise
        state = adapter_state(model)
        paths = _outermost(sorted(set(trainable) | set(state.adapted_modules)))
        for path in paths:
            if path not in trainable:
                self._originals.setdefault(path, model.get_submodule(path).base)
        adapter = _Adapter(state, {path: model.get_submodule(path) for path in paths})
        for module in adapter.modules.values():
            module.requires_grad_(False)  # trainable once set_adapter makes it active, as in PEFT
        self._adapters[name] = adapter
        self._installed = name
        self._install(previous)

    def _undo_failed_add(self, trainable: list[str]) -> None:
        """Put the base modules back after an injection or a load that failed half-way."""
        model = self.base_model
        for path in trainable:
            _set_submodule(model, path, self._originals[path])
        if has_adapters(model):
            state = adapter_state(model)
            for path in state.adapted_modules:
                layer = model.get_submodule(path)
                if isinstance(layer, AdaptedLinear):
                    _set_submodule(model, path, layer.base)
            state.forward_hook.remove()
            delattr(model, ADAPTER_STATE_ATTR)

    def _install(self, name: str | None) -> None:
        """Make the model hold adapter ``name``'s modules, or with None the base model's own."""
        if name == self._installed:
            return
        model = self.base_model
        if self._installed is not None:
            for path in self._adapters[self._installed].modules:
                _set_submodule(model, path, self._originals[path])
            delattr(model, ADAPTER_STATE_ATTR)
        if name is not None:
            adapter = self._adapters[name]
            for path, module in adapter.modules.items():
                _set_submodule(model, path, module)
            setattr(model, ADAPTER_STATE_ATTR, adapter.state)
        self._installed = name

    @contextmanager
    def _installed_for(self, name: str) -> Iterator[None]:
        previous = self._installed
        self._install(name)
        try:
            yield
        finally:
            self._install(previous)

    def _aside(self) -> list[nn.Module]:
        """The modules the model does not hold now: other adapters' and the base modules the installed one
        displaces."""
        aside = [m for name, a in self._adapters.items() if name != self._installed for m in a.modules.values()]
        if self._installed is not None:
            aside += [self._originals[path] for path in self._adapters[self._installed].modules]
        return aside

    def _drop_all(self) -> nn.Module:
        """Forget every adapter (the model keeps what it holds now) and return the model."""
        for adapter in self._adapters.values():
            adapter.state.forward_hook.remove()
        if has_adapters(self.base_model):
            delattr(self.base_model, ADAPTER_STATE_ATTR)
        self._adapters.clear()
        self._installed = self.active_adapter = None
        return self.base_model

    def _active(self) -> str:
        if self.active_adapter is None:
            raise ValueError("the model has no active adapter")
        return self.active_adapter

    def _check_known(self, name: str) -> None:
        if name not in self._adapters:
            raise ValueError(f"no adapter named {name!r}; the adapters are: {', '.join(map(repr, self._adapters))}")


def _trainable_paths(adapter: _Adapter) -> list[str]:
    """The paths where the adapter holds its own copy of a trainable module."""
    return [path for path in adapter.modules if path in adapter.state.trainable_modules]


def _mark_trainable(adapter: _Adapter) -> None:
    """What ``inject`` makes trainable: the adapter layers (their base only inside a trainable module) and the
    trainable modules."""
    trainable = adapter.state.trainable_modules
    for module in adapter.modules.values():
        module.requires_grad_(True)
        for layer in module.modules():
            if isinstance(layer, AdaptedLinear):
                layer.base.requires_grad_(any(layer.adapter_name.startswith(f"{t}.") for t in trainable))


def _without_adapter_layers(module: nn.Module) -> nn.Module:
    """``module`` with each adapter layer in it replaced by the layer it wraps."""
    if isinstance(module, AdaptedLinear):
        return module.base
    for name, layer in list(module.named_modules()):
        if isinstance(layer, AdaptedLinear):
            _set_submodule(module, name, layer.base)
    return module


def _write_model_card(directory: Path, configs: dict[str, AdapterConfig]) -> None:
    """A short ``README.md`` naming the adapters saved and how to load them, unless one is there already."""
    card = directory / MODEL_CARD_NAME
    if card.exists():
        return
    listed = "".join(
        f"- `{name}`{'' if name == DEFAULT_ADAPTER else f' (in `{name}/`)'}: "
        f"{type(config).__name__.removesuffix('Config')}, rank {config.rank}\n"
        for name, config in configs.items()
    )
    card.write_text(
        "---\nlibrary_name: fvae-asr\n---\n\n# Adapters\n\n"
        f"{listed}\nLoad with `fvae_asr.FVAEModel.from_pretrained(base_model, folder)` (LoRA adapters also with "
        "`peft.PeftModel.from_pretrained`).\n"
    )


def get_fvae_model(model: nn.Module, peft_config: AdapterConfig, adapter_name: str = DEFAULT_ADAPTER) -> FVAEModel:
    """PEFT's ``get_peft_model`` for our adapters: the model, adapted in place, wrapped with PEFT's verbs.

    Args:
        model: the model to adapt.
        peft_config: an ``FVAELoRAConfig`` or ``LoRAConfig`` (PEFT's field names ``r``, ``lora_dropout`` and
            ``modules_to_save`` are accepted).
        adapter_name: the first adapter's name.
    """
    return FVAEModel(model, peft_config, adapter_name)


def inject_adapter_in_model(
    peft_config: AdapterConfig, model: nn.Module, adapter_name: str = DEFAULT_ADAPTER
) -> nn.Module:
    """PEFT's ``inject_adapter_in_model`` (same argument order): adapter layers into ``model`` in place, the rest
    frozen; returns the model. One adapter per model; named adapters are ``FVAEModel``'s.

    Args:
        peft_config: an ``FVAELoRAConfig`` or ``LoRAConfig``.
        model: the model to adapt.
        adapter_name: only PEFT's default name: a bare model holds one adapter.
    """
    if adapter_name != DEFAULT_ADAPTER:
        raise ValueError(
            f"adapter_name {adapter_name!r}: a bare model holds one adapter; for named adapters use get_fvae_model"
        )
    inject(model, peft_config)
    return model
