"""api_call tools: one HTTP request, built from the definition and the call's arguments.

Fields (JULEP-SPEC 7.3): method, url, headers, params, json (alias json_), data, content, files,
cookies, follow_redirects, timeout, include_response_content. Every definition field is merged
under the arguments (the arguments win; object fields merge key by key), except headers, where the
definition wins so that a definition's Authorization cannot be replaced by a model's arguments.
Metadata `x-api_call-setup` sits under the definition and `x-api_call-args` under the arguments.

Seed compatibility: a text `content` sent with a JSON Content-Type that is not itself JSON is sent
as `{"content": text}` (the README's Discord webhook passes the message as `content`).

Every destination (the first and each redirect hop) passes the address policy (network.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from mintleaf_server.dsl.tools import API_CALL_METHODS, ToolDef

from .context import ToolContext
from .errors import ToolArgumentsInvalid, ToolHttpError, ToolTimeout, redact
from .network import DEFAULT_MAX_RESPONSE_BYTES, describe_url, http_client, read_capped, translate_http_error
from .specs import evaluate_spec, merge_under, secret_scope

__all__ = [
    "API_CALL_ARGUMENTS",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "MAX_TIMEOUT",
    "build_request",
    "run_api_call",
]

log = logging.getLogger("mintleaf.tools.api_call")

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 600.0
MAX_REDIRECTS = 5
_OBJECT_FIELDS = ("json", "data", "cookies", "files")
API_CALL_ARGUMENTS = frozenset(
    {
        "method",
        "url",
        "headers",
        "params",
        "json",
        "json_",
        "data",
        "content",
        "files",
        "cookies",
        "follow_redirects",
        "timeout",
        "include_response_content",
    }
)


def _merge_headers(low: Mapping[str, Any] | None, high: Mapping[str, Any] | None) -> dict[str, str]:
    """Case-insensitive merge; `high` wins."""
    out: dict[str, tuple[str, str]] = {}
    for source in (low or {}, high or {}):
        for k, v in source.items():
            if v is None:
                continue
            out[str(k).lower()] = (str(k), str(v))
    return dict(out.values())


def _check_type(name: str, value: Any, types: type | tuple[type, ...], what: str) -> None:
    if value is not None and not isinstance(value, types):
        raise ToolArgumentsInvalid(name, f"must be {what}")


def merge_fields(
    definition: Mapping[str, Any],
    arguments: Mapping[str, Any],
    meta_setup: Mapping[str, Any],
    meta_args: Mapping[str, Any],
) -> dict[str, Any]:
    """The request's fields, merged as the module docstring says."""
    args = dict(meta_args)
    args.update(arguments)
    if "json_" in args:
        if "json" in args:
            raise ToolArgumentsInvalid("json_", "give json or json_, not both")
        args["json"] = args.pop("json_")
    unknown = sorted(set(args) - API_CALL_ARGUMENTS)
    if unknown:
        raise ToolArgumentsInvalid(
            unknown[0], f"is not an api_call field ({', '.join(sorted(API_CALL_ARGUMENTS - {'json_'}))})"
        )
    base = dict(meta_setup)
    base.update({k: v for k, v in definition.items() if k not in ("schema", "secrets")})
    fields = dict(base)
    for key, value in args.items():
        if key == "headers":
            continue
        if (key in _OBJECT_FIELDS and isinstance(value, Mapping) and isinstance(base.get(key), Mapping)) or (
            key == "params" and isinstance(value, Mapping) and isinstance(base.get(key), Mapping)
        ):
            fields[key] = merge_under(base[key], value)
        else:
            fields[key] = value
    _check_type("headers", args.get("headers"), Mapping, "an object of strings")
    fields["headers"] = _merge_headers(
        _merge_headers(meta_setup.get("headers"), args.get("headers")), definition.get("headers")
    )
    return fields


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _files(value: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, item in value.items():
        if isinstance(item, str):
            out[name] = (name, item.encode())
        elif isinstance(item, Mapping) and isinstance(item.get("content"), str):
            body = item["content"]
            data = base64.b64decode(body) if item.get("encoding") == "base64" else body.encode()
            out[name] = (
                str(item.get("filename") or name),
                data,
                str(item.get("content_type") or "application/octet-stream"),
            )
        else:
            raise ToolArgumentsInvalid(
                f"files.{name}", "must be text or {filename?, content, content_type?, encoding?}"
            )
    return out


def build_request(client: httpx.AsyncClient, fields: Mapping[str, Any]) -> httpx.Request:
    """An httpx request from merged, evaluated fields; raises ToolArgumentsInvalid."""
    method = fields.get("method")
    if not isinstance(method, str) or method.upper() not in API_CALL_METHODS:
        raise ToolArgumentsInvalid("method", f"must be one of {', '.join(sorted(API_CALL_METHODS))}")
    url = fields.get("url")
    if not isinstance(url, str) or not url:
        raise ToolArgumentsInvalid("url", "must be a non-empty string")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise ToolArgumentsInvalid("url", "is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ToolArgumentsInvalid("url", "must be an absolute http or https URL")
    params = fields.get("params")
    _check_type("params", params, (str, Mapping), "a string or an object")
    for key in ("data", "cookies", "files", "json"):
        if key != "json":
            _check_type(key, fields.get(key), Mapping, "an object")
    content = fields.get("content")
    _check_type("content", content, str, "a string")
    headers = dict(fields.get("headers") or {})
    body = fields.get("json")
    kwargs: dict[str, Any] = {}
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if content is not None:
        if body is not None:
            raise ToolArgumentsInvalid("content", "give content or json, not both")
        if "json" in content_type.lower() and not _is_json(content):
            kwargs["content"] = json.dumps({"content": content}).encode()
        else:
            kwargs["content"] = content.encode()
    elif body is not None:
        kwargs["json"] = body
    if fields.get("data") is not None:
        kwargs["data"] = {
            k: v if isinstance(v, str | bytes) else json.dumps(v) for k, v in fields["data"].items()
        }
    if fields.get("files") is not None:
        kwargs["files"] = _files(fields["files"])
    cookies = fields.get("cookies")
    if cookies:
        # Sent as a header so they go to this request only (a client cookie jar would follow redirects).
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    try:
        return client.build_request(
            method.upper(),
            parsed,
            params=params if params is not None else None,
            headers=headers,
            **kwargs,
        )
    except (TypeError, ValueError) as exc:
        raise ToolArgumentsInvalid("", f"the request could not be built ({exc.__class__.__name__})") from None


def _timeout(fields: Mapping[str, Any], config: Mapping[str, Any]) -> float:
    value = fields.get("timeout", config.get("timeout", DEFAULT_TIMEOUT))
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ToolArgumentsInvalid("timeout", "must be a positive number of seconds")
    return float(min(value, float(config.get("max_timeout", MAX_TIMEOUT))))


async def run_api_call(tool: ToolDef, arguments: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Send the request; returns `{status_code, headers, json, content?}` (content is the body in
    base64 when `include_response_content`, the default). 4xx/5xx raise ToolHttpError."""
    definition = evaluate_spec(tool, ctx, arguments)
    names = [tool.name]
    fields = merge_fields(
        definition,
        arguments,
        ctx.metadata_values("api_call", "setup", names),
        ctx.metadata_values("api_call", "args", names),
    )
    config = ctx.integration_config("api_call")
    timeout = _timeout(fields, config)
    limit = int(config.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES))
    follow = fields.get("follow_redirects", False)
    _check_type("follow_redirects", follow, bool, "a boolean")
    include = fields.get("include_response_content", True)
    _check_type("include_response_content", include, bool, "a boolean")
    hidden = [*secret_scope(tool, ctx).values(), *(fields.get("headers") or {}).values()]
    started = time.monotonic()
    async with http_client(
        ctx,
        guarded=True,
        timeout=timeout,
        follow_redirects=bool(follow),
        max_redirects=int(config.get("max_redirects", MAX_REDIRECTS)),
    ) as client:
        request = build_request(client, fields)
        what = f"{tool.name}: {request.method} {describe_url(request.url)}"
        try:
            # httpx's timeout bounds each read; this bounds the whole call, redirects and body included.
            async with asyncio.timeout(timeout):
                response = await client.send(request, stream=True)
                try:
                    body = await read_capped(response, limit, what)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise ToolTimeout(f"{what}: timed out after {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise translate_http_error(exc, what) from None
    log.info("api_call %s -> %s in %.3fs", what, response.status_code, time.monotonic() - started)
    if response.status_code >= 400:
        excerpt = redact(body[:300].decode("utf-8", "replace"), hidden)
        raise ToolHttpError(
            response.status_code, f"{what}: status {response.status_code}: {excerpt}".rstrip(": ")
        )
    parsed: Any = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    out: dict[str, Any] = {
        "status_code": response.status_code,
        "headers": {k: ", ".join(response.headers.get_list(k)) for k in response.headers},
        "json": parsed,
    }
    if include:
        out["content"] = base64.b64encode(body).decode("ascii")
    return out
