"""The residual-RL paper's results table, our measurements beside it, and its effects.

`PAPER` holds the paper's success rates (Schoettler, Nair et al., as
`../shared/TARGETS.md` digests them) per connector and method, for the
exact goal and the ±1 mm goal; a method the paper did not run on a
connector has no entry. A `Row` is one measured cell: the success rates of
the final policies, pooled over seeds and evaluation episodes, with Wilson
95% intervals (`stats.wilson_interval`). `effects(rows)` decides each of the
paper's five effects from the rows alone: shown, not shown, or not run,
with the numbers that decide it. A comparison counts only where the 95%
intervals do not overlap, and nothing learned is called shown on one seed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from insertion_jax.training import stats

CONNECTORS = ('usb', 'dsub', 'model_e')
METHODS = (
    'p_controller',
    'residual_sac_dense',
    'residual_sac_sparse',
    'residual_sac_image',
    'residual_td3_image',
    'lfd_td3_sparse',
    'lfd_td3_image',
    'pure_sac_dense',
    'pure_sac_sparse',
)
METHOD_TITLES = {
    'p_controller': 'P-controller',
    'residual_sac_dense': 'Residual RL, dense (SAC)',
    'residual_sac_sparse': 'Residual RL, sparse (SAC)',
    'residual_sac_image': 'Residual RL, images (SAC)',
    'residual_td3_image': 'Residual RL, images (TD3)',
    'lfd_td3_sparse': 'RL + LfD, sparse (TD3)',
    'lfd_td3_image': 'RL + LfD, images (TD3)',
    'pure_sac_dense': 'Pure RL, dense (SAC)',
    'pure_sac_sparse': 'Pure RL, sparse (SAC)',
}
# (exact goal, ±1 mm goal), fractions.
PAPER: Dict[Tuple[str, str], Tuple[float, float]] = {
    ('usb', 'p_controller'): (1.00, 0.60),
    ('usb', 'residual_sac_dense'): (1.00, 0.84),
    ('usb', 'residual_sac_sparse'): (0.88, 0.84),
    ('usb', 'residual_sac_image'): (1.00, 0.80),
    ('usb', 'lfd_td3_sparse'): (1.00, 0.32),
    ('usb', 'pure_sac_dense'): (0.28, 0.20),
    ('dsub', 'p_controller'): (1.00, 0.44),
    ('dsub', 'residual_sac_dense'): (1.00, 0.60),
    ('dsub', 'residual_sac_image'): (1.00, 0.64),
    ('dsub', 'residual_td3_image'): (0.52, 0.52),
    ('dsub', 'lfd_td3_image'): (0.52, 0.52),
    ('dsub', 'pure_sac_dense'): (0.16, 0.00),
    ('model_e', 'p_controller'): (0.52, 0.24),
    ('model_e', 'residual_sac_dense'): (1.00, 0.76),
    ('model_e', 'residual_sac_image'): (1.00, 0.76),
    ('model_e', 'residual_td3_image'): (0.00, 0.00),
    ('model_e', 'lfd_td3_image'): (0.20, 0.20),
    ('model_e', 'pure_sac_dense'): (0.00, 0.00),
}
# The cells a reproduction runs: the paper's table, and the one cell outside
# it that an effect needs (effect 4 compares the methods with a sparse
# reward; the paper's pure RL with the sparse reward is in its Fig. 7, not
# its table).
EFFECT_CELLS: Tuple[Tuple[str, str], ...] = (('usb', 'pure_sac_sparse'),)
CELLS: Tuple[Tuple[str, str], ...] = tuple(PAPER) + EFFECT_CELLS
COLUMNS = (
    'connector',
    'method',
    'exact',
    'exact_low',
    'exact_high',
    'noisy',
    'noisy_low',
    'noisy_high',
    'paper_exact',
    'paper_noisy',
    'seeds',
    'episodes',
    'steps_to_high',
    'steps',
)
RATES = COLUMNS[2:8]  # exact ... noisy_high
HIGH_SUCCESS = 0.8  # "high success" of effect 4: this share of training episodes


@dataclasses.dataclass(frozen=True)
class Row:
    """One cell of the table.

    Attributes:
      connector, method: names from `CONNECTORS` and `METHODS`.
      exact, noisy: success rates in [0, 1]: the seeds' mean over the same
        evaluation episodes.
      exact_low ... noisy_high: their Wilson 95% intervals over `episodes`
        trials (the episodes' sampling; the seeds share them).
      paper_exact, paper_noisy: the paper's rates, or None.
      seeds: final policies evaluated (1 for the P-controller).
      episodes: distinct evaluation episodes per condition (each seed runs
        all of them).
      steps_to_high: environment steps per seed until the training
        episodes' success first reached `HIGH_SUCCESS` (seed mean), or None.
      steps: environment steps per seed of the run (None for the
        P-controller): a run that never reached `HIGH_SUCCESS` took longer.
    """

    connector: str
    method: str
    exact: float
    exact_low: float
    exact_high: float
    noisy: float
    noisy_low: float
    noisy_high: float
    paper_exact: Optional[float]
    paper_noisy: Optional[float]
    seeds: int
    episodes: int
    steps_to_high: Optional[int] = None
    steps: Optional[int] = None

    def interval(self, condition: str) -> Tuple[float, float]:
        return getattr(self, f'{condition}_low'), getattr(self, f'{condition}_high')

    def cell(self, condition: str) -> str:
        """'84% [76, 90]'."""
        low, high = self.interval(condition)
        value = getattr(self, condition)
        return f'{100 * value:.0f}% [{100 * low:.0f}, {100 * high:.0f}]'


def row_from_rates(
    connector: str,
    method: str,
    exact: float,
    noisy: float,
    episodes: int,
    seeds: int,
    steps_to_high: Optional[int] = None,
    steps: Optional[int] = None,
) -> Row:
    """A `Row` from success rates over `episodes` distinct episodes per
    condition (for several seeds, their mean over the same episodes: the
    interval is the Wilson interval of `episodes` trials, not seeds x
    episodes, since the seeds share the episodes)."""
    if connector not in CONNECTORS or method not in METHODS:
        raise ValueError(
            f'row_from_rates: connector={connector!r}, method={method!r}; connectors '
            f'{", ".join(CONNECTORS)}; methods {", ".join(METHODS)}.'
        )
    paper = PAPER.get((connector, method), (None, None))
    e_low, e_high = stats.wilson_interval(exact * episodes, episodes)
    n_low, n_high = stats.wilson_interval(noisy * episodes, episodes)
    return Row(
        connector=connector,
        method=method,
        exact=exact,
        exact_low=e_low,
        exact_high=e_high,
        noisy=noisy,
        noisy_low=n_low,
        noisy_high=n_high,
        paper_exact=paper[0],
        paper_noisy=paper[1],
        seeds=seeds,
        episodes=episodes,
        steps_to_high=steps_to_high,
        steps=steps,
    )


# ------------------------------------------------------------ files
def table_csv(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator='\n')
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ('' if v is None else v) for k, v in dataclasses.asdict(row).items()})
    return out.getvalue()


def read_table_csv(text: str) -> List[Row]:
    def number(value: str, kind):
        return None if value == '' else kind(value)

    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        rows.append(
            Row(
                connector=record['connector'],
                method=record['method'],
                **{k: float(record[k]) for k in RATES},
                paper_exact=number(record['paper_exact'], float),
                paper_noisy=number(record['paper_noisy'], float),
                seeds=int(record['seeds']),
                episodes=int(record['episodes']),
                steps_to_high=number(record['steps_to_high'], int),
                steps=number(record.get('steps', ''), int),
            )
        )
    return rows


def table_markdown(rows: Sequence[Row]) -> str:
    """One table per connector in the paper's layout: each cell our success
    with its 95% interval, the paper's beside it."""

    def paper(value):
        return '–' if value is None else f'{100 * value:.0f}%'

    parts = []
    by_key = {(r.connector, r.method): r for r in rows}
    for connector in CONNECTORS:
        cells = [by_key[(connector, m)] for m in METHODS if (connector, m) in by_key]
        if not cells:
            continue
        parts += [
            f'**{connector}**',
            '',
            '| method | exact goal | paper | ±1 mm goal | paper | seeds | episodes |',
            '|---|---|---|---|---|---|---|',
        ]
        for r in cells:
            parts.append(
                f'| {METHOD_TITLES[r.method]} | {r.cell("exact")} | {paper(r.paper_exact)} '
                f'| {r.cell("noisy")} | {paper(r.paper_noisy)} | {r.seeds} | {r.episodes} |'
            )
        parts.append('')
    return '\n'.join(parts)


# ------------------------------------------------------------ effects
@dataclasses.dataclass(frozen=True)
class Effect:
    number: int
    claim: str
    verdict: str  # 'shown' | 'not shown' | 'not run'
    evidence: Tuple[str, ...]


SHOWN, NOT_SHOWN, NOT_RUN = stats.SHOWN, stats.NOT_SHOWN, stats.NOT_RUN
CLAIMS = (
    'The P-controller succeeds with the exact goal on USB and D-Sub, struggles on '
    'Model-E, and loses much of its success under ±1 mm goal noise.',
    'Residual RL beats pure RL on every connector; pure RL mostly fails on Model-E.',
    'Under ±1 mm goal noise, residual SAC keeps more success than the P-controller.',
    'With a sparse reward, methods with prior information (residual, LfD) reach high '
    'success about twice as fast as pure RL.',
    'SAC is more robust than TD3 under noise.',
)


def _compare(a: Row, b: Row, condition: str) -> Tuple[Optional[int], str]:
    """Whether `a` is above (+1), below (-1) or level with (None) `b` in
    `condition`, and the numbers, as a line."""
    order = stats.separated(a.interval(condition), b.interval(condition))
    word = {1: 'above', -1: 'below', None: 'overlaps'}[order]
    other = '' if b.connector == a.connector else f'{b.connector} '
    line = (
        f'{a.connector}, {condition}: {METHOD_TITLES[a.method]} {a.cell(condition)} {word} '
        f'{other}{METHOD_TITLES[b.method]} {b.cell(condition)}'
    )
    return order, line


def _few_seeds(rows: Sequence[Row]) -> List[str]:
    return [
        f'{r.connector} {METHOD_TITLES[r.method]}: {r.seeds} seed'
        for r in rows
        if r.method != 'p_controller' and not stats.enough_seeds(r.seeds)
    ]


def _decide(number: int, needed: Sequence[Row], holds: bool, lines: List[str]) -> Effect:
    claim = CLAIMS[number - 1]
    few = _few_seeds(needed)
    if few:
        return Effect(number, claim, NOT_SHOWN, tuple(lines + [f'too few seeds: {"; ".join(few)}']))
    return Effect(number, claim, SHOWN if holds else NOT_SHOWN, tuple(lines))


def _missing(number: int, by_key: Mapping, keys: Sequence[Tuple[str, str]]) -> Optional[Effect]:
    absent = [f'{c} {m}' for c, m in keys if (c, m) not in by_key]
    if absent:
        return Effect(number, CLAIMS[number - 1], NOT_RUN, (f'missing: {", ".join(absent)}',))
    return None


def _above_under_noise(number: int, by_key: Mapping, higher: str, lower: str) -> Effect:
    """`higher` above `lower` at ±1 mm on some connector and below on none, over
    the connectors where the paper reports both (TD3 from images: D-Sub and
    Model-E)."""
    connectors = [c for c in CONNECTORS if (c, higher) in PAPER and (c, lower) in PAPER]
    keys = [(c, m) for c in connectors for m in (higher, lower)]
    missing = _missing(number, by_key, keys)
    if missing:
        return missing
    lines, orders = [], []
    for c in connectors:
        order, line = _compare(by_key[(c, higher)], by_key[(c, lower)], 'noisy')
        orders.append(order)
        lines.append(line)
    holds = 1 in orders and -1 not in orders
    return _decide(number, [by_key[k] for k in keys], holds, lines)


def effects(rows: Sequence[Row]) -> List[Effect]:
    """The five effects of the paper (TARGETS.md), each decided from `rows`."""
    by_key = {(r.connector, r.method): r for r in rows}
    out = []

    # 1. The P-controller: high exact on USB and D-Sub, lower on Model-E, noise costs.
    keys = [(c, 'p_controller') for c in CONNECTORS]
    missing = _missing(1, by_key, keys)
    if missing:
        out.append(missing)
    else:
        p = {c: by_key[(c, 'p_controller')] for c in CONNECTORS}
        lines, holds = [], True
        for c in ('usb', 'dsub'):
            ok = p[c].exact_low >= HIGH_SUCCESS
            holds &= ok
            lines.append(f'{c}, exact: {p[c].cell("exact")} ({"" if ok else "not "}high)')
        for c in ('usb', 'dsub'):
            order, line = _compare(p['model_e'], p[c], 'exact')
            holds &= order == -1
            lines.append(line)
        for c in CONNECTORS:
            order = stats.separated(p[c].interval('noisy'), p[c].interval('exact'))
            holds &= order == -1
            lines.append(
                f'{c}: ±1 mm {p[c].cell("noisy")} '
                f'{"below" if order == -1 else "not below"} exact {p[c].cell("exact")}'
            )
        out.append(_decide(1, list(p.values()), holds, lines))

    # 2. Residual beats pure everywhere; pure mostly fails on Model-E.
    keys = [(c, m) for c in CONNECTORS for m in ('residual_sac_dense', 'pure_sac_dense')]
    missing = _missing(2, by_key, keys)
    if missing:
        out.append(missing)
    else:
        lines, holds, needed = [], True, []
        for c in CONNECTORS:
            residual, pure = by_key[(c, 'residual_sac_dense')], by_key[(c, 'pure_sac_dense')]
            needed += [residual, pure]
            orders = []
            for condition in ('exact', 'noisy'):
                order, line = _compare(residual, pure, condition)
                orders.append(order)
                lines.append(line)
            holds &= 1 in orders and -1 not in orders
        pure_e = by_key[('model_e', 'pure_sac_dense')]
        fails = pure_e.exact_high < 0.5
        holds &= fails
        lines.append(
            f'model_e, pure RL exact {pure_e.cell("exact")} ({"" if fails else "not "}mostly failing)'
        )
        out.append(_decide(2, needed, holds, lines))

    # 3. Residual SAC keeps more under noise than the P-controller.
    out.append(_above_under_noise(3, by_key, 'residual_sac_dense', 'p_controller'))

    # 4. Sparse reward: prior information reaches high success twice as fast.
    keys = [('usb', m) for m in ('residual_sac_sparse', 'lfd_td3_sparse', 'pure_sac_sparse')]
    missing = _missing(4, by_key, keys)
    if missing:
        out.append(missing)
    else:
        needed = [by_key[k] for k in keys]
        pure = needed[-1]
        # Pure RL that never got there took longer than its run: more than
        # `steps`, so at most half of that is twice as fast.
        pure_time = pure.steps_to_high or pure.steps
        pure_text = pure.steps_to_high or f'never in {pure.steps or "?"}'
        lines, holds = [], True
        for r in needed[:2]:
            fast = (
                r.steps_to_high is not None
                and pure_time is not None
                and 2 * r.steps_to_high <= pure_time
            )
            holds &= fast
            factor = ''
            if r.steps_to_high and pure_time:
                bound = 'at least ' if pure.steps_to_high is None else ''
                factor = f'{bound}{pure_time / r.steps_to_high:.1f}x as fast, '
            lines.append(
                f'usb, {METHOD_TITLES[r.method]}: {r.steps_to_high or "never"} steps to '
                f'{100 * HIGH_SUCCESS:.0f}% of training episodes, against pure RL '
                f'{pure_text} ({factor}{"" if fast else "not "}twice as fast)'
            )
        lines.append("pure RL with the sparse reward: the paper's Fig. 7, not a row of its table")
        out.append(_decide(4, needed, holds, lines))

    # 5. SAC more robust than TD3 under noise (the image rows).
    out.append(_above_under_noise(5, by_key, 'residual_sac_image', 'residual_td3_image'))
    return out


def effects_markdown(found: Sequence[Effect]) -> str:
    parts = [
        "# The paper's effects, decided from table.csv",
        '',
        'A comparison counts where the 95% intervals do not overlap; nothing '
        'learned is called shown on one seed.',
        '',
    ]
    for e in found:
        parts.append(f'{e.number}. **{e.verdict}**: {e.claim}')
        parts += [f'   - {line}' for line in e.evidence]
    return '\n'.join(parts) + '\n'
