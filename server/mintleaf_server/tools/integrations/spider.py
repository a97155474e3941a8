"""Spider (spider.cloud) crawling API: POST {base_url}/{crawl|scrape|links|screenshot|search} with
`Authorization: Bearer <key>` and a JSON body `{url, ...params}`. The seed's argument `mode`
(default "scrape") picks the endpoint when the tool names no method. Output
`{documents: [{page_content, metadata: {url, status, error, costs}}]}` (the seed's shape)."""

from __future__ import annotations

from typing import Any

from .base import IntegrationCall, Method, Provider

__all__ = ["PROVIDER"]

_MODES = ("scrape", "crawl", "links", "screenshot", "search")
_CONTENT_TYPES = ("application/json", "text/csv", "application/xml", "application/jsonl")


def _runner(endpoint: str | None) -> Any:
    async def run(call: IntegrationCall) -> dict[str, Any]:
        key = call.setting("api_key", required=True)
        mode = endpoint or str(call.arguments.get("mode") or "scrape")
        params = dict(call.arguments.get("params") or {})
        body: dict[str, Any] = {**params}
        if mode == "search":
            body.setdefault("search", call.arguments.get("query") or call.arguments.get("url"))
        else:
            body["url"] = call.arguments["url"]
        body.setdefault("return_format", "markdown")
        data = await call.request_json(
            "POST",
            f"{call.base_url}/{mode}",
            json=body,
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": str(call.arguments.get("content_type") or "application/json"),
                "Accept": "application/json",
            },
            auth_hint="spider_api_key",
        )
        items = data if isinstance(data, list) else (data or {}).get("content") or [data]
        documents = []
        for item in items:
            if not isinstance(item, dict):
                continue
            content = item.get("content")
            documents.append(
                {
                    "page_content": content
                    if isinstance(content, str)
                    else ("" if content is None else str(content)),
                    "metadata": {
                        "url": item.get("url"),
                        "status": item.get("status"),
                        "error": item.get("error"),
                        "costs": item.get("costs"),
                    },
                }
            )
        return {"documents": documents}

    return run


_ARGUMENTS = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "minLength": 1, "description": "The page or site to fetch."},
        "mode": {"type": "string", "enum": list(_MODES), "description": "Crawler mode (default scrape)."},
        "params": {"type": "object", "description": "Extra Spider API parameters (limit, depth, ...)."},
        "content_type": {"type": "string", "enum": list(_CONTENT_TYPES)},
        "query": {"type": "string", "description": "Search text (search mode)."},
    },
    "additionalProperties": False,
}


def _method(name: str, endpoint: str | None, description: str) -> Method:
    schema = dict(_ARGUMENTS)
    if name != "search":
        schema["required"] = ["url"]
    return Method(name=name, description=description, arguments=schema, run=_runner(endpoint))


PROVIDER = Provider(
    name="spider",
    description="Fetch and crawl web pages with Spider.",
    default_base_url="https://api.spider.cloud",
    setup_keys={"api_key": ("spider_api_key", "api_key")},
    methods={
        "crawl": _method(
            "crawl", None, "Fetch a page (mode scrape, the default) or crawl a site (mode crawl)."
        ),
        "scrape": _method("scrape", "scrape", "Fetch one page."),
        "links": _method("links", "links", "List the links of a site."),
        "screenshot": _method("screenshot", "screenshot", "Screenshot a page (base64)."),
        "search": _method("search", "search", "Search the web and fetch the results."),
    },
)
