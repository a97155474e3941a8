"""The chat package's exception tree. Every failure of a chat turn is a `ChatError`; api/chat.py
translates each one to the gRPC status the client sees (one place, `api.chat.to_api_error`)."""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ChatError",
    "ContextOverflow",
    "ModelFailed",
    "NotFound",
    "TemplateFailed",
]


class ChatError(Exception):
    """Base of every error raised by mintleaf_server.chat."""


class BadRequest(ChatError):
    """The request is malformed; `field` is the request field path (`messages[2].role`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(ChatError):
    """A resource the turn needs does not exist (for this developer)."""

    def __init__(self, kind: str, id: object, field: str = "") -> None:
        super().__init__(f"{kind} {id} not found")
        self.kind = kind
        self.id = str(id)
        self.field = field


class ContextOverflow(ChatError):
    """The context does not fit the token budget and the session's policy cannot make it fit.

    `new_only` is true when the request's own messages (with the system prompt) are already too
    large: no policy can help, the request must shrink."""

    def __init__(self, message: str, *, tokens: int, budget: int, policy: str, new_only: bool) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.budget = budget
        self.policy = policy
        self.new_only = new_only


class TemplateFailed(ChatError):
    """A template (the system template, or a message when render_templates is on) did not
    compile or render. `field` names where it came from (`session.system_template`,
    `agent.default_system_template`, `messages[0].content`)."""

    def __init__(self, field: str, message: str, *, stored: bool) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.stored = stored  # true: the template is stored configuration, not part of this request


class ModelFailed(ChatError):
    """The model call failed; `cause` is the model layer's `ModelError`."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause
