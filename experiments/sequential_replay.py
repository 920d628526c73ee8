"""Replay the sequential A/B rule (issue 26, ``yolo_vfl.ab.sequential``) on the committed fine-tuning experiments.

For each report under ``experiments/results/ab_finetune_*`` (each arm paired with that report's own BCE runs):

- the 5-seed grid on the real per-seed values (the ``## Runs`` table of ``summary.md``): runs trained against the
  full grid (the baseline counted: it runs while any arm is open), each arm's stop, and its verdict next to the full
  grid's (the report's 95% t-interval at 5 seeds);
- 5- and 8-seed grids simulated from each arm's committed mean and the sd its interval implies
  (``sd = halfwidth * sqrt(n) / t(0.975, n - 1)``), with the shared baseline: part of every difference's noise is
  the baseline run's, one draw common to all arms of a seed (its variance estimated from the real per-seed
  differences as the mean covariance between arms, capped at the quietest arm's variance so that every arm keeps its
  committed sd). Reported: mean runs saved, how often an arm's verdict differs from the full grid's of the same draw,
  reversals (better <-> worse), and the false better/worse rate with every arm's true difference set to 0 (its own
  sd kept), averaged over the arms and for the worst arm, with Monte-Carlo standard errors;
- for the chosen rule, each arm's false-verdict rate at 0 with ``--null-reps`` experiments, also with the baseline's
  share uncapped (the quieter arms' sds raised to it: more correlated arms);
- synthetic experiments (as many arms as the report, the report's pooled sd and baseline share) with every arm's
  true difference 0, +-0.5 sigma, +-2 sigma.

Rules compared: the chosen one (each arm's own variance, Bonferroni over the looks, futility at 0.1 predicted from
the larger of the arm's and the pooled variance) and, for reference, the same without futility and the previous rule
(the variance pooled over the open arms for the verdicts, Satterthwaite df). Deterministic (fixed seeds), one core,
about two minutes::

    python experiments/sequential_replay.py [--reps 1500] [--null-reps 4000]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.stats

from yolo_vfl.ab.sequential import Decision, Rule, decide, runs_used

RESULTS = Path(__file__).resolve().parent / "results"
REPORTS = [
    "ab_finetune_digits",
    "ab_finetune_glyphs",
    "ab_finetune_digits_r2",
    "ab_finetune_glyphs_r2",
    "ab_finetune_digits_r3",
    "ab_finetune_glyphs_r3",
    "ab_finetune_digits_e30",
    "ab_finetune_glyphs_e30",
    "ab_finetune_digits_e30_r2",
]
HEADLINE = REPORTS[:2]  # the issue's: digits 7 arms, glyphs 8 arms, plus the baseline
METRIC = "mAP50-95"
CHOSEN = Rule(margin=0.005, alpha=0.05, min_seeds=2, max_seeds=5, pooled=False, futility=0.1)
RULES = {
    "chosen": CHOSEN,
    "no futility": replace(CHOSEN, futility=None),
    "pooled (previous)": "pooled",  # the previous rule, kept here for the comparison (pooled_verdicts)
}


def _satterthwaite(x: np.ndarray, means: np.ndarray) -> tuple[float, float]:
    """Pooled variance of the rows (arms x seeds) and its Satterthwaite df (Biometrics Bulletin 2, 110-114, 1946).

    ``sum SS_i / (k (n - 1)) = ((k - 1) MS_int + MS_seed) / k``: the arm x seed interaction mean square (the arms' own
    noise) and the seed mean square (the noise shared through the baseline's run); df floored to 0.1.
    """
    k, n = x.shape
    resid = x - means[:, None]
    seed = resid.mean(axis=0)
    a = (float(((resid - seed) ** 2).sum()) / (n - 1) / k) if k > 1 else 0.0
    b = k * float((seed**2).sum()) / (n - 1) / k
    if a + b <= 0.0:
        return 0.0, float(k * (n - 1))
    den = (a * a / ((k - 1) * (n - 1)) if k > 1 else 0.0) + b * b / (n - 1)
    return a + b, math.floor(10.0 * min((a + b) ** 2 / den, k * (n - 1))) / 10.0


def _pooled_look(n: int, mean: float, var: float, df: float, rule: Rule) -> Decision:
    """One arm's state at ``n`` seeds with verdicts on the pooled variance (futility predicted on ``df_final``)."""
    half = float(scipy.stats.t.ppf(1 - rule.look_alpha / 2, df)) * math.sqrt(var / n)
    lo, hi = mean - half, mean + half
    if lo > 0 or hi < 0:
        return Decision("better" if lo > 0 else "worse", n, mean, lo, hi)
    if -rule.margin <= lo and hi <= rule.margin:
        return Decision("equivalent", n, mean, lo, hi)
    if n >= rule.max_seeds:
        return Decision("budget", n, mean, lo, hi)
    big_n, df_final = rule.max_seeds, df * (rule.max_seeds - 1) / (n - 1)
    h = float(scipy.stats.t.ppf(1 - rule.look_alpha / 2, df_final)) * math.sqrt(var / big_n)
    sd = math.sqrt(var * (big_n - n) / (big_n * n))
    cdf = scipy.stats.norm.cdf
    p = 1.0 if sd == 0 else cdf((-h - mean) / sd) + 1 - cdf((h - mean) / sd)
    if sd and h < rule.margin:
        p += cdf((rule.margin - h - mean) / sd) - cdf((h - rule.margin - mean) / sd)
    return Decision("futile" if p < rule.futility else "open", n, mean, lo, hi)


def pooled_verdicts(n: int, x: np.ndarray, rule: Rule) -> list[Decision]:
    """The previous rule's states at a look (removed from the package): verdicts on the open arms' pooled variance."""
    means = x.mean(axis=1)
    own = ((x - means[:, None]) ** 2).sum(axis=1) / (n - 1)
    pool, df = _satterthwaite(x, means)
    return [_pooled_look(n, float(m), max(pool, float(v)), df, rule) for m, v in zip(means, own)]


def apply_rule(diffs: dict[str, np.ndarray], rule: Rule | str, max_seeds: int) -> dict[str, Decision]:
    """Decide with a rule of ``RULES`` at ``max_seeds`` (``"pooled"``: the previous rule on the chosen settings)."""
    if rule == "pooled":
        return decide(diffs, replace(CHOSEN, max_seeds=max_seeds), verdicts=pooled_verdicts)
    return decide(diffs, replace(rule, max_seeds=max_seeds))


def read_runs(report: Path) -> tuple[str, dict[str, dict[int, float]]]:
    """The baseline arm and ``{arm: {seed: mAP50-95}}`` from the ``## Runs`` table of a ``summary.md``."""
    lines = report.joinpath("summary.md").read_text().split("## Runs", 1)[1].splitlines()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("| ")]
    head, values = rows[0], {}
    for row in rows[2:]:
        cell = dict(zip(head, row))
        values.setdefault(cell["arm"], {})[int(cell["seed"])] = float(cell[METRIC])
    with open(report / "summary.csv", newline="") as f:
        base = next(r["arm"] for r in csv.DictReader(f) if r[f"{METRIC}_verdict"] == "baseline")
    return base, values


def real_diffs(report: Path) -> dict[str, np.ndarray]:
    """Per arm, its paired differences to the report's baseline over the seeds both ran, by seed."""
    base, values = read_runs(report)
    return {
        arm: np.array([v[s] - values[base][s] for s in sorted(v) if s in values[base]])
        for arm, v in values.items()
        if arm != base
    }


def committed(report: Path) -> dict[str, tuple[float, float]]:
    """Per arm, ``(mean, sd)`` of its paired difference from ``summary.csv``: the sd its interval implies."""
    out = {}
    with open(report / "summary.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r[f"{METRIC}_verdict"] != "baseline":
                n = int(r[f"{METRIC}_n_pairs"])
                half = (float(r[f"{METRIC}_diff_hi"]) - float(r[f"{METRIC}_diff_lo"])) / 2
                out[r["arm"]] = (float(r[f"{METRIC}_diff"]), half * math.sqrt(n) / scipy.stats.t.ppf(0.975, n - 1))
    return out


def baseline_var(diffs: dict[str, np.ndarray]) -> float:
    """The baseline's share of each difference's variance: the mean covariance between two arms' differences."""
    x = np.array(list(diffs.values()))
    if len(x) < 2:
        return 0.0
    c = np.cov(x)
    return max(0.0, float(c[~np.eye(len(x), dtype=bool)].mean()))


@lru_cache(maxsize=64)
def t975(df: int) -> float:
    return float(scipy.stats.t.ppf(0.975, df))


def full_verdict(x: np.ndarray) -> str:
    """The report's verdict on all seeds: 95% Student-t interval, the arm's own variance."""
    half = t975(x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return "better" if x.mean() - half > 0 else "worse" if x.mean() + half < 0 else "no clear difference"


def seq_verdict(state: str) -> str:
    return state if state in ("better", "worse") else "no clear difference"


def simulate(
    arms: dict[str, tuple[float, float]], base_var: float, seeds: int, reps: int, seed: int, capped: bool = True
) -> np.ndarray:
    """``(reps, arms, seeds)`` paired differences: each arm's mean plus its own noise plus the shared baseline's.

    The baseline's variance is capped at the quietest arm's (every arm keeps its sd), or not (``capped=False``: the
    arms quieter than the baseline's share get its sd).
    """
    rng = np.random.default_rng(seed)
    mean = np.array([m for m, _ in arms.values()])[None, :, None]
    v = min(base_var, min(s * s for _, s in arms.values())) if capped else base_var
    own = np.sqrt(np.maximum(np.array([s * s for _, s in arms.values()]) - v, 0.0))[None, :, None]
    return (
        mean
        + own * rng.standard_normal((reps, len(arms), seeds))
        + math.sqrt(v) * rng.standard_normal((reps, 1, seeds))
    )


def score(draws: np.ndarray, rule: Rule | str) -> dict[str, float]:
    """Mean fraction of runs saved, verdict changes and reversals against the full grid, false verdicts per arm."""
    reps, k, seeds = draws.shape
    saved, changed, reversed_, false = [], 0, 0, []
    mean, half = draws.mean(axis=2), t975(seeds - 1) * draws.std(axis=2, ddof=1) / math.sqrt(seeds)
    fulls = np.where(mean - half > 0, "better", np.where(mean + half < 0, "worse", "no clear difference"))
    for d, full in zip(draws, fulls.tolist()):
        dec = apply_rule({str(i): d[i] for i in range(k)}, rule, seeds)
        saved.append(1 - runs_used(dec) / ((k + 1) * seeds))
        seq = [seq_verdict(dec[str(i)].state) for i in range(k)]
        changed += sum(a != b for a, b in zip(seq, full))
        reversed_ += sum({a, b} == {"better", "worse"} for a, b in zip(seq, full))
        false.append([v != "no clear difference" for v in seq])
    per_arm = np.array(false, dtype=np.float64)
    f = per_arm.mean(axis=1)
    worst = int(per_arm.mean(axis=0).argmax())
    return {
        "per_arm": per_arm.mean(axis=0),
        "worst_arm": worst,
        "worst": float(per_arm[:, worst].mean()),
        "worst_se": float(per_arm[:, worst].std(ddof=1) / math.sqrt(reps)),
        "saved": float(np.mean(saved)),
        "changed": changed / (reps * k),
        "reversed": reversed_,
        "false": float(f.mean()),
        "false_se": float(f.std(ddof=1) / math.sqrt(reps)),
    }


def fmt_interval(lo: float | None, hi: float | None) -> str:
    return "" if lo is None or hi is None else f"[{lo:+.4f}, {hi:+.4f}]"


def replay_real(name: str, diffs: dict[str, np.ndarray], detail: bool) -> None:
    """The 5-seed grid on the recorded per-seed values, every rule; the chosen rule's stops per arm."""
    k, seeds = len(diffs), min(x.size for x in diffs.values())
    full = {a: full_verdict(x) for a, x in diffs.items()}
    parts = []
    for label in RULES:
        dec = apply_rule(diffs, RULES[label], seeds)
        used = runs_used(dec)
        changed = [a for a in diffs if seq_verdict(dec[a].state) != full[a]]
        rev = sum({seq_verdict(dec[a].state), full[a]} == {"better", "worse"} for a in diffs)
        parts.append(
            f"{label} {used}/{(k + 1) * seeds} runs ({1 - used / ((k + 1) * seeds):.0%} saved, "
            f"{len(changed)} verdict(s) changed, {rev} reversed)"
        )
        if label == "chosen" and detail:
            for a, d in dec.items():
                print(f"    {a:16s} {d.state:10s} n={d.n} {fmt_interval(d.lo, d.hi):20s} full grid: {full[a]}")
    print(f"  real {seeds} seeds: " + "; ".join(parts))


def report_sims(label: str, arms: dict[str, tuple[float, float]], bv: float, reps: int, seed: int) -> None:
    """Simulated 5- and 8-seed grids: savings and verdict changes; then the same arms at a true difference of 0."""
    null = {a: (0.0, s) for a, (_, s) in arms.items()}
    names, sds = list(arms), [s for _, s in arms.values()]
    for rname, rule in RULES.items():
        cells = []
        for seeds in (5, 8):
            s = score(simulate(arms, bv, seeds, reps, seed + seeds), rule)
            z = score(simulate(null, bv, seeds, reps, seed + 100 + seeds), rule)
            cells.append(
                f"{seeds} seeds: {s['saved']:.1%} saved, {s['changed']:.1%} changed, {s['reversed']} reversed,"
                f" false at 0 {z['false']:.2%} ± {z['false_se']:.2%} (worst arm {names[z['worst_arm']]}, sd"
                f" {sds[z['worst_arm']]:.4f}: {z['worst']:.2%} ± {z['worst_se']:.2%})"
            )
        print(f"  {label}, {rname}: " + "; ".join(cells))


def null_per_arm(arms: dict[str, tuple[float, float]], bv: float, reps: int, seed: int) -> None:
    """The chosen rule, every arm at a true 0: each arm's false better/worse rate, +- its Monte-Carlo error."""
    null = {a: (0.0, s) for a, (_, s) in arms.items()}
    for capped in (True, False):
        for seeds in (5, 8):
            z = score(simulate(null, bv, seeds, reps, seed + seeds, capped), CHOSEN)["per_arm"]
            se = np.sqrt(z * (1 - z) / reps)
            w = int(z.argmax())
            print(
                f"  chosen, all at 0, {seeds} seeds, {reps} experiments, baseline share "
                f"{'capped' if capped else 'as estimated'}: worst {list(arms)[w]} {z[w]:.2%} ± {se[w]:.2%} "
                f"(95% upper {z[w] + 1.96 * se[w]:.2%}); "
                + ", ".join(f"{a} {r:.2%}±{e:.2%}" for a, r, e in zip(arms, z, se))
            )


def synthetic(k: int, sd: float, bv: float, reps: int, seed: int) -> None:
    """``k`` arms all at the same true difference (0, +-0.5 sd, +-2 sd), the chosen rule, 5 and 8 seeds."""
    for mult in (0.0, 0.5, -0.5, 2.0, -2.0):
        arms = {str(i): (mult * sd, sd) for i in range(k)}
        cells = []
        for seeds in (5, 8):
            s = score(simulate(arms, bv, seeds, reps, seed + seeds + int(10 * mult)), CHOSEN)
            tail = f", false {s['false']:.2%} ± {s['false_se']:.2%}" if mult == 0 else ""
            cells.append(
                f"{seeds} seeds {s['saved']:.1%} saved, {s['changed']:.1%} changed, {s['reversed']} reversed{tail}"
            )
        print(f"  synthetic {k} arms at {mult:+.1f} sd: " + "; ".join(cells))


def main(argv: list[str] | None = None) -> int:
    """Print the replay of every committed fine-tuning report and the simulations of the two headline ones."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=1500, help="simulated experiments per case")
    p.add_argument("--null-reps", type=int, default=4000, help="experiments per case for the per-arm rates at 0")
    args = p.parse_args(argv)
    print(
        f"rule: {CHOSEN}; Bonferroni level per look at 5 seeds {replace(CHOSEN).look_alpha:.4f}, "
        f"at 8 seeds {replace(CHOSEN, max_seeds=8).look_alpha:.4f}"
    )
    for i, name in enumerate(REPORTS):
        diffs, arms = real_diffs(RESULTS / name), committed(RESULTS / name)
        bv = baseline_var(diffs)
        sd = math.sqrt(float(np.mean([s * s for _, s in arms.values()])))
        print(
            f"== {name}: {len(diffs)} arms + baseline; pooled paired sd {sd:.4f}, "
            f"baseline share of a difference's variance {bv / sd**2:.2f}"
        )
        replay_real(name, diffs, detail=name in HEADLINE)
        if name in HEADLINE:
            report_sims("simulated from committed means/intervals", arms, bv, args.reps, 1000 * i)
            null_per_arm(arms, bv, args.null_reps, 1000 * i + 200)
            synthetic(len(arms), sd, bv, args.reps, 1000 * i + 500)
    return 0


if __name__ == "__main__":
    sys.exit(main())
