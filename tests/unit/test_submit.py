"""``flywheel submit`` against a FAKE ``kfp.Client``.

The KFP API server cannot run here (it needs a Kubernetes cluster with its database and
object store), so ``FakeKfpClient`` records the calls ``kfp.Client`` would make. The tests
check what reaches that boundary: a package that exists and loads with kfp's own loader,
compiled for the right profile, typed arguments, a validated KFP cron expression.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flywheel import submit as submit_module
from flywheel.cli import app
from flywheel.config import load_settings
from flywheel.submit import SubmitError, kfp_cron, submit


class FakeKfpClient:
    """Records calls; checks the package while it still exists, as the server would."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _check_package(self, path: str) -> dict[str, Any]:
        from kfp import components

        loaded = components.load_component_from_file(path)
        assert loaded.name == "flywheel-continuous-training"
        return dict(yaml.safe_load(Path(path).read_text().split("\n---\n")[0]))

    def create_run_from_pipeline_package(self, pipeline_file: str, **kwargs: Any) -> Any:
        spec = self._check_package(pipeline_file)
        self.calls.append(("run", {"pipeline_file": pipeline_file, "spec": spec, **kwargs}))
        return SimpleNamespace(run_id="run-123")

    def create_experiment(self, name: str, **kwargs: Any) -> Any:
        self.calls.append(("experiment", {"name": name}))
        return SimpleNamespace(experiment_id="exp-7", display_name=name)

    def create_recurring_run(self, **kwargs: Any) -> Any:
        spec = self._check_package(kwargs["pipeline_package_path"])
        self.calls.append(("recurring", {**kwargs, "spec": spec}))
        return SimpleNamespace(recurring_run_id="rr-9")


def _settings_default(spec: dict[str, Any]) -> dict[str, Any]:
    params = spec["root"]["inputDefinitions"]["parameters"]
    return dict(json.loads(params["settings_json"]["defaultValue"]))


def test_one_run_with_typed_params_for_the_kind_profile(tmp_path: Path) -> None:
    clients: list[FakeKfpClient] = []

    def factory(host: str) -> FakeKfpClient:
        clients.append(FakeKfpClient(host))
        return clients[-1]

    settings = load_settings(profile="kind")
    result = submit(
        settings,
        "http://localhost:8080/",
        experiment="nightly",
        params=["window_days=7", "seed=3", "events_uri=/mnt/flywheel/raw/events"],
        package=tmp_path / "p.yaml",
        client_factory=factory,
    )
    (client,) = clients
    assert client.host == "http://localhost:8080/"
    ((kind, call),) = client.calls
    assert kind == "run" and call["experiment_name"] == "nightly"
    assert call["arguments"] == {
        "window_days": 7.0,
        "seed": 3,
        "events_uri": "/mnt/flywheel/raw/events",
    }
    assert isinstance(call["arguments"]["window_days"], float)
    assert Path(call["pipeline_file"]) == tmp_path / "p.yaml"
    compiled = _settings_default(call["spec"])
    assert compiled["profile"] == "kind" and compiled["workspace"] == "/mnt/flywheel"
    assert result.url == "http://localhost:8080/#/runs/details/run-123"
    assert (result.kind, result.id) == ("run", "run-123")


def test_recurring_run_gets_a_kfp_cron_expression(tmp_path: Path) -> None:
    clients: list[FakeKfpClient] = []
    result = submit(
        load_settings(profile="kind"),
        "http://kfp",
        schedule="30 2 * * MON-FRI",
        name="nightly-cycle",
        client_factory=lambda host: clients.append(FakeKfpClient(host)) or clients[-1],
    )
    kinds = [kind for kind, _ in clients[0].calls]
    assert kinds == ["experiment", "recurring"]
    call = clients[0].calls[1][1]
    assert call["cron_expression"] == "0 30 2 * * MON-FRI"  # seconds first, as KFP wants
    assert call["experiment_id"] == "exp-7" and call["job_name"] == "nightly-cycle"
    assert call["params"] == {} and call["max_concurrency"] == 1
    assert result.url == "http://kfp/#/recurringrun/details/rr-9"
    assert result.package.is_file()


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 3 * * *", "0 0 3 * * *"),
        ("0 0 9 ? * 2-6", "0 0 9 ? * 2-6"),
        ("*/15  8-18 1,15 JAN-JUN *", "0 */15 8-18 1,15 JAN-JUN *"),
        ("@every 6h", "@every 6h"),
    ],
)
def test_good_cron_expressions(expression: str, expected: str) -> None:
    assert kfp_cron(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 24 * * *", "hour field '24'"),
        ("61 * * * *", "minute field '61'"),
        ("0 0 0 * *", "day of month field '0'"),
        ("0 0 * 13 *", "month field '13'"),
        ("0 0 * * 8", "day of week field '8'"),
        ("0 ? * * *", "hour field '?'"),
        ("*/0 * * * *", "minute field '\\*/0'"),
        ("* * *", "has 3 fields"),
        ("@fortnightly", "unknown descriptor"),
    ],
)
def test_bad_cron_expressions_are_named(expression: str, message: str) -> None:
    with pytest.raises(SubmitError, match=message):
        kfp_cron(expression)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["window=7"], "'window' is not a pipeline input; expected one of .*window_days"),
        (["seed=1.5"], "seed='1.5': expected a number_integer"),
        (["seed"], "expected name=value"),
    ],
)
def test_bad_params_fail_before_the_server_is_called(
    tmp_path: Path, params: list[str], message: str
) -> None:
    client = FakeKfpClient("h")
    with pytest.raises(SubmitError, match=message):
        submit(load_settings(profile="kind"), "h", params=params, client_factory=lambda _: client)
    assert client.calls == []


def test_schedule_needs_a_name() -> None:
    with pytest.raises(SubmitError, match="--name"):
        submit(load_settings(profile="kind"), "h", schedule="@daily", client_factory=FakeKfpClient)


def test_cli_submit_prints_the_run_and_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit_module, "default_client", FakeKfpClient)
    runner = CliRunner()
    ok = runner.invoke(
        app, ["--profile", "kind", "submit", "--host", "http://kfp:8080", "--param", "seed=2"]
    )
    assert ok.exit_code == 0, ok.output
    assert "http://kfp:8080/#/runs/details/run-123" in ok.output
    bad = runner.invoke(
        app,
        ["--profile", "kind", "submit", "--host", "h", "--schedule", "0 25 * * *", "--name", "n"],
    )
    assert bad.exit_code == 1 and "hour field '25'" in bad.output


SHOP_MAPPING = """name: shop
columns: {user_id: customer, item_id: sku, event_type: action, ts: at}
event_types: {pageview: view, order: purchase}
"""


def _arguments(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    client = FakeKfpClient("h")
    submit(load_settings(profile="kind"), "h", client_factory=lambda _: client, **kwargs)
    ((_, call),) = client.calls
    return dict(call["arguments"])


def test_a_mapping_file_is_sent_as_its_text_a_builtin_by_name(tmp_path: Path) -> None:
    """The cluster's pods cannot read the caller's file: its YAML text is the argument."""
    from flywheel.ingest import load_mapping, mapping_from_argument

    mine = tmp_path / "shop.yaml"
    mine.write_text(SHOP_MAPPING)
    events = "events_uri=/mnt/flywheel/raw/shop"
    sent = _arguments(tmp_path, params=[events], mapping=str(mine))
    assert sent == {"events_uri": "/mnt/flywheel/raw/shop", "mapping": SHOP_MAPPING}
    assert mapping_from_argument(sent["mapping"]) == load_mapping(mine)
    assert _arguments(tmp_path, params=[events], mapping="rees46")["mapping"] == "rees46"
    # --param passes a path inside the image or volume as it is (the pod reads it).
    in_pod = "mapping=/mnt/flywheel/mappings/shop.yaml"
    assert _arguments(tmp_path, params=[events, in_pod])["mapping"] == in_pod[8:]
    assert "mapping" not in _arguments(tmp_path, params=[events])  # default "": no mapping


@pytest.mark.parametrize(
    ("params", "mapping", "message"),
    [
        (["events_uri=/e", "mapping=rees46"], "rees46", "mapping given twice"),
        ([], "rees46", "mapping needs events_uri"),
        (["events_uri=/e"], "BAD_FILE", r"shop\.yaml: columns\.usr: Extra inputs"),
        (["events_uri=/e", "mapping=BAD_TEXT"], None, r"parameter mapping: columns\.usr"),
        (["events_uri=/e"], "shopify", "neither a YAML file nor a built-in"),
    ],
)
def test_bad_mappings_fail_before_the_server_is_called(
    tmp_path: Path, params: list[str], mapping: str | None, message: str
) -> None:
    bad = SHOP_MAPPING.replace("customer", "customer, usr: x")
    (tmp_path / "shop.yaml").write_text(bad)
    params = [p.replace("BAD_TEXT", bad) for p in params]
    if mapping == "BAD_FILE":
        mapping = str(tmp_path / "shop.yaml")
    client = FakeKfpClient("h")
    with pytest.raises(ValueError, match=message):
        submit(
            load_settings(profile="kind"),
            "h",
            params=params,
            mapping=mapping,
            client_factory=lambda _: client,
        )
    assert client.calls == []


def test_cli_submit_mapping_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clients: list[FakeKfpClient] = []

    def factory(host: str) -> FakeKfpClient:
        clients.append(FakeKfpClient(host))
        return clients[-1]

    monkeypatch.setattr(submit_module, "default_client", factory)
    mine = tmp_path / "shop.yaml"
    mine.write_text(SHOP_MAPPING)
    args = ["--profile", "kind", "submit", "--host", "h", "--param", "events_uri=/mnt/e"]
    ok = CliRunner().invoke(app, [*args, "--mapping", str(mine)])
    assert ok.exit_code == 0, ok.output
    assert clients[0].calls[0][1]["arguments"]["mapping"] == SHOP_MAPPING
