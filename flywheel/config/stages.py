"""Settings of the data and training stages: Ray, Feast, features, ingest, lock, training."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RaySettings(BaseModel):
    """How stages reach Ray."""

    model_config = ConfigDict(extra="forbid")

    #: ``None`` starts an in-process local Ray; ``ray://host:10001`` or ``auto`` joins a cluster.
    address: str | None = None
    #: CPUs a local Ray may use (``None``: all of the machine's).
    num_cpus: int | None = Field(default=None, ge=1)
    #: Ray Train data-parallel workers.
    num_workers: int = Field(default=2, ge=1)
    #: CPUs reserved per training worker. Fractional so 2 workers fit on a 2-core machine.
    cpus_per_worker: float = Field(default=0.5, gt=0)
    #: Rows per Ray Data batch in feature and ingest transforms.
    batch_size: int = Field(default=250_000, ge=1_000)
    #: Where a pipeline's feature build and preprocess run (:mod:`flywheel.stage_jobs`):
    #: ``in_process`` in the stage's own Ray (local profile, and small data in a pod);
    #: ``cluster`` as Ray jobs on the Ray cluster at ``k8s.ray_jobs_address``, as training
    #: does (the prod profile's default).
    data_stages: Literal["in_process", "cluster"] = "in_process"


class FeastSettings(BaseModel):
    """The Feast feature store: project, offline store and online store."""

    model_config = ConfigDict(extra="forbid")

    project: str = "flywheel"
    #: ``duckdb-asof``: Flywheel's ASOF-join DuckDB store (``flywheel.feast_asof``); ``duckdb``
    #: and ``dask``: Feast's stock stores.
    offline_store: Literal["duckdb-asof", "duckdb", "dask"] = "duckdb-asof"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "localhost:6379"
    #: Registry location; ``None`` puts a file registry in the workspace.
    registry: str | None = None
    #: Version suffix of the feature service new models are trained on (training sets,
    #: shards, lineage). A champion keeps being served through the service its lineage
    #: names, so a ``ranking_v1`` model serves on until a v2 model replaces it.
    feature_service_version: int = Field(default=2, ge=1)
    #: DuckDB ``memory_limit`` of a ``duckdb-asof`` point-in-time retrieval (e.g. ``"1GB"``,
    #: ``None``: DuckDB's default of 80% of RAM). Over it the join spills to the workspace's
    #: ``tmp/duckdb``: a 1M-row training set at 10M events peaks at ~1.7 GB instead of ~2.5.
    offline_memory_limit: str | None = "1GB"
    #: Proto memory (MiB) one online write batch of a materialization may take; each view's
    #: batch rows are sized from it (``flywheel.feature_store.write_batches``), 10k-200k rows.
    online_write_batch_mib: int = Field(default=384, ge=16)


class FeatureSettings(BaseModel):
    """How the feature build brings the tables up to date (``features.build_features``)."""

    model_config = ConfigDict(extra="forbid")

    #: ``full``: every table from every event with Ray Data; ``incremental``: only the lake
    #: partitions that changed since the last recorded build, from stored per-partition
    #: partials (:mod:`flywheel.features.incremental`; equal to the full build cell for
    #: cell). ``full`` stays the default until the incremental cost follows the new data at
    #: scale (``benchmarks/steady_state.py``, RESULTS.md).
    build: Literal["full", "incremental"] = "full"


class IngestSettings(BaseModel):
    """Event-lake ingest rules."""

    model_config = ConfigDict(extra="forbid")

    #: Events stamped more than this many seconds after the ingest time are quarantined.
    max_future_skew_s: int = Field(default=3600, ge=0)


class LockSettings(BaseModel):
    """What a run does when another run holds the workspace (:mod:`flywheel.workspace_lock`)."""

    model_config = ConfigDict(extra="forbid")

    #: ``fail``: exit at once naming the holder; ``wait``: queue behind it.
    on_busy: Literal["fail", "wait"] = "fail"
    #: With ``wait``: give up (and fail) after this many seconds.
    wait_timeout_s: float = Field(default=6 * 3600, gt=0)


class TrainSettings(BaseModel):
    """What the train stage optimises (:mod:`flywheel.objective` says what scores mean)."""

    model_config = ConfigDict(extra="forbid")

    #: ``binary:logistic``: scores are click probabilities; ``rank:ndcg`` /
    #: ``rank:pairwise``: LambdaMART on the shards' query groups, scores are unnormalised
    #: ranking scores. binary:logistic stays the default: no rank variant beat its NDCG@10
    #: beyond seed noise on both worlds, all lost AUC (benchmarks/objectives.py, RESULTS.md).
    objective: Literal["binary:logistic", "rank:ndcg", "rank:pairwise"] = "binary:logistic"
    #: rank:* only. ``topk``: pairs with the top documents of the model's current ranking;
    #: ``mean``: random pairs per document.
    lambdarank_pair_method: Literal["topk", "mean"] = "topk"
    #: rank:* only. ``topk``: how many top documents (10, the NDCG cut-off, by default);
    #: ``mean``: pairs sampled per document.
    lambdarank_num_pair_per_sample: int = Field(default=10, ge=1, le=1000)

    @model_validator(mode="after")
    def _rank_options_need_rank(self) -> TrainSettings:
        if self.objective.startswith("rank:"):
            return self
        # A non-default value, not any value set: a dumped-and-reloaded Settings sets all.
        for name in ("lambdarank_pair_method", "lambdarank_num_pair_per_sample"):
            value, default = getattr(self, name), type(self).model_fields[name].default
            if value != default:
                raise ValueError(
                    f"train.{name}={value!r} applies to the rank:* objectives only; "
                    f"train.objective is {self.objective!r}"
                )
        return self
