"""The evaluation protocol: 25 executions, exact and +-1 mm goal noise (USB)."""

import jax
import numpy as np

from insertion_jax.training import evaluate


def test_usb_p_controller_exact_goal_and_noise(usb_rig):
    key_env, key_goal = jax.random.split(jax.random.PRNGKey(0))
    unit = evaluate.goal_offsets_mm(key_goal, usb_rig.episodes, 1.0)
    params = evaluate.p_controller_params()
    exact = evaluate.summarize(usb_rig.run(params, key_env, unit * 0.0), 'usb', 'p', 0.0, 0)
    noisy = evaluate.summarize(usb_rig.run(params, key_env, unit * 1.0), 'usb', 'p', 1.0, 0)
    assert exact.successes >= 23, exact
    assert noisy.successes < 20, noisy
    assert noisy.mean_final_distance_mm > exact.mean_final_distance_mm


def test_goal_offsets_are_uniform_within_the_noise():
    offsets = np.asarray(evaluate.goal_offsets_mm(jax.random.PRNGKey(0), 4000, 1.0))
    assert offsets.shape == (4000, 2)
    assert np.all(np.abs(offsets) <= 1.0)
    # Uniform on [-1, 1]: mean 0, variance 1/3.
    assert abs(offsets.mean()) < 0.03
    assert abs(offsets.var() - 1 / 3) < 0.02
