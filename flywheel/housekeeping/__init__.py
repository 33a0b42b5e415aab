"""Housekeeping for a long-lived workspace: compaction of small files and retention.

* :mod:`~flywheel.housekeeping.compact`: a partition's small files (lake parts, serving
  logs) merged into one with the same records;
* :mod:`~flywheel.housekeeping.swap`: the crash-safe switch compaction uses (an atomic
  directory exchange) and the recovery of an interrupted one;
* :mod:`~flywheel.housekeeping.protect`: what is never touched (the champion, its rollback
  history and their runs, data of the training window and its feature lookback);
* :mod:`~flywheel.housekeeping.retention`: which files each retention setting lets go;
* :mod:`~flywheel.housekeeping.gc`: ``flywheel gc`` and ``flywheel compact``, under the
  workspace lock.

Settings: :class:`flywheel.config.RetentionSettings` (``retention.*``). README,
"Housekeeping".
"""

from flywheel.housekeeping.gc import CompactResult, GcResult, plan_gc, run_compact, run_gc

__all__ = ["CompactResult", "GcResult", "plan_gc", "run_compact", "run_gc"]
