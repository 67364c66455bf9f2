"""The run directory that every host loop writes: config guard, resume, records, ETA.

`RunDir(path, config, config_name)` is shared by `runner.train` (one training
run) and `der_study.run_study` (the DER ablation):

  * the config guard: the first start writes `config_name` (JSON); a later
    start with another configuration is refused with `ConfigMismatchError`,
    and a file with an unknown key is reported by name by the config parser;
  * resume: `restore(like_state)` returns the newest complete checkpoint
    (orbax writes each one atomically: a killed save leaves a temporary
    directory that is never read back);
  * records: `records(name)` appends rows to a JSON-lines or CSV file; a torn
    last line (a run killed mid-write) is dropped when read, and resuming
    cuts the file back to the checkpoint's iteration;
  * outputs written atomically (a temporary file in the same directory, then
    a rename): `write_json`, `write_text`;
  * `Progress`: elapsed time, throughput and the ETA of a loop.

Every number in a JSON file is finite: NaN and infinities become null
(`to_python`), so every file and every `--json` line parses.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from insertion_jax.training import checkpoint


class ConfigMismatchError(ValueError):
    """The output directory holds a run with another configuration."""


def to_python(value: Any) -> Any:
    """A JSON-ready scalar: NaN and inf become None, numpy scalars become floats/ints."""
    if value is None or isinstance(value, (bool, np.bool_, str)):
        return value if not isinstance(value, np.bool_) else bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def json_ready(obj: Any) -> Any:
    """`obj` with every number made JSON-safe (`to_python`), recursively."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    return to_python(obj)


def dumps(obj: Any, **kwargs) -> str:
    """JSON text of `obj` that any parser accepts (no NaN or Infinity tokens)."""
    return json.dumps(json_ready(obj), allow_nan=False, **kwargs)


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically: readers see the old file or the new one."""
    write_bytes(path, text.encode())


def write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` atomically, with the permissions a plain
    `open` would give it (the umask's; a temporary file starts private)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.')
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    """Writes `obj` as indented JSON, atomically, NaN as null."""
    write_text(path, dumps(obj, indent=2) + '\n')


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def format_duration(seconds: float) -> str:
    """H:MM:SS."""
    seconds = int(max(0, seconds))
    return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class Progress:
    """Elapsed time and ETA of a loop of `total` units that resumed after `done`.

    `wall()` counts the seconds of earlier sessions (`wall_before`) too; the
    ETA uses only this session's rate.
    """

    def __init__(self, total: int, done: int = 0, wall_before: float = 0.0):
        self.total, self.first, self.wall_before = total, done, wall_before
        self.start = time.time()

    def wall(self) -> float:
        return self.wall_before + time.time() - self.start

    def eta(self, done: int) -> str:
        ran = done - self.first
        if ran <= 0:
            return '?'
        return format_duration((time.time() - self.start) / ran * (self.total - done))


class Records:
    """Rows of a run (one per iteration and seed/configuration), appended as they come.

    JSON lines for `.jsonl` paths, CSV (with `fields` as header) for `.csv`.
    Reading drops a torn last line; `truncate_after(iteration)` keeps the rows
    of iterations up to `iteration` (rewritten atomically).
    """

    def __init__(self, path: str, fields: Optional[Sequence[str]] = None, writable: bool = True):
        self.path = path
        self.csv = path.endswith('.csv')
        if self.csv and not fields:
            raise ValueError(f'{path}: a CSV record file needs its fields.')
        self.fields = tuple(fields or ())
        self.writable = writable  # False: appending, cutting and removing do nothing

    def _format(self, rows: Iterable[Mapping[str, Any]], header: bool) -> str:
        if not self.csv:
            return ''.join(dumps(r) + '\n' for r in rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, lineterminator='\n')
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not self.writable:
            return
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        self._drop_torn_tail()
        with open(self.path, 'a') as f:
            f.write(self._format(rows, header=new))
            f.flush()
            os.fsync(f.fileno())

    def _drop_torn_tail(self) -> None:
        """A run killed mid-append can leave a partial last line: cut it off."""
        if not os.path.exists(self.path):
            return
        with open(self.path, 'rb') as f:
            data = f.read()
        if data and not data.endswith(b'\n'):
            write_text(self.path, data[: data.rfind(b'\n') + 1].decode())

    def read(self) -> List[Dict[str, Any]]:
        """Every complete row (a torn last line is dropped)."""
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            text = f.read()
        lines = text.split('\n')
        complete = lines[:-1]  # the text after the last newline is torn or empty
        if self.csv:
            return list(csv.DictReader(complete)) if complete else []
        rows = []
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f'{self.path}:{number} is not valid JSON: {e}') from e
        return rows

    def truncate_after(self, iteration: int) -> None:
        if not self.writable:
            return
        rows = [r for r in self.read() if int(r.get('iteration', 0)) <= iteration]
        write_text(self.path, self._format(rows, header=True))

    def remove(self) -> None:
        if self.writable and os.path.exists(self.path):
            os.remove(self.path)


def config_changes(old: Any, new: Any, prefix: str = '') -> Dict[str, Tuple[Any, Any]]:
    """{dotted key: (old value, new value)} of every leaf that differs between
    two JSON-ready configs (a key present in one only counts as a change)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return {} if old == new else {prefix or '(root)': (old, new)}
    changes = {}
    for key in sorted(set(old) | set(new), key=str):
        name = f'{prefix}.{key}' if prefix else str(key)
        changes.update(config_changes(old.get(key), new.get(key), name))
    return changes


def check_config(
    config_path: str,
    config: Dict[str, Any],
    extendable: Sequence[str] = (),
    read_back: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
) -> Dict[str, Tuple[Any, Any]]:
    """The changes {dotted key: (stored, new)} of `config` against the stored
    file, all in `extendable`; any other change raises `ConfigMismatchError`
    naming the first key. `read_back` as in `RunDir`."""
    config = json.loads(dumps(config))
    stored = read_json(config_path)
    if read_back is not None:
        try:
            stored = json.loads(dumps(read_back(stored)))
        except (ValueError, TypeError):
            pass  # compared as written: the mismatch names the key
    changed = config_changes(stored, config)
    fixed = sorted(set(changed) - set(extendable))
    if fixed:
        was, now = changed[fixed[0]]
        raise ConfigMismatchError(
            f'{os.path.dirname(config_path)!r} holds a run with a different configuration '
            f'({fixed[0]}: {was!r} there, {now!r} here'
            + (f', and {len(fixed) - 1} more' if len(fixed) > 1 else '')
            + '); pick another output directory or delete it.'
        )
    return changed


class RunDir:
    """An output directory holding one run (see the module docstring).

    Args:
      path: the directory (created).
      config: the run's configuration as a JSON-ready dict.
      config_name: its file name in `path`.
      keep: checkpoints kept (the newest ones).
      extendable: dotted keys of `config` (e.g. 'run.total_steps') that a
        later start may change: `changed` holds {key: (old, new)} for the
        caller to check, and `accept_changes()` rewrites the file.
      read_back: optional `stored config dict -> config dict` applied to the
        file before comparing: reading it through the config classes fills
        fields added since it was written with their defaults, so a run
        from before a new setting resumes when the setting's default is
        what it ran with.
      writer: whether this process writes the directory's files (process 0
        of a multi-process run; the others check the configuration, read,
        and take part in the checkpoints, which orbax writes together).
    """

    def __init__(
        self,
        path: str,
        config: Dict[str, Any],
        config_name: str,
        keep: int = 2,
        extendable: Sequence[str] = (),
        read_back: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
        writer: bool = True,
    ):
        if keep < 1:
            raise ValueError(f'keep={keep}: at least the newest checkpoint must be kept (>= 1).')
        self.path, self.writer = path, writer
        os.makedirs(path, exist_ok=True)
        config_path = os.path.join(path, config_name)
        config = json.loads(dumps(config))
        self.changed: Dict[str, Tuple[Any, Any]] = {}
        if os.path.exists(config_path):
            self.changed = check_config(config_path, config, extendable, read_back)
        elif writer:
            write_json(config_path, config)
        self._config_path, self._config = config_path, config
        self._manager = checkpoint.checkpoint_manager(path, max_to_keep=keep)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def records(self, name: str, fields: Optional[Sequence[str]] = None) -> Records:
        return Records(self.file(name), fields, writable=self.writer)

    def restore(self, like_state: Any) -> Optional[Tuple[Any, Dict[str, Any]]]:
        """(state, progress) of the newest checkpoint, or None for a fresh run."""
        return checkpoint.restore_latest(self._manager, like_state)

    def save(self, step: int, state: Any, progress: Dict[str, Any]) -> None:
        checkpoint.save(self._manager, step, state, progress)

    def resume(self, like_state: Any, records: Records, log) -> Tuple[Any, int, float]:
        """The state to start from, the iterations done and the wall-clock seconds so far.

        A fresh run (`like_state` itself) removes stale records; a resumed
        one cuts them back to the checkpoint's iteration
        (`progress['iterations']`, which `save`'s callers record). Pass a
        committed `like_state` (`loop.committed`), as restored ones are, so
        that both run one compiled program.
        """
        restored = self.restore(like_state)
        if restored is None:
            records.remove()
            return like_state, 0, 0.0
        state, progress = restored
        done = int(progress['iterations'])
        records.truncate_after(done)
        log(f'  resumed from the checkpoint after {done} iteration{"s" if done != 1 else ""}')
        return state, done, float(progress['wall_clock_s'])

    def accept_changes(self) -> None:
        """Writes the configuration with the `extendable` changes the caller accepted."""
        if self.changed and self.writer:
            write_json(self._config_path, self._config)

    def cached_json(self, name: str, compute: Callable[[], Any]) -> Any:
        """The JSON file `name`'s value; on the first call, `compute()`, written
        atomically (a value that depends only on the configuration, so that a
        resumed run need not compute it again)."""
        path = self.file(name)
        if os.path.exists(path):
            return read_json(path)
        value = json.loads(dumps(compute()))
        if self.writer:
            write_json(path, value)
        return value

    def write_summary(self, summary: Dict[str, Any], markdown: str) -> None:
        if not self.writer:
            return
        write_json(self.file('summary.json'), summary)
        write_text(self.file('summary.md'), markdown + '\n')
