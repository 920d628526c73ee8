"""Sequential A/B decisions (issue 26): stop each arm once its paired difference to the baseline is decided.

Seeds run in rounds; after round ``n`` (``n = min_seeds .. max_seeds``, the planned looks) each open arm's paired
differences ``arm - baseline`` (mAP50-95, same seed) get a Student-t interval on the arm's own variance (``n - 1``
df) at level ``1 - alpha / L``, ``L = max_seeds - min_seeds + 1`` looks: Bonferroni over looks fixed in advance, so
an arm whose true difference is 0 is ever called better or worse with probability at most ``alpha``, for every arm,
whatever the other arms' variances and however they share the baseline's runs (each look's t-test is exact for
normal differences; the union bound needs nothing about their dependence). Checked before choosing: an anytime-valid
normal-mixture confidence sequence (Howard, Ramdas, McAuliffe & Sekhon, Ann. Statist. 49, 1055-1080, 2021;
``confseq``) is wider at n <= 10 even with a known variance (half-width 3.04 sigma/sqrt(n) at alpha 0.05, against
the Bonferroni z of 2.50 for 4 looks); O'Brien-Fleming spending (Lan & DeMets, Biometrika 70, 659-663, 1983) spends
almost nothing at n = 2. An arm stops as ``better`` / ``worse`` (interval excludes 0), ``equivalent`` (interval
inside ``+-margin``: a TOST at the same level, Schuirmann 1987), ``futile``, or ``budget`` (undecided at the end).

Why not pool the variance over the arms (``pooled=True``, the previous rule: ``sum SS_i / (k (n - 1))`` over the open
arms, Satterthwaite df for the shared baseline, never below the arm's own): where the arms' sds differ (threefold in
the committed reports) a noisy arm whose own sample variance happens to be small gets the pool's smaller variance
and larger df. Measured on the replay's simulation (committed sds, shared baseline, all arms at a true 0, 2,000
experiments of 5 seeds; the worst glyphs arm's false better/worse rate, futility on): pooled 6.7% (``mal``; 10.0%
without futility); pooling only arms within a factor 2 of the pool (a) 7.2%; limma's moderated variance (b: Smyth,
Stat. Appl. Genet. Mol. Biol. 3(1), art. 3, 2004, prior df fitted to the open arms' log variances) 17.7%, 10.6%
with the prior df capped at the pool's Satterthwaite df: with 7-8 arms of 1 df the spread of log chi2_1
(trigamma(1/2) = 4.9) swamps that of the true variances, the fitted prior df is often infinite, and the arms are
correlated; the own variance with the pool's df scaled by the variance ratio (c) 6.7%; the own variance at most
4.2% for every arm, and with a Pocock-like split spending a quarter of a look's share at n = 2 (d) it saves no more
(38.6% against 40.0% on digits). So verdicts use the arm's own variance; the pool goes into futility.

Futility (``futility=p``, non-binding: stopping an arm only removes looks at which it could be called better or
worse, so the bound above holds for any futility rule): an open arm also stops, as ``futile``, when the predictive
probability (Spiegelhalter, Freedman & Blackburn, Controlled Clin. Trials 7, 8-17, 1986) that it is decided at
``max_seeds`` is below ``p``: the final mean predicted ``N(mean, s^2 (N - n) / (N n))``, the final half-width
``t s / sqrt(N)`` at the last look's level, ``s^2`` the larger of the arm's own variance and the pool's (``_pooled``):
an own 1-df variance at n = 2 predicts poorly. Saved on the same simulation (digits, glyphs): per arm without futility
15%, 20%; futility on the own variance 35%, 32%; on the larger of it and the pool's 40%, 38%.

Decisions are a pure function of the per-seed differences: ``decide`` replays the looks from round ``min_seeds``
and stops at the first round some open arm has not finished, so a restarted experiment re-derives the same decisions
(values past an arm's stop are ignored). ``plan_seeds``: the seeds after which every arm is resolved (final
half-width at most ``margin``; planned with ``margin / 2`` every arm gets a verdict: its interval then excludes 0 or
lies inside ``+-margin``), from a pilot's paired standard deviations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.stats

from ..errors import InvalidSettingError, UserError
from . import protocol
from .stats import paired_difference

__all__ = ["Rule", "Decision", "decide", "next_round", "runs_used", "plan_seeds", "spec_rule", "recorded_rule"]
__all__ += ["paired_diffs", "section", "plan_lines"]


@dataclass(frozen=True)
class Rule:
    """The sequential rule's settings, fixed before the first round.

    Attributes:
        margin: equivalence margin on the metric (mAP50-95).
        alpha: two-sided false-verdict rate per arm at a true difference of 0, over all looks.
        min_seeds: first look (at least 2).
        max_seeds: last look, the budget per arm.
        pooled: pool the paired variance over the open arms of a round for the verdicts too (the previous rule:
            false better/worse above ``alpha`` for a noisy arm among quieter ones; a reference).
        futility: stop an arm whose predictive probability of a verdict at ``max_seeds`` is below this (None: off).
    """

    margin: float = 0.005
    alpha: float = 0.05
    min_seeds: int = 2
    max_seeds: int = 5
    pooled: bool = False
    futility: float | None = 0.1

    def __post_init__(self) -> None:
        if not 2 <= self.min_seeds <= self.max_seeds or not 0 < self.alpha < 1 or self.margin < 0:
            raise ValueError(f"invalid sequential rule {self}")

    @property
    def look_alpha(self) -> float:
        """Two-sided level of each look's interval: ``alpha`` split evenly over the planned looks."""
        return self.alpha / (self.max_seeds - self.min_seeds + 1)


@dataclass(frozen=True)
class Decision:
    """An arm's state after the last complete round, the seeds ``n`` it used, and its last interval.

    ``state``: ``better``, ``worse``, ``equivalent``, ``futile``, ``budget`` or ``open`` (then ``n`` counts the values
    it has so far).
    """

    state: str
    n: int
    mean: float | None = None
    lo: float | None = None
    hi: float | None = None


@lru_cache(maxsize=4096)
def _t(alpha: float, df: float) -> float:
    return float(scipy.stats.t.ppf(1.0 - alpha / 2.0, df))


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _p_decided(mean: float, var: float, n: int, df_final: float, rule: Rule) -> float:
    """Predictive probability that an arm at ``n`` seeds gets a verdict at ``rule.max_seeds``."""
    big_n = rule.max_seeds
    h = _t(rule.look_alpha, df_final) * math.sqrt(var / big_n)
    sd = math.sqrt(var * (big_n - n) / (big_n * n))
    if sd == 0.0:
        return 1.0
    p = _phi((-h - mean) / sd) + 1.0 - _phi((h - mean) / sd)
    if h < rule.margin:
        p += _phi((rule.margin - h - mean) / sd) - _phi((h - rule.margin - mean) / sd)
    return p


def _pooled(x: np.ndarray, means: np.ndarray) -> tuple[float, float]:
    """Pooled variance of the rows' values (arms x seeds) and its Satterthwaite degrees of freedom.

    The pooled variance ``sum SS_i / (k (n - 1))`` is ``((k - 1) MS_int + MS_seed) / k``: the arm x seed interaction
    mean square (``(k - 1)(n - 1)`` df, the arms' own noise) and the seed mean square (``n - 1`` df, the noise the
    arms share through the baseline's run); Satterthwaite (Biometrics Bulletin 2, 110-114, 1946) gives the degrees
    of freedom of that sum, ``k (n - 1)`` without shared noise, ``n - 1`` with only shared noise. Floored to 0.1.
    """
    k, n = x.shape
    resid = x - means[:, None]
    seed = resid.mean(axis=0)
    ms_seed = k * float((seed**2).sum()) / (n - 1)
    a = (k - 1) * (float(((resid - seed) ** 2).sum()) / ((k - 1) * (n - 1)) if k > 1 else 0.0) / k
    b = ms_seed / k
    var = a + b
    if var <= 0.0:
        return 0.0, float(k * (n - 1))
    den = (a * a / ((k - 1) * (n - 1)) if k > 1 else 0.0) + b * b / (n - 1)
    return var, math.floor(10.0 * min(var * var / den, k * (n - 1))) / 10.0


def _look(n: int, mean: float, var: float, df: float, fvar: float, df_final: float, rule: Rule) -> Decision:
    """The state at ``n`` seeds: the interval on ``var`` (``df``), futility predicted from ``fvar`` (``df_final``)."""
    half = _t(rule.look_alpha, df) * math.sqrt(var / n)
    lo, hi = mean - half, mean + half
    if lo > 0 or hi < 0:
        state = "better" if lo > 0 else "worse"
    elif -rule.margin <= lo and hi <= rule.margin:
        state = "equivalent"
    elif n >= rule.max_seeds:
        state = "budget"
    elif rule.futility is not None and _p_decided(mean, fvar, n, df_final, rule) < rule.futility:
        state = "futile"
    else:
        state = "open"
    return Decision(state, n, mean, lo, hi)


def decide(diffs: Mapping[str, Sequence[float]], rule: Rule = Rule()) -> dict[str, Decision]:
    """Replay the looks on per-arm paired differences (``arm - baseline``, in seed-round order) and decide each arm.

    Args:
        diffs: per arm, its differences by round; an arm may hold more values than it used (they are ignored) or,
            mid-round, one fewer than the others (the round is not looked at until every open arm has it).
        rule: the settings.
    """
    data = {arm: np.asarray(v, dtype=np.float64) for arm, v in diffs.items()}
    out = {arm: Decision("open", min(x.size, rule.min_seeds - 1)) for arm, x in data.items()}
    for n in range(rule.min_seeds, rule.max_seeds + 1):
        arms = [a for a in data if out[a].state == "open"]
        if not arms or any(data[a].size < n for a in arms):
            break
        x = np.stack([data[a][:n] for a in arms])
        means = x.mean(axis=1)
        own = ((x - means[:, None]) ** 2).sum(axis=1) / (n - 1)
        pool, pdf = _pooled(x, means)
        df = pdf if rule.pooled else n - 1.0
        for i, a in enumerate(arms):  # the pool's variance is never narrower than the arm's own gives
            fvar = max(pool, float(own[i]))
            var = fvar if rule.pooled else float(own[i])
            out[a] = _look(n, float(means[i]), var, df, fvar, df * (rule.max_seeds - 1) / (n - 1), rule)
    for a, d in out.items():  # an open arm counts the values it has, up to the budget
        if d.state == "open":
            out[a] = Decision("open", min(data[a].size, rule.max_seeds), d.mean, d.lo, d.hi)
    return out


def next_round(diffs: Mapping[str, Sequence[float]], rule: Rule = Rule()) -> tuple[int, list[str]] | None:
    """The next seed index (0-based, in the spec's seed order) and the arms to train at it; None when all stopped.

    The baseline is not named: it trains that seed index too whenever an arm is returned (and it has not yet).
    Mid-round, the arms that still lack the round's seed are returned.
    """
    decisions = decide(diffs, rule)
    open_arms = [a for a, d in decisions.items() if d.state == "open"]
    if not open_arms:
        return None
    k = min(len(diffs[a]) for a in open_arms)
    return k, [a for a in open_arms if len(diffs[a]) == k]


def runs_used(decisions: Mapping[str, Decision]) -> int:
    """Trained runs: each arm's seeds plus the baseline's, which runs as long as any arm (the largest ``n``)."""
    return sum(d.n for d in decisions.values()) + max((d.n for d in decisions.values()), default=0)


def plan_seeds(pilot_sd: Mapping[str, float], rule: Rule = Rule(), cap: int = 50) -> dict[str, int | None]:
    """Seeds per arm that resolve ``rule.margin``, from a pilot's paired standard deviations (>= 2 seeds each).

    The smallest ``N >= rule.min_seeds`` whose last look (``alpha`` split over the looks ``rule.min_seeds .. N``, a
    rule planned with ``max_seeds = N``) has a half-width ``t * sd / sqrt(N) <= margin``; pooled: the pilot's mean
    variance over its ``k`` arms, ``k (N - 1)`` degrees of freedom. None: more than ``cap`` seeds.
    """
    k = len(pilot_sd) if rule.pooled else 1
    pooled_var = float(np.mean([s * s for s in pilot_sd.values()])) if pilot_sd else 0.0
    out: dict[str, int | None] = {}
    for arm, sd in pilot_sd.items():
        var = pooled_var if rule.pooled else sd * sd
        out[arm] = next(
            (
                n
                for n in range(rule.min_seeds, cap + 1)
                if _t(rule.alpha / (n - rule.min_seeds + 1), k * (n - 1)) * math.sqrt(var / n) <= rule.margin
            ),
            None,
        )
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


def recorded_rule(meta: dict[str, Any], rule: Rule | None = None) -> Rule | None:
    """The rule ``experiment.json`` recorded (None: a grid experiment); refuses another ``rule`` to continue it.

    Raises:
        UserError: ``rule`` differs from the recorded one (both named).
    """
    old = Rule(**meta["sequential"]) if meta.get("sequential") else None
    if rule is not None and old is not None and old != rule:
        diff = ", ".join(f"{k} {v!r} -> {asdict(rule)[k]!r}" for k, v in asdict(old).items() if asdict(rule)[k] != v)
        raise UserError(
            f"This experiment's sequential rule was {asdict(old)}; this command's is {asdict(rule)} ({diff}): its "
            "decisions would change. Use the recorded margin= and seeds=, or another out= directory."
        )
    return old


def paired_diffs(results: Sequence[Any], arms: Sequence[str], baseline: str, seeds: Sequence[int]) -> dict[str, list]:
    """Per arm, its finished paired differences of mAP50-95 to the baseline, in seed order, up to its first gap."""
    value = {(r.arm, r.seed): r.metric(protocol.PRIMARY_METRIC) for r in results}
    out: dict[str, list[float]] = {}
    for arm in (a for a in arms if a != baseline):
        pairs = [(value.get((arm, s)), value.get((baseline, s))) for s in seeds]
        n = next(
            (i for i, (a, b) in enumerate(pairs) if a is None or b is None or not math.isfinite(a - b)), len(pairs)
        )
        out[arm] = [a - b for a, b in pairs[:n]]
    return out


_WHY = {"better": "better (interval above 0)", "worse": "worse (interval below 0)", "futile": "futile"}
_WHY |= {"budget": "budget spent, undecided", "open": "open (runs missing)"}


def section(results: Sequence[Any], meta: dict[str, Any], rule: Rule) -> str:
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


def plan_lines(results: Sequence[Any], arms: Sequence[str], baseline: str, rule: Rule) -> list[str]:
    """``yolo-vfl ab plan``: per arm the seeds that resolve ``rule.margin`` from a pilot's paired sds, and a total.

    Raises:
        UserError: an arm with fewer than 2 paired seeds in the pilot.
    """
    value = {arm: {r.seed: r.metric(protocol.PRIMARY_METRIC) for r in results if r.arm == arm} for arm in arms}
    diffs = {a: paired_difference(value[a], value.get(baseline, {})) for a in arms if a != baseline}
    if short := [f"{a} ({d.n})" for a, d in diffs.items() if d.std is None] or ([] if diffs else ["none"]):
        raise UserError(f"The pilot needs >= 2 seeds paired with {baseline} per arm; paired seeds: {', '.join(short)}.")
    need = plan_seeds({a: float(d.std) for a, d in diffs.items()}, rule)
    lines = [
        f"{a}: paired sd {diffs[a].std:.4f} over {diffs[a].n} seeds -> {n or '> 50'} seeds" for a, n in need.items()
    ]
    total = "n/a" if None in need.values() else sum(need.values()) + max(need.values())  # baseline: as the last arm
    return [*lines, f"total: {total} runs, {baseline} included, to resolve ±{rule.margin:g}"]
