"""The vectorized MJX simulator: the tasks, their scenes, rewards and controllers.

The package imports nothing itself, so a light module (`controllers`,
`connector_obs`) loads without MuJoCo; the modules that use MJX import it
through `base`, which silences MJX's import notice.
"""
