"""Brave Search (web search) through its REST API: GET {base_url}/web/search with the key in
`X-Subscription-Token`. Output `{result: text}` (JULEP-SPEC 7.4 decided note): one block per hit
with its title, URL and snippet, because the seed's Research Agent joins `item.result` as text."""

from __future__ import annotations

import re
from typing import Any

from .base import IntegrationCall, Method, Provider

__all__ = ["PROVIDER"]

_TAGS = re.compile(r"<[^>]+>")


def render_hits(hits: list[dict[str, Any]]) -> str:
    blocks = []
    for hit in hits:
        title = _TAGS.sub("", str(hit.get("title") or "")).strip()
        snippet = _TAGS.sub("", str(hit.get("snippet") or "")).strip()
        blocks.append(f"Title: {title}\nURL: {hit.get('link') or ''}\nSnippet: {snippet}")
    return "\n\n".join(blocks)


async def search(call: IntegrationCall) -> dict[str, Any]:
    key = call.setting("api_key", required=True)
    count = int(call.arguments.get("count", call.config.get("count", 10)))
    data = await call.request_json(
        "GET",
        f"{call.base_url}/web/search",
        params={"q": call.arguments["query"], "count": count},
        headers={"X-Subscription-Token": str(key), "Accept": "application/json"},
    )
    results = ((data or {}).get("web") or {}).get("results") or []
    hits = [
        {"title": r.get("title", ""), "link": r.get("url", ""), "snippet": r.get("description", "")}
        for r in results
        if isinstance(r, dict)
    ]
    return {"result": render_hits(hits)}


PROVIDER = Provider(
    name="brave",
    description="Search the web with Brave Search.",
    default_base_url="https://api.search.brave.com/res/v1",
    setup_keys={"api_key": ("api_key", "brave_api_key")},
    methods={
        "search": Method(
            name="search",
            description="Search the web; returns the hits (title, URL, snippet) as text.",
            arguments={
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1, "description": "The search query."},
                    "count": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 20,
                        "description": "Hits (default 10).",
                    },
                },
                "required": ["query"],
                "additionalProperties": False,
            },
            run=search,
        )
    },
)
