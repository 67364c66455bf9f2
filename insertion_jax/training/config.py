"""The static configuration of a training run, its checks, and its JSON form.

`TrainConfig` is one frozen dataclass per run (shared by all seeds). Every
component has its own config object inside it: the task's (`env`, any config
of `envs.registry`), the agent's (`agent`), the replay's (`replay`, any config
of `replay.registry`). `__post_init__` checks each value and every
combination, with an error that names the bad value and what is allowed.

Modes, after the residual-RL paper:
  * 'residual': executed u = u_H(s) + scale * a, with u_H the task's
    hand-designed controller (the P-controller, eq. 5); the replay stores the
    agent's a, i.e. u_RL (Algorithm 1).
  * 'pure': u = scale * a.
  * 'lfd': pure RL plus a behaviour-cloning loss on demonstrations (the
    agent's `bc_weight`); the demonstrations are a buffer of their own mixed
    into every batch (`replay.mixed`, `demo_fraction` of each batch).

`ALGO_PRESETS` holds the loop-side settings that belong to an algorithm as
published (Ape-X DDPG's; its agent-side settings are `ddpg.ApeXDDPGConfig`):
the one place they live.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional

from insertion_jax import checks
from insertion_jax.agents import policy as policy_lib
from insertion_jax.agents import registry as agent_registry
from insertion_jax.envs import insertion
from insertion_jax.envs import registry as env_registry
from insertion_jax.replay import base as replay_base
from insertion_jax.replay import mixed, uniform
from insertion_jax.replay import registry as replay_registry
from insertion_jax.training import normalizer as obs_norm

MODES = policy_lib.MODES  # 'pure', 'residual', 'lfd'

# Loop-side settings of an algorithm as published; `experiments.train` uses
# them for the flags left unset. Ape-X DDPG (the DER paper): 3-step returns,
# train batch 512, a running observation filter, DER replay.
ALGO_PRESETS: Dict[str, Dict[str, Any]] = {
    'apex_ddpg': {
        'n_step': 3,
        'batch_size': 512,
        'obs_normalizer': 'running',
        'replay': 'der',
    },
}


# Loop-side settings for image observations, for the flags left unset: a
# batch of 128 (the CNN's updates dominate an image run's time on a CPU; the
# README's USB run from pixels learned with it in under 13 minutes).
IMAGE_PRESETS: Dict[str, Any] = {'batch_size': 128}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static configuration of a training run (one per run, shared by all seeds).

    Attributes:
      env: the task's config (any of `envs.registry.ENVS`).
      algo: one of `agents.registry.ALGOS`.
      agent: the algo's config dataclass (None: its defaults).
      mode: 'pure', 'residual' or 'lfd' (see the module docstring).
      num_envs: environments stepped in parallel per seed.
      unroll_length: control steps per environment per iteration.
      utd: gradient updates per environment step (update-to-data ratio).
      batch_size: transitions per gradient update.
      buffer_capacity: replay capacity, in transitions (DER: of each buffer).
      learning_starts: environment steps collected before updates apply.
      n_step: return length of the stored transitions.
      num_demos: demonstration episodes (LfD mode; replays that take
        demonstrations, such as DER with a structure).
      demo_fraction: share of each batch drawn from the demonstrations (LfD).
      demo_noise: exploration of the scripted connector demonstrator (the
        P-controller with uniform noise of this fraction of the maximum move).
      obs_normalizer: 'fixed' or 'running' (see `normalizer.py`).
      image_shift_px: random-shift augmentation of image observations in
        every training batch (DrQ): images move by up to this many pixels;
        0 turns it off.
      replay: the replay's config (`uniform.UniformConfig`,
        `prioritized.PrioritizedConfig` or `der.DERConfig`).
    """

    env: Any = insertion.InsertionConfig()
    algo: str = 'sac'
    agent: Any = None
    mode: str = 'residual'
    num_envs: int = 16
    unroll_length: int = 30
    utd: float = 1.0
    batch_size: int = 256
    buffer_capacity: int = 100_000
    learning_starts: int = 1_000
    n_step: int = 1
    num_demos: int = 20
    demo_fraction: float = 0.25
    demo_noise: float = 0.3
    obs_normalizer: str = 'fixed'
    replay: Any = uniform.UniformConfig()
    image_shift_px: int = 2

    def __post_init__(self):
        agent_registry.validate_algo(self.algo)
        env_cls = env_registry.env_class(self.env)  # raises for a non-env config
        if isinstance(self.replay, str):
            raise TypeError(
                f'TrainConfig.replay={self.replay!r} must be a replay config object, e.g. '
                f'replay_registry.config_class({self.replay!r})(); kinds: '
                f'{", ".join(replay_registry.KINDS)}.'
            )
        replay_registry.kind_of(self.replay)  # raises for a non-replay config
        if self.agent is None:
            object.__setattr__(self, 'agent', agent_registry.config_class(self.algo)())
        if self.mode not in MODES:
            raise ValueError(f'Unknown mode {self.mode!r}; valid modes: {", ".join(MODES)}.')
        if not (isinstance(self.image_shift_px, int) and self.image_shift_px >= 0):
            raise ValueError(
                f'TrainConfig.image_shift_px={self.image_shift_px!r} must be an integer >= 0.'
            )
        checks.positive_int(
            'TrainConfig',
            num_envs=self.num_envs,
            unroll_length=self.unroll_length,
            batch_size=self.batch_size,
            buffer_capacity=self.buffer_capacity,
            n_step=self.n_step,
        )
        checks.positive('TrainConfig', utd=self.utd)
        if not (isinstance(self.learning_starts, int) and self.learning_starts >= 0):
            raise ValueError(
                f'TrainConfig.learning_starts={self.learning_starts!r} must be an integer >= 0.'
            )
        if self.env_steps_per_iteration > self.buffer_capacity:
            raise ValueError(
                f'TrainConfig.buffer_capacity={self.buffer_capacity} is smaller than one '
                f"iteration's {self.env_steps_per_iteration} transitions."
            )
        if self.mode == 'residual' and not env_cls.has_base_controller:
            raise ValueError(
                f'mode=residual needs a hand-designed controller, which task '
                f'{self.env.task!r} does not have; use mode=pure.'
            )
        if getattr(self.agent, 'discount', None) is None:
            raise ValueError('The agent config has no discount.')
        replay_registry.validate(self.replay, self.replay_spec)
        inner_takes_demos = replay_registry.make_replay(
            self.replay, self.replay_spec
        ).takes_demonstrations
        bc_weight = getattr(self.agent, 'bc_weight', 0.0)
        if self.mode == 'lfd':
            if inner_takes_demos:
                raise ValueError(
                    f'mode=lfd keeps its demonstrations in a buffer of their own; the '
                    f'{replay_registry.kind_of(self.replay)} replay places demonstrations '
                    'itself (use mode=pure with it, or a replay without demonstrations).'
                )
            if not bc_weight > 0:
                raise ValueError(f'mode=lfd needs the agent bc_weight > 0, got {bc_weight!r}.')
            if not 0.0 < self.demo_fraction < 1.0:
                raise ValueError(
                    f'TrainConfig.demo_fraction={self.demo_fraction!r} must be in (0, 1).'
                )
            if self.demo_batch_size < 1:
                raise ValueError(
                    f'demo_fraction={self.demo_fraction} of batch_size={self.batch_size} '
                    'leaves no demonstration sample in a batch.'
                )
        elif bc_weight > 0:
            raise ValueError(
                f'The agent has bc_weight={bc_weight!r} but mode={self.mode!r} has no '
                'demonstrations; use mode=lfd or bc_weight=0.'
            )
        if self.uses_demonstrations and not (
            isinstance(self.num_demos, int) and self.num_demos > 0
        ):
            raise ValueError(
                f'This configuration learns from demonstrations and needs num_demos > 0, '
                f'got {self.num_demos!r}.'
            )
        checks.unit_interval('TrainConfig', demo_noise=self.demo_noise)
        obs_norm.init_normalizer(self.obs_normalizer, env_cls.obs_scale)

    # ------------------------------------------------------------ derived
    @property
    def obs(self) -> str:
        """The observation type (`observations.OBS_TYPES`): the task's, 'state' for
        tasks without a camera."""
        return getattr(self.env, 'obs', 'state')

    @property
    def env_steps_per_iteration(self) -> int:
        return self.num_envs * self.unroll_length

    @property
    def updates_per_iteration(self) -> int:
        return max(1, int(round(self.utd * self.env_steps_per_iteration)))

    @property
    def demo_batch_size(self) -> int:
        """Demonstration samples per batch (LfD mode), the rest drawn by the replay."""
        return int(round(self.demo_fraction * self.batch_size)) if self.mode == 'lfd' else 0

    @property
    def replay_spec(self) -> replay_base.ReplaySpec:
        """What the run tells its replay (sizes, returns, episode slots)."""
        return replay_base.ReplaySpec(
            capacity=self.buffer_capacity,
            n_step=self.n_step,
            discount=self.agent.discount,
            episode_length=self.env.horizon,
            num_envs=self.num_envs,
            updates_per_iteration=self.updates_per_iteration,
        )

    def make_replay(self) -> replay_base.Replay:
        """The run's replay: the configured one, mixed with a demonstration buffer in LfD."""
        replay = replay_registry.make_replay(self.replay, self.replay_spec)
        if self.mode == 'lfd':
            return mixed.make_mixed(replay, self.demo_fraction, self.replay_spec)
        return replay

    @property
    def uses_demonstrations(self) -> bool:
        """Whether the run needs demonstrations (LfD, or a replay that places them)."""
        return self.mode == 'lfd' or (
            replay_registry.make_replay(self.replay, self.replay_spec).takes_demonstrations
        )


# ----------------------------------------------------------------- JSON
def dataclass_from_dict(cls, d: Mapping[str, Any], where: str):
    """`cls(**d)` for a JSON dict, naming an unknown key and the valid ones.

    Keys missing from `d` (fields added since the file was written) take
    their defaults.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f'{where} must be a JSON object, got {d!r}.')
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in d if k not in valid]
    if unknown:
        raise ValueError(
            f'{where}: unknown key {unknown[0]!r} for {cls.__name__}; valid keys: '
            f'{", ".join(valid)}.'
        )
    return cls(**checks.tuples_from_json(d))


def to_dict(config: TrainConfig) -> Dict[str, Any]:
    """`config` as a JSON-ready nested dict (`from_dict` reads it back)."""
    out = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    out['env'] = env_registry.config_to_dict(config.env)
    out['agent'] = dataclasses.asdict(config.agent)
    out['replay'] = replay_registry.config_to_dict(config.replay)
    return out


def from_dict(d: Mapping[str, Any], where: str = 'config.json train') -> TrainConfig:
    """Inverse of `to_dict`. Unknown keys are reported by name (ValueError)."""
    if not isinstance(d, Mapping):
        raise ValueError(f'{where} must be a JSON object.')
    d = dict(d)
    # Runs written before the camera kept the (then only) observation type
    # here; it is the task's now.
    if d.get('obs', 'state') == 'state':
        d.pop('obs', None)
    for required in ('env', 'algo'):
        if required not in d:
            raise ValueError(f'{where}: missing key {required!r}.')
    try:
        env = env_registry.config_from_dict(d.pop('env'))
    except TypeError as e:
        raise ValueError(f'{where} env: {e}') from e
    algo = agent_registry.validate_algo(d['algo'])
    agent = dataclass_from_dict(
        agent_registry.config_class(algo), d.pop('agent', {}), f'{where} agent'
    )
    replay = replay_registry.config_from_dict(d.pop('replay', {'kind': 'uniform'}))
    return dataclass_from_dict(
        TrainConfig, {**d, 'env': env, 'agent': agent, 'replay': replay}, where
    )


def apply_presets(
    algo: str, values: Mapping[str, Any], given: Optional[set] = None, obs: str = 'state'
) -> Dict:
    """`values` with `ALGO_PRESETS[algo]` (and `IMAGE_PRESETS` when `obs`
    holds an image) filled in for the names not in `given` (the settings a
    user set explicitly); the algorithm's presets win."""
    given = given or set()
    preset = {**(IMAGE_PRESETS if obs != 'state' else {}), **ALGO_PRESETS.get(algo, {})}
    return {k: (preset[k] if k in preset and k not in given else v) for k, v in values.items()}
