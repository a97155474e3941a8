"""Sessions' chat turns: context building (system template, history, token budget, context
overflow), document recall, and the turn itself (model call, tool calls, storing entries)."""

from .context import DEFAULT_SYSTEM_TEMPLATE, SCOPE_NAMES
from .errors import BadRequest, ChatError, ContextOverflow, ModelFailed, NotFound, TemplateFailed
from .recall import RecalledDoc, RecallOptions
from .service import ChatService, TurnContext, TurnRequest, TurnResult, TurnTool

__all__ = [
    "DEFAULT_SYSTEM_TEMPLATE",
    "SCOPE_NAMES",
    "BadRequest",
    "ChatError",
    "ChatService",
    "ContextOverflow",
    "ModelFailed",
    "NotFound",
    "RecallOptions",
    "RecalledDoc",
    "TemplateFailed",
    "TurnContext",
    "TurnRequest",
    "TurnResult",
    "TurnTool",
]
