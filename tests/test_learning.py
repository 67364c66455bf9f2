"""Residual SAC learns the sparse-reward USB insertion under goal noise (the real MJX task).

A budget that fits CI: one seed, 16 environments, about 10k environment
steps, training under +-1 mm goal noise. The untrained SAC policy explores
with a wide residual and connects in few training episodes; by the end the
training episodes, still exploring, mostly connect. What residual RL adds
over the P-controller it starts from is success when the goal it is told is
off: the P-controller alone connects about half of the noisy USB episodes
(it jams on the socket rim); the learned residual presses down harder and
lets the chamfer guide the plug in. The evaluation runs both on the same 25
noisy episodes.
"""

import dataclasses
import json
import os
import shutil

import numpy as np

from insertion_jax.training import loop, runner
from tests.conftest import SMALL_RUN, USB_SAC

# The SMALL run (conftest) is this configuration's first four iterations:
# this run continues it (a run started again with a larger total_steps), so
# the two share their compiled programs and their first 1,920 steps.
RUN = dataclasses.replace(SMALL_RUN, total_steps=10_560, eval_every=10_560)


def test_residual_sac_beats_the_p_controller_under_goal_noise(small_run_dir, tmp_path):
    out = str(tmp_path / 'usb')
    shutil.copytree(small_run_dir, out)
    run = loop.make_train_fn(loop.make_components(USB_SAC), RUN.iterations_per_call)
    programs = run._cache_size()  # the SMALL run's
    lines = []
    summary = runner.train(USB_SAC, RUN, out, log=lines.append)
    assert '  total_steps: 1920 -> 10560 (the run continues)' in lines
    # The restored state (MJX's zero-size contact fields included) ran the
    # fresh run's program.
    assert run._cache_size() == programs == 1
    assert summary['mean']['env_steps'] == 10_560
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        success = np.array([json.loads(line)['success'] for line in f], float)
    first, last = np.nanmean(success[:3]), np.nanmean(success[-3:])
    assert first < 0.4, success
    assert last >= 0.7, success
    learned = summary['mean']['success_noisy']
    p_controller = summary['p_controller']['success_noisy']
    # 25 paired episodes: a gain of 5 episodes or more is not sampling noise
    # (the P-controller's own rate moves by about +-10 points between sets).
    assert learned >= p_controller + 0.2, (learned, p_controller)
    assert summary['mean']['success_exact'] >= summary['p_controller']['success_exact'] - 0.04
