"""TensorBoard event files of a run, written with tensorboardX (no TensorFlow).

`Board(run_dir)` writes under `run_dir/tensorboard/`: one TensorBoard *run*
per seed (`seed_<s>/`; the DER study's `<structure>_der_<on|off>/seed_<s>/`),
so that TensorBoard overlays the seeds on one chart per metric, and `mean/`
for the mean over seeds of the evaluations. Tags:
`train/<metric>` (every scalar of `metrics.jsonl`), `eval/<metric>` (success
and final distance per evaluation condition); the step is the environment
steps per seed. At the end `image(tag, png)` adds the learning curve.

A resumed run purges what the earlier session wrote after its checkpoint
(`purge_step`: the checkpoint's steps + 1), so the charts show every step once.

    tensorboard --logdir runs/usb_residual_sac/tensorboard

`read_scalars` reads the event files back (tests; scripts without TensorFlow).
"""

from __future__ import annotations

import collections
import glob
import os
import struct
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

DIRECTORY = 'tensorboard'
# Bookkeeping columns of metrics.jsonl that are not metrics.
_NOT_METRICS = ('iteration', 'seed', 'env_steps', 'wall_clock_s')


class Board:
    """The event files of one run; every method does nothing when `enabled` is False."""

    def __init__(
        self,
        run_dir: str,
        enabled: bool = True,
        purge_step: Optional[int] = None,
        run_of: Callable[[Mapping[str, Any]], str] = lambda row: f'seed_{row["seed"]}',
    ):
        self.root = os.path.join(run_dir, DIRECTORY)
        self.enabled = enabled
        self.run_of = run_of  # the TensorBoard run of a row
        self._purge_step = purge_step if purge_step and purge_step > 1 else None
        self._writers: Dict[str, Any] = {}

    def _writer(self, name: str):
        if name not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[name] = SummaryWriter(
                os.path.join(self.root, name), purge_step=self._purge_step, flush_secs=30
            )
        return self._writers[name]

    def records(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """`metrics.jsonl` rows (one per iteration and seed): each numeric value
        under `train/` (or `eval/` for evaluation columns), per seed; the
        evaluations' mean over seeds under `mean/`."""
        if not self.enabled:
            return
        evals: Dict[Tuple[str, int], List[float]] = collections.defaultdict(list)
        for row in rows:
            step = int(row['env_steps'])
            writer = self._writer(self.run_of(row))
            for key, value in row.items():
                if key in _NOT_METRICS or not _is_number(value):
                    continue
                tag = key if key.startswith('eval/') else f'train/{key}'
                writer.add_scalar(tag, float(value), step)
                if key.startswith('eval/'):
                    evals[(key, step)].append(float(value))
        for (tag, step), values in evals.items():
            self._writer('mean').add_scalar(tag, float(np.mean(values)), step)

    def image(self, tag: str, png_path: str, step: int) -> None:
        """A PNG file (e.g. the learning curve) as an image of the `mean` run."""
        if not self.enabled or not os.path.exists(png_path):
            return
        import imageio.v3 as iio

        pixels = np.asarray(iio.imread(png_path))[..., :3]
        self._writer('mean').add_image(tag, pixels, step, dataformats='HWC')

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


# ----------------------------------------------------------------- reading
def _records(path: str) -> Iterable[bytes]:
    """The payloads of a TFRecord file (length, its CRC, data, its CRC); a
    torn last record (a killed writer) ends the file."""
    with open(path, 'rb') as f:
        data = f.read()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack('<Q', data[offset : offset + 8])
        start = offset + 12
        if start + length + 4 > len(data):
            return
        yield data[start : start + length]
        offset = start + length + 4


def read_scalars(run_dir: str) -> Dict[str, Dict[str, List[Tuple[int, float]]]]:
    """{TensorBoard run: {tag: [(step, value), ...]}} of a run's event files
    (the runs that hold scalars), in the order written, with what a later
    session purged (its `purge_step`) removed as TensorBoard removes it."""
    from tensorboardX.proto import event_pb2

    out: Dict[str, Dict[str, List[Tuple[int, float]]]] = {}
    root = os.path.join(run_dir, DIRECTORY)
    paths = glob.glob(os.path.join(root, '**', 'events.out.tfevents.*'), recursive=True)
    for path in sorted(paths):
        run = os.path.relpath(os.path.dirname(path), root)
        scalars = out.get(run, {})
        for payload in _records(path):
            event = event_pb2.Event.FromString(payload)
            if event.HasField('session_log') and event.session_log.status == 1:  # START
                for tag, points in scalars.items():
                    scalars[tag] = [(s, v) for s, v in points if s < event.step]
            for value in event.summary.value:
                if value.HasField('simple_value'):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
        if scalars:  # a run of images alone has none
            out[run] = scalars
    return out
