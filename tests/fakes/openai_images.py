"""OpenAI images API fake: POST /v1/images/generations with a Bearer key."""

from __future__ import annotations

from .httpserver import Request, Response

KEY = "sk-test-images"


def handler(request: Request) -> Response:
    if request.path != "/v1/images/generations" or request.method != "POST":
        return Response.json({"error": {"message": "Unknown route", "type": "invalid_request_error"}}, 404)
    if request.headers.get("authorization") != f"Bearer {KEY}":
        return Response.json(
            {
                "error": {
                    "message": "Incorrect API key provided: sk-wro***. You can find your API key at https://platform.openai.com/account/api-keys.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            401,
        )
    body = request.json()
    n = len(request.headers)  # deterministic but varying
    return Response.json(
        {
            "created": 1700000000,
            "data": [
                {
                    "url": f"https://images.example/{abs(hash(body['prompt'])) % 10**8}-{n}.png",
                    "revised_prompt": body["prompt"],
                }
            ],
        }
    )
