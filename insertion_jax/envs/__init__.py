"""The vectorized MJX connector-insertion simulator."""

import contextlib
import io

# MJX prints a notice at import when its optional Warp backend is missing. This
# package uses MJX's JAX backend on every platform, so the notice is noise.
with contextlib.redirect_stdout(io.StringIO()):
    from mujoco import mjx  # noqa: F401
