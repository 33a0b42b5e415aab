"""What each KFP component does once inside its container: adapt artifacts to the core.

Components (``components/stages.py``) pass their KFP artifacts here. This module needs only
duck-typed artifacts (``.path``, ``.metadata``, ``Metrics.log_metric``,
``ClassificationMetrics.log_roc_curve``), never imports kfp, and is unit-tested with plain
stand-ins: the same split Google Cloud Pipeline Components use between a component's
signature and the code that runs in its container.

Every step also writes ``<workspace>/runs/<run id>/<stage>.json`` (what it did and how long
it took) so ``flywheel cycle`` can print one summary table for the whole run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: Environment variable through which ``flywheel cycle`` tells steps its run id (the
#: pipeline's own run id is only known inside a cluster run).
RUN_ID_ENV = "FLYWHEEL_RUN_ID"


def _settings(settings_json: str) -> Settings:
    import logging as _logging

    from flywheel.config import Settings

    # Component processes start bare: make the core's progress lines visible in task logs.
    _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return Settings.model_validate_json(settings_json)


def _jsonable(summary: Any) -> dict[str, Any]:
    is_instance = dataclasses.is_dataclass(summary) and not isinstance(summary, type)
    data = dataclasses.asdict(summary) if is_instance else dict(summary)
    return json.loads(json.dumps(data, default=str))


def record_step(settings: Settings, stage: str, summary: dict[str, Any], seconds: float) -> None:
    """Write this step's summary for the run's report (best effort: never fails a step)."""
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        return
    try:
        out = settings.workspace / "runs" / run_id
        out.mkdir(parents=True, exist_ok=True)
        payload = {"stage": stage, "seconds": round(seconds, 2), "summary": summary}
        (out / f"{stage}.json").write_text(json.dumps(payload, indent=2, default=str))
    except OSError as exc:  # the report is a convenience; the run's outputs are elsewhere
        log.warning("could not record %s summary: %s", stage, exc)


def _log_numbers(metrics: Any, prefix: str, data: dict[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, bool):
            continue
        # NaN (a rank:* model's logloss and ECE: its scores are no probabilities) is not a
        # number KFP's metrics can hold.
        if isinstance(value, int | float) and math.isfinite(value):
            metrics.log_metric(f"{prefix}{key}", float(value))


def _seal(*artifacts: Any) -> None:
    """Give metadata-only artifacts (Metrics, ClassificationMetrics) a file at their URI.

    KFP keeps logged metrics in the artifact's metadata and writes no file; kfp.local's
    cache then treats the missing file as a broken entry and re-runs the task. A JSON copy
    of the metadata at the artifact's path makes cache hits work and is readable as is.
    """
    for artifact in artifacts:
        path = Path(artifact.path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(artifact.metadata, indent=2, default=str))


def lake_fingerprint(settings: Settings) -> str:
    """A short hash of the lake's ingest state: changes exactly when new data is accepted."""
    from flywheel.lake import read_state

    state = read_state(settings)
    state = {k: v for k, v in state.items() if k not in ("updated_at", "last_run_id")}
    blob = json.dumps(state, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_ingest(
    settings_json: str, events_uri: str, items_uri: str, metrics: Any, mapping: str = ""
) -> tuple[str, int]:
    """Ingest new events (and catalog) if a URI is given, and serving's logs; return
    (lake version, new rows).

    ``mapping`` is the events' source layout as the pipeline passes it
    (:func:`flywheel.ingest.mapping_from_argument`); "" means the event contract's columns.
    """
    from flywheel.ingest import ingest_events, mapping_from_argument
    from flywheel.served import ingest_served
    from flywheel.storage import location_of

    settings = _settings(settings_json)
    started = time.perf_counter()
    new_rows = 0
    summary: dict[str, Any] = {}
    if events_uri and settings.ray.data_stages == "cluster":
        from flywheel.stage_jobs import run_stage_on_cluster

        args = {"events": [events_uri], "items": items_uri, "mapping": mapping}
        summary = run_stage_on_cluster(settings, "ingest", args)
        new_rows = int(summary["accepted"])
        _log_numbers(metrics, "", {k: summary[k] for k in ("rows_read", "accepted", "quarantined")})
    elif events_uri:
        # Local paths or s3:// URIs (flywheel.storage); Path() would fold s3://'s "//".
        items = location_of(items_uri) if items_uri else None
        source = mapping_from_argument(mapping)
        result = ingest_events(settings, [location_of(events_uri)], items=items, mapping=source)
        summary = _jsonable(result)
        new_rows = result.accepted
        _log_numbers(metrics, "", {k: summary[k] for k in ("rows_read", "accepted", "quarantined")})
    # Prediction and feedback logs written by serving since the last cycle (every cycle).
    summary["served"] = _jsonable(ingest_served(settings))
    version = lake_fingerprint(settings)
    summary["lake_version"] = version
    _seal(metrics)
    record_step(settings, "ingest", summary, time.perf_counter() - started)
    return version, new_rows


def run_features(settings_json: str, lake_version: str, metrics: Any) -> str:
    """Rebuild features, register them in Feast, materialize; return the features version."""
    from flywheel import feature_store
    from flywheel.features import build_features
    from flywheel.lake import feature_time
    from flywheel.ray_runtime import shutdown_ray

    settings = _settings(settings_json)
    started = time.perf_counter()
    if settings.ray.data_stages == "cluster":
        from flywheel.stage_jobs import run_stage_on_cluster

        summary = run_stage_on_cluster(settings, "features")
    else:
        summary = _jsonable(build_features(settings))
        # Leave Ray before materializing: the build's idle workers keep their heaps (~0.8 GB
        # each at 10M events) for as long as this driver stays connected.
        shutdown_ray()
    feature_store.apply(settings)
    feature_store.materialize(settings, end=feature_time(settings))
    _log_numbers(metrics, "rows_", summary.get("rows", {}))
    service = feature_store.feature_service_name(settings)
    _seal(metrics)
    record_step(settings, "features", summary, time.perf_counter() - started)
    return f"{service}@{lake_version}"


def run_dataset(
    settings_json: str,
    window_days: float,
    attribution_minutes: int,
    max_rows: int,
    seed: int,
    training_set: Any,
    metrics: Any,
) -> None:
    """Labelled impressions + point-in-time features -> the training-set artifact."""
    from flywheel.dataset import build_dataset

    settings = _settings(settings_json)
    started = time.perf_counter()
    # The artifact is a folder of Parquet files (Ray Data reads by extension).
    summary = build_dataset(
        settings,
        Path(training_set.path) / "part-00000.parquet",
        window_days=window_days,
        attribution=timedelta(minutes=attribution_minutes),
        max_rows=max_rows,
        seed=seed,
    )
    data = _jsonable(summary)
    training_set.metadata.update(data)
    _log_numbers(metrics, "", data)
    _seal(metrics)
    record_step(settings, "dataset", data, time.perf_counter() - started)


def run_preprocess(settings_json: str, training_set: Any, shards: Any, metrics: Any) -> None:
    """Training set -> time-split model-input shards."""
    from flywheel.preprocess import preprocess

    settings = _settings(settings_json)
    started = time.perf_counter()
    window = None
    if "window_start" in training_set.metadata:
        window = {
            "start": training_set.metadata["window_start"],
            "end": training_set.metadata["window_end"],
        }
    if settings.ray.data_stages == "cluster":
        from flywheel.stage_jobs import preprocess_on_cluster

        data = preprocess_on_cluster(
            settings, Path(training_set.path), Path(shards.path), data_window=window
        )
    else:
        summary = preprocess(
            settings, Path(training_set.path), Path(shards.path), data_window=window
        )
        data = _jsonable(summary)
    data["shards_dir"] = shards.path
    shards.metadata.update({"rows": data["rows"], "data_window": window})
    _log_numbers(metrics, "rows_", data["rows"])
    _seal(metrics)
    record_step(settings, "preprocess", data, time.perf_counter() - started)


def run_train(settings_json: str, shards: Any, seed: int, model: Any, metrics: Any) -> None:
    """Ray Train XGBoost; the model artifact is a folder holding ``model.ubj``.

    The local profile trains in this process's Ray; the cluster profiles submit the same
    training function as a Ray job to the KubeRay cluster and wait for it.
    """
    settings = _settings(settings_json)
    started = time.perf_counter()
    if settings.profile == "local":
        from flywheel.train import train_model

        summary = train_model(settings, Path(shards.path), Path(model.path), seed=seed)
    else:
        from flywheel.ray_jobs import train_on_cluster

        summary = train_on_cluster(settings, Path(shards.path), Path(model.path), seed=seed)
    data = _jsonable(summary)
    model.metadata.update({"framework": "xgboost", "best_iteration": summary.best_iteration})
    _log_numbers(metrics, "", {k: data[k] for k in ("valid_auc", "valid_logloss", "train_rows")})
    _seal(metrics)
    record_step(settings, "train", data, time.perf_counter() - started)


def run_evaluate(
    settings_json: str,
    shards: Any,
    model: Any,
    rule_json: str,
    metrics: Any,
    roc: Any,
    report: Any,
) -> bool:
    """Challenger vs the current champion on the same test shard; returns the blessing."""
    from flywheel import registry
    from flywheel.evaluate import BlessingRule, evaluate
    from flywheel.evaluate_ope import OpeContext, kfp_numbers

    settings = _settings(settings_json)
    started = time.perf_counter()
    champion = registry.current_champion(settings)
    champion_path = registry.model_file(settings, champion) if champion else None
    out_dir = Path(report.path).parent / "evaluation"
    summary = evaluate(
        Path(model.path) / "model.ubj",
        champion_path,
        Path(shards.path),
        out_dir,
        BlessingRule.model_validate_json(rule_json),
        OpeContext(settings, champion),
    )
    record = json.loads(summary.metrics_path.read_text())
    Path(report.path).write_text(summary.report_path.read_text())
    curve = record["roc_curve"]
    roc.log_roc_curve(curve["fpr"], curve["tpr"], curve["thresholds"])
    _log_numbers(metrics, "challenger_", record["challenger"])
    if record["champion"]:
        _log_numbers(metrics, "champion_", record["champion"])
    # popularity_auc, popularity_ndcg_at_10, popularity_lift_auc and (unless the check is
    # off) popularity_min_lift, the margin a first model needs.
    _log_numbers(metrics, "popularity_", record["popularity"])
    # ope_required, ope_computed, ope_sufficient, ope_slates, ope_effective_sample_size and,
    # when computed, ope_challenger_{snips,dr}{,_low,_high}, ope_champion_logged{,_low,_high}.
    _log_numbers(metrics, "ope_", kfp_numbers(record["ope"]))
    metrics.log_metric("blessed", float(summary.blessed))
    record["champion_tag"] = champion
    record.pop("roc_curve")
    model.metadata.update({"blessed": summary.blessed, "reason": summary.reason})
    _seal(metrics, roc)
    record_step(settings, "evaluate", record, time.perf_counter() - started)
    return summary.blessed


def run_register(settings_json: str, model: Any, shards: Any, evaluation: Any, run_id: str) -> str:
    """Register the blessed model with its test metrics and lineage; make it champion."""
    from flywheel import registry
    from flywheel.feature_store import feature_service_name

    settings = _settings(settings_json)
    started = time.perf_counter()
    prefix = "challenger_"
    metrics = {
        k[len(prefix) :]: float(v)
        for k, v in evaluation.metadata.items()
        if k.startswith(prefix) and isinstance(v, int | float)
    }
    tag = registry.register_model(
        settings,
        Path(model.path) / "model.ubj",
        metrics,
        {
            "run_id": os.environ.get(RUN_ID_ENV) or run_id,
            "data_window": shards.metadata.get("data_window") or {},
            "feature_service": feature_service_name(settings),
        },
    )
    record_step(settings, "register", {"model_tag": tag}, time.perf_counter() - started)
    return tag


def run_deploy(settings_json: str, model_tag: str) -> str:
    """Point serving at the new champion: the champion pointer (local profile) or the
    serving Deployment's pinned model tag (cluster profiles); smoke-test; roll back."""
    from flywheel.deploy import deploy

    settings = _settings(settings_json)
    started = time.perf_counter()
    result = deploy(settings, model_tag)
    record_step(settings, "deploy", _jsonable(result), time.perf_counter() - started)
    return result.status
