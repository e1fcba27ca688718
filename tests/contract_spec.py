"""Coda's published OpenAPI spec and recorded live traffic, as test oracles.

Reusable by any contract test (the client's requests, the emulator's responses):

- `load_spec()` loads ``openapi-1.4.17.yaml`` once (skips the test if the file is absent);
- `validator_for(name)` validates against ``#/components/schemas/<name>``;
- `response_schema(operation_id, status)` / `response_validator(...)` for an operation's answer;
- `request_schema(operation_id)` for an operation's JSON request body;
- `recorded_calls()` lists every recorded Coda call in ``recorded/*.json``.

The reference data is read in place from ``$CODA_REFERENCE_DIR`` (default
``/work/shared/coda``); it is licensed reference material and is never copied into the repo.

`$ref`s are resolved by `jsonschema` + `referencing`, with the whole spec registered as one
root resource, so a ref such as ``#/components/schemas/RowEdit`` resolves inside it. OpenAPI
3.0 schemas are validated as JSON Schema draft 4 (their base dialect); `nullable`, `example`,
``x-*`` and friends are unknown keywords and ignored.

NB: the default validators are *relaxed* (``strict=False``), because the published spec, read
as plain JSON Schema, rejects real Coda answers:

1. ``additionalProperties: false`` is dropped everywhere. Real answers carry fields the spec
   lacks (``docSize.baseTableCount`` on a Doc, ``viewId`` on a Table: see recorded/README.md),
   and the spec composes answers with ``allOf`` whose branches each forbid the other branches'
   properties (``RowsUpsertResult`` = ``DocumentMutateResponse`` + ``{addedRowIds}``), which in
   JSON Schema rejects every instance.
2. ``oneOf`` is read as ``anyOf``. OpenAPI uses ``oneOf`` + ``discriminator`` for column formats
   and overlapping alternatives for cell values (``RowValue`` = ``Value | RichValue``, and a
   plain string is both), so "exactly one branch matches" fails on valid data.

For *requests we send*, pass ``strict=True``: the request schemas (``RowsUpsert``,
``RowUpdate``, ``RowsDelete``) have neither problem, and our bodies must not carry fields or
shapes Coda does not publish.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4


def _reference_dir() -> Path:
    """$CODA_REFERENCE_DIR, else `shared/coda` beside the checkout (as CI lays it out), else
    the workplace's copy."""
    if "CODA_REFERENCE_DIR" in os.environ:
        return Path(os.environ["CODA_REFERENCE_DIR"])
    beside = Path(__file__).resolve().parents[2] / "shared" / "coda"
    return beside if beside.is_dir() else Path("/work/shared/coda")


REFERENCE_DIR = _reference_dir()
SPEC_PATH = REFERENCE_DIR / "openapi-1.4.17.yaml"
RECORDED_DIR = REFERENCE_DIR / "recorded"
SPEC_URI = "urn:coda-openapi-1.4.17"


def _require(path: Path, what: str) -> None:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set CODA_REFERENCE_DIR to the reference data)")


@functools.cache
def _load_spec_cached() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    if not isinstance(spec, dict) or "components" not in spec:
        raise AssertionError(f"{SPEC_PATH} does not look like an OpenAPI document")
    return spec


def load_spec() -> dict[str, Any]:
    """The parsed spec (cached; do not mutate). Skips the calling test if it is absent."""
    _require(SPEC_PATH, "Coda OpenAPI spec")
    return _load_spec_cached()


def _relaxed(node: Any) -> Any:
    """A copy of `node` without ``additionalProperties: false`` and with every ``oneOf`` read
    as ``anyOf`` (see the module docstring for why)."""
    if isinstance(node, dict):
        return {
            ("anyOf" if key == "oneOf" else key): _relaxed(value)
            for key, value in node.items()
            if not (key == "additionalProperties" and value is False)
        }
    if isinstance(node, list):
        return [_relaxed(item) for item in node]
    return node


@functools.cache
def _registry(strict: bool) -> Registry[Any]:
    spec = _load_spec_cached()
    contents = copy.deepcopy(spec) if strict else _relaxed(spec)
    resource: Resource[Any] = Resource.from_contents(contents, default_specification=DRAFT4)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return registry


def validator_for_schema(schema: dict[str, Any], *, strict: bool = False) -> Draft4Validator:
    """A validator for `schema`, whose ``#/...`` refs point into the spec."""
    load_spec()
    if not strict:
        schema = _relaxed(schema)
    return Draft4Validator(_rebase_refs(schema), registry=_registry(strict))


def _rebase_refs(node: Any) -> Any:
    """Point local ``#/...`` refs of a schema taken out of the spec at the spec resource."""
    if isinstance(node, dict):
        return {
            key: (
                SPEC_URI + value if key == "$ref" and value.startswith("#") else _rebase_refs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase_refs(item) for item in node]
    return node


def validator_for(schema_name: str, *, strict: bool = False) -> Draft4Validator:
    """A validator for ``#/components/schemas/<schema_name>``."""
    if schema_name not in load_spec()["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} in the spec")
    return validator_for_schema({"$ref": f"#/components/schemas/{schema_name}"}, strict=strict)


def _operation(operation_id: str) -> dict[str, Any]:
    for item in load_spec()["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                return operation
    raise KeyError(f"no operation {operation_id!r} in the spec")


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a top-level local ``$ref`` (e.g. to ``#/components/responses/NotFoundError``)."""
    while set(node) == {"$ref"}:
        target: Any = load_spec()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def response_schema(operation_id: str, status: str) -> dict[str, Any]:
    """The JSON schema of `operation_id`'s answer with HTTP `status` (e.g. "200", "202")."""
    response = _deref(_operation(operation_id)["responses"][status])
    return dict(response["content"]["application/json"]["schema"])


def response_validator(operation_id: str, status: str, *, strict: bool = False) -> Draft4Validator:
    """`validator_for_schema(response_schema(...))`."""
    return validator_for_schema(response_schema(operation_id, status), strict=strict)


def request_schema(operation_id: str) -> dict[str, Any]:
    """The JSON schema of `operation_id`'s request body."""
    body = _deref(_operation(operation_id)["requestBody"])
    return dict(body["content"]["application/json"]["schema"])


def success_status(operation_id: str) -> str:
    """The documented 2xx status of an operation ("200" or "202")."""
    codes: list[str] = list(_operation(operation_id)["responses"])
    return next(code for code in codes if code.startswith("2"))


@dataclass(frozen=True)
class RecordedCall:
    """One recorded Coda call: `path` is relative to /apis/v1 and URL-encoded as sent."""

    file: str
    method: str  # upper case
    path: str
    params: dict[str, str]
    body: Any
    status: int
    response: Any

    @property
    def id(self) -> str:
        return f"{self.file}:{self.method} {self.path[:60]}"


def recorded_calls() -> list[RecordedCall]:
    """Every call in ``recorded/*.test.json`` (only the ``api`` part: Coda's own traffic)."""
    _require(RECORDED_DIR, "recorded Coda traffic")
    return list(_iter_recorded())


def _iter_recorded() -> Iterator[RecordedCall]:
    for file in sorted(RECORDED_DIR.glob("*.json")):
        api = json.loads(file.read_text(encoding="utf-8")).get("api", {})
        for method, by_path in api.items():
            for path, entries in by_path.items():
                for entry in entries if isinstance(entries, list) else [entries]:
                    request = entry.get("request") or {}
                    yield RecordedCall(
                        file=file.name,
                        method=method.upper(),
                        path=path,
                        params=dict(request.get("params") or {}),
                        body=request.get("data"),
                        status=int(entry.get("status", 200)),
                        response=entry.get("response"),
                    )
