"""Helpers shared by the absl entry points."""

from __future__ import annotations

import logging
import os


def quiet_startup_logs() -> None:
    """Silences import-time notices that are not about this run.

    MJX logs that its optional Warp backend is missing on every import; the JAX
    backend is the one used here, so that line is noise for users.
    """
    logging.getLogger('absl').setLevel(logging.WARNING)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def enable_compilation_cache() -> None:
    """Turns on JAX's persistent compilation cache (skips recompiles across runs)."""
    import jax  # pylint: disable=import-outside-toplevel

    cache_dir = os.environ.get('JAX_COMPILATION_CACHE_DIR', os.path.expanduser('~/.cache/insertion_jax/jax'))
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
