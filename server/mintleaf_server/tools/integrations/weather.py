"""Weather through OpenWeatherMap's current-weather API: GET {base_url}/data/2.5/weather?q=…&appid=…
(metric units). Output `{result: text}` as the seed documents, in the shape Julep's wrapper wrote."""

from __future__ import annotations

from typing import Any

from .base import IntegrationCall, Method, Provider

__all__ = ["PROVIDER"]


def describe_weather(location: str, data: dict[str, Any]) -> str:
    main = data.get("main") or {}
    wind = data.get("wind") or {}
    weather = (data.get("weather") or [{}])[0] or {}
    clouds = (data.get("clouds") or {}).get("all")
    place = data.get("name") or location
    lines = [
        f"In {place}, the current weather is as follows:",
        f"Detailed status: {weather.get('description', 'unknown')}",
        f"Wind speed: {wind.get('speed', '?')} m/s, direction: {wind.get('deg', '?')}°",
        f"Humidity: {main.get('humidity', '?')}%",
        "Temperature: ",
        f"  - Current: {main.get('temp', '?')}°C",
        f"  - High: {main.get('temp_max', '?')}°C",
        f"  - Low: {main.get('temp_min', '?')}°C",
        f"  - Feels like: {main.get('feels_like', '?')}°C",
        f"Rain: {data.get('rain') or {}}",
        f"Cloud cover: {clouds if clouds is not None else '?'}%",
    ]
    return "\n".join(lines)


async def get(call: IntegrationCall) -> dict[str, Any]:
    key = call.setting("api_key", required=True)
    location = call.arguments["location"]
    data = await call.request_json(
        "GET",
        f"{call.base_url}/data/2.5/weather",
        params={"q": location, "appid": str(key), "units": "metric"},
        auth_hint="openweathermap_api_key",
    )
    return {"result": describe_weather(location, data if isinstance(data, dict) else {})}


PROVIDER = Provider(
    name="weather",
    description="Current weather for a place (OpenWeatherMap).",
    default_base_url="https://api.openweathermap.org",
    setup_keys={"api_key": ("openweathermap_api_key", "api_key")},
    methods={
        "get": Method(
            name="get",
            description="Current weather for a location, as text.",
            arguments={
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "minLength": 1,
                        "description": "City name, e.g. 'Paris,FR'.",
                    }
                },
                "required": ["location"],
                "additionalProperties": False,
            },
            run=get,
        )
    },
)
