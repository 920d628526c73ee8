"""The A/B experiment stack: train every arm x seed with identical settings, record, compare, report.

Modules import one way, bottom to top (``tests/test_layers.py`` checks it): ``protocol`` (the evaluation protocol),
``spec`` (the spec schema), ``jobs`` (every arm x seed as a job, its fingerprint), ``records`` (the one inference pass
per finished run, ``detections.npz``), ``results`` (``RunResult`` and the long results table), ``run`` (one job in its
own process, from zero), ``backends`` (the local process pool and Ray behind one submit/wait interface),
``evaluation`` (pure functions of the records), ``stats``, ``report`` (the report's text), ``plots`` (the figures),
``orchestrate`` (``run_ab``, ``regenerate_report``, ``diagnose_experiment``). Below them: ``yolo_vfl.errors``,
``yolo_vfl.fileio``, ``yolo_vfl.executor``; the CLI (``yolo_vfl.cli``) sits on top.
"""

from .jobs import Job, make_jobs
from .orchestrate import ABRunError, check_devices, diagnose_experiment, load_results, plan, regenerate_report, run_ab
from .results import RunResult
from .run import read_results_csv, run_one
from .spec import ABSpec, Arm, keys_help, load_spec, spec_from_dict

__all__ = ["ABRunError", "ABSpec", "Arm", "Job", "RunResult", "check_devices", "diagnose_experiment", "keys_help"]
__all__ += ["load_results", "load_spec", "make_jobs", "plan", "read_results_csv", "regenerate_report", "run_ab"]
__all__ += ["run_one", "spec_from_dict"]
