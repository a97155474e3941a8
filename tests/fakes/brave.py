"""Brave Search API fake: GET /web/search with X-Subscription-Token."""

from __future__ import annotations

from .httpserver import Request, Response

KEY = "brave-test-key"


def handler(request: Request) -> Response:
    if request.path != "/web/search":
        return Response.json({"error": "not found"}, 404)
    if request.headers.get("x-subscription-token") != KEY:
        return Response.json(
            {
                "type": "ErrorResponse",
                "error": {
                    "code": "SUBSCRIPTION_TOKEN_INVALID",
                    "detail": "The provided subscription token is invalid.",
                    "status": 422,
                },
            },
            422 if request.headers.get("x-subscription-token") else 401,
        )
    q = request.query["q"]
    return Response.json(
        {
            "type": "search",
            "query": {"original": q},
            "web": {
                "type": "search",
                "results": [
                    {
                        "title": f"About <strong>{q}</strong>",
                        "url": "https://example.org/1",
                        "description": f"All on <strong>{q}</strong>.",
                    },
                    {"title": "Second", "url": "https://example.org/2", "description": "More."},
                ],
            },
        }
    )
