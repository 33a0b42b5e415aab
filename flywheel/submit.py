"""Submit the pipeline to a Kubeflow Pipelines API server: one run, or a recurring run.

``flywheel submit`` compiles the pipeline for the current profile (its image, its Settings)
and hands the package to ``kfp.Client``: ``create_run_from_pipeline_package`` for one run,
``create_experiment`` + ``create_recurring_run`` for a schedule. Parameters given as
``key=value`` strings are checked against the pipeline's inputs and typed like them, so a
typo fails here, not in the cluster. Cron schedules are validated here too, in KFP's
six-field format (seconds first); a classic five-field expression gets ``0`` seconds.
A source mapping given as a local file is sent as its YAML text (``mapping`` parameter):
the cluster's pods cannot read the caller's files.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: Field ranges of KFP's cron format (robfig/cron with seconds): name, low, high.
_CRON_FIELDS: Final = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)
_NAMES: Final = {
    4: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
    5: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
}
_DESCRIPTORS: Final = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                       "@hourly"}  # fmt: skip
_EVERY: Final = re.compile(r"^@every (\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_TYPES: Final[dict[str, Callable[[str], Any]]] = {
    "STRING": str,
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "BOOLEAN": lambda v: {"true": True, "false": False}[v.lower()],
}


class SubmitError(ValueError):
    """A bad parameter or schedule; the message names it and what was expected."""


@dataclass(frozen=True)
class SubmitResult:
    """What was created on the KFP server."""

    kind: str  # run | recurring run
    id: str
    name: str
    url: str
    package: Path
    arguments: dict[str, Any]


def _cron_value(token: str, index: int, low: int, high: int) -> int:
    names = _NAMES.get(index)
    if names and token.upper() in names:
        return names.index(token.upper()) + (1 if index == 4 else 0)
    if not token.isdigit() or not low <= int(token) <= high:
        raise ValueError(token)
    return int(token)


def _check_cron_field(text: str, index: int) -> None:
    _, low, high = _CRON_FIELDS[index]
    for part in text.split(","):
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ValueError(part)
        if base in ("*", "?") and (base == "*" or index in (3, 5)):
            continue
        first, _, last = base.partition("-")
        lo = _cron_value(first, index, low, high)
        if last and _cron_value(last, index, low, high) < lo:
            raise ValueError(part)


def kfp_cron(expression: str) -> str:
    """``expression`` in KFP's six-field cron format (seconds first), validated.

    Accepts six fields, classic five fields (``0`` seconds is prepended), or a descriptor
    (``@daily``, ``@every 6h``).

    Raises:
        SubmitError: naming the bad field, its value and the allowed range.
    """
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text in _DESCRIPTORS or _EVERY.match(text):
            return text
        raise SubmitError(
            f"schedule {expression!r}: unknown descriptor; expected one of "
            f"{', '.join(sorted(_DESCRIPTORS))} or '@every <duration>' such as '@every 6h'"
        )
    fields = text.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise SubmitError(
            f"schedule {expression!r} has {len(fields)} fields; expected 5 (minute hour "
            "day-of-month month day-of-week) or KFP's 6 (seconds first), e.g. '0 0 3 * * *'"
        )
    for index, value in enumerate(fields):
        name, low, high = _CRON_FIELDS[index]
        try:
            _check_cron_field(value, index)
        except (ValueError, KeyError):
            raise SubmitError(
                f"schedule {expression!r}: {name} field {value!r} is invalid; expected "
                f"*, a number {low}-{high}, a range a-b, a step */n or a list a,b"
            ) from None
    return " ".join(fields)


def pipeline_inputs(package: Path) -> dict[str, str]:
    """The compiled pipeline's parameters and their KFP types (read with kfp's loader)."""
    from kfp import components

    spec = components.load_component_from_file(str(package)).pipeline_spec
    params = spec.root.input_definitions.parameters
    return {name: _type_name(p.parameter_type) for name, p in params.items()}


def _type_name(code: int) -> str:
    from kfp.pipeline_spec import pipeline_spec_pb2

    return str(pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(code))


def parse_params(pairs: list[str], inputs: dict[str, str]) -> dict[str, Any]:
    """``["window_days=7", ...]`` -> ``{"window_days": 7.0}``, typed like the inputs.

    Raises:
        SubmitError: a pair without ``=``, an unknown name, or a value of the wrong type.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise SubmitError(f"parameter {pair!r}: expected name=value")
        if name not in inputs:
            raise SubmitError(
                f"parameter {name!r} is not a pipeline input; expected one of "
                f"{', '.join(sorted(inputs))}"
            )
        try:
            out[name] = _TYPES[inputs[name]](raw)
        except (ValueError, KeyError):
            raise SubmitError(
                f"parameter {name}={raw!r}: expected a {inputs[name].lower()} value"
            ) from None
    return out


def _add_mapping(arguments: dict[str, Any], mapping: str | None) -> None:
    from flywheel.ingest.mapping import is_mapping_text, mapping_argument, parse_mapping

    if mapping is not None:
        if "mapping" in arguments:
            raise SubmitError("mapping given twice: use --mapping or --param mapping=, not both")
        arguments["mapping"] = mapping_argument(mapping)
    given = arguments.get("mapping", "")
    if given and not arguments.get("events_uri"):
        raise SubmitError("parameter mapping needs events_uri: a mapping reads new events only")
    if is_mapping_text(given):
        parse_mapping(given, "parameter mapping")


def default_client(host: str) -> Any:
    """A ``kfp.Client`` for the KFP API server at ``host``."""
    import kfp

    return kfp.Client(host=host)


def submit(
    settings: Settings,
    host: str,
    *,
    experiment: str = "flywheel",
    params: list[str] | None = None,
    schedule: str | None = None,
    name: str | None = None,
    package: Path | None = None,
    client_factory: Callable[[str], Any] | None = None,
    mapping: str | None = None,
) -> SubmitResult:
    """Compile the pipeline for ``settings`` and create a run (or a recurring run) on KFP.

    Args:
        settings: the profile to compile for (its image and Settings go into the package).
        host: the KFP API server (e.g. ``http://localhost:8080``).
        experiment: the KFP experiment to file the run under (created if missing).
        params: ``name=value`` pipeline arguments.
        schedule: a cron expression (see :func:`kfp_cron`): create a recurring run.
        name: the recurring run's name (required with ``schedule``); the run's otherwise.
        package: where to write the compiled package (default: a temporary file).
        client_factory: ``host -> kfp.Client`` (default: :func:`default_client`).
        mapping: the events' source layout on this machine, a built-in name or a mapping
            file, validated here and sent as the ``mapping`` argument (a file as its YAML
            text: the cluster's pods cannot read it). ``params`` may set ``mapping=`` instead,
            passed as given (e.g. a path inside the image or volume).

    Raises:
        SubmitError: a bad parameter, schedule or a schedule without a name.
        MappingError: a bad mapping (naming the key).
        ConfigError: the prod profile with an image not pinned to a registry and digest.
    """
    from flywheel.cycle import compile_pipeline
    from flywheel.image_ref import check_pipeline_image

    check_pipeline_image(settings)  # before anything is compiled, written or sent
    cron = kfp_cron(schedule) if schedule is not None else None
    if cron is not None and not name:
        raise SubmitError("a schedule needs a name for the recurring run (--name)")
    if package is None:
        package = Path(tempfile.mkdtemp(prefix="flywheel-submit-")) / "pipeline.yaml"
    compile_pipeline(settings, package)
    arguments = parse_params(params or [], pipeline_inputs(package))
    _add_mapping(arguments, mapping)
    client = (client_factory or default_client)(host)
    base = host.rstrip("/")
    if cron is None:
        run = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, run_name=name, experiment_name=experiment
        )
        log.info("created run %s on %s", run.run_id, host)
        url = f"{base}/#/runs/details/{run.run_id}"
        return SubmitResult("run", run.run_id, name or "", url, package, arguments)
    exp = client.create_experiment(name=experiment)
    job = client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=name,
        cron_expression=cron,
        params=arguments,
        pipeline_package_path=str(package),
        max_concurrency=1,
        no_catchup=True,
    )
    log.info("created recurring run %s (%s) on %s", job.recurring_run_id, cron, host)
    url = f"{base}/#/recurringrun/details/{job.recurring_run_id}"
    return SubmitResult("recurring run", job.recurring_run_id, str(name), url, package, arguments)
