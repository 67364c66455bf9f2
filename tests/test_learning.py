"""Residual SAC learns the sparse-reward USB insertion (the real MJX task).

A budget that fits CI: one seed, 16 environments, about 10k environment
steps. The untrained SAC policy explores with a wide residual and connects in
few training episodes; by the end the training episodes, still exploring
under +-1 mm goal noise, mostly connect, and the deterministic policy keeps
the exact-goal success.
"""

import json
import os

import numpy as np

from insertion_jax.agents import sac
from insertion_jax.envs import insertion
from insertion_jax.training import config, runner

CONFIG = config.TrainConfig(
    env=insertion.InsertionConfig(task='usb', goal_noise_mm=1.0),
    algo='sac',
    agent=sac.SACConfig(hidden=(64, 64)),
    mode='residual',
    num_envs=16,
    utd=0.5,
    learning_starts=960,
)
RUN = runner.RunConfig(total_steps=10_560, num_seeds=1, eval_every=10_560, eval_episodes=25)


def test_residual_sac_learns_sparse_usb(tmp_path):
    out = str(tmp_path / 'usb')
    summary = runner.train(CONFIG, RUN, out, log=lambda line: None)
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        success = np.array([json.loads(line)['success'] for line in f])
    first, last = success[:3].mean(), success[-3:].mean()
    assert first < 0.4, success
    assert last >= 0.7, success
    assert summary['mean']['success_exact'] >= 0.9
