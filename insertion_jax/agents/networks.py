"""Networks of the off-policy agents (flax.linen; parameters are plain pytrees).

Actions live in the normalized box [-1, 1]^A; the training loop scales them to
metres. Every module maps observations of shape (..., obs_dim) to outputs with
the same leading axes, so one set of parameters serves a single observation, a
batch, or the (envs,) batch of the collector.

Image observations (dicts with `observations.IMAGE`) go through a
small CNN (`ImageEncoder`), as in DrQ and SERL: the critics own it and train
it with the critic loss; the actor applies a copy of it (`share_encoder`
copies the critic's weights in before each actor step) with its features'
gradient stopped, so the actor loss never moves the encoder. The features
are concatenated with the 'state' part when the observation has one.
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from insertion_jax import observations

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


class Conv3x3(nn.Module):
    """A 3x3 convolution with 'SAME' padding, written as one matrix product
    over the image's 3x3 patches (gathered by slicing): the same numbers as
    `nn.Conv(features, (3, 3), strides, padding='SAME')`, parameters named
    and initialized alike (tests/test_agents.py compares them).

    Why: on a CPU, XLA runs a convolution inside a loop (the training loop's
    `lax.scan` over updates) about 13 times slower than the same convolution
    outside one (image SAC, batch 128: 460 ms an update in the scan against
    36 ms jitted alone, jax 0.10.2); matrix products and slices keep their
    speed in loops. On a GPU both forms run as fast.

    Attributes:
      features: output channels.
      stride: step between patches in both directions.
    """

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param(
            'kernel', nn.initializers.lecun_normal(), (3, 3, channels, self.features)
        )
        bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
        s = self.stride
        height, width = x.shape[-3], x.shape[-2]
        out_h, out_w = -(-height // s), -(-width // s)
        pad_h = max((out_h - 1) * s + 3 - height, 0)
        pad_w = max((out_w - 1) * s + 3 - width, 0)
        x = jnp.pad(
            x,
            ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
        )
        patches = jnp.concatenate(
            [
                x[:, dy : dy + (out_h - 1) * s + 1 : s, dx : dx + (out_w - 1) * s + 1 : s, :]
                for dy in range(3)
                for dx in range(3)
            ],
            axis=-1,
        )
        return patches @ kernel.reshape(9 * channels, self.features) + bias


ENCODER = 'encoder'
ENCODER_CHANNELS = (16, 32, 32)


class ImageEncoder(nn.Module):
    """Frames uint8 (..., R, R, F) -> features (..., features) in [-1, 1].

    3x3 convolutions of `channels` (the first two with stride 2), a linear
    layer, layer norm and tanh (DrQ's encoder head), sized for 32x32 frames
    on a CPU.

    Attributes:
      channels: output channels of each convolution.
      features: width of the feature vector.
    """

    channels: Sequence[int] = ENCODER_CHANNELS
    features: int = 50

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        lead = image.shape[:-3]
        x = image.reshape((-1,) + image.shape[-3:]).astype(jnp.float32) / 255.0 - 0.5
        for i, width in enumerate(self.channels):
            x = nn.relu(Conv3x3(width, stride=2 if i < 2 else 1)(x))
        x = nn.Dense(self.features)(x.reshape((x.shape[0], -1)))
        x = jnp.tanh(nn.LayerNorm()(x))
        return x.reshape(lead + (self.features,))


def network_input(
    obs, channels: Sequence[int] = ENCODER_CHANNELS, stop_gradient: bool = False
) -> jax.Array:
    """What the MLPs read: a vector observation as it is, or an image's
    features (an `ImageEncoder` of `channels`, named ENCODER in the calling
    module) with the 'state' part appended. Call it inside a compact module."""
    if not observations.has_image(obs):
        return obs
    features = ImageEncoder(tuple(channels), name=ENCODER)(obs[observations.IMAGE])
    if stop_gradient:
        features = jax.lax.stop_gradient(features)
    if observations.STATE in obs:
        return jnp.concatenate([features, obs[observations.STATE]], axis=-1)
    return features


def share_encoder(actor_params, critic_params):
    """`actor_params` with the critic's image encoder copied in (unchanged
    when the networks have no encoder)."""
    encoder = critic_params['params'].get(ENCODER)
    if encoder is None:
        return actor_params
    return {**actor_params, 'params': {**actor_params['params'], ENCODER: encoder}}


class DeterministicActor(nn.Module):
    """TD3/DDPG policy: a = tanh(MLP(obs)), shape (..., action_dim)."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    out_scale: float = 1.0
    encoder_channels: Sequence[int] = ENCODER_CHANNELS

    @nn.compact
    def __call__(self, obs) -> jax.Array:
        x = network_input(obs, self.encoder_channels, stop_gradient=True)
        return jnp.tanh(MLP(self.hidden, self.action_dim, out_scale=self.out_scale)(x))


class GaussianActor(nn.Module):
    """SAC policy head: the mean and log-std of a Gaussian before the tanh squash.

    Returns (mean, log_std), each (..., action_dim), log_std clipped to
    [LOG_STD_MIN, LOG_STD_MAX].
    """

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    out_scale: float = 1.0
    encoder_channels: Sequence[int] = ENCODER_CHANNELS

    @nn.compact
    def __call__(self, obs) -> Tuple[jax.Array, jax.Array]:
        x = network_input(obs, self.encoder_channels, stop_gradient=True)
        out = MLP(self.hidden, 2 * self.action_dim, out_scale=self.out_scale)(x)
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
    encoder_channels: Sequence[int] = ENCODER_CHANNELS

    @nn.compact
    def __call__(self, obs, action: jax.Array) -> jax.Array:
        obs = network_input(obs, self.encoder_channels)
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
