"""Off-policy agents as pure functions: SAC, TD3, DDPG, Ape-X DDPG (+ behaviour cloning).

`registry.make_agent(algo, config, action_dim)` builds one. This package
imports nothing itself, so `agents.policy` (the inference policy) loads
without the optimizers that the training modules pull in.
"""
