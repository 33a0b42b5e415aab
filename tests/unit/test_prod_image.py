"""The prod profile refuses a pipeline image it could not pull (issue #12, defect 1).

``flywheel compile`` and ``flywheel submit`` for prod stop, naming ``image``, while
``Settings.image`` has no registry or no digest, or is one of the prod overlay's
placeholders. Submission is checked against a FAKE ``kfp.Client`` factory (no KFP API
server here), the only fake: it records whether anything reached that boundary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.config import ConfigError, load_settings
from flywheel.cycle import compile_pipeline
from flywheel.image_ref import image_problem, registry_of
from flywheel.submit import submit

REAL = "a1" * 32
PINNED = f"registry.acme.test/ml/flywheel-platform@sha256:{REAL}"


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("flywheel-platform:0.1.0", "names no registry"),
        (f"flywheel-platform@sha256:{REAL}", "names no registry"),
        (f"acme/flywheel-platform@sha256:{REAL}", "names no registry"),  # Docker Hub org
        (f"registry.example.com/flywheel/flywheel-platform@sha256:{REAL}", "placeholder registry"),
        ("ghcr.io/acme/flywheel-platform:0.1.0", "not pinned by a sha256 digest"),
        ("ghcr.io/acme/flywheel-platform@sha256:abc", "not pinned by a sha256 digest"),
        (f"ghcr.io/acme/flywheel-platform@sha256:{'0' * 63}1", "placeholder digest"),
        (PINNED, None),
        (f"localhost:5000/flywheel-platform@sha256:{REAL}", None),
        (f"ghcr.io/acme/flywheel-platform:0.1.0@sha256:{REAL}", None),
    ],
)
def test_an_image_is_pullable_only_from_a_registry_by_digest(image: str, problem: Any) -> None:
    got = image_problem(image)
    assert got is None if problem is None else problem in (got or ""), got


def test_registry_follows_dockers_rule() -> None:
    assert registry_of("flywheel-platform:0.1.0") is None
    assert registry_of("acme/flywheel-platform") is None
    assert registry_of("localhost/flywheel-platform") == "localhost"
    assert registry_of("registry:5000/x") == "registry:5000"
    assert registry_of("ghcr.io/acme/x") == "ghcr.io"


def test_prod_compile_with_the_default_image_is_refused_and_writes_nothing(
    tmp_path: Path,
) -> None:
    settings = load_settings(profile="prod")
    assert settings.image == "flywheel-platform:0.1.0"  # prod does not override the default
    out = tmp_path / "p.yaml"
    with pytest.raises(ConfigError, match=r"image='flywheel-platform:0\.1\.0' \(profile prod\)"):
        compile_pipeline(settings, out)
    assert not out.exists()


def test_prod_compiles_with_a_pinned_image_and_kind_with_the_tag(tmp_path: Path) -> None:
    prod = compile_pipeline(load_settings(profile="prod", image=PINNED), tmp_path / "prod.yaml")
    assert f"image: {PINNED}" in prod.read_text()
    kind = compile_pipeline(load_settings(profile="kind"), tmp_path / "kind.yaml")
    assert "image: flywheel-platform:0.1.0" in kind.read_text()  # kind loads it onto the node


def test_prod_submit_with_the_default_image_never_reaches_kfp(tmp_path: Path) -> None:
    reached: list[str] = []

    def factory(host: str) -> Any:
        reached.append(host)
        raise AssertionError("the KFP client must not be created")

    with pytest.raises(ConfigError, match="names no registry"):
        submit(
            load_settings(profile="prod"),
            "http://kfp:8080",
            package=tmp_path / "p.yaml",
            client_factory=factory,
        )
    assert reached == [] and not (tmp_path / "p.yaml").exists()


def test_cli_names_the_field_and_takes_the_image_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    out = tmp_path / "p.yaml"
    args = ["--profile", "prod", "--workspace", str(tmp_path / "ws"), "compile", "--out", str(out)]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and not out.exists()
    text = " ".join(refused.output.split())
    assert "image='flywheel-platform:0.1.0'" in text and "FLYWHEEL_IMAGE" in text
    monkeypatch.setenv("FLYWHEEL_IMAGE", PINNED)
    accepted = runner.invoke(app, args)
    assert accepted.exit_code == 0, accepted.output
    assert f"image: {PINNED}" in out.read_text()
