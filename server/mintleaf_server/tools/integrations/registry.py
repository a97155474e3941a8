"""The providers Mintleaf runs in-process, and running one integration call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mintleaf_server.dsl.tools import ToolDef

from ..context import ToolContext
from ..errors import ToolArgumentsInvalid, ToolNotImplemented
from ..specs import evaluate_spec
from . import brave, browserbase, dalle, email, spider, weather, wikipedia
from .base import IntegrationCall, Method, Provider, validate_arguments

__all__ = ["PROVIDERS", "provider_method", "run_integration"]


async def _dummy(call: IntegrationCall) -> Any:
    return call.arguments


_DUMMY = Provider(
    name="dummy",
    description="Returns its arguments unchanged (for tests and examples).",
    default_base_url="",
    methods={
        "echo": Method(
            name="echo", description="Return the arguments.", arguments={"type": "object"}, run=_dummy
        )
    },
)

PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        brave.PROVIDER,
        browserbase.PROVIDER,
        dalle.PROVIDER,
        email.PROVIDER,
        spider.PROVIDER,
        weather.PROVIDER,
        wikipedia.PROVIDER,
        _DUMMY,
    )
}


def provider_method(provider_name: str, method_name: str | None) -> tuple[Provider, Method]:
    """The provider and method a definition names; ToolNotImplemented for unknown ones."""
    provider = PROVIDERS.get(provider_name)
    if provider is None:
        raise ToolNotImplemented(
            f"integration provider {provider_name!r} is not available (available: {', '.join(sorted(PROVIDERS))})"
        )
    if not method_name:
        return provider, provider.default_method
    method = provider.methods.get(method_name)
    if method is None:
        raise ToolNotImplemented(
            f"{provider_name} has no method {method_name!r} (methods: {', '.join(provider.methods)})"
        )
    return provider, method


# Server-table keys that are not setup values.
_CONFIG_ONLY = frozenset({"base_url", "timeout", "max_response_bytes", "github_base_url"})


def _canonical(provider: Provider, layer: dict[str, Any]) -> dict[str, Any]:
    """One layer of setup with accepted alternative names (brave_api_key...) renamed to the
    canonical key, so a later layer's alias overrides an earlier layer's canonical name."""
    out = dict(layer)
    for canonical, names in provider.setup_keys.items():
        for name in names:
            if name in out and name != canonical:
                value = out.pop(name)
                out.setdefault(canonical, value)
    return out


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ToolArgumentsInvalid(name, "must be an object")
    return dict(value)


async def run_integration(tool: ToolDef, arguments: Mapping[str, Any], ctx: ToolContext) -> Any:
    """Merge setup and arguments (JULEP-SPEC 7.5), validate the arguments, call the provider."""
    spec = evaluate_spec(tool, ctx, arguments)
    provider, method = provider_method(str(spec.get("provider")), spec.get("method"))
    names = [provider.name, tool.name]
    user_setup = _canonical(provider, ctx.metadata_values("integration", "setup", names))
    user_setup.update(_canonical(provider, _mapping(spec.get("setup"), "setup")))
    config = ctx.integration_config(provider.name)
    setup = _canonical(provider, {k: v for k, v in config.items() if k not in _CONFIG_ONLY})
    setup.update(user_setup)
    merged = ctx.metadata_values("integration", "args", names)
    merged.update(_mapping(spec.get("arguments"), "arguments"))
    merged.update(arguments)
    call = IntegrationCall(
        provider=provider,
        method=method,
        tool_name=tool.name,
        setup=setup,
        arguments=validate_arguments(method, merged),
        config=config,
        ctx=ctx,
        user_setup=user_setup,
    )
    return await method.run(call)
