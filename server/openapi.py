"""A small framework for the REST API: typed routes whose pydantic models validate requests,
shape responses and generate the OpenAPI 3.1 document, so the document cannot drift from code.

    api = Api(blueprint, title=..., version=..., description=...)

    @api.route("/metrics/jobs", query=JobsQuery, response=JobsResponse, tags=["Jobs"], summary=...)
    def jobs(query: JobsQuery):
        return {...}          # a dict (or model); validated against JobsResponse, sent as JSON

- Query models use ``extra="forbid"``: an unknown parameter is rejected. A list field accepts
  repeated keys (``status=a&status=b``) and comma-separated values (``status=a,b``).
- Invalid input raises HTTP 400 in the shared error shape (server.auth.error_response) plus
  ``problems``: ``[{"parameter", "problem"}]``; ``message`` names each parameter and problem.
- A handler signals other errors with ``raise ApiError(status, code, message)``;
  DatabaseUnavailable becomes 503.
- ``etag=True``: the response carries a weak ETag computed from its body (without the
  ``volatile`` keys, values that change only with the clock); a request whose If-None-Match
  matches gets 304 without a body.
- ``render_docs(document)``: the human-readable page, rendered on the server from the document.
"""
from __future__ import annotations

import hashlib
import html
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, Callable

import flask
import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, Field, PlainSerializer, ValidationError, WithJsonSchema
from pydantic.json_schema import models_json_schema

from data.db import DatabaseUnavailable, QueryTimeout
from server.auth import error_response

REF_TEMPLATE = "#/components/schemas/{model}"


# ---------------------------------------------------------------------------------------------
# Types and conversion
# ---------------------------------------------------------------------------------------------
def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# An instant: ISO 8601 with its offset (UTC) in JSON.
Instant = Annotated[
    datetime,
    AfterValidator(_utc),
    PlainSerializer(lambda v: v.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def jsonable(value: Any) -> Any:
    """Data-function output (frames, numpy and pandas scalars, NaN/NaT) as plain Python values."""
    if isinstance(value, pd.DataFrame):
        return [jsonable(r) for r in value.to_dict("records")]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [jsonable(v) for v in list(value)]
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool, datetime, date)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
class Problem(BaseModel):
    parameter: str
    problem: str


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(description="A stable, machine-readable code: invalid_parameter, not_found, refused, ...")
    message: str = Field(description="What went wrong, for people.")
    problems: list[Problem] | None = Field(None, description="400: each invalid parameter and its problem.")
    target_id: str | None = Field(None, description="409: the job or entry the refused action was about.")
    current_status: str | None = Field(None, description="409: its status when the action was refused.")


class ErrorResponse(BaseModel):
    """Every error the API returns has this shape."""
    error: ErrorDetail


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, problems: list[dict] | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.problems, self.extra = status, code, message, problems, extra

    def response(self):
        return api_error(self.status, self.code, self.message, problems=self.problems, **self.extra)


def api_error(status: int, code: str, message: str, problems: list[dict] | None = None, **extra):
    """server.auth.error_response's shape, with optional ``problems`` and other extra keys."""
    response, status = error_response(status, code, message)
    if problems is not None or extra:
        body = response.get_json()
        if problems is not None:
            body["error"]["problems"] = problems
        body["error"].update(extra)
        response.set_data(json.dumps(body))
    response.headers["Cache-Control"] = "no-store"
    return response, status


def _problems(exc: ValidationError, prefix: str = "") -> list[dict]:
    """pydantic's errors as [{"parameter", "problem"}]; `prefix` ('body.') for body fields."""
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        if err.get("type") == "extra_forbidden":
            problem = "unknown field" if prefix else "unknown parameter"
        else:
            problem = err.get("msg", "invalid value")
        if prefix:
            name = prefix + ".".join(loc)
        else:
            name = loc[0] if loc else ""
            if len(loc) > 1 and loc[1].isdigit():
                problem = f"value {int(loc[1]) + 1}: {problem}"
        out.append({"parameter": name, "problem": problem})
    return out


def _invalid(problems: list[dict], code: str = "invalid_parameter") -> ApiError:
    message = "; ".join(f"{p['parameter']}: {p['problem']}" for p in problems)
    return ApiError(400, code, message, problems=problems)


# ---------------------------------------------------------------------------------------------
# Request parsing
# ---------------------------------------------------------------------------------------------
def _is_list(annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set):
        return True
    if origin in (typing.Union, types.UnionType) or origin is Annotated:
        return any(_is_list(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


def parse_query(model: type[BaseModel] | None, args) -> BaseModel | None:
    """Validate a query string (a MultiDict) against `model`; ApiError 400 when invalid."""
    if model is None:
        if args:
            raise _invalid([{"parameter": k, "problem": "unknown parameter"} for k in args.keys()])
        return None
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    data: dict[str, Any] = {}
    problems: list[dict] = []
    for key in args.keys():
        values = args.getlist(key)
        info = fields.get(key)
        if info is not None and _is_list(info.annotation):
            data[key] = [part.strip() for v in values for part in v.split(",") if part.strip()]
        else:
            if len(values) > 1 and info is not None:
                problems.append({"parameter": key, "problem": "given more than once; give it once"})
            data[key] = values[0]
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc)
        parsed = None
    if problems:
        raise _invalid(problems)
    return parsed


def check_headers(specs: dict[str, dict], headers) -> None:
    """Declared request headers within their documented lengths, printable; ApiError 400 if not."""
    problems = []
    for name, spec in specs.items():
        value = headers.get(name)
        if value is None:
            continue
        low, high = spec.get("minLength", 0), spec.get("maxLength")
        if len(value) < low or (high is not None and len(value) > high) or not value.isprintable():
            limit = f"{low} to {high}" if high is not None else f"at least {low}"
            problems.append({"parameter": name, "problem": f"must be {limit} printable characters"})
    if problems:
        raise _invalid(problems)


def parse_body(model: type[BaseModel] | None):
    if model is None:
        return None
    raw = flask.request.get_data(cache=True)
    if not raw.strip():
        payload: Any = {}
    else:
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_body", "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_body", "The request body must be a JSON object.")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise _invalid(_problems(exc, prefix="body."), code="invalid_body") from None


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------
@dataclass
class Operation:
    method: str
    rule: str
    endpoint: str
    summary: str
    description: str
    tags: list[str]
    query: type[BaseModel] | None
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    path_params: dict[str, dict]
    headers: dict[str, dict]
    errors: tuple[int, ...]
    etag: bool
    volatile: tuple[str, ...]
    success_status: int = 200

    @property
    def header_params(self) -> dict[str, dict]:
        """Request headers the operation reads (documented and checked like parameters)."""
        found = dict(self.headers)
        if self.etag:
            found["If-None-Match"] = {"type": "string", "maxLength": 1000,
                                      "description": "An ETag from an earlier response: 304 when nothing changed."}
        return found

    @property
    def openapi_path(self) -> str:
        return re.sub(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", self.rule)


ERROR_TEXT = {
    400: "Invalid parameters or body: the message names each parameter and its problem.",
    401: "No valid bearer token (or session).",
    403: "The token's role may not do this.",
    404: "No such id.",
    409: "The action was refused: the target's state does not allow it (the message says why).",
    503: "The database cannot be reached or took too long.",
}


def _without_null(schema: dict) -> dict:
    """A query parameter's schema without its `null` branch (a query value is never null)."""
    schema = dict(schema)
    if schema.get("default", 0) is None:
        schema.pop("default")
    options = schema.get("anyOf")
    if options:
        kept = [o for o in options if o != {"type": "null"}]
        schema.pop("anyOf")
        if len(kept) == 1:
            schema = {**kept[0], **schema}
        else:
            schema["anyOf"] = kept
    return schema


def _strip_volatile(value: Any, volatile: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _strip_volatile(v, volatile) for k, v in value.items() if k not in volatile}
    if isinstance(value, list):
        return [_strip_volatile(v, volatile) for v in value]
    return value


class Api:
    def __init__(self, blueprint: flask.Blueprint, *, title: str, version: str, description: str):
        self.blueprint = blueprint
        self.title, self.version, self.description = title, version, description
        self.operations: list[Operation] = []
        self._document: dict | None = None

    def route(self, rule: str, method: str = "GET", *, summary: str, description: str = "", tags=(),
              query: type[BaseModel] | None = None, body: type[BaseModel] | None = None,
              response: type[BaseModel] | None = None, path_params: dict[str, dict] | None = None,
              headers: dict[str, dict] | None = None, errors: tuple[int, ...] = (),
              etag: bool = False, volatile: tuple[str, ...] = ()) -> Callable:
        def decorator(handler: Callable) -> Callable:
            op = Operation(method=method, rule=rule, endpoint=handler.__name__, summary=summary,
                           description=description or inspect.cleandoc(handler.__doc__ or ""), tags=list(tags),
                           query=query, body=body, response=response, path_params=path_params or {},
                           headers=headers or {}, errors=tuple(sorted({400, 401, 503, *errors})), etag=etag,
                           volatile=volatile)
            self.operations.append(op)
            self._document = None

            def view(**path_values):
                try:
                    kwargs = dict(path_values)
                    query = parse_query(op.query, flask.request.args)  # unknown parameters: 400
                    check_headers(op.header_params, flask.request.headers)
                    if op.query is not None:
                        kwargs["query"] = query
                    if op.body is not None:
                        kwargs["body"] = parse_body(op.body)
                    result = handler(**kwargs)
                except ApiError as exc:
                    return exc.response()
                except QueryTimeout as exc:
                    return api_error(503, "database_timeout", str(exc))
                except DatabaseUnavailable:
                    return api_error(503, "database_unavailable",
                                     "The database cannot be reached right now; try again shortly.")
                if isinstance(result, flask.Response):
                    return result
                status = op.success_status
                if isinstance(result, tuple):
                    result, status = result
                return self.respond(op, result, status)

            view.__name__ = handler.__name__
            self.blueprint.add_url_rule(rule, endpoint=handler.__name__, view_func=view, methods=[method])
            return handler

        return decorator

    # -- responses -----------------------------------------------------------------------------
    @staticmethod
    def respond(op: Operation, result: Any, status: int = 200) -> flask.Response:
        if isinstance(result, BaseModel):
            payload = result.model_dump(mode="json", by_alias=True)
        elif op.response is not None:
            payload = op.response.model_validate(jsonable(result)).model_dump(mode="json", by_alias=True)
        else:
            payload = jsonable(result)
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        response = flask.Response(body, status=status, mimetype="application/json")
        if op.etag and status == 200:
            stable = json.dumps(_strip_volatile(payload, op.volatile), sort_keys=True, separators=(",", ":"))
            tag = hashlib.sha256(stable.encode()).hexdigest()[:32]
            response.set_etag(tag, weak=True)
            response.headers["Cache-Control"] = "private, no-cache"
            if flask.request.if_none_match.contains_weak(tag):
                not_modified = flask.Response(status=304)
                not_modified.set_etag(tag, weak=True)
                not_modified.headers["Cache-Control"] = "private, no-cache"
                return not_modified
        else:
            response.headers["Cache-Control"] = "no-store"
        return response

    # -- the OpenAPI document ---------------------------------------------------------------------
    def document(self) -> dict:
        if self._document is None:
            self._document = self._build_document()
        return self._document

    def _build_document(self) -> dict:
        models: list[tuple[type[BaseModel], str]] = [(ErrorResponse, "serialization")]
        for op in self.operations:
            if op.response is not None:
                models.append((op.response, "serialization"))
            if op.body is not None:
                models.append((op.body, "validation"))
        seen, unique = set(), []
        for item in models:
            if item not in seen:
                seen.add(item)
                unique.append(item)
        refs, defs = models_json_schema(unique, ref_template=REF_TEMPLATE)
        schemas: dict[str, Any] = dict(defs.get("$defs", {}))
        error_ref = refs[(ErrorResponse, "serialization")]

        def error_content():
            return {"application/json": {"schema": error_ref}}

        paths: dict[str, dict] = {}
        for op in self.operations:
            parameters = []
            for name in re.findall(r"\{([^}]+)\}", op.openapi_path):
                spec = dict(op.path_params.get(name, {}))
                parameters.append({"name": name, "in": "path", "required": True,
                                   "description": spec.pop("description", ""),
                                   "schema": spec or {"type": "string"}})
            if op.query is not None:
                qschema = op.query.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
                schemas.update(qschema.get("$defs", {}))
                required = set(qschema.get("required", []))
                for name, prop in qschema.get("properties", {}).items():
                    prop = dict(prop)
                    desc = prop.pop("description", "")
                    prop.pop("title", None)
                    param = {"name": name, "in": "query", "required": name in required,
                             "schema": _without_null(prop)}
                    if desc:
                        param["description"] = desc
                    parameters.append(param)
            for name, spec in op.header_params.items():
                spec = dict(spec)
                parameters.append({"name": name, "in": "header", "required": False,
                                   "description": spec.pop("description", ""), "schema": spec})
            responses: dict[str, Any] = {}
            ok: dict[str, Any] = {"description": "OK"}
            if op.response is not None:
                ok["content"] = {"application/json": {"schema": refs[(op.response, "serialization")]}}
            if op.etag:
                ok["headers"] = {"ETag": {"description": "Weak validator of this response's data.",
                                          "schema": {"type": "string"}}}
                responses[str(op.success_status)] = ok
                responses["304"] = {"description": "Not modified: the data matches the If-None-Match ETag.",
                                    "headers": ok["headers"]}
            else:
                responses[str(op.success_status)] = ok
            for status in op.errors:
                responses[str(status)] = {"description": ERROR_TEXT.get(status, "Error."), "content": error_content()}
            operation = {
                "operationId": op.endpoint,
                "summary": op.summary,
                "tags": op.tags,
                "parameters": parameters,
                "responses": responses,
            }
            if op.description:
                operation["description"] = op.description
            if op.body is not None:
                operation["requestBody"] = {
                    "required": False,
                    "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
                }
            paths.setdefault(op.openapi_path, {})[op.method.lower()] = operation
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version, "description": self.description},
            "servers": [{"url": self.blueprint.url_prefix or "/"}],
            "security": [{"bearerAuth": []}],
            "tags": [{"name": t} for t in dict.fromkeys(t for op in self.operations for t in op.tags)],
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                   "description": "An access token from POST /api/v1/auth/login."},
                },
            },
        }


# ---------------------------------------------------------------------------------------------
# The docs page (server-rendered from the document; no scripts, nothing from the internet)
# ---------------------------------------------------------------------------------------------
def _e(text: Any) -> str:
    return html.escape(str(text if text is not None else ""))


def _type(schema: dict | None) -> str:
    """A schema as short HTML ('string (date-time)', 'array of <a>Job</a>', 'integer | null')."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type(s) for s in schema[key])
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{_e(json.dumps(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{_e(json.dumps(schema['const']))}</code>"
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_type({**schema, "type": k}) for k in kind)
    if kind == "array":
        return "array of " + _type(schema.get("items"))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "object of " + _type(schema["additionalProperties"])
    if kind is None:
        return "any"
    text = _e(kind)
    if schema.get("format"):
        text += f" ({_e(schema['format'])})"
    return text


def _limits(schema: dict) -> str:
    bits = []
    for key, label in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
                       ("minLength", "min length"), ("maxLength", "max length"), ("maxItems", "max items"),
                       ("pattern", "pattern"), ("default", "default")):
        if key in schema and schema[key] is not None:
            bits.append(f"{label} <code>{_e(schema[key] if key == 'pattern' else json.dumps(schema[key]))}</code>")
    for sub in schema.get("anyOf", []):
        if isinstance(sub, dict) and sub.get("type") != "null":
            inner = _limits({k: v for k, v in sub.items() if k != "default"})
            if inner:
                bits.append(inner)
    return "; ".join(bits)


def _inline(text: Any) -> str:
    """Escaped text with `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{_inline(b.strip())}</p>" for b in (text or "").split("\n\n") if b.strip())


_DOCS_STYLE = """
body{max-width:1100px;margin:0 auto;padding:1.5rem}
.api-op{border:1px solid var(--bs-border-color);border-radius:.5rem;padding:1rem;margin:0 0 1.25rem}
.api-op h3{font-size:1.05rem;font-family:var(--bs-font-monospace);margin:0 0 .5rem}
.api-method{display:inline-block;min-width:4.2rem;text-align:center;border-radius:.25rem;padding:.1rem .4rem;
 color:#fff;font-weight:600;margin-right:.5rem}
.api-get{background:#0b6e4f}.api-post{background:#8a4b00}
.api-op table,.api-schema table{font-size:.9rem}
pre.api-curl{background:var(--bs-tertiary-bg);padding:.6rem;border-radius:.25rem;white-space:pre-wrap}
"""


def render_docs(doc: dict, openapi_url: str) -> str:
    """The API reference as one HTML page, from the OpenAPI document."""
    info = doc.get("info", {})
    base = doc.get("servers", [{}])[0].get("url", "")
    ops_by_tag: dict[str, list] = {}
    for path, methods in doc.get("paths", {}).items():
        for method, op in methods.items():
            for tag in op.get("tags") or ["Other"]:
                ops_by_tag.setdefault(tag, []).append((path, method, op))
    nav, sections = [], []
    for tag, ops in ops_by_tag.items():
        nav.append(f"<li><strong>{_e(tag)}</strong><ul>")
        sections.append(f'<h2 class="h4 mt-4" id="tag-{_e(tag)}">{_e(tag)}</h2>')
        for path, method, op in ops:
            anchor = f"op-{op['operationId']}"
            nav.append(f'<li><a href="#{_e(anchor)}"><code>{_e(method.upper())} {_e(base + path)}</code></a></li>')
            rows = "".join(
                f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td><td>{_type(p.get('schema'))}</td>"
                f"<td>{'yes' if p.get('required') else ''}</td><td>{_inline(p.get('description', ''))}"
                f"{'<br><small class=text-muted>' + _limits(p.get('schema', {})) + '</small>' if _limits(p.get('schema', {})) else ''}"
                f"</td></tr>"
                for p in op.get("parameters", [])
            )
            params = (
                '<table class="table table-sm"><thead><tr><th>name</th><th>in</th><th>type</th><th>required</th>'
                f"<th>description</th></tr></thead><tbody>{rows}</tbody></table>" if rows else "<p>No parameters.</p>"
            )
            body = ""
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                body = f"<p><strong>JSON body</strong> (optional): {_type(schema)}</p>"
            responses = "".join(
                f"<li><code>{_e(code)}</code> {_e(r.get('description', ''))}"
                f"{' — ' + _type(r['content']['application/json']['schema']) if 'content' in r else ''}</li>"
                for code, r in op.get("responses", {}).items()
            )
            curl = f"curl -H 'Authorization: Bearer $TOKEN' "
            if method != "get":
                curl += f"-X {method.upper()} -H 'Content-Type: application/json' -d '{{}}' "
            curl += f"'http://HOST{base}{path}'"
            sections.append(
                f'<section class="api-op" id="{_e(anchor)}">'
                f'<h3><span class="api-method api-{_e(method)}">{_e(method.upper())}</span>{_e(base + path)}</h3>'
                f"<p class=\"lead fs-6\">{_e(op.get('summary', ''))}</p>{_paragraphs(op.get('description', ''))}"
                f"<h4 class=\"h6\">Parameters</h4>{params}{body}"
                f"<h4 class=\"h6\">Responses</h4><ul>{responses}</ul>"
                f'<pre class="api-curl">{_e(curl)}</pre></section>'
            )
        nav.append("</ul></li>")
    schema_sections = []
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        if props:
            rows = "".join(
                f"<tr><td><code>{_e(p)}</code></td><td>{_type(s)}</td><td>{'yes' if p in required else ''}</td>"
                f"<td>{_inline(s.get('description', ''))}</td></tr>"
                for p, s in props.items()
            )
            table = ('<table class="table table-sm"><thead><tr><th>field</th><th>type</th><th>always</th>'
                     f"<th>description</th></tr></thead><tbody>{rows}</tbody></table>")
        else:
            table = f"<p>{_type(schema)}</p>"
        schema_sections.append(
            f'<section class="api-schema" id="schema-{_e(name)}"><h3 class="h6 mt-3"><code>{_e(name)}</code></h3>'
            f"{_paragraphs(schema.get('description', ''))}{table}</section>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(info.get('title', 'API'))} · reference</title>
<link rel="stylesheet" href="/assets/vendor/bootstrap.min.css"><style>{_DOCS_STYLE}</style></head>
<body><main>
<h1 class="h3">{_e(info.get('title', ''))} <small class="text-muted">v{_e(info.get('version', ''))}</small></h1>
{_paragraphs(info.get('description', ''))}
<p>Machine-readable: <a href="{_e(openapi_url)}">OpenAPI 3.1 document</a>.</p>
<nav aria-label="Operations"><ul>{''.join(nav)}</ul></nav>
{''.join(sections)}
<h2 class="h4 mt-4">Schemas</h2>
{''.join(schema_sections)}
</main></body></html>"""
