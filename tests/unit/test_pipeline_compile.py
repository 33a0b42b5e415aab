"""The compiled pipeline: golden IR (version fields stripped), kfp's loader, DAG shape.

Regenerate the golden file after an intended change with
``UPDATE_GOLDEN=1 pytest tests/unit/test_pipeline_compile.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from flywheel.config import Settings
from flywheel.cycle import compile_pipeline

GOLDEN = Path(__file__).parent.parent / "golden" / "continuous_training.yaml"
_VERSION_LINES = re.compile(r"^\s*sdkVersion:.*$", re.MULTILINE)


def _compiled(tmp_path: Path) -> str:
    settings = Settings(workspace=Path("/mnt/flywheel"), image="flywheel-platform:golden")
    out = compile_pipeline(settings, tmp_path / "pipeline.yaml")
    return _VERSION_LINES.sub("", out.read_text())


def test_matches_golden_file(tmp_path: Path) -> None:
    text = _compiled(tmp_path)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), "golden file missing: run with UPDATE_GOLDEN=1"
    assert text == GOLDEN.read_text(), (
        "compiled pipeline changed; if intended, regenerate with UPDATE_GOLDEN=1"
    )


def test_loads_with_kfps_own_loader(tmp_path: Path) -> None:
    from kfp import components

    path = tmp_path / "p.yaml"
    path.write_text(_compiled(tmp_path))
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == "flywheel-continuous-training"
    assert {"events_uri", "window_days", "rule_json", "settings_json"} <= set(
        loaded.component_spec.inputs
    )


def test_dag_shape_retries_and_condition(tmp_path: Path) -> None:
    spec = yaml.safe_load(_compiled(tmp_path))
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {
        "ingest",
        "features",
        "dataset",
        "preprocess",
        "train",
        "evaluate",
        "condition-1",
    }
    assert tasks["features"]["dependentTasks"] == ["ingest"]
    assert tasks["train"]["dependentTasks"] == ["preprocess"]
    # Stages touching external systems retry; ingest is never served from cache.
    for name in ("ingest", "features"):
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["ingest"]["cachingOptions"] == {}
    assert tasks["features"]["cachingOptions"] == {"enableCache": True}
    cond = tasks["condition-1"]
    assert "evaluate" in cond["dependentTasks"]
    assert "Output" in cond["triggerPolicy"]["condition"]
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(inner) == {"register", "deploy"}
    assert inner["deploy"]["dependentTasks"] == ["register"]


@pytest.mark.parametrize("image", ["registry.example/flywheel:1.2.3"])
def test_every_component_runs_in_the_settings_image(tmp_path: Path, image: str) -> None:
    out = compile_pipeline(Settings(image=image), tmp_path / "p.yaml")
    spec = yaml.safe_load(out.read_text())
    execs = spec["deploymentSpec"]["executors"]
    assert len(execs) == 8
    assert {e["container"]["image"] for e in execs.values()} == {image}
    # Nothing is pip-installed at task start: the image carries kfp and flywheel.
    assert not any("pip install" in " ".join(e["container"]["command"]) for e in execs.values())


def test_mapping_is_a_pipeline_parameter_bound_to_ingest(tmp_path: Path) -> None:
    """Default "": no mapping, today's contract; the ingest task reads the pipeline's value."""
    from kfp import components

    path = tmp_path / "p.yaml"
    path.write_text(_compiled(tmp_path))
    spec = yaml.safe_load(path.read_text())
    param = spec["root"]["inputDefinitions"]["parameters"]["mapping"]
    assert param == {"defaultValue": "", "isOptional": True, "parameterType": "STRING"}
    ingest = spec["root"]["dag"]["tasks"]["ingest"]["inputs"]["parameters"]["mapping"]
    assert ingest == {"componentInputParameter": "mapping"}
    assert "mapping" in spec["components"]["comp-ingest"]["inputDefinitions"]["parameters"]
    inputs = components.load_component_from_file(str(path)).component_spec.inputs
    assert inputs is not None and inputs["mapping"].default == ""
