r"""Trains every configuration of a grid of experiments.train flags, and compares them.

  python -m experiments.sweep --grid='algo=sac,td3 reward=dense,sparse' --seeds=8 \
      --task=usb --total_steps=24000 --out=runs/sweep_usb
  python -m experiments.sweep --out=runs/sweep_usb     # resumes it, or rewrites its table
  python -m experiments.sweep --out=runs/sweep_usb --total_steps=48000   # extends every run
  python -m experiments.sweep --grid='hidden=[64,64],[256,256] utd=0.5,1' --out=runs/sizes

  # A Slurm job array, one job per configuration (pip install -e '.[slurm]'):
  python -m experiments.sweep --grid='algo=sac,td3 reward=dense,sparse' --seeds=8 \
      --task=usb --total_steps=96000 --out=runs/sweep_usb --launcher=slurm \
      --slurm_partition=gpu --slurm_gpus=1 --slurm_time_min=240 --slurm_parallelism=4 \
      --slurm_setup='source .venv/bin/activate' --slurm_extra=account=my_project

--grid: space-separated KEY=VALUE,VALUE,... where each KEY is a flag of
experiments.train; the configurations are the cartesian product, the first
key varying slowest. A value with commas in it (a list flag) goes in
brackets: hidden=[64,64],[256,256]. Every other experiments.train flag on the
command line (--task=usb, --total_steps=...) is a setting of every
configuration, and --seeds is its --num_seeds: a configuration means what
`python -m experiments.train` with the same flags means (its `build_configs`
builds it), and every configuration is checked before any runs.

Each configuration trains into --out/<its grid values> (e.g.
runs/sweep_usb/algo=sac,reward=dense, with `runner.train`'s files). A
finished configuration is skipped, a stopped one resumes from its checkpoint.
--out/sweep.json records the grid and the settings: another grid or other
settings into the same --out are refused, except a larger --total_steps or
another --eval_every or --checkpoint_every, which continue the runs as in
experiments.train (and --keep, --tensorboard); without --grid, the stored
sweep resumes.

Launchers (--launcher):
  local           one configuration after another in this process (the
                  compiled code of each is released before the next).
  slurm           a Slurm job array through submitit, one job per unfinished
                  configuration (--slurm_* flags; logs and submitit's files in
                  --out/slurm/). A job cut off by its time limit or preempted
                  is requeued and resumes from its run's last checkpoint. The
                  sweep waits for the jobs and reports a failed one with its
                  configuration and log; with --nowait it returns after
                  submitting, and the same command run later writes the table.
  submitit_local  the slurm launcher's code through submitit's local executor:
                  each configuration a process of its own on this machine,
                  --slurm_parallelism of them at once (default 1).

At the end, into --out: comparison.csv, comparison.md (a row per finished
configuration: its grid values, seeds, the final success per evaluation
condition as the mean over seeds with its bootstrap 95% interval over seeds,
env steps, wall-clock) and comparison.png. With --json, stdout holds one
JSON line per finished configuration and a last one with the table; the
progress goes to stderr.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import os
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import app, flags

from experiments import common, sweep_jobs
from experiments import train as train_cli
from insertion_jax.training import demonstrations, run_dir, runner
from insertion_jax.training import sweep as sweep_lib

_GRID = flags.DEFINE_string(
    'grid',
    None,
    'Space-separated KEY=VALUE,VALUE,... over experiments.train flags, e.g. '
    "'algo=sac,td3 reward=dense,sparse' (a value with commas in brackets: "
    'hidden=[64,64],[256,256]). Omitted: the sweep stored in --out.',
)
_SEEDS = flags.DEFINE_integer(
    'seeds',
    None,
    "Seeds per configuration (experiments.train's --num_seeds; default its default, or "
    "the stored sweep's).",
    lower_bound=1,
)
_LAUNCHER = flags.DEFINE_enum(
    'launcher',
    'local',
    ['local', 'slurm', 'submitit_local'],
    'local: one configuration after another in this process; slurm: a Slurm job array '
    "through submitit; submitit_local: the slurm launcher's code through submitit's local "
    'executor (a process per configuration on this machine).',
)
_JSON = flags.DEFINE_bool(
    'json',
    False,
    'Print one JSON line per finished configuration and a last one with the table '
    '(the progress goes to stderr).',
)
FLAGS = flags.FLAGS
flags.adopt_module_key_flags(sweep_jobs)  # --nowait and --slurm_*: listed with --helpshort
# Train flags a grid cannot vary: each configuration has its directory under
# --out, and --seeds sets --num_seeds.
_NOT_IN_GRID = {
    'out': 'each configuration trains into its own directory under --out',
    'num_seeds': 'the sweep sets it with --seeds',
}
# Settings a later start may change (`runner.EXTENDABLE`: the runs continue).
_EXTENDABLE = tuple(key.split('.')[-1] for key in runner.EXTENDABLE)
_PROCESS_FLAGS = ('coordinator_address', 'num_processes', 'process_id')
Grid = List[Tuple[str, List[str]]]


# ------------------------------------------------------------ the grid
def train_flag_names() -> List[str]:
    return sorted(f.name for f in FLAGS.get_flags_for_module(train_cli.__name__))


def _split(text: str, separator: str) -> List[str]:
    """`text` split at `separator` (whitespace for ' ') outside brackets."""
    parts, depth, current = [], 0, ''
    for char in text:
        if char == '[':
            depth += 1
        elif char == ']':
            depth -= 1
            if depth < 0:
                raise app.UsageError(f'--grid={text!r}: a "]" without its "[".')
        if depth == 0 and (char.isspace() if separator == ' ' else char == separator):
            parts.append(current)
            current = ''
        else:
            current += char
    if depth:
        raise app.UsageError(f'--grid={text!r}: a "[" without its "]".')
    parts.append(current)
    return [p for p in parts if p] if separator == ' ' else parts


def _unbracket(value: str) -> str:
    return value[1:-1] if value.startswith('[') and value.endswith(']') else value


def parse_grid(text: str) -> Grid:
    """[(key, [value, ...]), ...] of a --grid, each key a flag of
    experiments.train and each value one its flag accepts; app.UsageError
    (one line, naming the bad part and what is allowed) otherwise."""
    names = train_flag_names()
    grid: Grid = []
    tokens = _split(text, ' ')
    if not tokens:
        raise app.UsageError('--grid is empty: give KEY=VALUE,VALUE,... (e.g. algo=sac,td3).')
    for token in tokens:
        key, sep, values_text = token.partition('=')
        if not sep or not key:
            raise app.UsageError(
                f'--grid: {token!r} is not KEY=VALUE,VALUE,... (e.g. algo=sac,td3).'
            )
        if key in _NOT_IN_GRID:
            raise app.UsageError(f'--grid: {key} cannot vary: {_NOT_IN_GRID[key]}.')
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            raise app.UsageError(
                f'--grid: {key!r} is not a flag of experiments.train'
                + (f' (did you mean {close[0]!r}?)' if close else '')
                + f'; its flags: {", ".join(n for n in names if n not in _NOT_IN_GRID)}.'
            )
        if any(key == k for k, _ in grid):
            raise app.UsageError(f'--grid: {key} appears twice; give its values once ({key}=A,B).')
        if FLAGS[key].present:
            raise app.UsageError(
                f'--{key} is given both as a flag and in --grid; keep one of them.'
            )
        values = [_unbracket(v) for v in _split(values_text, ',')]
        if not values_text or any(v == '' for v in values):
            raise app.UsageError(
                f'--grid: {token!r} has an empty value; give {key}=VALUE,VALUE,...'
            )
        seen = {}
        for value in values:
            parsed = _parse_value(key, value)
            if repr(parsed) in seen:
                raise app.UsageError(
                    f'--grid: {key}={seen[repr(parsed)]} and {key}={value} are the same value.'
                )
            seen[repr(parsed)] = value
        grid.append((key, values))
    return grid


def _parse_value(key: str, value: str) -> Any:
    """The value through the flag's own parser (its validation, its message)."""
    flag = FLAGS[key]
    try:
        return flag.parser.parse(value)
    except ValueError as e:
        message = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
        if flag.parser.flag_type() == 'bool':
            message = 'must be true or false'
        raise app.UsageError(f'--grid: {key}={value}: {message}.'.replace('..', '.')) from e


def grid_text(grid: Grid) -> str:
    return ' '.join(
        f'{key}=' + ','.join(f'[{v}]' if ',' in v else v for v in values) for key, values in grid
    )


def configuration_name(values: Sequence[Tuple[str, str]]) -> str:
    """The run directory's name: 'algo=sac,reward=dense' (a list value's
    commas become '-'; a character a file name should not hold, '_')."""
    return ','.join(
        f'{key}=' + re.sub(r'[^A-Za-z0-9._+-]', '_', value.replace(',', '-'))
        for key, value in values
    )


# ------------------------------------------------------------ flag values
def _flag_text(name: str) -> str:
    """A flag's value as command-line text (what `Flag.parse` reads back)."""
    flag = FLAGS[name]
    if flag.parser.flag_type() == 'bool':
        return 'true' if flag.value else 'false'
    serialized = flag.serialize()
    return serialized.split('=', 1)[1] if '=' in serialized else ''


def _setting_value(name: str, text: Optional[str]) -> Any:
    """A setting's value: its text through the flag's parser; the flag's
    default where it is not set (None)."""
    flag = FLAGS[name]
    return flag.default if text is None else flag.parser.parse(text)


@contextlib.contextmanager
def flag_values(assignments: Mapping[str, str]):
    """The flags of `assignments` parsed from their text, as if given on the
    command line (present), and put back afterwards."""
    saved = {
        name: (FLAGS[name].value, FLAGS[name].present, FLAGS[name].using_default_value)
        for name in assignments
    }
    try:
        for name, text in assignments.items():
            FLAGS[name].parse(text)
        yield
    finally:
        for name, (value, present, default) in saved.items():
            flag = FLAGS[name]
            flag.value, flag.present, flag.using_default_value = value, present, default


def given_settings() -> Dict[str, str]:
    """{flag: text} of the experiments.train flags on the command line."""
    if FLAGS['num_seeds'].present:
        raise app.UsageError('--num_seeds: a sweep sets the seeds with --seeds=N.')
    process = [f'--{n}' for n in _PROCESS_FLAGS if n in FLAGS and FLAGS[n].present]
    if process:
        raise app.UsageError(
            f'{", ".join(process)}: a sweep runs each configuration as one process; '
            'start experiments.train itself over several processes.'
        )
    return {
        name: _flag_text(name)
        for name in train_flag_names()
        if FLAGS[name].present and name != 'out'
    }


# ------------------------------------------------------------ sweep.json
def resolve(out: str) -> Tuple[Grid, Dict[str, str], int, Dict[str, Tuple[str, str]]]:
    """(grid, settings, seeds, changes) of this start: from the flags, or
    with no --grid from --out/sweep.json with the flags given over it; the
    changes {setting: (stored, new)} are the extendable ones that a stored
    sweep accepts. Another grid, other settings or seeds are refused."""
    path = os.path.join(out, 'sweep.json')
    stored = None
    if os.path.exists(path):
        try:
            stored = run_dir.read_json(path)
            stored_grid = [(k, list(v)) for k, v in stored['grid'].items()]
            stored_settings, stored_seeds = dict(stored['settings']), int(stored['seeds'])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise app.UsageError(
                f'{path} is not a sweep record ({type(e).__name__}: {e}); delete it or pick '
                'another --out.'
            ) from e
    given = given_settings()
    if _GRID.value is None:
        if stored is None:
            raise app.UsageError(f'--grid is required: {out!r} holds no sweep to resume.')
        unknown = sorted(set(stored_settings) - set(train_flag_names()))
        if unknown:
            raise app.UsageError(
                f'{path} sets --{unknown[0]}, which experiments.train no longer has; '
                'delete sweep.json to start the sweep again.'
            )
        for key, _ in stored_grid:
            if FLAGS[key].present:
                raise app.UsageError(
                    f'--{key} is a grid key of the sweep in {out!r}; it cannot be a setting too.'
                )
        grid = parse_grid(grid_text(stored_grid))  # the stored values checked as a --grid
        settings = {**stored_settings, **given}
        seeds = _SEEDS.value or stored_seeds
    else:
        grid = parse_grid(_GRID.value)
        settings = given
        seeds = _SEEDS.value or FLAGS['num_seeds'].default
    changes: Dict[str, Tuple[str, str]] = {}
    if stored is not None:
        if grid != stored_grid:
            raise app.UsageError(
                f'{out!r} holds a sweep of another grid (--grid={grid_text(stored_grid)!r}); '
                'give that grid (or no --grid) to resume it, or pick another --out.'
            )
        if seeds != stored_seeds:
            raise app.UsageError(
                f'{out!r} holds a sweep of --seeds={stored_seeds}, not {seeds}; pick another --out.'
            )
        for name in sorted(set(settings) | set(stored_settings)):
            was, now = stored_settings.get(name), settings.get(name)
            try:
                if _setting_value(name, was) == _setting_value(name, now):
                    continue
            except ValueError:
                pass  # a stored value the flag no longer takes: a different setting
            was, now = (f'--{name}={t}' if t is not None else 'not given' for t in (was, now))
            # A longer run, another evaluation schedule, or a setting outside the
            # run's configuration (--keep, --tensorboard) may change.
            if name not in _EXTENDABLE and name not in train_cli.train_kwargs():
                raise app.UsageError(
                    f'{out!r} holds a sweep with other settings ({was} there, {now} here); '
                    'give the same settings (or none) to resume it, or pick another --out.'
                )
            changes[name] = (was, now)
    return grid, settings, seeds, changes


def write_record(out: str, grid: Grid, settings: Mapping[str, str], seeds: int, names) -> None:
    run_dir.write_json(
        os.path.join(out, 'sweep.json'),
        {
            'grid': dict(grid),
            'settings': dict(settings),
            'seeds': seeds,
            'configurations': list(names),
        },
    )


# ------------------------------------------------------------ configurations
def build(grid: Grid, seeds: int) -> List[sweep_lib.Configuration]:
    """Every configuration of the grid, built by experiments.train's
    `build_configs` from the flags and its grid values; app.UsageError
    naming the first configuration that experiments.train refuses."""
    keys = [key for key, _ in grid]
    configurations, names = [], {}
    for combination in itertools.product(*[values for _, values in grid]):
        values = tuple(zip(keys, combination, strict=True))
        name = configuration_name(values)
        if name in names:
            raise app.UsageError(
                f'--grid: {names[name]} and {",".join(f"{k}={v}" for k, v in values)} '
                f'give the same directory name {name!r}.'
            )
        names[name] = ','.join(f'{k}={v}' for k, v in values)
        with flag_values({**dict(values), 'num_seeds': str(seeds)}):
            try:
                train_config, run_config = train_cli.build_configs()
            except app.UsageError as e:
                raise app.UsageError(f'configuration {name}: {e}') from e
        configurations.append(sweep_lib.Configuration(name, values, train_config, run_config))
    return configurations


# ------------------------------------------------------------ main
def main(argv):
    common.quiet_logs()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    if not FLAGS['out'].present:
        raise app.UsageError('--out=DIR is required: the directory of the sweep.')
    if sweep_jobs.NOWAIT.value and _LAUNCHER.value != 'slurm':
        raise app.UsageError('--nowait applies to --launcher=slurm.')
    out = FLAGS['out'].value
    emit_json = _JSON.value

    def log(line: str) -> None:
        print(line, file=sys.stderr if emit_json else sys.stdout, flush=True)

    grid, settings, seeds, changes = resolve(out)
    # The stored settings not given again, as if given (a resumed sweep).
    with flag_values({n: t for n, t in settings.items() if not FLAGS[n].present}):
        configurations = build(grid, seeds)
        kwargs = train_cli.train_kwargs()
    finished = {}
    for configuration in configurations:
        try:
            finished[configuration.name] = sweep_lib.finished_summary(out, configuration)
        except runner.ConfigMismatchError as e:
            raise app.UsageError(f'configuration {configuration.name}: {e}') from e
        except (OSError, ValueError) as e:  # a damaged config.json
            raise app.UsageError(
                f'configuration {configuration.name}: {sweep_lib.run_path(out, configuration)} '
                f'holds no readable config.json ({sweep_jobs.one_line(str(e))}); delete that directory '
                'to start the configuration again.'
            ) from e
    pending = [c for c in configurations if finished[c.name] is None]
    sweep_jobs.check_no_job_in_flight(out, pending)
    executor = limit = None
    if _LAUNCHER.value != 'local' and pending:
        executor, limit = sweep_jobs.make_executor(
            out, pending, _LAUNCHER.value
        )  # refused before anything is written
    write_record(out, grid, settings, seeds, [c.name for c in configurations])
    keys = [key for key, _ in grid]
    log(
        f'Sweep {out}: {len(configurations)} configurations ({grid_text(grid)}), '
        f'{seeds} seed(s) each; {len(configurations) - len(pending)} finished, '
        f'{len(pending)} to run ({_LAUNCHER.value})'
    )
    for was, now in changes.values():
        log(f'  {was} there, {now} now')

    def report(configuration: sweep_lib.Configuration, summary: Dict[str, Any]) -> None:
        finished[configuration.name] = summary
        if emit_json:
            row = sweep_lib.comparison_row(configuration, summary)
            print(run_dir.dumps(row), flush=True)

    for configuration in configurations:
        if finished[configuration.name] is not None:
            report(configuration, finished[configuration.name])
    common.enable_compilation_cache()
    failures: List[str] = []
    if pending and _LAUNCHER.value == 'local':
        run_locally(out, configurations, pending, kwargs, report, log)
    elif pending:
        import jax

        job = sweep_lib.RunConfiguration(
            os.path.abspath(out),
            kwargs,
            cache_dir=os.path.abspath(jax.config.jax_compilation_cache_dir),
        )
        try:
            failures = sweep_jobs.run_jobs(
                out, executor, limit, pending, job, report, log, _LAUNCHER.value
            )
        except KeyboardInterrupt:
            log(
                '\nInterrupted: '
                + (
                    'the Slurm jobs keep running; run the same command again to wait for '
                    'them and write the table.'
                    if _LAUNCHER.value == 'slurm'
                    else 'the jobs stopped; run the same command again to resume them.'
                )
            )
            sys.exit(130)
        if sweep_jobs.NOWAIT.value:
            log(
                f'Submitted {len(pending)} job(s); run the same command again once they '
                'have ended to write the table.'
            )
            if emit_json:
                print(
                    run_dir.dumps({'sweep': out, 'submitted': sweep_jobs.read_jobs(out)}),
                    flush=True,
                )
            return
    done = [(c, finished[c.name]) for c in configurations if finished[c.name] is not None]
    unfinished = [c.name for c in configurations if finished[c.name] is None]
    title = f'sweep {os.path.basename(os.path.normpath(out))}: {grid_text(grid)}'
    rows = sweep_lib.write_comparison(out, keys, done, unfinished, title)
    log('\n' + sweep_lib.table_markdown(rows, keys, unfinished))
    log(f'\nWrote {out}/: sweep.json, {", ".join(sweep_lib.COMPARISON_FILES)}')
    if emit_json:
        print(run_dir.dumps({'sweep': out, 'table': rows, 'unfinished': unfinished}), flush=True)
    if failures:
        log(f'{len(failures)} of {len(pending)} configuration(s) failed:')
        for line in failures:
            log('  ' + line)
        sys.exit(1)


def run_locally(out, configurations, pending, kwargs, report, log) -> None:
    """One configuration after another in this process, with an ETA."""
    job = sweep_lib.RunConfiguration(out, kwargs)
    progress = run_dir.Progress(len(pending))
    for ran, configuration in enumerate(pending):
        number = configurations.index(configuration) + 1
        eta = f', eta {progress.eta(ran)}' if ran else ''
        log(f'[{number}/{len(configurations)}] {configuration.name} ({progress.wall():.0f} s{eta})')
        try:
            summary = job(configuration, log=lambda line: log('    ' + line))
        except (runner.ConfigMismatchError, demonstrations.DemonstratorError) as e:
            raise app.UsageError(f'configuration {configuration.name}: {e}') from e
        finally:
            # Each configuration compiles its own programs; a process that
            # kept them all would run out of memory mappings.
            runner.release_compiled_code()
        report(configuration, summary)


if __name__ == '__main__':
    app.run(main)
