"""The closed-loop drift experiment: does the flywheel recover when the world drifts?

One run (:func:`run_loop`):

1. a world that drifts at ``drift_day``: ``drift_share`` of the users get new tastes and,
   for everyone, the ground-truth weights change (``drift_weights``, by default
   :data:`~flywheel.simulate.PREMIUM_TREND`: price attracts instead of deterring);
   ``history_days`` of organic events; a first cycle trains model A on all of them (the
   *frozen* arm);
2. each loop cycle is one simulated day ``d = history_days + c``. At the start of ``d``
   (the lake's feature time, which is where serving's replay clock starts):

   * **measure** three arms offline, on the same users, the same candidates (serving's
     default candidate set) and the same moment: the flywheel's current champion, the
     frozen model A, and the oracle (true click probabilities). Rankings come from Feast's
     online store through :class:`flywheel.serving.OnlineFeatureReader` and
     ``ranking.model_inputs``, as serving computes them, without exploration; the score is
     the expected CTR under the ground truth with position-based examination
     (``sum_p examination(p) * P(click) / k``, the quantity ``run_traffic`` samples);
   * **serve** the champion for real (``bentoml serve``, replay clock, exploration on):
     simulated users send ``requests_per_cycle`` requests and post feedback, so the
     prediction and feedback logs the next cycle ingests are the ones serving wrote;
   * **advance** one day: simulate day ``d``'s organic events and run a cycle on them
     (ingest + served logs, features, training, blessing, deploy).

Measuring offline keeps the comparison deterministic and noise-free (no sampled clicks,
no exploration), while the served traffic is real; its sampled CTR is reported beside.
Each row carries the paired per-user gain of the flywheel over the frozen model with its
95% interval (:func:`paired_gain`): the only randomness in it is which users were drawn.

Why the weights must change: a taste shift alone is covariate drift. Both arms read the
same fresh online features, so the frozen model follows it as well as a retrained one
(measured: +0.0004 expected CTR over five post-drift days). Only when the mapping from
features to clicks changes does retraining on post-drift data pay off.

A package by concern: the rows and summary (``results``), the offline measurement
(``measure``), the served traffic (``serve``), the plot (``plot``) and the run (``run``).
"""

from flywheel.loop.measure import ArmScores, expected_ctr, measure_arms, paired_gain
from flywheel.loop.plot import plot_loop
from flywheel.loop.results import ARMS, SLATE_K, GainInterval, LoopError, LoopRow, LoopSummary
from flywheel.loop.run import _drift_gain, run_loop
from flywheel.loop.serve import sample_users, serve_traffic

__all__ = [
    "ARMS",
    "SLATE_K",
    "ArmScores",
    "GainInterval",
    "LoopError",
    "LoopRow",
    "LoopSummary",
    "_drift_gain",
    "expected_ctr",
    "measure_arms",
    "paired_gain",
    "plot_loop",
    "run_loop",
    "sample_users",
    "serve_traffic",
]
