"""Spider (spider.cloud) API fake: POST /scrape, /crawl, ... with a Bearer key."""

from __future__ import annotations

from .httpserver import Request, Response

KEY = "spider-test-key"


def handler(request: Request) -> Response:
    if request.headers.get("authorization") != f"Bearer {KEY}":
        return Response.json({"error": "Unauthorized: invalid API key"}, 401)
    mode = request.path.strip("/")
    body = request.json()
    if mode not in ("scrape", "crawl", "links", "screenshot", "search"):
        return Response.json({"error": "not found"}, 404)
    pages = 1 if mode == "scrape" else int(body.get("limit", 2))
    return Response.json(
        [
            {
                "content": f"# Page {i} of {body['url']}",
                "error": None,
                "status": 200,
                "costs": {"total_cost": 0.0001},
                "url": f"{body['url']}/{i}",
            }
            for i in range(pages)
        ]
    )
