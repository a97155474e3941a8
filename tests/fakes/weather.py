"""OpenWeatherMap current-weather API fake: GET /data/2.5/weather?q=&appid=&units=."""

from __future__ import annotations

from .httpserver import Request, Response

KEY = "owm-test-key"


def handler(request: Request) -> Response:
    if request.path != "/data/2.5/weather":
        return Response.json({"cod": 404, "message": "Internal error"}, 404)
    if request.query.get("appid") != KEY:
        return Response.json(
            {
                "cod": 401,
                "message": "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info.",
            },
            401,
        )
    if request.query.get("q") == "Nowhere":
        return Response.json({"cod": "404", "message": "city not found"}, 404)
    return Response.json(
        {
            "weather": [{"id": 500, "main": "Rain", "description": "light rain"}],
            "main": {"temp": 12.5, "feels_like": 11.9, "temp_min": 11.0, "temp_max": 14.0, "humidity": 81},
            "wind": {"speed": 4.1, "deg": 250},
            "clouds": {"all": 75},
            "name": request.query["q"].split(",")[0],
            "cod": 200,
        }
    )
