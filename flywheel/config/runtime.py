"""Settings of the running platform: serving behaviour and the Kubernetes contract."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ServingSettings(BaseModel):
    """How the ranking service behaves when its online store fails (``serving/README.md``,
    "When the online store fails"; :mod:`flywheel.serving.store_health`)."""

    model_config = ConfigDict(extra="forbid")

    #: Store unreachable: ``True`` answers ``/rank`` from what the worker still holds
    #: (item-side rows in memory, the default candidates' popularity order), marked
    #: ``"degraded": true`` in the answer and the prediction log; ``False`` answers 503.
    #: On in the prod profile.
    degraded_mode: bool = False
    #: Seconds a serving read (and the readiness ping) waits to connect to, or hear from,
    #: Redis before the store counts as unreachable.
    store_timeout_s: float = Field(default=0.5, gt=0, le=30)
    #: While the store is down, how often (at most) a request or the readiness probe tries
    #: it again; every other request skips it.
    store_retry_s: float = Field(default=1.0, gt=0)
    #: While it is up, how often (at most) the readiness probe pings it.
    store_check_s: float = Field(default=5.0, gt=0)
    #: Rows lost: the share of cold users (no fresh ``user_activity`` row) over the last
    #: ``lost_rows_window`` requests that read the store reaches ``lost_rows_share``, after
    #: a full window has been at or below ``normal_cold_share``; it clears back at or below
    #: ``normal_cold_share``.
    lost_rows_window: int = Field(default=200, ge=10)
    lost_rows_share: float = Field(default=0.98, gt=0, le=1)
    normal_cold_share: float = Field(default=0.9, ge=0, lt=1)
    #: Log every candidate of a request (``<workspace>/serving/candidates``: item ids, the
    #: champion's scores, the raw values it scored, the served order), besides the served
    #: slots, so the off-policy check re-ranks the request exactly
    #: (:mod:`flywheel.ope_candidates`). On by default: without it the gate's estimate
    #: undercovers (served-only DR coverage 0.65); it costs ~0.3 ms of CPU per request and
    #: 2.0-2.4x the served log's bytes at 50 candidates x 10 slots (``benchmarks/RESULTS.md``,
    #: "Candidate log: cost"); retention removes it after ``retention.serving_log_days``.
    log_candidates: bool = True
    #: Share of requests whose candidates are logged (drawn per request); the rest are
    #: judged on their served items only.
    candidate_sample_rate: float = Field(default=1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _normal_below_lost(self) -> ServingSettings:
        if self.normal_cold_share >= self.lost_rows_share:
            raise ValueError(
                f"serving.normal_cold_share={self.normal_cold_share} must be below "
                f"serving.lost_rows_share={self.lost_rows_share}"
            )
        return self


class KubernetesSettings(BaseModel):
    """Where Flywheel's objects live in a cluster (kind/prod); unused by the local profile.

    Names follow the Kubernetes contract shared with ``k8s/``: change them together.
    """

    model_config = ConfigDict(extra="forbid")

    #: Namespace of serving, Redis and the KubeRay cluster.
    namespace: str = "flywheel"
    #: Namespace where KFP runs pipeline pods (KFP standalone's default).
    pipeline_namespace: str = "kubeflow"
    serving_deployment: str = "flywheel-serving"
    #: Container of the serving Deployment whose ``FLYWHEEL_MODEL_TAG`` pins the model.
    serving_container: str = "serving"
    #: Base URL the deploy step's smoke test calls (``POST {serving_url}/rank``).
    serving_url: str = "http://flywheel-serving.flywheel.svc.cluster.local:3000"
    #: Seconds a Deployment rollout may take before the deploy step reverts it.
    rollout_timeout_s: float = Field(default=300.0, gt=0)
    #: Ray Jobs API (the KubeRay head's dashboard port) that training is submitted to.
    ray_jobs_address: str = "http://flywheel-ray-head-svc.flywheel.svc.cluster.local:8265"
    #: Seconds a training Ray job may run before it is stopped and the stage fails.
    ray_job_timeout_s: float = Field(default=3600.0, gt=0)
    #: ReadWriteMany PVC holding the workspace, mounted in both namespaces.
    #: Mounted at ``Settings.workspace`` on every pipeline pod.
    workspace_pvc: str = "flywheel-workspace"
    #: S3 endpoint of the ``s3://`` URIs the pipeline reads (``AWS_ENDPOINT_URL`` of those
    #: pods); None: AWS S3 itself. kind: the MinIO that KFP standalone runs.
    s3_endpoint_url: str | None = None
    #: ``AWS_REGION`` of those pods.
    s3_region: str = "us-east-1"
    #: Secret in ``pipeline_namespace`` with the S3 keys, mounted as ``AWS_ACCESS_KEY_ID`` /
    #: ``AWS_SECRET_ACCESS_KEY`` only by the pods that read the bucket (ingest); None: no
    #: keys (the pod's own identity, e.g. IRSA on EKS).
    s3_secret: str | None = None
    #: That Secret's data keys holding the key id and the secret.
    s3_key_id_field: str = "AWS_ACCESS_KEY_ID"
    s3_secret_field: str = "AWS_SECRET_ACCESS_KEY"
