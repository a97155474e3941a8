"""Server-side tools: api_call, integration and system tools run as library code (the engine and
chat call `run_tool`); `tool_schema` describes any tool to a model. See docs/tools.md."""

from .context import ToolContext
from .errors import (
    FunctionToolNotRunnable,
    IntegrationError,
    SystemOperationFailed,
    ToolAddressRefused,
    ToolArgumentsInvalid,
    ToolConnectionFailed,
    ToolError,
    ToolHttpError,
    ToolNotFound,
    ToolNotImplemented,
    ToolResponseTooLarge,
    ToolSetupInvalid,
    ToolTimeout,
)
from .runner import run_tool, tool_schema

__all__ = [
    "FunctionToolNotRunnable",
    "IntegrationError",
    "SystemOperationFailed",
    "ToolAddressRefused",
    "ToolArgumentsInvalid",
    "ToolConnectionFailed",
    "ToolContext",
    "ToolError",
    "ToolHttpError",
    "ToolNotFound",
    "ToolNotImplemented",
    "ToolResponseTooLarge",
    "ToolSetupInvalid",
    "ToolTimeout",
    "run_tool",
    "tool_schema",
]
