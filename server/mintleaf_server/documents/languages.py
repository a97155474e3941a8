"""Map a request's language (a text search configuration name, an ISO 639-1 code or a BCP-47 tag
such as `en-US`) to one of PostgreSQL's built-in text search configurations.

Languages PostgreSQL has no stemmer for (Chinese, Japanese, Polish, ...) use `simple` (lower-cased
words, no stemming, no stop words). Anything else is rejected, naming the field, rather than
silently searched with the wrong configuration."""

from __future__ import annotations

from .errors import InvalidArgument

__all__ = ["DEFAULT_LANGUAGE", "SEARCH_CONFIGS", "resolve_language"]

DEFAULT_LANGUAGE = "english"

# ISO 639-1 → built-in configuration (PostgreSQL 18: `\dF` in psql).
_BY_CODE = {
    "ar": "arabic",
    "hy": "armenian",
    "eu": "basque",
    "ca": "catalan",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "el": "greek",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "ga": "irish",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "no": "norwegian",
    "nb": "norwegian",
    "nn": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "es": "spanish",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}
SEARCH_CONFIGS = frozenset(_BY_CODE.values()) | {"simple"}

# Real languages without a built-in stemmer: searched word by word with `simple`.
_SIMPLE_CODES = frozenset(
    [
        "af",
        "am",
        "az",
        "be",
        "bg",
        "bn",
        "bs",
        "cs",
        "cy",
        "eo",
        "et",
        "fa",
        "fil",
        "gl",
        "gu",
        "he",
        "hr",
        "is",
        "ja",
        "jv",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "ku",
        "ky",
        "la",
        "lb",
        "lo",
        "lv",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "mt",
        "my",
        "pa",
        "pl",
        "ps",
        "si",
        "sk",
        "sl",
        "sq",
        "sw",
        "te",
        "tg",
        "th",
        "tl",
        "uk",
        "ur",
        "uz",
        "vi",
        "xh",
        "yo",
        "zh",
        "zu",
    ]
)


def resolve_language(language: str | None, field: str = "language") -> str:
    """Return the text search configuration for `language`; None or "" means DEFAULT_LANGUAGE."""
    if language is None or not language.strip():
        return DEFAULT_LANGUAGE
    value = language.strip().lower().replace("_", "-")
    if value in SEARCH_CONFIGS:
        return value
    primary = value.split("-", 1)[0]
    if primary in _BY_CODE:
        return _BY_CODE[primary]
    if primary in _SIMPLE_CODES:
        return "simple"
    raise InvalidArgument(
        field,
        f"unknown language {language!r}: use an ISO 639-1 code or BCP-47 tag (e.g. 'en', 'fr-CA') "
        f"or a text search configuration ({', '.join(sorted(SEARCH_CONFIGS))})",
    )
