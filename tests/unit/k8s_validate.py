"""Schema-validate rendered Kubernetes objects offline. Runs in the tool venv (.venv-k8s).

Usage: ``python k8s_validate.py RENDERED.yaml CRD_DIR VERSION [VERSION ...]``

Built-in kinds are checked with kubernetes-validate in strict mode (unknown fields are
errors) against each Kubernetes VERSION; objects of a group defined by a CRD in CRD_DIR are
checked with jsonschema against that CRD's ``openAPIV3Schema`` for the object's version,
made strict the same way (``additionalProperties: false`` wherever the schema lists
properties and does not keep unknown fields). ``x-kubernetes-*`` keywords are otherwise
ignored. Prints one JSON list, one entry per object:
``{"ref": "Kind/namespace/name", "checked_by": [...], "errors": [...]}``.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

# libyaml when present: the CRD files are megabytes of YAML.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _strict(schema: Any) -> Any:
    """The schema with unknown properties forbidden, as the API server's strict validation."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in schema and "additionalProperties" not in schema and not keeps_unknown:
        out["additionalProperties"] = False
    return out


def load_crd_schemas(crd_dir: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(group, version, kind) -> strict openAPIV3Schema`` for every CRD file in crd_dir."""
    schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=_LOADER):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                schemas[(group, version["name"], kind)] = _strict(schema)
    return schemas


def _ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace', '')}/{meta.get('name')}"


def check_object(
    obj: dict[str, Any], crds: dict[tuple[str, str, str], dict[str, Any]], versions: list[str]
) -> dict[str, Any]:
    """Validate one object; returns its ref, what checked it and the error messages."""
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    group, _, version = api_version.rpartition("/")
    crd_groups = {g for g, _, _ in crds}
    errors: list[str] = []
    checked_by: list[str] = []
    if group in crd_groups:
        schema = crds.get((group, version, kind))
        if schema is None:
            errors.append(f"no CRD schema for {api_version} {kind}")
        else:
            checked_by.append(f"crd:{group}/{version}")
            validator = jsonschema.Draft7Validator(schema)
            for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
                where = ".".join(str(p) for p in err.absolute_path) or "<root>"
                errors.append(f"{where}: {err.message}")
        return {"ref": _ref(obj), "checked_by": checked_by, "errors": errors}
    for k8s_version in versions:
        try:
            kubernetes_validate.validate(obj, k8s_version, strict=True)
            checked_by.append(f"kubernetes:{k8s_version}")
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "<root>"
            errors.append(f"k8s {k8s_version}: {where}: {exc.message}")
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError,
        ) as exc:
            errors.append(f"k8s {k8s_version}: {exc}")
    return {"ref": _ref(obj), "checked_by": checked_by, "errors": errors}


def main(argv: list[str]) -> int:
    """Validate every object of argv[0] (rendered YAML) and print the results as JSON."""
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    rendered, crd_dir, versions = Path(argv[0]), Path(argv[1]), argv[2:]
    crds = load_crd_schemas(crd_dir)
    objects = [o for o in yaml.load_all(rendered.read_text(), Loader=_LOADER) if o]
    print(json.dumps([check_object(o, crds, versions) for o in objects]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
