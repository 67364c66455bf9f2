"""The agent registry: `make_agent(algo, config, action_dim)` and its config classes.

See `base.Agent` for the interface an agent provides.
"""

from __future__ import annotations

from typing import Any, Dict

from insertion_jax.agents import base, ddpg, sac, td3

AGENTS: Dict[str, Any] = {
    'sac': (sac.SACConfig, sac.make_sac),
    'td3': (td3.TD3Config, td3.make_td3),
    'ddpg': (ddpg.DDPGConfig, ddpg.make_ddpg),
    'apex_ddpg': (ddpg.ApeXDDPGConfig, ddpg.make_ddpg),
}
ALGOS = tuple(AGENTS)


def validate_algo(algo: str) -> str:
    """Returns `algo` if it names an agent, else raises ValueError listing the valid ones."""
    if algo not in AGENTS:
        raise ValueError(f'Unknown algo {algo!r}; valid algos: {", ".join(ALGOS)}.')
    return algo


def config_class(algo: str):
    """The config dataclass of `algo`."""
    return AGENTS[validate_algo(algo)][0]


def make_agent(algo: str, config: Any = None, action_dim: int = 3) -> base.Agent:
    """Builds agent `algo` from `config` (its config dataclass; defaults when None)."""
    config_cls, make = AGENTS[validate_algo(algo)]
    config = config_cls() if config is None else config
    if not isinstance(config, config_cls):
        raise TypeError(f'{algo} needs a {config_cls.__name__}, got {type(config).__name__}.')
    return make(config, action_dim)
