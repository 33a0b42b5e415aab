"""The continuous-training DAG: wiring only.

ingest -> features -> dataset -> preprocess -> train -> evaluate -> [blessed?] register -> deploy

``mapping`` is the source layout of ``events_uri`` ("" = the event contract's columns): a
built-in name, a YAML path the ingest pod can read, or the mapping's YAML text. The text is
what ``flywheel cycle --mapping FILE`` and ``flywheel submit --mapping FILE`` send, since a
cluster's pods cannot read the caller's file and the image carries only the built-ins.

In the cluster profiles (kind, prod) every task also mounts the workspace PVC at the
workspace path and carries ``FLYWHEEL_PROFILE`` (kfp-kubernetes platform config); the local
profile compiles to plain IR, which ``kfp.local`` runs.

Stages that touch external systems (the event lake's storage, the feature store, the model
store, the serving deployment) retry; register/deploy run only inside ``dsl.If`` on the
evaluation's blessing, so an unblessed challenger stops there and the champion stays.
"""

# No `from __future__ import annotations`: kfp reads the pipeline signature's real types.

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flywheel.config import Settings

PIPELINE_NAME = "flywheel-continuous-training"


def make_pipeline(settings: "Settings") -> Any:
    """Build the pipeline function for ``settings`` (its image and serialised Settings)."""
    from kfp import dsl

    import components
    from flywheel.evaluate import BlessingRule

    ops = components.build(settings.image)
    cluster = settings.profile != "local"
    # The local pipeline never reads the Kubernetes section: leaving it out keeps the local
    # IR (and its golden file) independent of cluster names. No stage reads the monitor
    # thresholds (``flywheel monitor`` does), so they stay out of every IR.
    settings_json = settings.model_dump_json(exclude={"monitor"} if cluster else {"k8s", "monitor"})
    default_rule = BlessingRule().model_dump_json()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="One turn of the flywheel: new events to a deployed-if-better model.",
    )
    def continuous_training(
        events_uri: str = "",
        items_uri: str = "",
        mapping: str = "",
        window_days: float = 14.0,
        attribution_minutes: int = 60,
        max_rows: int = 1_000_000,
        seed: int = 0,
        rule_json: str = default_rule,
        settings_json: str = settings_json,
    ) -> None:
        ingest = ops.ingest(
            settings_json=settings_json, events_uri=events_uri, items_uri=items_uri, mapping=mapping
        )
        # New files may land under the same URI: ingest always runs; its fingerprint of
        # the lake is what downstream caching keys on.
        ingest.set_caching_options(False).set_retry(num_retries=2, backoff_duration="5s")
        features = ops.features(
            settings_json=settings_json, lake_version=ingest.outputs["lake_version"]
        ).set_retry(num_retries=2, backoff_duration="5s")
        data = ops.dataset(
            settings_json=settings_json,
            features_version=features.outputs["Output"],
            window_days=window_days,
            attribution_minutes=attribution_minutes,
            max_rows=max_rows,
            seed=seed,
        )
        prep = ops.preprocess(
            settings_json=settings_json, training_set=data.outputs["training_set"]
        )
        train = ops.train(settings_json=settings_json, shards=prep.outputs["shards"], seed=seed)
        evaluate = ops.evaluate(
            settings_json=settings_json,
            shards=prep.outputs["shards"],
            model=train.outputs["model"],
            rule_json=rule_json,
        )
        with dsl.If(evaluate.outputs["Output"] == True, name="blessed"):  # noqa: E712
            register = ops.register(
                settings_json=settings_json,
                model=train.outputs["model"],
                shards=prep.outputs["shards"],
                evaluation=evaluate.outputs["metrics"],
                run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            ).set_retry(num_retries=2, backoff_duration="5s")
            deploy = ops.deploy(settings_json=settings_json, model_tag=register.output)
            deploy.set_retry(num_retries=1, backoff_duration="5s")
        if cluster:
            for task in (ingest, features, data, prep, train, evaluate, register, deploy):
                on_cluster(task, settings)
            reads_bucket(ingest, settings)

    return continuous_training


def reads_bucket(task: Any, settings: "Settings") -> Any:
    """Let a task read ``s3://`` URIs: the endpoint and region, and the keys' Secret.

    Only the tasks that read the bucket get the Secret (today: ingest, for ``events_uri``
    and ``items_uri``), so no other pipeline pod holds the keys.
    """
    from kfp import kubernetes

    k8s = settings.k8s
    if k8s.s3_endpoint_url:
        task.set_env_variable("AWS_ENDPOINT_URL", k8s.s3_endpoint_url)
    task.set_env_variable("AWS_REGION", k8s.s3_region)
    if k8s.s3_secret:
        kubernetes.use_secret_as_env(
            task,
            secret_name=k8s.s3_secret,
            secret_key_to_env={
                k8s.s3_key_id_field: "AWS_ACCESS_KEY_ID",
                k8s.s3_secret_field: "AWS_SECRET_ACCESS_KEY",
            },
        )
    return task


def on_cluster(task: Any, settings: "Settings") -> Any:
    """Give a task what every cluster-profile pod needs: the shared workspace and profile.

    The workspace PVC (ReadWriteMany, shared with serving and the Ray pods) is mounted at
    the workspace path; no CPU or memory requests are added, so the train task, which only
    submits a Ray job and waits, stays small.
    """
    from kfp import kubernetes

    task.set_env_variable("FLYWHEEL_PROFILE", settings.profile)
    return kubernetes.mount_pvc(
        task, pvc_name=settings.k8s.workspace_pvc, mount_path=str(settings.workspace)
    )
