"""Recipe hyperparameter files, where one may extend another: a file with ``extends: BASE`` holds overrides of
BASE (a path relative to the file), applied before the command line's. The demo's yaml is such a file, so it
states only what differs from the recipe's.

Overrides follow hyperpyyaml: a mapping merges into the base's mapping (an object keeps its class and changes the
arguments given), any other value replaces the base's. So an object of another class is given with its arguments
as a list (``key: !new:Class [arg, ...]``), and a mapping that names another class is refused (docs/hparams.md).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ruamel.yaml
from hyperpyyaml import load_hyperpyyaml
from hyperpyyaml.core import recursive_update

EXTENDS_KEY = "extends"
# Settings with a new name whose old name is still read (old -> new): a yaml written before the rename keeps its
# key, and an override under either name sets the one the file has. ``adapter`` became ``method`` in 0.3, since
# ``full`` and ``frozen`` train no adapter.
ALIASES = {"adapter": "method"}


def hparams_source(
    hparams_file: str | Path,
    overrides: str | Mapping | None = None,
    renamed: Mapping[str, str] | None = None,
    _chain: tuple[Path, ...] = (),
) -> tuple[Path, dict[str, Any]]:
    """The yaml file to load and the overrides to apply to it.

    A plain file comes back with ``overrides`` as a mapping; a file that extends another gives the base (followed
    to the end of a chain) with this file's keys updated by ``overrides``. Tags such as ``!ref`` are kept for
    hyperpyyaml. Raises ``ValueError`` naming the file for a file that is missing, a folder, not YAML or not a
    mapping of settings, a missing base, a chain of ``extends:`` that comes back to a file, or an override of a
    key it lacks (an old name in ``renamed``, old -> new, is named with its new name).
    """
    path = Path(hparams_file)
    given = as_mapping(overrides)
    tree = _read_settings(path)
    if EXTENDS_KEY in tree:
        base = (path.parent / str(tree.pop(EXTENDS_KEY))).resolve()
        chain = (*_chain, path.resolve())
        if base in chain:
            cycle = " -> ".join(str(file) for file in (*chain[chain.index(base) :], base))
            raise ValueError(f"{path}: {EXTENDS_KEY}: the chain of files comes back to {base} ({cycle})")
        if not base.is_file():
            raise ValueError(f"{path}: {EXTENDS_KEY}: {base} does not exist")
        recursive_update(tree, given)
        return hparams_source(base, tree, renamed, chain)
    _check_classes_kept(path, tree, given)
    given = _named_as_in_file(path, tree, given)
    unknown = sorted(set(given) - set(tree))
    for old in unknown:
        if old in (renamed or {}):
            raise ValueError(f"{old} is now called {renamed[old]}: set {renamed[old]} instead")
    if unknown:
        raise ValueError(
            f"{path} has no {', '.join(unknown)} (overrides, from the command line or from a file that "
            "extends it, must name its keys)"
        )
    return path, given


def _named_as_in_file(path: Path, tree: Mapping, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with each setting of ``ALIASES`` under the name the file uses (the new one, unless the file has
    only the old); the two names with different values are a ValueError naming both."""
    renamed = dict(given)
    for old, new in ALIASES.items():
        used, other = (old, new) if old in tree and new not in tree else (new, old)
        if other not in renamed:
            continue
        value = renamed.pop(other)
        if used in renamed and renamed[used] != value:
            raise ValueError(
                f"{path}: {old} is the old name of {new}, and the two are given different values "
                f"({old}: {given[old]!r}, {new}: {given[new]!r}); give {new} only"
            )
        renamed[used] = value
    return renamed


def aliased(hparams: Mapping[str, Any], key: str) -> Any:
    """A loaded yaml's ``key``, or its value under its old name (``ALIASES``) in a file written before the rename."""
    if key not in hparams:
        old = next((old for old, new in ALIASES.items() if new == key and old in hparams), None)
        if old is not None:
            return hparams[old]
    return hparams[key]


def _read_settings(path: Path) -> Any:
    """A yaml file's top-level mapping (round trip: tags kept); anything else is a ValueError naming the file."""
    if path.is_dir():
        raise ValueError(f"{path}: a folder, not a yaml file of settings")
    try:
        with open(path, encoding="utf-8") as fin:
            tree = _round_trip().load(fin)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such yaml file of settings") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read it ({err})") from None
    except ruamel.yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}: not valid YAML{where} ({getattr(err, 'problem', None) or err})") from None
    if tree is None:
        return {}
    if not isinstance(tree, Mapping):
        raise ValueError(f"{path}: expected a mapping of settings (key: value lines), got a {type(tree).__name__}")
    return tree


def load_hparams(hparams_file: str | Path, overrides: str | Mapping | None = None) -> dict[str, Any]:
    """``hyperpyyaml.load_hyperpyyaml`` for a file that may extend another: the objects built, as the recipe
    builds them."""
    path, merged = hparams_source(hparams_file, overrides)
    with open(path, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, merged)


def _check_classes_kept(path: Path, tree: Mapping, given: Mapping, prefix: str = "") -> None:
    """Refuse a mapping override that names another class than the base's object: hyperpyyaml would merge its
    keys into the base's object, keeping the base's class (a ``TypeError`` about an argument, after the run began)."""
    for key, value in given.items():
        if not isinstance(value, Mapping) or not isinstance(tree.get(key), Mapping):
            continue
        base_tag, new_tag = _tag(tree[key]), _tag(value)
        if new_tag and new_tag != base_tag:
            raise ValueError(
                f"{path}: {prefix}{key} is {base_tag or 'a mapping'} there, and an override with keyword arguments "
                f"is merged into it, so it cannot make it a {new_tag}: give the new object's arguments as a list, "
                f"which replaces it ({key}: {new_tag} [...]; see docs/hparams.md)"
            )
        _check_classes_kept(path, tree[key], value, f"{prefix}{key}.")


def _tag(node: object) -> str | None:
    """The yaml tag of a round-trip node (``!new:...``), or None."""
    return getattr(getattr(node, "tag", None), "value", None)


def as_mapping(overrides: str | Mapping | None) -> dict[str, Any]:
    """Overrides as SpeechBrain passes them (a yaml string) or as a mapping, as a dict (tags kept)."""
    if isinstance(overrides, str):
        return dict(_round_trip().load(io.StringIO(overrides)) or {})
    return dict(overrides or {})


def _round_trip() -> ruamel.yaml.YAML:
    return ruamel.yaml.YAML()  # round trip: keeps hyperpyyaml's tags
