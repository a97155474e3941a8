"""What a tool call runs with: who calls (the developer), the server's runtime, the developer's
secrets, where integration setup may come from, and test overrides for the network."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["METADATA_KEYS", "Resolver", "ToolContext"]

#: `async resolver(host, port) -> [ip, ...]`; the default uses the event loop's getaddrinfo.
Resolver = Callable[[str, int], Awaitable[list[str]]]

# JULEP-SPEC 7.5: metadata keys holding per-tool setup and arguments ({tool_name: {...}}). The
# plural keys are the documented ones; Julep's code asked for the singular, so both are read.
METADATA_KEYS: dict[tuple[str, str], tuple[str, ...]] = {
    ("integration", "setup"): ("x-integrations-setup", "x-integration-setup"),
    ("integration", "args"): ("x-integrations-args", "x-integration-args"),
    ("api_call", "setup"): ("x-api_call-setup", "x-api-call-setup"),
    ("api_call", "args"): ("x-api_call-args", "x-api-call-args"),
}


@dataclass
class ToolContext:
    """The caller of a tool and what the call may use.

    `setup_sources` are metadata objects in increasing precedence (agent, user, then task or
    session). `transport` replaces the network (tests): requests still pass the address policy
    first. `resolver` replaces DNS (tests)."""

    developer_id: uuid.UUID
    runtime: Any
    secrets: Mapping[str, str] = field(default_factory=dict)
    setup_sources: Sequence[Mapping[str, Any]] = ()
    transport: httpx.AsyncBaseTransport | None = None
    resolver: Resolver | None = None

    @property
    def settings(self) -> Any:
        return getattr(self.runtime, "settings", None)

    def integration_config(self, name: str) -> dict[str, Any]:
        """The server's `[integrations.<name>]` table (empty when absent)."""
        tables = getattr(self.settings, "integrations", None) or {}
        value = tables.get(name) if isinstance(tables, Mapping) else None
        return dict(value) if isinstance(value, Mapping) else {}

    def allow_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Networks the operator lets tools reach even though they are private."""
        raw = getattr(self.settings, "api_call_allow_networks", ()) or ()
        return [ipaddress.ip_network(n, strict=False) for n in raw]

    def metadata_values(self, kind: str, part: str, names: Sequence[str]) -> dict[str, Any]:
        """Merged `{...}` for this tool from every setup source (later sources win). `names` are
        the keys to look under, most specific last (e.g. provider, then tool name). For
        integration setup the plain `integrations: {provider: {...}}` key is read too."""
        merged: dict[str, Any] = {}
        keys = METADATA_KEYS[(kind, part)]
        for source in self.setup_sources:
            if not isinstance(source, Mapping):
                continue
            tables: list[Any] = [source.get(k) for k in keys]
            if kind == "integration" and part == "setup":
                tables.insert(0, source.get("integrations"))
            for table in tables:
                if not isinstance(table, Mapping):
                    continue
                for name in names:
                    value = table.get(name)
                    if isinstance(value, Mapping):
                        merged.update(value)
        return merged

    def secret_values(self) -> list[str]:
        return [v for v in self.secrets.values() if isinstance(v, str)]
