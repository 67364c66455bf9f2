"""insertion_jax: residual RL and Dynamic Experience Replay for robotic insertion, in JAX."""

__version__ = '0.1.0'
