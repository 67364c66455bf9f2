"""The replay registry: `make_replay(config, spec)` and the config classes.

A replay kind is one module with a frozen config dataclass, a
`make_replay(config, spec) -> base.Replay` and a `validate(config, spec)`,
plus one line in `REPLAYS`. The config object names its kind
(`kind_of(config)`), so a training config holds one of these objects and the
loop never names a kind. LfD's demonstrations are mixed in around any kind
by `mixed.make_mixed`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

from insertion_jax.replay import base, der, prioritized, uniform

REPLAYS: Dict[str, Any] = {
    'uniform': (uniform.UniformConfig, uniform.make_replay),
    'prioritized': (prioritized.PrioritizedConfig, prioritized.make_replay),
    'der': (der.DERConfig, der.make_replay),
}
KINDS = tuple(REPLAYS)
_VALIDATE = {'uniform': uniform.validate, 'prioritized': prioritized.validate, 'der': der.validate}
# Config fields that hold another config dataclass, read back from nested dicts.
_NESTED = {'priority': prioritized.PrioritizedConfig}


def validate_kind(kind: str) -> str:
    """Returns `kind` if it names a replay, else raises ValueError listing the valid ones."""
    if kind not in REPLAYS:
        raise ValueError(f'Unknown replay {kind!r}; valid replays: {", ".join(KINDS)}.')
    return kind


def config_class(kind: str) -> type:
    """The config dataclass of replay `kind`."""
    return REPLAYS[validate_kind(kind)][0]


def kind_of(config: Any) -> str:
    """The kind whose config class `config` is an instance of (TypeError otherwise)."""
    for kind, (config_cls, _) in REPLAYS.items():
        if type(config) is config_cls:
            return kind
    valid = ', '.join(c.__name__ for c, _ in REPLAYS.values())
    raise TypeError(f'{type(config).__name__} is not a replay config; valid ones: {valid}.')


def validate(config: Any, spec: base.ReplaySpec) -> None:
    """Raises ValueError naming the size that does not fit `config` under `spec`
    (for DER: a zone without a whole episode, a ring too small for the episodes
    that can end at once, a pool smaller than the environments)."""
    _VALIDATE[kind_of(config)](config, spec)


def make_replay(config: Any, spec: base.ReplaySpec) -> base.Replay:
    """The replay `config` describes, sized by `spec` (see `base.Replay`)."""
    return REPLAYS[kind_of(config)][1](config, spec)


def config_to_dict(config: Any) -> Dict[str, Any]:
    """`config` as a JSON-ready dict with a 'kind' key (nested configs as dicts)."""
    return {'kind': kind_of(config), **dataclasses.asdict(config)}


def _from_fields(config_cls: type, d: Dict[str, Any], where: str) -> Any:
    known = [f.name for f in dataclasses.fields(config_cls)]
    unknown = [k for k in d if k not in known]
    if unknown:
        raise ValueError(
            f'Unknown key {unknown[0]!r} in {where}; valid keys: {", ".join(known) or "none"}.'
        )
    values = dict(d)
    for name, nested_cls in _NESTED.items():
        if name in values and isinstance(values[name], dict):
            values[name] = _from_fields(nested_cls, values[name], f'{where}.{name}')
    return config_cls(**values)


def config_from_dict(d: Dict[str, Any]) -> Any:
    """Inverse of `config_to_dict`; fields missing from `d` take their defaults.

    Raises:
      ValueError naming a missing or unknown 'kind', or an unknown key and the
      valid ones (a run file written by another version).
    """
    d = dict(d)
    if 'kind' not in d:
        raise ValueError(f'A replay config needs a "kind" key; valid kinds: {", ".join(KINDS)}.')
    kind = validate_kind(d.pop('kind'))
    return _from_fields(config_class(kind), d, f'the {kind} replay config')
