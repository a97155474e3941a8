"""Wikipedia through the MediaWiki Action API ({base_url} is api.php): a full-text search
(list=search), then the plain-text extracts of the best pages (prop=extracts|info). Output
`{documents: [{page_content, metadata: {title, summary, source}}]}`, as the seed documents."""

from __future__ import annotations

import re
from typing import Any

from .base import IntegrationCall, Method, Provider

__all__ = ["PROVIDER"]

_LANG = re.compile(r"^[a-z][a-z-]{1,15}$")
_MAX_CONTENT = 4000  # characters per document, as Julep's loader kept


def _api(call: IntegrationCall) -> str:
    configured = call.config.get("base_url")
    if configured:
        return str(configured)
    lang = str(call.arguments.get("lang") or call.setting("lang", default="en"))
    if not _LANG.match(lang):
        lang = "en"
    return f"https://{lang}.wikipedia.org/w/api.php"


async def search(call: IntegrationCall) -> dict[str, Any]:
    api = _api(call)
    limit = int(call.arguments.get("load_max_docs", 2))
    found = await call.request_json(
        "GET",
        api,
        params={
            "action": "query",
            "list": "search",
            "srsearch": call.arguments["query"],
            "srlimit": limit,
            "format": "json",
            "formatversion": "2",
        },
    )
    if isinstance(found, dict) and "error" in found:
        raise call.error(200, str((found["error"] or {}).get("info") or "the search failed"))
    hits = ((found or {}).get("query") or {}).get("search") or []
    ids = [str(h["pageid"]) for h in hits if isinstance(h, dict) and "pageid" in h][:limit]
    if not ids:
        return {"documents": []}
    pages = await call.request_json(
        "GET",
        api,
        params={
            "action": "query",
            "prop": "extracts|info",
            "explaintext": "1",
            "inprop": "url",
            "pageids": "|".join(ids),
            "format": "json",
            "formatversion": "2",
        },
    )
    by_id = {
        str(p.get("pageid")): p
        for p in ((pages or {}).get("query") or {}).get("pages") or []
        if isinstance(p, dict)
    }
    documents = []
    for pid in ids:  # search order, best first
        page = by_id.get(pid)
        if page is None or page.get("missing"):
            continue
        text = str(page.get("extract") or "")
        summary = text.split("\n", 1)[0].strip()
        documents.append(
            {
                "page_content": text[:_MAX_CONTENT],
                "metadata": {
                    "title": page.get("title", ""),
                    "summary": summary,
                    "source": page.get("fullurl", ""),
                },
            }
        )
    return {"documents": documents}


PROVIDER = Provider(
    name="wikipedia",
    description="Search Wikipedia and load the best pages as text.",
    default_base_url="https://en.wikipedia.org/w/api.php",
    methods={
        "search": Method(
            name="search",
            description="Search Wikipedia; returns the best pages' text.",
            arguments={
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1, "description": "What to search for."},
                    "load_max_docs": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 10,
                        "description": "Pages to load (default 2).",
                    },
                    "lang": {"type": "string", "description": "Wikipedia language code (default en)."},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
            run=search,
        )
    },
)
