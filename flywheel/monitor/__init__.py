"""Watching the live model: served quality, drift, skew, off-policy estimates.

One module per concern: ``stats`` (PSI, Jensen-Shannon, KS, Wilson intervals),
``quality`` (served quality per version and period), ``drift`` (feature, prediction and
label drift), ``skew`` (logged against offline feature values), ``reference`` (the
champion's training set), ``ope`` (IPS, SNIPS, DR with bootstrap intervals), ``report``
(``flywheel monitor``: ``monitor.json``) and ``html`` (``monitor.html``).

Importing the package loads no Ray, Feast or BentoML; the skew check imports Feast and the
reference reads the BentoML model store, each when it runs.
"""

from flywheel.monitor.report import HTML_NAME, JSON_NAME, SCHEMA_VERSION, MonitorResult, run_monitor

__all__ = ["HTML_NAME", "JSON_NAME", "SCHEMA_VERSION", "MonitorResult", "run_monitor"]
