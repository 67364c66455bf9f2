"""The robot side: what runs on the PC next to a Sawyer or a KUKA arm.

`hardware.policy.load(EXPORT_DIR)` runs a policy that `experiments.export`
wrote, with jax and numpy alone (no flax, optax, orbax, mujoco or
insertion_jax), numpy in and numpy out.
"""
