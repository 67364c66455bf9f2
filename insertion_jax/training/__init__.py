"""Training: config, the one rollout, the compiled loop, run directories, evaluation, studies."""
