"""What every integration shares: the provider/method description, the merged call, and HTTP
helpers that turn a provider's failures into IntegrationError.

Where values come from (JULEP-SPEC 7.5, lowest first):
- setup: the server's `[integrations.<provider>]` table, then metadata (`integrations.<provider>`,
  `x-integrations-setup.<provider>` and `.<tool name>`, from agent, user, task/session), then the
  definition's `setup`;
- arguments: metadata `x-integrations-args`, the definition's `arguments`, the call's arguments.
A provider's base URL comes only from the server's configuration (`base_url`): a definition
cannot point a trusted integration at another host. Setup values that do name a host (email's
`host`, browserbase's `api_url`/`connect_url`) pass the address policy like api_call URLs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from ..context import ToolContext
from ..errors import IntegrationError, ToolArgumentsInvalid, ToolSetupInvalid, ToolTimeout, redact
from ..network import DEFAULT_MAX_RESPONSE_BYTES, describe_url, http_client, read_capped

__all__ = ["DEFAULT_TIMEOUT", "IntegrationCall", "Method", "Provider", "validate_arguments"]

DEFAULT_TIMEOUT = 60.0
USER_AGENT = "Mintleaf/1 (+https://github.com/mintleaf; integrations)"


@dataclass(frozen=True)
class Method:
    """One operation of a provider. `arguments` is the JSON Schema shown to models and used to
    validate calls; `aliases` rename accepted alternative argument names before validation."""

    name: str
    description: str
    arguments: Mapping[str, Any]
    run: Callable[[IntegrationCall], Awaitable[Any]]
    aliases: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Provider:
    name: str
    description: str
    default_base_url: str
    methods: Mapping[str, Method]  # the first is the default method
    # canonical setup key -> accepted names (first wins), e.g. api_key <- (api_key, brave_api_key)
    setup_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def default_method(self) -> Method:
        return next(iter(self.methods.values()))


def validate_arguments(method: Method, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Aliases applied, then JSON Schema validation; the first error names its argument."""
    args = dict(arguments)
    for alias, canonical in method.aliases.items():
        if alias in args:
            value = args.pop(alias)
            args.setdefault(canonical, value)
    validator = Draft202012Validator(dict(method.arguments))
    errors = sorted(validator.iter_errors(args), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.path)
        if err.validator == "required" and isinstance(err.instance, Mapping):
            missing = [r for r in err.validator_value if r not in err.instance]
            name = ".".join(filter(None, [path, missing[0] if missing else ""]))
            raise ToolArgumentsInvalid(name, "is required")
        if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
            extra = sorted(k for k in err.instance if k not in (err.schema.get("properties") or {}))
            name = ".".join(filter(None, [path, extra[0] if extra else ""]))
            raise ToolArgumentsInvalid(name, f"is not an argument of {method.name}")
        raise ToolArgumentsInvalid(path, err.message if len(err.message) < 200 else err.message[:200] + "...")
    return args


@dataclass
class IntegrationCall:
    """One integration call with its merged setup and validated arguments."""

    provider: Provider
    method: Method
    tool_name: str
    setup: dict[str, Any]
    arguments: dict[str, Any]
    config: dict[str, Any]
    ctx: ToolContext
    # setup from the metadata and the definition only (values a user chose, not the operator)
    user_setup: dict[str, Any] = field(default_factory=dict)

    # -- setup ---------------------------------------------------------------------------------

    def setting(self, key: str, *, required: bool = False, default: Any = None) -> Any:
        """A setup value by canonical key (its accepted names tried in order); setup wins over
        the server's table, which already lies under it."""
        names = self.provider.setup_keys.get(key, (key,))
        for name in names:
            value = self.setup.get(name)
            if value not in (None, ""):
                return value
        if required:
            raise ToolSetupInvalid(
                names[0],
                f"is required for {self.provider.name} (in the tool's setup, the metadata's"
                f" x-integrations-setup, or the server's [integrations.{self.provider.name}] table)",
            )
        return default

    @property
    def base_url(self) -> str:
        return str(self.config.get("base_url") or self.provider.default_base_url).rstrip("/")

    @property
    def timeout(self) -> float:
        return float(self.config.get("timeout", DEFAULT_TIMEOUT))

    @property
    def max_response_bytes(self) -> int:
        return int(self.config.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES))

    def hidden(self) -> list[str]:
        """Values that must never appear in a message."""
        values = [v for v in self.setup.values() if isinstance(v, str)]
        values += [v for k, v in self.config.items() if isinstance(v, str) and k != "base_url"]
        return values + self.ctx.secret_values()

    def error(self, status: int, message: str, *, retryable: bool | None = None) -> IntegrationError:
        return IntegrationError(
            self.provider.name, status, redact(message, self.hidden()), retryable=retryable
        )

    # -- HTTP ----------------------------------------------------------------------------------

    def client(self, *, guarded: bool = False) -> httpx.AsyncClient:
        return http_client(
            self.ctx, guarded=guarded, timeout=self.timeout, headers={"User-Agent": USER_AGENT}
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        guarded: bool = False,
        auth_hint: str = "api_key",
        **kwargs: Any,
    ) -> tuple[int, bytes]:
        """Send one request; 4xx/5xx become IntegrationError (401/403 say the key was refused)."""
        what = describe_url(url)
        try:
            async with (
                self.client(guarded=guarded) as client,
                client.stream(method, url, **kwargs) as response,
            ):
                body = await read_capped(response, self.max_response_bytes, f"{self.provider.name}: {what}")
        except httpx.TimeoutException:
            raise ToolTimeout(f"{self.provider.name}: {method} {what} timed out") from None
        except httpx.HTTPError as exc:
            raise self.error(
                0, f"could not reach {what} ({exc.__class__.__name__})", retryable=True
            ) from None
        status = response.status_code
        if status in (401, 403):
            raise self.error(
                status,
                f"the provider refused the credentials (check setup {auth_hint!r}): {_provider_message(body)}",
                retryable=False,
            )
        if status >= 400:
            raise self.error(status, _provider_message(body) or "the provider returned an error")
        return status, body

    async def request_json(self, method: str, url: str, **kwargs: Any) -> Any:
        status, body = await self.request(method, url, **kwargs)
        try:
            return json.loads(body) if body else None
        except ValueError:
            raise self.error(status, "the provider's answer is not JSON") from None


def _provider_message(body: bytes) -> str:
    """The error text a provider put in its answer (JSON message/error/detail, or the text)."""
    text = body[:2000].decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, Mapping):
        for key in ("message", "error", "detail", "error_description", "errors"):
            value = data.get(key)
            if isinstance(value, Mapping):
                value = value.get("message") or value.get("detail") or json.dumps(value)
            if isinstance(value, Sequence) and not isinstance(value, str):
                value = "; ".join(str(v.get("message", v) if isinstance(v, Mapping) else v) for v in value)
            if value:
                return str(value)[:300]
    return text[:300]
