"""Image generation through the OpenAI images API (the `openai` package, so any compatible endpoint
works): method `generate_image`, argument `description` (or `prompt`), output `{image: {url}}`
because the seed's comic reads `output.image.url`. A base64-only answer becomes a data: URL.

The openai client's own retries are off (max_retries=0): the engine retries retryable tool
errors itself, with its recorded policy."""

from __future__ import annotations

from typing import Any

import httpx2
import openai

from ..errors import ToolTimeout
from .base import USER_AGENT, IntegrationCall, Method, Provider

__all__ = ["PROVIDER"]


async def generate_image(call: IntegrationCall) -> dict[str, Any]:
    key = call.setting("api_key", required=True)
    model = str(call.arguments.get("model") or call.setting("model", default="dall-e-3"))
    size = str(call.arguments.get("size") or call.setting("size", default="1024x1024"))
    # The openai package runs on httpx2 (not httpx), so ctx.transport does not apply here; the
    # base URL is the operator's (trusted), and trust_env=False keeps environment proxies out.
    async with httpx2.AsyncClient(
        trust_env=False, timeout=call.timeout, headers={"User-Agent": USER_AGENT}
    ) as http:
        client = openai.AsyncOpenAI(
            api_key=str(key), base_url=call.base_url, http_client=http, max_retries=0, timeout=call.timeout
        )
        try:
            response = await client.images.generate(
                model=model, prompt=call.arguments["description"], n=1, size=size
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise call.error(
                exc.status_code,
                "the provider refused the credentials (check setup 'api_key')",
                retryable=False,
            ) from None
        except openai.APITimeoutError:
            raise ToolTimeout("dalle: the images API timed out") from None
        except openai.APIStatusError as exc:
            raise call.error(exc.status_code, str(exc.message)) from None
        except openai.APIConnectionError as exc:
            raise call.error(
                0, f"could not reach the images API ({exc.__class__.__name__})", retryable=True
            ) from None
    data = response.data or []
    if not data:
        raise call.error(200, "the images API returned no image")
    image = data[0]
    url = image.url or (f"data:image/png;base64,{image.b64_json}" if image.b64_json else None)
    if not url:
        raise call.error(200, "the images API returned neither a URL nor image data")
    out: dict[str, Any] = {"image": {"url": url}}
    if image.revised_prompt:
        out["image"]["revised_prompt"] = image.revised_prompt
    return out


PROVIDER = Provider(
    name="dalle",
    description="Generate an image from a description (OpenAI images API).",
    default_base_url="https://api.openai.com/v1",
    setup_keys={"api_key": ("api_key", "openai_api_key")},
    methods={
        "generate_image": Method(
            name="generate_image",
            description="Generate an image; returns {image: {url}}.",
            arguments={
                "type": "object",
                "properties": {
                    "description": {"type": "string", "minLength": 1, "description": "What the image shows."},
                    "size": {"type": "string", "description": "e.g. 1024x1024"},
                    "model": {"type": "string"},
                },
                "required": ["description"],
                "additionalProperties": False,
            },
            aliases={"prompt": "description"},
            run=generate_image,
        )
    },
)
