"""Sequential A/B decisions (issue 26): stop each arm once its paired difference to the baseline is decided.

Seeds run in rounds; after round ``n`` (the planned looks ``n = min_seeds .. max_seeds``) each open arm's paired
differences ``arm - baseline`` (mAP50-95, same seed) get a Student-t interval on the arm's own variance (``n - 1`` df)
at level ``1 - alpha / L`` over the ``L`` looks (Bonferroni: an arm whose true difference is 0 is called better or
worse with probability at most ``alpha``, whatever the other arms do). An arm stops as ``better`` / ``worse``
(interval excludes 0), ``equivalent`` (interval inside ``+-margin``, a TOST; Schuirmann 1987), ``budget`` (undecided
at ``max_seeds``) or ``futile``: the predictive probability of a verdict at ``max_seeds`` (Spiegelhalter, Freedman &
Blackburn, Controlled Clin. Trials 7, 8-17, 1986; from the larger of the arm's and the open arms' pooled variance) is
below ``futility`` (non-binding: stopping only removes looks, the bound holds). Not chosen: an anytime-valid
normal-mixture confidence sequence (Howard et al., Ann. Statist. 49, 1055-1080, 2021; the ``confseq`` package) is
wider than the Bonferroni split at n <= 10 even with a known variance, and O'Brien-Fleming spending (Lan & DeMets,
Biometrika 70, 659-663, 1983) spends almost nothing at 2 seeds, where most runs are saved.
``experiments/sequential_replay.py`` compares the rule on the committed reports with the same rule without futility
and with the previous verdicts on the pooled variance.

Decisions are a pure function of the per-seed differences (``decide`` replays the looks), so a restarted experiment
re-derives them from the runs' ``result.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.stats
from scipy.special import ndtr

from ..errors import InvalidSettingError, UserError
from . import protocol
from .stats import PairedDifference, paired_difference

__all__ = ["Rule", "Decision", "decide", "next_round", "runs_used", "plan_seeds", "spec_rule", "recorded_rule"]
__all__ += ["paired_diffs", "section", "pilot", "plan_lines", "plan_section"]


@dataclass(frozen=True)
class Rule:
    """The sequential rule's settings, fixed before the first round (recorded in ``experiment.json``).

    Attributes:
        margin: equivalence margin on the metric (mAP50-95).
        alpha: two-sided false-verdict rate per arm at a true difference of 0, over all looks.
        min_seeds: first look (at least 2).
        max_seeds: last look, the budget per arm.
        pooled: must be False (recorded in ``experiment.json``): the previous rule's pooled verdicts were removed.
        futility: stop an arm whose predictive probability of a verdict at ``max_seeds`` is below this (None: off).
    """

    margin: float = 0.005
    alpha: float = 0.05
    min_seeds: int = 2
    max_seeds: int = 5
    pooled: bool = False
    futility: float | None = 0.1

    def __post_init__(self) -> None:
        if not 2 <= self.min_seeds <= self.max_seeds or not 0 < self.alpha < 1 or self.margin < 0 or self.pooled:
            raise ValueError(f"invalid sequential rule {self}")

    @property
    def look_alpha(self) -> float:
        """Two-sided level of each look's interval: ``alpha`` split evenly over the planned looks."""
        return self.alpha / (self.max_seeds - self.min_seeds + 1)


@dataclass(frozen=True)
class Decision:
    """An arm's ``state`` after the last complete round, its seeds ``n`` and its last interval ``mean [lo, hi]``.

    ``state``: ``better``, ``worse``, ``equivalent``, ``futile``, ``budget`` or ``open`` (``n``: the values it has).
    """

    state: str
    n: int
    mean: float | None = None
    lo: float | None = None
    hi: float | None = None


@lru_cache(maxsize=4096)
def _t(alpha: float, df: float) -> float:
    """The two-sided Student-t quantile."""
    return float(scipy.stats.t.ppf(1.0 - alpha / 2.0, df))


def _p_decided(mean: float, var: float, n: int, rule: Rule) -> float:
    """Predictive probability that an arm at ``n`` seeds gets a verdict at ``N = rule.max_seeds``.

    The final mean is predicted ``N(mean, var (N - n) / (N n))``, the final half-width is ``t sqrt(var / N)``.
    """
    big_n = rule.max_seeds
    h = _t(rule.look_alpha, big_n - 1.0) * math.sqrt(var / big_n)
    sd = math.sqrt(var * (big_n - n) / (big_n * n))
    if sd == 0.0:
        return 1.0
    p = ndtr((-h - mean) / sd) + 1.0 - ndtr((h - mean) / sd)
    if h < rule.margin:
        p += ndtr((rule.margin - h - mean) / sd) - ndtr((h - rule.margin - mean) / sd)
    return float(p)


def _look(n: int, mean: float, var: float, fvar: float, rule: Rule) -> Decision:
    """The state at ``n`` seeds: the interval on ``var`` (``n - 1`` df), futility predicted from ``fvar``."""
    half = _t(rule.look_alpha, n - 1.0) * math.sqrt(var / n)
    lo, hi = mean - half, mean + half
    if lo > 0 or hi < 0:
        state = "better" if lo > 0 else "worse"
    elif -rule.margin <= lo and hi <= rule.margin:
        state = "equivalent"
    elif n >= rule.max_seeds:
        state = "budget"
    elif rule.futility is not None and _p_decided(mean, fvar, n, rule) < rule.futility:
        state = "futile"
    else:
        state = "open"
    return Decision(state, n, mean, lo, hi)


def _verdicts(n: int, x: np.ndarray, rule: Rule) -> list[Decision]:
    """The open arms' states at ``n`` seeds from their differences ``x`` (open arms, n): each on its own variance.

    Futility predicts from the larger of the arm's own variance and the open arms' pooled one, ``sum SS_i / (k (n-1))``.
    """
    means = x.mean(axis=1)
    own = ((x - means[:, None]) ** 2).sum(axis=1) / (n - 1)
    pool = float(own.mean())
    return [_look(n, float(m), float(v), max(pool, float(v)), rule) for m, v in zip(means, own)]


Verdicts = Callable[[int, np.ndarray, Rule], list[Decision]]


def decide(
    diffs: Mapping[str, Sequence[float]], rule: Rule = Rule(), verdicts: Verdicts = _verdicts
) -> dict[str, Decision]:
    """Replay the looks on per-arm paired differences (``arm - baseline``, in seed-round order) and decide each arm.

    Args:
        diffs: per arm, its differences by round; an arm may hold more values than it used (they are ignored) or,
            mid-round, one fewer than the others (the round is not looked at until every open arm has it).
        rule: the settings.
        verdicts: the states of the open arms at a look, ``verdicts(n, x, rule)`` with ``x`` (open arms, n); the
            default is the rule above (``experiments/sequential_replay.py`` passes the ones it compares).

    Returns:
        Per arm, its decision after the last complete round.
    """
    data = {arm: np.asarray(v, dtype=np.float64) for arm, v in diffs.items()}
    out = {arm: Decision("open", min(x.size, rule.min_seeds - 1)) for arm, x in data.items()}
    for n in range(rule.min_seeds, rule.max_seeds + 1):
        arms = [a for a in data if out[a].state == "open"]
        if not arms or any(data[a].size < n for a in arms):
            break
        out.update(zip(arms, verdicts(n, np.stack([data[a][:n] for a in arms]), rule)))
    for a, d in out.items():  # an open arm counts the values it has, up to the budget
        if d.state == "open":
            out[a] = Decision("open", min(data[a].size, rule.max_seeds), d.mean, d.lo, d.hi)
    return out


def next_round(diffs: Mapping[str, Sequence[float]], rule: Rule = Rule()) -> tuple[int, list[str]] | None:
    """The next seed index (0-based, in the spec's seed order) and the arms to train at it; None when all stopped.

    The baseline is not named: it trains that seed too. Mid-round, the arms that still lack the round's seed.
    """
    open_arms = [a for a, d in decide(diffs, rule).items() if d.state == "open"]
    if not open_arms:
        return None
    k = min(len(diffs[a]) for a in open_arms)
    return k, [a for a in open_arms if len(diffs[a]) == k]


def runs_used(decisions: Mapping[str, Decision]) -> int:
    """Trained runs: each arm's seeds plus the baseline's, which runs as long as any arm (the largest ``n``)."""
    return sum(d.n for d in decisions.values()) + max((d.n for d in decisions.values()), default=0)


def plan_seeds(pilot_sd: Mapping[str, float], rule: Rule = Rule(), cap: int = 50) -> dict[str, int | None]:
    """Seeds per arm that resolve ``rule.margin``, from a pilot's paired standard deviations (>= 2 seeds each).

    The smallest ``N >= rule.min_seeds`` whose last look (``alpha`` split over the looks ``min_seeds .. N``) has a
    half-width ``t sd / sqrt(N) <= margin`` (``N - 1`` df). None: more than ``cap`` seeds.
    """
    n = np.arange(rule.min_seeds, cap + 1)
    t = scipy.stats.t.ppf(1.0 - rule.alpha / (2.0 * (n - rule.min_seeds + 1)), n - 1)
    out: dict[str, int | None] = {}
    for arm, sd in pilot_sd.items():
        ok = np.flatnonzero(t * sd / np.sqrt(n) <= rule.margin)
        out[arm] = int(n[ok[0]]) if ok.size else None
    return out


# ---------------------------------------------------------------------------------------------- the runner's side
def spec_rule(spec: Any) -> Rule:
    """The rule of a ``decide=sequential`` spec: its margin, alpha ``1 - LEVEL``, 2 to ``len(seeds)`` seeds per arm.

    Raises:
        InvalidSettingError: fewer than 2 seeds, or no arm besides the baseline.
    """
    if len(spec.seeds) < 2 or len(spec.arms) < 2:
        raise InvalidSettingError(
            f"decide=sequential needs at least 2 seeds and an arm besides the baseline '{spec.baseline}' "
            f"(seeds={spec.seeds}, arms={spec.arm_names})."
        )
    return Rule(margin=spec.margin, alpha=round(1.0 - protocol.LEVEL, 10), max_seeds=len(spec.seeds))


def recorded_rule(meta: Mapping[str, Any], rule: Rule | None = None) -> Rule | None:
    """The rule ``experiment.json`` recorded (None: a grid experiment); refuses another ``rule`` to continue it.

    Raises:
        UserError: ``rule`` differs from the recorded one (both named).
    """
    old = Rule(**meta["sequential"]) if meta.get("sequential") else None
    if rule is not None and old is not None and old != rule:
        new = asdict(rule)
        diff = ", ".join(f"{k} {v!r} -> {new[k]!r}" for k, v in asdict(old).items() if new[k] != v)
        raise UserError(
            f"This experiment's sequential rule was {asdict(old)}; this command's is {new} ({diff}): its "
            "decisions would change. Use the recorded margin= and seeds=, or another out= directory."
        )
    return old


def paired_diffs(results: Sequence[Any], arms: Sequence[str], baseline: str, seeds: Sequence[int]) -> dict[str, list]:
    """Per arm, its finished paired differences of mAP50-95 to the baseline, in seed order, up to its first gap."""
    value = {(r.arm, r.seed): r.metric(protocol.PRIMARY_METRIC) for r in results}
    out: dict[str, list[float]] = {}
    for arm in (a for a in arms if a != baseline):
        diffs = [value.get((arm, s), math.nan) - value.get((baseline, s), math.nan) for s in seeds]
        out[arm] = diffs[: next((i for i, d in enumerate(diffs) if not math.isfinite(d)), len(diffs))]
    return out


_WHY = {"better": "better (interval above 0)", "worse": "worse (interval below 0)", "futile": "futile"}
_WHY |= {"budget": "budget spent, undecided", "open": "open (runs missing)"}


def section(results: Sequence[Any], meta: Mapping[str, Any], rule: Rule) -> str:
    """The report's "Sequential decisions" section: per arm its seeds, why it stopped and its last interval."""
    baseline, seeds = meta.get("baseline", protocol.BASELINE), list(meta.get("seeds") or [])
    arms = list(meta.get("arms") or sorted({r.arm for r in results}))
    decisions = decide(paired_diffs(results, arms, baseline, seeds), rule)
    level = f"{1 - rule.look_alpha:.1%} = 1 - {rule.alpha:g}/{rule.max_seeds - rule.min_seeds + 1} looks"
    lines = ["## Sequential decisions", "", f"Paired mAP50-95 difference to {baseline}; intervals at {level}.", ""]
    lines += ["| arm | seeds | stopped | interval |", "|---|---|---|---|"]
    for arm, d in decisions.items():
        why = f"equivalent within ±{rule.margin:g}" if d.state == "equivalent" else _WHY[d.state]
        why += f" (P(verdict by {rule.max_seeds} seeds) < {rule.futility:g})" if d.state == "futile" else ""
        ci = "n/a" if d.lo is None else f"{d.mean:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}]"
        lines.append(f"| {arm} | {d.n} | {why} | {ci} |")
    trained, grid = len({r.run for r in results if r.arm in arms}), len(arms) * len(seeds)
    lines += ["", f"Runs trained: {trained} of the full grid's {grid} ({len(arms)} arms x {len(seeds)} seeds)."]
    return "\n".join(lines) + "\n"


def pilot(results: Sequence[Any], arms: Sequence[str], baseline: str) -> dict[str, PairedDifference]:
    """Per arm (not the baseline), its paired mAP50-95 difference to the baseline over every finished seed."""
    value = {arm: {r.seed: r.metric(protocol.PRIMARY_METRIC) for r in results if r.arm == arm} for arm in arms}
    return {a: paired_difference(value[a], value.get(baseline, {})) for a in arms if a != baseline}


def plan_lines(diffs: Mapping[str, PairedDifference], baseline: str, margin: float) -> list[str]:
    """Per arm its pilot's paired sd and the seeds that resolve ``margin`` (``plan_seeds``), then the total runs.

    Args:
        diffs: per arm, its pilot paired difference (each with >= 2 seeds: a ``std``).
        baseline: the baseline arm's name (it trains as many seeds as the last arm).
        margin: the equivalence margin on mAP50-95.

    Returns:
        One line per arm and a total line.
    """
    rule = Rule(margin=margin, alpha=round(1.0 - protocol.LEVEL, 10))
    need = plan_seeds({a: float(d.std) for a, d in diffs.items()}, rule)
    lines = [
        f"{a}: paired sd {diffs[a].std:.4f} over {diffs[a].n} seeds -> {n or '> 50'} seeds" for a, n in need.items()
    ]
    total = "n/a" if None in need.values() else sum(need.values()) + max(need.values())
    return [*lines, f"total: {total} runs, {baseline} included, to resolve ±{margin:g}"]


def plan_section(results: Sequence[Any], meta: Mapping[str, Any], margin: float) -> str:
    """The report's "Planning" section from this experiment as a pilot; empty when an arm has < 2 paired seeds."""
    baseline = meta.get("baseline", protocol.BASELINE)
    diffs = pilot(results, list(meta.get("arms") or sorted({r.arm for r in results})), baseline)
    if not diffs or any(d.std is None for d in diffs.values()):
        return ""
    head = (
        f"Seeds per arm for a sequential experiment (`decide=sequential margin={margin:g}`) to resolve ±{margin:g} "
        f"on mAP50-95, from this experiment's paired sds (`yolo-vfl ab plan out=DIR margin=M` for another margin):"
    )
    lines = [f"- {line}" for line in plan_lines(diffs, baseline, margin)]
    return "\n".join(["## Planning", "", head, "", *lines]) + "\n"
