"""A schema fuzz of the ranking service: no request body, however broken, gets a 5xx.

Neither schemathesis nor hypothesis is installed, so bodies come from a seeded generator
driven by the service's own OpenAPI spec (``/docs.json``): valid bodies drawn from each
field's schema, then mutated (missing and extra fields, wrong types, out-of-range and huge
integers, ``NaN``/``Infinity`` literals, nested junk, duplicate keys), plus bodies that are
not JSON objects at all, oversized ones (declared and chunked), and wrong content types.

The world and the app come from ``test_service`` (imported under the name pytest gives it,
so both modules share its one-app-per-process list ``_APP``).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# pytest's default "prepend" import mode imports test files of this folder (no __init__.py)
# as top-level modules, so this is the very module object pytest collected: one ``_APP``.
import test_service as service_tests

from flywheel.config import Settings
from flywheel.serving import MAX_BODY_BYTES

asgi_client = service_tests.asgi_client
world = service_tests.world  # its module-scoped fixture, registered here too

pytestmark = pytest.mark.integration

CASES_PER_PATH = 200
SEED = 20250501
HUGE_INTS = [2**63, 2**64, -(2**63) - 1, -1, 10**30, 10**400, -(10**400)]
#: Integers out of range for an id field: decimal text longer than 128 characters.
HUGE_IDS = [10**128, -(10**127), 10**400, -(10**400)]
JUNK: list[Any] = [
    *(None, True, False, "", "x" * 300, "１２", "\u0000", 1.5, -0.0, 1e308, "NaN", "1"),
    *([], {}, [None], {"a": {"b": [1, {"c": None}]}}, [[[[[[[[[[1]]]]]]]]]]),
]
#: Mutations whose bodies can never be valid: the service must refuse them with a 4xx.
ALWAYS_INVALID = {"missing", "extra", "out_of_range", "nan", "not_json", "oversized", "nesting"}

Case = tuple[str, bytes | Iterator[bytes], dict[str, str]]  # kind, body, headers


# ---- values from the spec ------------------------------------------------------------------


def body_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    """The JSON schema of ``POST path``'s request body, ``$ref`` resolved."""
    schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return resolve(spec, schema)


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        *_, name = schema["$ref"].split("/")
        schema = spec["components"]["schemas"][name]
    return schema


def valid_value(spec: dict[str, Any], schema: dict[str, Any], rng: random.Random) -> Any:
    """A value that satisfies ``schema`` (the subset of JSON schema the service uses)."""
    schema = resolve(spec, schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return valid_value(spec, rng.choice(schema[key]), rng)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        lo, hi = schema.get("minimum", -(2**31)), schema.get("maximum", 2**31)
        return rng.choice([lo, hi, rng.randint(lo, min(hi, lo + 200)), rng.randint(lo, hi)])
    if kind == "array":
        size = rng.randint(schema.get("minItems", 0), min(schema.get("maxItems", 20), 60))
        items = schema.get("items", {})
        # distinct values: the service refuses repeated candidates (5 and "5" are one id)
        drawn = (valid_value(spec, items, rng) for _ in range(size))
        return list({str(v): v for v in drawn}.values()) or [0]
    if kind == "string":
        return valid_string(schema, rng)
    if kind == "object":
        return valid_object(spec, schema, rng)
    return None


def valid_string(schema: dict[str, Any], rng: random.Random) -> str:
    pattern = re.compile(schema.get("pattern", ".*"))
    lo, hi = schema.get("minLength", 0), min(schema.get("maxLength", 40), 40)
    alphabet = "abcdef0123456789._:-XYZ"
    for _ in range(100):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))
        if pattern.search(text):
            return text
    raise AssertionError(f"could not draw a string for {schema}")


def valid_object(spec: dict[str, Any], schema: dict[str, Any], rng: random.Random) -> Any:
    required = set(schema.get("required", []))
    return {
        name: valid_value(spec, sub, rng)
        for name, sub in schema.get("properties", {}).items()
        if name in required or rng.random() < 0.5
    }


# ---- cases ---------------------------------------------------------------------------------


def _json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def mutate(spec: dict[str, Any], schema: dict[str, Any], rng: random.Random) -> Case:
    """One fuzz case for a body of ``schema``: its kind, bytes and headers."""
    body = valid_object(spec, schema, rng)
    props, required = schema["properties"], list(schema.get("required", []))
    field = rng.choice(list(props))
    ctype = {"content-type": "application/json"}
    kind = rng.choice(
        ["valid", "missing", "extra", "wrong_type", "out_of_range", "nan", "junk_nested",
         "duplicate_key", "not_json", "oversized", "nesting", "content_type", "top_level"]
    )  # fmt: skip
    if kind == "valid":
        return kind, _json(body), ctype
    if kind == "missing" and required:
        body.pop(rng.choice(required), None)
        return kind, _json(body), ctype
    if kind == "extra":
        body[rng.choice(["x", "user", "K", "__proto__", "k ", ""])] = rng.choice(JUNK)
        return kind, _json(body), ctype
    if kind == "wrong_type":
        body[field] = rng.choice(JUNK)
        return kind, _json(body), ctype
    if kind == "out_of_range":
        name = _int_field(props, rng)
        huge = HUGE_INTS if props[name].get("type") == "integer" else HUGE_IDS
        return kind, _json({**body, **{name: rng.choice(huge)}}), ctype
    if kind == "nan":
        value = rng.choice([float("nan"), float("inf"), float("-inf")])
        return kind, _json({**body, _int_field(props, rng): value}), ctype
    if kind == "junk_nested":
        body[field] = {"a": [rng.choice(JUNK) for _ in range(5)], "b": body.copy()}
        return kind, _json(body), ctype
    if kind == "duplicate_key":
        text = _json(body).decode()
        return kind, f'{text[:-1]}, "{field}": {json.dumps(rng.choice(JUNK))}}}'.encode(), ctype
    return _raw_case(kind, body, rng)


def _int_field(props: dict[str, Any], rng: random.Random) -> str:
    """A field that takes integers: ``k``, or an id (a string or an integer)."""

    def takes_int(schema: dict[str, Any]) -> bool:
        branches = [*schema.get("anyOf", []), *schema.get("oneOf", [])]
        return schema.get("type") == "integer" or any(takes_int(s) for s in branches)

    return rng.choice([n for n, s in props.items() if takes_int(s)])


def _raw_case(kind: str, body: dict[str, Any], rng: random.Random) -> Case:
    """Cases whose trouble is the bytes or headers rather than a field's value."""
    ctype = {"content-type": "application/json"}
    text = _json(body)
    if kind == "not_json":
        garbage = [
            *(b"", b"{", text[: max(1, len(text) // 2)], b"\xff\xfe\x00junk", b"\x00" * 8),
            *(b"\xef\xbb\xbf" + text, b"{'user_id': 1}", rng.randbytes(rng.randint(1, 200))),
        ]
        return kind, rng.choice(garbage), ctype
    if kind == "oversized":
        big = b'{"pad": "' + b"x" * (MAX_BODY_BYTES + rng.randint(1, 5000)) + b'"}'
        if rng.random() < 0.5:  # chunked: no Content-Length to refuse up front
            return kind, iter([big[i : i + 8192] for i in range(0, len(big), 8192)]), ctype
        return kind, big, ctype
    if kind == "nesting":
        depth = rng.choice([300, 3000, 20_000])
        return kind, b'{"user_id": ' + b"[" * depth + b"]" * depth + b"}", ctype
    if kind == "content_type":
        header = rng.choice(["text/plain", "application/xml", "application/x-www-form-urlencoded",
                             "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                             ""])  # fmt: skip
        return kind, text, {"content-type": header}
    top = rng.choice([b"null", b"[]", b"1", b'"user_id"', b"true", b"[" + text + b"]", b"1e999"])
    return "top_level", top, ctype


# ---- the fuzz ------------------------------------------------------------------------------


def _describe(case: Case) -> str:
    kind, body, headers = case
    shown = body[:160] if isinstance(body, bytes) else b"<chunked>"
    return f"{kind} {headers} {shown!r}"


def run_cases(
    post: Callable[[bytes | Iterator[bytes], dict[str, str]], Any], cases: list[Case]
) -> tuple[list[str], list[str], list[str]]:
    """Send every case; return the 5xx, valid-but-refused and invalid-but-accepted ones."""
    errors, refused, accepted = [], [], []
    for case in cases:
        kind, body, headers = case
        reply = post(body, headers)
        what = f"{reply.status_code} {_describe(case)} -> {reply.text[:200]}"
        if reply.status_code >= 500:
            errors.append(what)
        elif kind == "valid" and reply.status_code != 200:
            refused.append(what)
        elif kind in ALWAYS_INVALID and not 400 <= reply.status_code < 500:
            accepted.append(what)
    return errors, refused, accepted


@pytest.mark.parametrize("path", ["/rank", "/feedback"])
def test_no_body_gets_a_5xx(
    path: str,
    world: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(f"{SEED}{path}")
    with asgi_client(world, monkeypatch, epsilon=0.1, seed=0) as client:
        spec = client.get("/docs.json").json()
        schema = body_schema(spec, path)
        cases = [mutate(spec, schema, rng) for _ in range(CASES_PER_PATH)]
        if path == "/feedback":  # also feedback on a request that was really served
            rid = client.post("/rank", json={"user_id": 3, "k": 3}).json()["request_id"]
            body = {"request_id": rid, "item_id": service_tests.sku(5), "event_type": "cart"}
            cases += [("valid", _json(body), {"content-type": "application/json"})]

        def post(body: bytes | Iterator[bytes], headers: dict[str, str]) -> Any:
            return client.post(path, content=body, headers=headers)

        errors, refused, accepted = run_cases(post, cases)
    kinds = {kind for kind, *_ in cases}
    assert {"valid", "not_json", "oversized", "out_of_range", "nan"} <= kinds
    assert errors == [], f"{len(errors)} of {len(cases)} cases got a 5xx:\n" + "\n".join(errors)
    assert refused == [], "valid bodies refused:\n" + "\n".join(refused)
    assert accepted == [], "invalid bodies accepted:\n" + "\n".join(accepted)


def test_malformed_multipart_is_a_4xx(
    world: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with asgi_client(world, monkeypatch) as client:
        reply = client.post(
            "/rank",
            content=b'{"user_id": 7}',
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
    assert reply.status_code == 415, reply.text


#: Ids the service must refuse: (path, field, value); the field is the error's ``loc``.
BAD_IDS = [
    *(("/rank", "user_id", v) for v in ("", "  ", "x" * 129, 10**128, "a\nb", "a\x00", "\x7f")),
    *(("/rank", "user_id", v) for v in (1.5, 7.0, True, False, None, float("nan"), [1], {})),
    *(("/rank", "candidates.1", v) for v in ("", "y" * 129, "b\tc", 2.5, True)),
    *(("/feedback", "item_id", v) for v in ("", "z" * 129, "sku\r-1", 3.0, False, None)),
]


@pytest.mark.parametrize(("path", "field", "value"), BAD_IDS, ids=lambda v: repr(v)[:20])
def test_a_bad_id_is_a_4xx_naming_the_field(
    path: str, field: str, value: Any, world: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    body: dict[str, Any]
    if path == "/rank":
        body = {"user_id": "3", "candidates": [service_tests.sku(1), service_tests.sku(2)]}
    else:
        body = {
            "request_id": "a" * 32 + "-3",
            "item_id": service_tests.sku(1),
            "event_type": "click",
        }
    if field == "candidates.1":
        body["candidates"][1] = value
    else:
        body[field] = value
    with asgi_client(world, monkeypatch) as client:
        reply = client.post(path, content=_json(body), headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert [".".join(map(str, e["loc"])) for e in reply.json()["detail"]] == [field]


def test_the_spec_documents_ids_as_strings_or_integers(
    world: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with asgi_client(world, monkeypatch) as client:
        spec = client.get("/docs.json").json()
    rank, feedback = body_schema(spec, "/rank"), body_schema(spec, "/feedback")
    candidates = rank["properties"]["candidates"]  # BentoML drops the "| None" branch
    candidates = [s for s in candidates.get("anyOf", [candidates]) if s.get("type") == "array"]
    for schema in (rank["properties"]["user_id"], feedback["properties"]["item_id"],
                   candidates[0]["items"]):  # fmt: skip
        kinds = {s["type"]: s for s in resolve(spec, schema)["oneOf"]}
        assert set(kinds) == {"string", "integer"}
        assert (kinds["string"]["minLength"], kinds["string"]["maxLength"]) == (1, 128)
