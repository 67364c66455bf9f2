"""Run by tests/test_scale.py in a process of 4 forced CPU devices:
`python -m tests.devices_probe OUT4 OUT2`.

Trains conftest's TOY run through experiments.train's `main` in this process,
with 4 seeds (one per device) into OUT4 and with 2 seeds (each seed's
environments split over 2 devices) into OUT2, printing their logs; then
prints, as its last line, JSON about the 4-seed program: the collectives its
compiled HLO holds, and how many seeds each device holds of every leaf of the
state after a call (the replay buffers included).
"""

import json
import re
import sys

import jax

from insertion_jax.training import distributed, loop
from tests import cli
from tests.conftest import TOY, TOY_FLAGS

COLLECTIVES = ('all-gather', 'all-reduce', 'reduce-scatter', 'all-to-all', 'collective-permute')


def flags_for(seeds):
    return [f for f in TOY_FLAGS if not f.startswith('--num_seeds')] + [f'--num_seeds={seeds}']


def main(out4, out2):
    for out, seeds in ((out4, 4), (out2, 2)):
        done = cli.call_main('experiments.train', *flags_for(seeds), f'--out={out}')
        print(done.stdout, done.stderr[-3000:])
        if done.returncode:
            sys.exit(done.returncode)
    components = loop.make_components(TOY)
    layout = distributed.make_layout(4, TOY.num_envs)
    state = loop.init_states(components, 0, 4, layout=layout)
    train_fn = loop.make_train_fn(components, 2, layout)
    hlo = train_fn.lower(state).compile().as_text()
    state, _ = train_fn(state)
    print(
        json.dumps(
            {
                'devices': len(jax.devices()),
                # 3 seeds of 5 envs divide over no more than one of 4 devices
                'odd_layout': distributed.make_layout(3, 5).describe().splitlines()[0],
                'collectives': {
                    op: len(re.findall(rf'\b{op}(-start)?\(', hlo)) for op in COLLECTIVES
                },
                'seeds_per_device': sorted(
                    {leaf.sharding.shard_shape(leaf.shape)[0] for leaf in jax.tree.leaves(state)}
                ),
            }
        )
    )


if __name__ == '__main__':
    main(*sys.argv[1:])
