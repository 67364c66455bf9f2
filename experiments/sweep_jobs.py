"""The sweep's slurm and submitit_local launchers: their flags, the record of
submitted jobs, the submitit executor, and running and waiting for the jobs.

`experiments.sweep` builds the configurations and calls `check_no_job_in_flight`,
`make_executor` and `run_jobs`; each job runs `training.sweep.RunConfiguration`
on one configuration. submitit is imported only here, and only when a
launcher needs it (the `slurm` extra).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from absl import app, flags

from insertion_jax.training import run_dir
from insertion_jax.training import sweep as sweep_lib

NOWAIT = flags.DEFINE_bool(
    'nowait',
    False,
    'With --launcher=slurm: return once the jobs are submitted; the same command run later '
    'writes the table.',
)
_SLURM_PARTITION = flags.DEFINE_string('slurm_partition', None, 'Slurm partition of the jobs.')
_SLURM_TIME = flags.DEFINE_integer(
    'slurm_time_min',
    240,
    'Time limit of each job, minutes; a job cut off resumes from its checkpoint in a '
    'requeued job (up to 3 times).',
    lower_bound=1,
)
_SLURM_GPUS = flags.DEFINE_integer('slurm_gpus', 1, 'GPUs per job.', lower_bound=0)
_SLURM_CPUS = flags.DEFINE_integer('slurm_cpus', None, 'CPU cores per job.', lower_bound=1)
_SLURM_MEM = flags.DEFINE_float('slurm_mem_gb', None, 'Memory per job, GB.', lower_bound=0.0)
_SLURM_PARALLELISM = flags.DEFINE_integer(
    'slurm_parallelism',
    None,
    'Jobs running at once (slurm default: all; submitit_local default: 1).',
    lower_bound=1,
)
_SLURM_SETUP = flags.DEFINE_multi_string(
    'slurm_setup',
    [],
    "A shell line each Slurm job runs first (repeatable), e.g. 'source .venv/bin/activate'.",
)
_SLURM_EXTRA = flags.DEFINE_multi_string(
    'slurm_extra',
    [],
    'KEY=VALUE: another #SBATCH option of the jobs (repeatable), e.g. account=my_project, '
    'qos=high, constraint=a100.',
)

_ACTIVE_SLURM_STATES = (
    'PENDING',
    'RUNNING',
    'REQUEUED',
    'REQUEUE_HOLD',
    'REQUEUE_FED',
    'CONFIGURING',
    'COMPLETING',
    'SUSPENDED',
    'RESIZING',
    'SIGNALING',
    'STAGE_OUT',
    'STOPPED',
)


def _submitit(launcher: str):
    try:
        import submitit
    except ImportError as e:
        raise app.UsageError(
            f"--launcher={launcher} needs submitit: pip install -e '.[slurm]'"
        ) from e
    return submitit


def _jobs_path(out: str) -> str:
    return os.path.join(out, 'slurm', 'jobs.json')


def read_jobs(out: str) -> Dict[str, Dict[str, Any]]:
    path = _jobs_path(out)
    try:
        return run_dir.read_json(path) if os.path.exists(path) else {}
    except ValueError:
        return {}


def _job_in_flight(out: str, record: Mapping[str, Any]) -> Optional[str]:
    """Why the recorded job may still be running (None: it has ended)."""
    folder = os.path.join(out, 'slurm')
    job_id = str(record['job_id'])
    if record.get('cluster') == 'local':
        if record.get('host') != socket.gethostname():
            return f'submitit_local job {job_id} on {record.get("host")} (cannot look from here)'
        try:
            with open(f'/proc/{int(job_id)}/cmdline', 'rb') as f:
                running = b'submitit' in f.read()
        except (OSError, ValueError):
            running = False
        return f'submitit_local job {job_id} (a process of this machine)' if running else None
    submitit = _submitit('slurm')
    job = submitit.SlurmJob(folder=folder, job_id=job_id)
    if job.paths.result_pickle.exists():
        return None  # the job wrote its outcome: it has ended
    state = job.watcher.get_state(job_id, mode='force')
    if state.split(' ')[0] in _ACTIVE_SLURM_STATES:
        return f'Slurm job {job_id} ({state})'
    if state.upper().startswith('UNKNOWN'):
        return f'Slurm job {job_id} (its state is unknown here: sacct gave nothing)'
    return None


def check_no_job_in_flight(out: str, pending: Sequence[sweep_lib.Configuration]) -> None:
    jobs = read_jobs(out)
    for configuration in pending:
        record = jobs.get(configuration.name)
        if record is None:
            continue
        why = _job_in_flight(out, record)
        if why:
            raise app.UsageError(
                f'configuration {configuration.name} may still be training in {why}; wait '
                f'for it (or cancel it), then run this again. If it has ended, delete '
                f'{_jobs_path(out)}.'
            )


def make_executor(out: str, pending: Sequence[sweep_lib.Configuration], launcher: str):
    """(submitit executor, jobs at once) of the slurm or submitit_local launcher."""
    submitit = _submitit(launcher)
    local = launcher == 'submitit_local'
    limit = _SLURM_PARALLELISM.value or (1 if local else len(pending))
    extra = {}
    for item in _SLURM_EXTRA.value:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise app.UsageError(f'--slurm_extra={item!r} is not KEY=VALUE (e.g. account=lab).')
        extra[key] = value
    try:
        executor = submitit.AutoExecutor(
            folder=os.path.join(out, 'slurm'), cluster='local' if local else 'slurm'
        )
    except RuntimeError as e:  # no srun: not on a Slurm cluster
        raise app.UsageError(f'--launcher={launcher}: {one_line(str(e))}') from e
    parameters = {
        'name': f'sweep_{os.path.basename(os.path.abspath(out))}',
        'timeout_min': _SLURM_TIME.value,
        'gpus_per_node': _SLURM_GPUS.value,
        'cpus_per_task': _SLURM_CPUS.value,
        'mem_gb': _SLURM_MEM.value,
        'tasks_per_node': 1,
        'nodes': 1,
        'slurm_partition': _SLURM_PARTITION.value,
        'slurm_array_parallelism': limit,
        'slurm_setup': list(_SLURM_SETUP.value) or None,
        'slurm_additional_parameters': extra or None,
    }
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    return executor, limit


def run_jobs(
    out: str,
    executor: Any,
    limit: int,
    pending: Sequence[sweep_lib.Configuration],
    job: sweep_lib.RunConfiguration,
    report: Callable[[sweep_lib.Configuration, Dict[str, Any]], None],
    log: Callable[[str], None],
    launcher: str,
) -> List[str]:
    """Runs the pending configurations as submitit jobs (a Slurm job array,
    or, with `launcher` 'submitit_local', processes of this machine) and
    waits for them; the one-line reports of the jobs that failed. With
    --nowait, returns once they are submitted."""
    local = launcher == 'submitit_local'
    cluster = 'local' if local else 'slurm'
    # A Slurm array holds every job (slurm_array_parallelism runs `limit` of
    # them at once); the local executor runs at once what it is given, so it
    # gets `limit` at a time. Either way each batch is one `map_array`.
    window = limit if local else len(pending)
    queue, running, failures = list(pending), {}, []
    progress = run_dir.Progress(len(pending))
    jobs_record = read_jobs(out)
    environment = {}
    if local and limit > 1 and 'XLA_PYTHON_CLIENT_MEM_FRACTION' not in os.environ:
        # Jobs sharing one GPU: each takes its share instead of 75% of it.
        environment['XLA_PYTHON_CLIENT_MEM_FRACTION'] = f'{min(0.75, 0.9 / limit):.2f}'
    done = 0
    while queue or running:
        if queue and len(running) < window:
            batch = queue[: window - len(running)]
            queue = queue[len(batch) :]
            try:
                with _environment(environment):
                    jobs = executor.map_array(job, batch)
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                # sbatch missing, or refusing the array
                raise app.UsageError(
                    f'submitting {len(batch)} job(s) failed: {one_line(str(e))}'
                ) from e
            for submitted, configuration in zip(jobs, batch, strict=True):
                running[submitted] = configuration
                jobs_record[configuration.name] = {
                    'job_id': submitted.job_id,
                    'cluster': cluster,
                    'host': socket.gethostname(),
                    'log': str(submitted.paths.stderr),
                }
                log(
                    f'  {configuration.name}: job {submitted.job_id} (log {submitted.paths.stdout})'
                )
            run_dir.write_json(_jobs_path(out), jobs_record)
            if NOWAIT.value and not queue:
                return []
        for submitted, configuration in list(running.items()):
            if not submitted.done():
                continue
            del running[submitted]
            done += 1
            head = f'[{done}/{len(pending)}] {configuration.name} (job {submitted.job_id})'
            error = submitted.exception()
            summary = None if error else sweep_lib.finished_summary(out, configuration)
            if summary is None:
                reason = _job_error(error) if error else 'it ended without summary.json'
                failures.append(
                    f'{configuration.name} failed: {reason} (log: {submitted.paths.stderr})'
                )
                log(f'{head}: FAILED: {reason}\n    log: {submitted.paths.stderr}')
                continue
            eta = f', eta {progress.eta(done)}' if running or queue else ''
            log(f'{head}: finished ({progress.wall():.0f} s{eta})')
            report(configuration, summary)
        if queue or running:
            time.sleep(1.0 if local else 15.0)
    return failures


@contextlib.contextmanager
def _environment(values: Mapping[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def one_line(text: str) -> str:
    return ' '.join(text.split())


def _job_error(error: BaseException) -> str:
    """One line of why a job failed: the exception its function raised (the
    last line of the traceback submitit passes on), or submitit's reason (a
    job killed, timed out too often, without output)."""
    parts = re.split(r'\n-{5,}\n', str(error))
    text = parts[1] if len(parts) >= 3 else parts[0]  # the traceback between the rules
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if len(parts) >= 3 else one_line(text)
