"""A point that reaches a goal in the plane: a diagnostic task in pure JAX.

It implements `base.Env`, as the MJX tasks do, and compiles in a
second, so the whole training loop (collection, every replay kind, every
agent) can be checked for learning in seconds before a run spends minutes on
contact physics. Not a benchmark of the papers.

x in [-1, 1]^2 moves by `step_size` * a per step toward a goal g drawn in
[-0.5, 0.5]^2; reward -|x - g|; success within `success_radius`. Observation
(x - g, x), 4 floats. Episodes last `horizon` steps, or end at success when
`terminate_on_success` (then a step inside the radius also pays
`success_bonus`). Its hand-designed controller (for residual RL and the
scripted demonstrator) is a P-controller that closes `base_gain` of the
remaining distance per step, so residual and LfD runs exercise the same code
paths as on the connectors without contact physics.

With `obs='image'` (or 'state+image', `observations.OBS_TYPES`) the observation
holds an `image_size` x `image_size` grayscale picture of the plane, drawn
in pure JAX: the point a bright blob, the goal a blob half as bright. The
image agents' code paths (uint8 replay, encoder, augmentation) then learn in
seconds, as the state agents' do here.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import jax
import jax.numpy as jnp

from insertion_jax import checks, observations
from insertion_jax.envs import base
from insertion_jax.envs.base import State


@dataclasses.dataclass(frozen=True)
class PointReachConfig:
    """Attributes: see the module docstring."""

    horizon: int = 15
    step_size: float = 0.15
    success_radius: float = 0.1
    terminate_on_success: bool = False
    success_bonus: float = 0.0
    base_gain: float = 0.3
    obs: str = 'state'
    image_size: int = 12

    def __post_init__(self):
        observations.observation_parts(self.obs)  # raises with the list of valid types
        checks.positive_int('PointReachConfig', image_size=self.image_size)
        checks.positive_int('PointReachConfig', horizon=self.horizon)
        checks.positive(
            'PointReachConfig', step_size=self.step_size, success_radius=self.success_radius
        )
        checks.non_negative('PointReachConfig', success_bonus=self.success_bonus)
        checks.unit_interval('PointReachConfig', base_gain=self.base_gain)

    @property
    def task(self) -> str:
        return 'point_reach'


class PointReachEnv(base.VectorTask):
    """See the module docstring."""

    obs_dim = 4
    obs_fields = (('position_rel_goal', 2, 'plane units'), ('position', 2, 'plane units'))
    action_dim = 2
    obs_scale: Tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    has_base_controller = True

    def __init__(self, config: PointReachConfig = PointReachConfig()):
        self.config = config
        self.action_scale = jnp.ones((self.action_dim,), jnp.float32)

    @property
    def observation_spec(self):
        """(4,) float32, or with an image a dict of it and 'image' (S, S, 1) uint8."""
        size = self.config.image_size
        image = jax.ShapeDtypeStruct((size, size, 1), jnp.uint8)
        return observations.make_observation(self.config.obs, base.vector_spec(self.obs_dim), image)

    def image(self, x: jax.Array, g: jax.Array) -> jax.Array:
        """The plane [-1, 1]^2 seen from above, (S, S, 1) uint8: a Gaussian blob
        of one and a half pixels at the point (white) and at the goal (grey)."""
        size = self.config.image_size
        centres = (jnp.arange(size) + 0.5) / size * 2.0 - 1.0
        grid = jnp.stack(jnp.meshgrid(centres, centres[::-1], indexing='xy'), axis=-1)
        sigma = 1.5 * 2.0 / size

        def blob(p):
            return jnp.exp(-jnp.sum((grid - p) ** 2, axis=-1) / (2 * sigma**2))

        intensity = jnp.clip(blob(x) + 0.5 * blob(g), 0.0, 1.0)
        return jnp.round(intensity * 255.0).astype(jnp.uint8)[..., None]

    def reset(self, key: jax.Array) -> State:
        key_x, key_g = jax.random.split(key)
        x = jax.random.uniform(key_x, (2,), minval=-1, maxval=1)
        g = jax.random.uniform(key_g, (2,), minval=-0.5, maxval=0.5)
        return self._state({'x': x, 'g': g}, jnp.zeros(()), jnp.zeros((), jnp.int32))

    def _state(self, data, reward, step) -> State:
        cfg = self.config
        distance = jnp.linalg.norm(data['x'] - data['g'])
        success = distance < cfg.success_radius
        done = step >= cfg.horizon
        if cfg.terminate_on_success:
            done = done | (success & (step > 0))
        vector = jnp.concatenate([data['x'] - data['g'], data['x']])
        image = None if cfg.obs == 'state' else self.image(data['x'], data['g'])
        return State(
            data=data,
            obs=observations.make_observation(cfg.obs, vector, image),
            reward=reward,
            done=done,
            metrics={'nonfinite': jnp.zeros(()), 'distance': distance},
            info={'step': step, 'success': success},
        )

    def step(self, state: State, action: jax.Array) -> State:
        cfg = self.config
        x = jnp.clip(state.data['x'] + cfg.step_size * jnp.clip(action, -1, 1), -1, 1)
        data = {**state.data, 'x': x}
        distance = jnp.linalg.norm(x - data['g'])
        reward = -distance + cfg.success_bonus * (distance < cfg.success_radius)
        return self._state(data, reward, state.info['step'] + 1)

    def terminal(self, state: State) -> jax.Array:
        """No bootstrap after this step: a success that ends the episode."""
        return state.done & state.info['success'] & self.config.terminate_on_success

    def success(self, state: State) -> jax.Array:
        """bool (): the point within `success_radius` of the goal."""
        return state.info['success']

    def base_action(self, obs: jax.Array) -> jax.Array:
        """The P-controller's command (..., 2): `base_gain` of the way to the goal,
        from the observed offset x - g (obs[..., :2]), within the unit command box."""
        move = (
            -self.config.base_gain * observations.state_vector(obs)[..., :2] / self.config.step_size
        )
        return jnp.clip(move, -1.0, 1.0)
