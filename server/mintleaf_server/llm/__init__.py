"""The model layer: one client over any OpenAI-compatible endpoint, a scripted server for tests and
keyless demos, and offline token counting. See docs/models.md."""

from .client import (
    Completion,
    Endpoint,
    ModelRegistry,
    ResolvedModel,
    RetryPolicy,
    StreamDelta,
    StreamDone,
    merge_settings,
)
from .errors import (
    ModelAuthError,
    ModelBadRequest,
    ModelConfigError,
    ModelContextOverflow,
    ModelError,
    ModelNotFound,
    ModelRateLimited,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
)
from .scripted import Disconnect, ErrorReply, Reply, ScriptedModelServer, ToolCall, hash_embedding
from .tokens import count_message_tokens, count_text_tokens, encoding_for_model, encoding_name_for_model

__all__ = [
    "Completion",
    "Disconnect",
    "Endpoint",
    "ErrorReply",
    "ModelAuthError",
    "ModelBadRequest",
    "ModelConfigError",
    "ModelContextOverflow",
    "ModelError",
    "ModelNotFound",
    "ModelRateLimited",
    "ModelRegistry",
    "ModelResponseError",
    "ModelTimeout",
    "ModelUnavailable",
    "Reply",
    "ResolvedModel",
    "RetryPolicy",
    "ScriptedModelServer",
    "StreamDelta",
    "StreamDone",
    "ToolCall",
    "count_message_tokens",
    "count_text_tokens",
    "encoding_for_model",
    "encoding_name_for_model",
    "hash_embedding",
    "merge_settings",
]
