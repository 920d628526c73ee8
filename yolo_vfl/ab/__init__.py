"""The A/B experiment stack: train every arm x seed with identical settings, record, compare, report.

Modules import one way, bottom to top (``tests/test_layers.py`` checks it):

1. ``protocol``: the evaluation protocol (validation thresholds, matching IoUs, metric names), written once.
2. ``spec``: the spec schema (one table), ``Arm``, ``ABSpec``, ``spec_from_dict``, ``load_spec``.
3. ``jobs``: every arm x seed as a job; the fingerprint that decides whether a finished run can be kept.
4. ``records``: the one inference pass per finished run: Ultralytics' validator on ``best.pt`` records every
   detection and ground-truth box into ``detections.npz`` next to the run's result, with the metrics of that pass.
5. ``results``: the typed result of one run (``RunResult``, ``result.json``) and the long results table every report
   is computed from (``results_long.csv`` per run: run, arm, seed, epoch or empty for final, metric, value).
6. ``run``: running one job from zero (the run lifecycle of ``yolo_vfl.executor``) in its own process, validated once.
7. ``backends``: the local process pool and Ray behind one submit/wait interface.
8. ``evaluation``: pure functions of the records: ranking quality, false positives by kind, recall grids.
9. ``stats``: means, paired differences and their t-intervals, correlations.
10. ``report``: ``summary.md`` / ``summary.csv`` / ``diagnosis.md`` / ``diagnosis.csv`` text (no torch, no Ultralytics).
11. ``plots``: the figures.
12. ``orchestrate``: ``run_ab``, ``regenerate_report``, ``diagnose_experiment``.

Below all of them: ``yolo_vfl.errors`` and ``yolo_vfl.fileio``; the CLI (``yolo_vfl.cli``) sits on top.
"""

from .jobs import Job, make_jobs
from .orchestrate import ABRunError, check_devices, diagnose_experiment, load_results, plan, regenerate_report, run_ab
from .results import RunResult
from .run import planned_state, read_results_csv, run_one, train_time
from .spec import ABSpec, Arm, keys_help, load_spec, spec_from_dict

__all__ = [
    "ABRunError",
    "ABSpec",
    "Arm",
    "Job",
    "RunResult",
    "check_devices",
    "diagnose_experiment",
    "keys_help",
    "load_results",
    "load_spec",
    "make_jobs",
    "plan",
    "planned_state",
    "read_results_csv",
    "regenerate_report",
    "run_ab",
    "run_one",
    "spec_from_dict",
    "train_time",
]
