"""Networks of the off-policy agents (flax.linen; parameters are plain pytrees).

Actions live in the normalized box [-1, 1]^A; the training loop scales them to
metres. Every module maps observations of shape (..., obs_dim) to outputs with
the same leading axes, so one set of parameters serves a single observation, a
batch, or the (envs,) batch of the collector.
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]

# tanh-Gaussian log-std bounds, as in SAC's reference implementation.
LOG_STD_MIN = -10.0
LOG_STD_MAX = 2.0


class MLP(nn.Module):
    """Fully connected network: hidden layers with `activation`, then a linear output.

    Attributes:
      hidden: widths of the hidden layers, e.g. (256, 256).
      out_dim: width of the linear output layer.
      activation: nonlinearity after each hidden layer.
      out_scale: scale of the output layer's initial weights (a small value
        starts a policy close to zero, which keeps a residual policy close to
        the hand-designed controller at first).
    """

    hidden: Sequence[int]
    out_dim: int
    activation: Activation = nn.relu
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.lecun_normal()
        for width in self.hidden:
            x = self.activation(nn.Dense(width, kernel_init=init)(x))
        out_init = nn.initializers.variance_scaling(self.out_scale**2, 'fan_in', 'truncated_normal')
        return nn.Dense(self.out_dim, kernel_init=out_init)(x)


class DeterministicActor(nn.Module):
    """TD3/DDPG policy: a = tanh(MLP(obs)), shape (..., action_dim)."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.tanh(MLP(self.hidden, self.action_dim, out_scale=self.out_scale)(obs))


class GaussianActor(nn.Module):
    """SAC policy head: the mean and log-std of a Gaussian before the tanh squash.

    Returns (mean, log_std), each (..., action_dim), log_std clipped to
    [LOG_STD_MIN, LOG_STD_MAX].
    """

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> Tuple[jax.Array, jax.Array]:
        out = MLP(self.hidden, 2 * self.action_dim, out_scale=self.out_scale)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def tanh_gaussian_sample(
    mean: jax.Array, log_std: jax.Array, key: jax.Array
) -> Tuple[jax.Array, jax.Array]:
    """Samples a = tanh(mean + std * eps) and its log-density under the squashed Gaussian.

    Args:
      mean, log_std: (..., A) pre-squash Gaussian parameters.
      key: PRNG key.

    Returns:
      action (..., A) in (-1, 1) and log_prob (...), including the change of
      variables term -sum log(1 - tanh(u)^2), computed in the numerically stable
      form 2 (log 2 - u - softplus(-2u)).
    """
    noise = jax.random.normal(key, mean.shape, mean.dtype)
    pre_tanh = mean + jnp.exp(log_std) * noise
    gaussian_log_prob = -0.5 * (noise**2 + jnp.log(2 * jnp.pi)) - log_std
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.tanh(pre_tanh), jnp.sum(gaussian_log_prob - log_det, axis=-1)


class Critic(nn.Module):
    """`num_critics` independent Q-functions Q(obs, action), output (num_critics, ...).

    The critics are one vectorized module (nn.vmap over the parameters), so the
    twin Q-values cost one batched matmul per layer instead of two.
    """

    hidden: Sequence[int] = (256, 256)
    num_critics: int = 2

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        ensemble = nn.vmap(
            MLP,
            variable_axes={'params': 0},
            split_rngs={'params': True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        q = ensemble(self.hidden, 1)(jnp.concatenate([obs, action], axis=-1))
        return q[..., 0]
