"""One thin KFP component per stage: parse inputs, call one core function, write outputs.

These are plain functions; :func:`components.build` turns them into ``@dsl.component``s for
a given container image. KFP ships each function's *source* to the executor, so every
import a body needs is inside it, and the bodies stay a few lines: behaviour lives in the
core package ``flywheel``, where it is unit-tested.

``settings_json`` is the run's Settings object serialised at compile time (profile,
workspace, Ray, Feast): components never read ad-hoc environment variables.
``lake_version``/``features_version`` are content fingerprints passed downstream so KFP's
cache keys change exactly when new data arrives: a cycle over unchanged data is all hits.
"""

from typing import NamedTuple

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def ingest(
    settings_json: str, events_uri: str, items_uri: str, mapping: str, metrics: Output[Metrics]
) -> NamedTuple("IngestOutputs", [("lake_version", str), ("new_rows", int)]):  # type: ignore[valid-type]
    """Validate and append new raw events (read through ``mapping``, "" for none, a built-in
    name, a YAML path in the pod or the YAML text) and the catalog to the event lake."""
    from collections import namedtuple

    from flywheel.pipeline_steps import run_ingest

    outputs = namedtuple("IngestOutputs", ["lake_version", "new_rows"])  # type: ignore[name-match]
    return outputs(*run_ingest(settings_json, events_uri, items_uri, metrics, mapping=mapping))


def features(settings_json: str, lake_version: str, metrics: Output[Metrics]) -> str:
    """Rebuild feature tables with Ray Data, feast apply, materialize; returns their version."""
    from flywheel.pipeline_steps import run_features

    return run_features(settings_json, lake_version, metrics)


def dataset(
    settings_json: str,
    features_version: str,
    window_days: float,
    attribution_minutes: int,
    max_rows: int,
    seed: int,
    training_set: Output[Dataset],
    metrics: Output[Metrics],
) -> None:
    """Labelled impressions joined point-in-time with the shared feature service."""
    from flywheel.pipeline_steps import run_dataset

    run_dataset(
        settings_json, window_days, attribution_minutes, max_rows, seed, training_set, metrics
    )


def preprocess(
    settings_json: str,
    training_set: Input[Dataset],
    shards: Output[Dataset],
    metrics: Output[Metrics],
) -> None:
    """Ray Data: encode and time-split the training set into shards."""
    from flywheel.pipeline_steps import run_preprocess

    run_preprocess(settings_json, training_set, shards, metrics)


def train(
    settings_json: str,
    shards: Input[Dataset],
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Ray Train XGBoost over the shards."""
    from flywheel.pipeline_steps import run_train

    run_train(settings_json, shards, seed, model, metrics)


def evaluate(
    settings_json: str,
    shards: Input[Dataset],
    model: Input[Model],
    rule_json: str,
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    report: Output[HTML],
) -> bool:
    """Challenger vs champion on the same test shard; returns the blessing decision."""
    from flywheel.pipeline_steps import run_evaluate

    return run_evaluate(settings_json, shards, model, rule_json, metrics, roc, report)


def register(
    settings_json: str,
    model: Input[Model],
    shards: Input[Dataset],
    evaluation: Input[Metrics],
    run_id: str,
) -> str:
    """Save the blessed model to the BentoML store with lineage; mark it champion."""
    from flywheel.pipeline_steps import run_register

    return run_register(settings_json, model, shards, evaluation, run_id)


def deploy(settings_json: str, model_tag: str) -> str:
    """Point serving at the new champion; smoke-test; roll back on failure."""
    from flywheel.pipeline_steps import run_deploy

    return run_deploy(settings_json, model_tag)


ALL = (ingest, features, dataset, preprocess, train, evaluate, register, deploy)
