"""Check Zendesk request and response bodies against Zendesk's own OpenAPI description.

``validate_request("POST", "/api/v2/tickets", body)`` and
``validate_response("GET", "/api/v2/tickets/42", 200, body)`` raise ``OASValidationError`` (an
AssertionError, so pytest shows it well) listing every mismatch. Paths may be templates or
concrete paths; a query string or ``.json`` suffix is ignored.

Requests are checked with OAS30WriteValidator (sending a readOnly property is an error),
responses with OAS30ReadValidator (returning a writeOnly one is). Formats (email, date-time)
are checked.

The 1.2 MB YAML takes a while to parse, so the parsed document is pickled in the temp directory,
keyed by the file's path, size and mtime.

Errata: where the published description contradicts Zendesk's documented behaviour, the spec is
patched before use. Each patch is listed in ``ERRATA`` with its reason; nothing else is changed.

Without the OAS (a bare clone: Zendesk publishes the description without a license we could
find, so it is not copied into tests/data), two kinds of use are told apart:

- A test that calls ``validate_*`` or ``example`` itself is a contract test: its point is that
  a body matches Zendesk's description. It cannot be honest without the description, so it is
  skipped, with the reason naming what is missing (failed under ``PMB_REQUIRE_SHARED=1``, as in
  CI).
- The Zendesk fakes (tests/zendesk_responses.py, tests/outbound_oas.py, ``mock()`` in
  tests/test_zendesk.py) check every exchange through ``check_fake``. Their answers are built
  by the same resource builders (tests/zendesk_double.py) whose shapes CI validates on every
  run, so the behaviour tests built on them (tickets, follow-ups, retries, idempotency, crash
  recovery) still test the bridge honestly without the file; what they lose is only the
  second, contract, check of each exchange. ``check_fake`` then lets the exchange through and
  counts it, and the run's summary says how many exchanges went unchecked and why, so the gap
  is never silent. Skipping them all instead would block most of the suite for want of a
  schema file, which is exactly what a bare clone must not do.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import (
    OAS30ReadValidator,
    OAS30WriteValidator,
    oas30_format_checker,
)
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from shared_material import missing_reason, need_shared, shared_path


def _spec_path() -> Path | None:
    if os.environ.get("ZENDESK_OAS"):
        return Path(os.environ["ZENDESK_OAS"])
    shared = shared_path("zendesk-oas")
    return shared / "support-api.yaml" if shared is not None else None


SPEC_PATH = _spec_path()
"""support-api.yaml, or None when this checkout has no shared/zendesk-oas."""
#: Exchanges of the fakes that could not be checked against the OAS (reported by conftest).
UNCHECKED_EXCHANGES: list[str] = []
_SPEC_URI = "urn:zendesk:support-api"
_ERRATA_VERSION = "1"

#: Ticket error bodies are not described in the OAS (no 4xx responses on ticket operations).
#: Zendesk documents two shapes: the classic ``{"error", "description", "details"}`` (Ticketing
#: API "Errors" page, e.g. 422 RecordInvalid, 400 IdempotentRequestError) and the JSON:API-like
#: ``{"errors": [{"code", "title"}]}`` (the OAS's own ``Errors`` schema).
CLASSIC_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "oneOf": [
                {"type": "string"},
                {"type": "object", "properties": {"title": {"type": "string"},
                                                  "message": {"type": "string"}}},
            ]
        },
        "description": {"type": "string"},
        "details": {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["description"],
                    "properties": {"description": {"type": "string"},
                                   "error": {"type": "string"}},
                },
            },
        },
    },
}


class OASValidationError(AssertionError):
    """A body does not match the operation's schema."""


def _fix_custom_fields(spec: dict[str, Any]) -> None:
    # TicketUpdateInput.custom_fields points at CustomFieldObject, which describes a *field
    # definition* (requires key/type/title, id readOnly). Zendesk's "Setting custom field values"
    # and TicketObject.custom_fields show what is really sent: [{"id": 123, "value": ...}], the
    # value's type depending on the field (text, number, checkbox, multiselect, null to clear).
    props = spec["components"]["schemas"]["TicketUpdateInput"]["properties"]
    props["custom_fields"]["items"] = {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "integer"}, "value": {"nullable": True}},
    }


#: (name, patch) pairs applied to the parsed spec; see each function for the reason.
ERRATA: tuple[tuple[str, Callable[[dict[str, Any]], None]], ...] = (
    ("TicketUpdateInput.custom_fields items are {id, value}", _fix_custom_fields),
)


class _Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """YAML 1.1 reads a bare ``=`` as the 'value' tag; the spec means the string "="."""


_Loader.add_constructor(
    "tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node)
)


def _cache_file(path: Path) -> Path:
    st = path.stat()
    version = f"{_ERRATA_VERSION}|{sys.version_info[:2]}"
    basis = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{version}"
    digest = hashlib.sha256(basis.encode()).hexdigest()[:24]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"zendesk-oas-{uid}-{digest}.pickle"


def oas_present() -> bool:
    return SPEC_PATH is not None


def spec_dir() -> Path:
    """The folder of Zendesk's descriptions; skips the calling test when there is none."""
    if SPEC_PATH is None:
        return need_shared("zendesk-oas")
    return SPEC_PATH.parent


def check_fake(validate: Callable[..., None], *args: Any) -> None:
    """For the fakes and mocks: ``validate(*args)`` when the OAS is here; without it the
    exchange passes unchecked and is counted (see the module docstring)."""
    if SPEC_PATH is None:
        UNCHECKED_EXCHANGES.append(f"{validate.__name__}{args[:2]}")
        return
    validate(*args)


def unchecked_summary() -> str | None:
    if not UNCHECKED_EXCHANGES:
        return None
    return (f"{len(UNCHECKED_EXCHANGES)} exchanges of the Zendesk fakes were not checked "
            f"against Zendesk's OAS: {missing_reason('zendesk-oas')}")


def load_spec(path: Path | None = None) -> dict[str, Any]:
    """The parsed (and patched) OpenAPI document; skips the calling test without one."""
    if path is None:
        path = SPEC_PATH if SPEC_PATH is not None else need_shared("zendesk-oas")
    return _load_spec(path)


@functools.cache
def _load_spec(path: Path) -> dict[str, Any]:
    """The parsed (and patched) OpenAPI document, from the pickle cache when it is fresh."""
    cache = _cache_file(path)
    try:
        with cache.open("rb") as fh:
            return pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError):
        pass
    with path.open("rb") as fh:
        spec = yaml.load(fh, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    for _name, patch in ERRATA:
        patch(spec)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        pickle.dump(spec, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, cache)
    return spec


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(
        _SPEC_URI, Resource.from_contents(load_spec(), default_specification=DRAFT4)
    )


@functools.cache
def _templates() -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for template in load_spec()["paths"]:
        regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        out.append((template, re.compile(f"^{regex}$")))
    # Literal paths first: "/api/v2/tickets/count" must not match "/api/v2/tickets/{ticket_id}".
    out.sort(key=lambda item: (item[0].count("{"), -len(item[0])))
    return out


def path_template(path: str) -> str:
    """The spec's path template for a concrete or template path."""
    bare = path.split("?", 1)[0]
    bare = bare[:-5] if bare.endswith(".json") else bare
    paths = load_spec()["paths"]
    if bare in paths:
        return bare
    for template, regex in _templates():
        if regex.match(bare):
            return template
    raise LookupError(f"no path in the Zendesk OAS matches {path!r}")


def operation(method: str, path: str) -> dict[str, Any]:
    template = path_template(path)
    op = load_spec()["paths"][template].get(method.lower())
    if op is None:
        raise LookupError(f"the Zendesk OAS has no {method.upper()} {template}")
    return op


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _json_content(content: dict[str, Any] | None) -> str | None:
    for media in (content or {}):
        if media.split(";")[0].strip() == "application/json":
            return media
    return None


def request_schema_pointer(method: str, path: str) -> str | None:
    template = path_template(path)
    body = operation(method, path).get("requestBody") or {}
    media = _json_content(body.get("content"))
    if media is None:
        return None
    return _pointer("paths", template, method.lower(), "requestBody", "content", media, "schema")


def response_schema_pointer(method: str, path: str, status: int) -> str | None:
    template = path_template(path)
    responses = operation(method, path).get("responses") or {}
    key = next((k for k in (str(status), status, f"{str(status)[0]}XX", "default")
                if k in responses), None)
    if key is None:
        raise LookupError(f"the Zendesk OAS has no {status} answer for {method.upper()} {template}")
    media = _json_content(responses[key].get("content"))
    if media is None:
        return None
    return _pointer("paths", template, method.lower(), "responses", str(key), "content", media,
                    "schema")


@functools.cache
def _validator(kind: str, pointer: str) -> Any:
    cls = OAS30WriteValidator if kind == "write" else OAS30ReadValidator
    return cls({"$ref": f"{_SPEC_URI}#/{pointer}"}, registry=_registry(),
               format_checker=oas30_format_checker)


def _check(kind: str, pointer: str, body: Any, what: str) -> None:
    errors = sorted(_validator(kind, pointer).iter_errors(body), key=lambda e: str(list(e.path)))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:20]]
        raise OASValidationError(f"{what} does not match the Zendesk OAS:\n  " + "\n  ".join(lines))


def has_request_schema(method: str, path: str) -> bool:
    return request_schema_pointer(method, path) is not None


def validate_request(method: str, path: str, body: Any) -> None:
    """Raise OASValidationError unless ``body`` is a valid request body for the operation."""
    pointer = request_schema_pointer(method, path)
    if pointer is None:
        raise LookupError(f"the Zendesk OAS describes no JSON body for {method.upper()} {path}")
    _check("write", pointer, body, f"request {method.upper()} {path}")


def validate_response(method: str, path: str, status: int, body: Any) -> None:
    """Raise OASValidationError unless ``body`` is a valid ``status`` answer of the operation.

    Operations documented without a JSON body (e.g. 204) accept only an empty body (None).
    """
    pointer = response_schema_pointer(method, path, status)
    if pointer is None:
        if body not in (None, b"", ""):
            raise OASValidationError(f"{method.upper()} {path} {status} has no body in the OAS")
        return
    _check("read", pointer, body, f"response {method.upper()} {path} {status}")


def validate_error(body: Any) -> None:
    """Raise OASValidationError unless ``body`` has one of Zendesk's two error shapes."""
    errors_pointer = _pointer("components", "schemas", "Errors")
    if isinstance(body, dict) and "errors" in body:
        _check("read", errors_pointer, body, "error body")
        return
    from jsonschema import Draft4Validator

    problems = list(Draft4Validator(CLASSIC_ERROR_SCHEMA).iter_errors(body))
    if problems:
        raise OASValidationError(
            "error body matches neither Zendesk error shape: "
            + "; ".join(p.message for p in problems)
        )


def example(name: str) -> Any:
    """A deep copy of ``components/examples/<name>/value`` (Zendesk's own sample bodies)."""
    return copy.deepcopy(load_spec()["components"]["examples"][name]["value"])
