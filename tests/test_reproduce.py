"""The residual-RL reproduction, end to end at the toy size: its USB
residual_sac_sparse cell is the shared SMALL run's configuration, so it runs
on the programs that run compiled (same worker)."""

import os

from insertion_jax.training import paper_table, reproduction, run_dir
from tests import cli

TOY = reproduction.PRESETS['toy']
BOTH = ('p_controller', 'residual_sac_sparse')


def test_reproduce_insertion_writes_every_output_and_resumes(small_run_dir, tmp_path):
    out = str(tmp_path / 'reproduce')
    # Stopped after its first cell: only the P-controller's.
    reproduction.run(TOY, out, ('usb',), ('p_controller',), log=lambda line: None)
    p_result = os.path.join(out, 'runs', 'usb', 'p_controller', 'result.json')
    first = os.path.getmtime(p_result)
    lines = []
    rows = reproduction.run(TOY, out, ('usb',), BOTH, log=lines.append)
    assert os.path.getmtime(p_result) == first  # finished cells are read back
    assert '[1/2] usb p_controller: finished, read back' in lines
    assert '[2/2] usb residual_sac_sparse (' in '\n'.join(lines)

    # A cell is a run like any other: seed 0 of the SMALL configuration ends
    # where the SMALL run ended, and the P-controller row is that run's
    # reference, on the same episodes.
    small = run_dir.read_json(os.path.join(small_run_dir, 'summary.json'))
    p_row, rl_row = rows
    assert rl_row.exact == small['seeds'][0]['success_exact']
    assert rl_row.noisy == small['seeds'][0]['success_noisy']
    assert (p_row.exact, p_row.noisy) == (
        small['p_controller']['success_exact'],
        small['p_controller']['success_noisy'],
    )
    assert rl_row.episodes == p_row.episodes == 25 and rl_row.seeds == 1
    assert (p_row.paper_exact, p_row.paper_noisy) == (1.0, 0.6)

    assert sorted(os.listdir(out)) == [
        'curves_usb.png',
        'effects.md',
        'runs',
        'table.csv',
        'table.md',
        'table.png',
    ]
    with open(os.path.join(out, 'table.csv')) as f:
        assert paper_table.read_table_csv(f.read()) == rows
    with open(os.path.join(out, 'effects.md')) as f:
        effects = f.read()
    assert effects.count('**not run**') == 5  # one connector, two methods

    # Running a part afterwards adds to the outputs of the whole: the table
    # keeps the finished learned cell (read back, never trained).
    part = reproduction.run(TOY, out, ('usb',), ('p_controller',), log=lambda line: None)
    assert part == rows
    with open(os.path.join(out, 'table.csv')) as f:
        assert paper_table.read_table_csv(f.read()) == rows

    # The command line over the same directory: every cell has finished, so
    # nothing trains or compiles; the outputs are written again.
    summary = os.path.join(out, 'runs', 'usb', 'residual_sac_sparse', 'summary.json')
    before = os.path.getmtime(summary)
    host = cli.host('experiments.reproduce_insertion')
    result = host.run(
        '--preset=toy', '--connectors=usb', f'--methods={",".join(BOTH)}', f'--out={out}'
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'Wrote' in result.stdout and os.path.getmtime(summary) == before
    for argv, message in (
        (['--methods=sac'], '--methods=sac: sac not among p_controller'),
        (['--connectors=hdmi,usb'], '--connectors=hdmi,usb: hdmi not among usb, dsub, model_e'),
        (['--preset=huge'], 'flag --preset=huge: value should be one of <toy|cpu|paper>'),
        (
            ['--connectors=dsub', '--methods=residual_sac_sparse'],
            'The paper reports none of connectors dsub x methods residual_sac_sparse',
        ),
        # A finished cell of another configuration is refused, not reported.
        (
            ['--preset=toy', '--connectors=usb', '--methods=residual_sac_sparse', '--seeds=2'],
            'holds a run with a different configuration (run.num_seeds: 1 there, 2 here)',
        ),
    ):
        bad = host.run(*argv, f'--out={out}')
        assert bad.returncode != 0 and message in bad.stderr, bad.stderr[-500:]
        assert 'Traceback' not in bad.stderr
