"""The family registry (a leaf module: it imports no family).

Family packages call `register` when imported (`lvjax.families` imports them all);
`family_for` picks the one family that claims a `config.json` dict and its parameter keys.
"""

from __future__ import annotations

from lvjax.config import ConfigError

_FAMILIES: dict[str, object] = {}


def register(family):
    """Add a `Family` object (its `name` must be new). Returns it."""
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} registered twice")
    _FAMILIES[family.name] = family
    return family


def names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def family_for(hf: dict, keys=frozenset(), source: str = "config.json"):
    """The family of a `config.json` dict (by `model_type`, `architectures`, fields and parameter keys)."""
    if not isinstance(hf, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(hf).__name__}")
    keys = frozenset(keys)
    found = [f for f in _FAMILIES.values() if f.claims(hf, keys)]
    if len(found) == 1:
        return found[0]
    what = f"model_type={hf.get('model_type')!r}, architectures={hf.get('architectures')!r}"
    if not found:
        raise ConfigError(f"{source}: no lvjax model family matches ({what}; families: {', '.join(_FAMILIES)})")
    raise ConfigError(f"{source}: ambiguous model family ({what} fits {', '.join(f.name for f in found)})")


def family_by_name(name: str):
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown model family {name!r} (families: {', '.join(_FAMILIES)})") from None
