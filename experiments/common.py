"""Helpers shared by the absl entry points."""

from __future__ import annotations

import os


def quiet_logs() -> None:
    """Keeps absl's INFO chatter (backend probing, OpenGL accelerate) off the console.

    Call at the start of `main`: absl sets the verbosity from its flags just before.
    """
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

    absl_logging.set_verbosity(absl_logging.WARNING)


def enable_compilation_cache() -> None:
    """Turns on JAX's persistent compilation cache (skips recompiles across runs)."""
    import jax  # pylint: disable=import-outside-toplevel

    cache_dir = os.environ.get(
        'JAX_COMPILATION_CACHE_DIR', os.path.expanduser('~/.cache/insertion_jax/jax')
    )
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
