"""Settings: profiles, precedence (defaults < profile < file < env < explicit), errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from flywheel.config import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FLYWHEEL_"):
            monkeypatch.delenv(name)


def test_local_is_the_default_profile() -> None:
    s = load_settings()
    assert s.profile == "local"
    assert s.feast.online_store == "sqlite"
    assert s.ray.address is None
    assert s.workspace == Path(".flywheel")


def test_cluster_profiles_use_redis_and_a_ray_cluster() -> None:
    for profile in ("kind", "prod"):
        s = load_settings(profile=profile)
        assert s.feast.online_store == "redis"
        # Pipeline pods run in KFP's namespace: Redis is named across namespaces.
        assert s.feast.redis_connection_string == "redis.flywheel.svc.cluster.local:6379"
        # In-pod Ray for Ray Data stages; training is a Ray job on the KubeRay head.
        assert s.ray.address is None
        assert s.k8s.ray_jobs_address.startswith("http://flywheel-ray-head-svc.flywheel.svc")


def test_precedence_file_then_env_then_explicit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "flywheel.yaml"
    cfg.write_text("ray:\n  num_workers: 3\n  cpus_per_worker: 0.25\nworkspace: /from/file\n")
    s = load_settings(config_file=cfg)
    assert (s.ray.num_workers, s.ray.cpus_per_worker) == (3, 0.25)
    monkeypatch.setenv("FLYWHEEL_RAY__NUM_WORKERS", "5")
    s = load_settings(config_file=cfg)
    assert s.ray.num_workers == 5 and s.ray.cpus_per_worker == 0.25
    s = load_settings(config_file=cfg, workspace=tmp_path / "ws")
    assert s.workspace == tmp_path / "ws"


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("profile: prod\n")
    monkeypatch.setenv("FLYWHEEL_CONFIG", str(cfg))
    assert load_settings().profile == "prod"


def test_unknown_profile_is_named() -> None:
    with pytest.raises(ConfigError, match="profile 'staging' is unknown"):
        load_settings(profile="staging")


def test_bad_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_RAY__CPUS_PER_WORKER", "-1")
    with pytest.raises(ConfigError, match=r"ray\.cpus_per_worker=.*-1"):
        load_settings()


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("feast:\n  onlinestore: redis\n")
    with pytest.raises(ConfigError, match=r"feast\.onlinestore"):
        load_settings(config_file=cfg)


def test_missing_and_malformed_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(config_file=bad)


def test_paths_derive_from_the_workspace_and_are_not_created(tmp_path: Path) -> None:
    s = Settings(workspace=tmp_path / "ws")
    assert s.events_dir == tmp_path / "ws" / "lake" / "events"
    assert s.feature_data_dir.parent == s.workspace
    assert not (tmp_path / "ws").exists()


def test_non_setting_variables_are_ignored_but_section_typos_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYWHEEL_REQUIRE_REDIS", "1")
    monkeypatch.setenv("FLYWHEEL_RUN_ID", "r1")
    assert load_settings().profile == "local"
    monkeypatch.setenv("FLYWHEEL_FEAST__ONLINESTORE", "redis")
    with pytest.raises(ConfigError, match=r"feast\.onlinestore"):
        load_settings()
