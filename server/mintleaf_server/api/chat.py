"""ChatService: a session's turns (Chat, StreamChat) and the context a turn would send (RenderChat).

This module converts between the protos and the chat package's plain values and maps the chat
package's errors to statuses; the turn itself is mintleaf_server.chat.service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc

from .._proto.mintleaf.v1 import chat_pb2, chat_pb2_grpc, docs_pb2, executions_pb2, sessions_pb2, tools_pb2
from ..chat import errors as chat_errors
from ..chat.recall import RecalledDoc
from ..chat.service import ChatService, TurnRequest, TurnResult, parse_arguments
from ..llm import errors as llm_errors
from .common import (
    Servicer,
    check_metadata,
    parse_id,
    parse_optional_id,
    streaming,
    struct_to_dict,
    to_struct,
    to_timestamp,
    unary,
)
from .errors import ApiError, FailedPrecondition, InvalidArgument, NotFoundError, Unavailable
from .tools import tool_to_proto, validated

__all__ = ["ChatServicer", "message_to_proto", "to_api_error", "turn_request"]

ROLES = ("user", "assistant", "system", "tool")
MAX_MESSAGES = 1000
MAX_CONTENT_CHARS = 1_000_000


class ResourceExhausted(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(ApiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


# -- requests ------------------------------------------------------------------------------------


def _message(m: sessions_pb2.ChatMessage, f: str) -> dict[str, Any]:
    if not m.role:
        raise InvalidArgument(f"{f}.role", "is required (user, assistant, system or tool)")
    if m.role not in ROLES:
        raise InvalidArgument(f"{f}.role", f"{m.role[:40]!r} is not user, assistant, system or tool")
    content: Any = m.content
    if m.content_parts:
        parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
        for j, part in enumerate(m.content_parts):
            pf = f"{f}.content_parts[{j}]"
            if part.type == "text":
                if not part.text:
                    raise InvalidArgument(f"{pf}.text", "must not be empty")
                parts.append({"type": "text", "text": part.text})
            elif part.type == "image_url":
                if not part.image_url:
                    raise InvalidArgument(f"{pf}.image_url", "is required for an image_url part")
                if part.detail not in ("", "low", "high", "auto"):
                    raise InvalidArgument(f"{pf}.detail", "must be low, high or auto")
                parts.append(
                    {"type": "image_url", "image_url": part.image_url, "detail": part.detail or "auto"}
                )
            else:
                raise InvalidArgument(f"{pf}.type", f"{part.type[:40]!r} is not text or image_url")
        content = parts
    calls = [
        {
            "id": c.id or "",
            "type": "function",
            "name": c.name,
            "arguments": struct_to_dict(c.arguments),
        }
        for c in m.tool_calls
    ]
    for j, c in enumerate(m.tool_calls):
        if not c.name:
            raise InvalidArgument(f"{f}.tool_calls[{j}].name", "is required")
        if not c.id:
            raise InvalidArgument(f"{f}.tool_calls[{j}].id", "is required")
    if calls and m.role != "assistant":
        raise InvalidArgument(f"{f}.tool_calls", "only assistant messages make tool calls")
    if m.role == "tool" and not m.tool_call_id:
        raise InvalidArgument(f"{f}.tool_call_id", "is required for a tool message")
    if not content and not calls:
        raise InvalidArgument(f"{f}.content", "must not be empty")
    if isinstance(content, str) and len(content) > MAX_CONTENT_CHARS:
        raise InvalidArgument(f"{f}.content", f"must be at most {MAX_CONTENT_CHARS:,} characters")
    return {
        "role": m.role,
        "content": content if content else None,
        "name": m.name,
        "tool_call_id": m.tool_call_id,
        "tool_calls": calls or None,
    }


def turn_request(request: chat_pb2.ChatRequest) -> TurnRequest:
    """The request, validated, as the chat service takes it (errors name the field)."""
    session_id = parse_id(request.session_id, "session_id")
    if not request.messages:
        raise InvalidArgument("messages", "at least one message is required")
    if len(request.messages) > MAX_MESSAGES:
        raise InvalidArgument("messages", f"at most {MAX_MESSAGES} messages per turn")
    messages = [_message(m, f"messages[{i}]") for i, m in enumerate(request.messages)]
    tools = [validated(t, f"tools[{i}]") for i, t in enumerate(request.tools)]
    names = [t["name"] for t in tools]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidArgument(f"tools[{i}].name", f"{name!r} is already the name of another tool")
    return TurnRequest(
        session_id=session_id,
        messages=messages,
        agent_id=parse_optional_id(request.agent, "agent"),
        model=request.model,
        settings=check_metadata(request.HasField("settings"), request.settings, "settings"),
        save=request.save if request.HasField("save") else True,
        recall=request.recall if request.HasField("recall") else True,
        auto_run_tools=request.auto_run_tools if request.HasField("auto_run_tools") else None,
        tools=tools,
        tool_choice=request.tool_choice,
        metadata=check_metadata(request.HasField("metadata"), request.metadata, "metadata"),
    )


# -- responses -----------------------------------------------------------------------------------


def message_to_proto(message: Mapping[str, Any]) -> sessions_pb2.ChatMessage:
    """A message in the stored shape or the OpenAI shape as a ChatMessage."""
    out = sessions_pb2.ChatMessage(
        role=message.get("role") or "",
        name=message.get("name") or "",
        tool_call_id=message.get("tool_call_id") or "",
    )
    content = message.get("content")
    if isinstance(content, str):
        out.content = content
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "image_url":
                image = part.get("image_url")
                url, detail = (
                    (image.get("url", ""), image.get("detail", ""))
                    if isinstance(image, Mapping)
                    else (image or "", part.get("detail", ""))
                )
                out.content_parts.add(type="image_url", image_url=url, detail=detail)
            else:
                out.content_parts.add(type="text", text=str(part.get("text", "")))
    for call in message.get("tool_calls") or []:
        function = call.get("function")
        name = function.get("name") if isinstance(function, Mapping) else call.get("name")
        raw = function.get("arguments") if isinstance(function, Mapping) else call.get("arguments")
        out.tool_calls.append(
            executions_pb2.ToolCall(
                id=call.get("id") or "",
                type="function",
                name=name or "",
                arguments=to_struct(parse_arguments(raw)),
            )
        )
    return out


_OWNER_TYPES = {"agent": docs_pb2.DOC_OWNER_TYPE_AGENT, "user": docs_pb2.DOC_OWNER_TYPE_USER}


def doc_to_proto(doc: RecalledDoc) -> chat_pb2.DocReference:
    return chat_pb2.DocReference(
        id=str(doc.id),
        owner_type=_OWNER_TYPES.get(doc.owner_type, docs_pb2.DOC_OWNER_TYPE_UNSPECIFIED),
        owner_id=str(doc.owner_id),
        title=doc.title,
        snippets=list(doc.snippets),
        score=doc.score,
    )


def response_to_proto(result: TurnResult) -> chat_pb2.ChatResponse:
    return chat_pb2.ChatResponse(
        id=str(result.id),
        session_id=str(result.session_id),
        choices=[
            chat_pb2.ChatChoice(
                index=0, finish_reason=result.finish_reason, message=message_to_proto(result.message)
            )
        ],
        usage=chat_pb2.Usage(**result.usage),
        docs=[doc_to_proto(d) for d in result.docs],
        model=result.model,
        created_at=to_timestamp(result.created_at),
    )


# -- errors --------------------------------------------------------------------------------------


def _model_error(exc: Exception) -> ApiError:
    meta = {"model": str(getattr(exc, "model", "") or "")}
    if isinstance(exc, llm_errors.ModelContextOverflow):
        return FailedPrecondition(
            f"the model rejected the context as too long: {exc}", reason="CONTEXT_OVERFLOW", metadata=meta
        )
    if isinstance(exc, llm_errors.ModelBadRequest):
        return InvalidArgument(
            "settings", f"the model rejected the request: {exc}", reason="MODEL_BAD_REQUEST", metadata=meta
        )
    if isinstance(exc, llm_errors.ModelNotFound):
        return FailedPrecondition(str(exc), reason="MODEL_NOT_FOUND", metadata=meta)
    if isinstance(exc, llm_errors.ModelAuthError | llm_errors.ModelConfigError):
        return FailedPrecondition(str(exc), reason="MODEL_CONFIGURATION", metadata=meta)
    if isinstance(exc, llm_errors.ModelRateLimited):
        return ResourceExhausted(str(exc), reason="MODEL_RATE_LIMITED", metadata=meta)
    if isinstance(exc, llm_errors.ModelTimeout):
        return DeadlineExceeded(str(exc), reason="MODEL_TIMEOUT", metadata=meta)
    return Unavailable(str(exc), reason="MODEL_UNAVAILABLE", metadata=meta)


def to_api_error(exc: chat_errors.ChatError) -> ApiError:
    """The status a chat error leaves the server as."""
    if isinstance(exc, chat_errors.BadRequest):
        return InvalidArgument(exc.field, exc.message)
    if isinstance(exc, chat_errors.NotFound):
        return NotFoundError(
            str(exc),
            reason=f"{exc.kind.upper()}_NOT_FOUND",
            metadata={"id": exc.id, "resource": exc.kind, "field": exc.field},
        )
    if isinstance(exc, chat_errors.ContextOverflow):
        meta = {"tokens": str(exc.tokens), "budget": str(exc.budget), "policy": exc.policy}
        if exc.new_only:
            return InvalidArgument("messages", str(exc), reason="CONTEXT_OVERFLOW", metadata=meta)
        return FailedPrecondition(str(exc), reason="CONTEXT_OVERFLOW", metadata=meta)
    if isinstance(exc, chat_errors.TemplateFailed):
        if exc.stored:
            return FailedPrecondition(str(exc), reason="TEMPLATE_FAILED", metadata={"field": exc.field})
        return InvalidArgument(exc.field, exc.message, reason="TEMPLATE_FAILED")
    if isinstance(exc, chat_errors.ModelFailed):
        return _model_error(exc.cause)
    return ApiError("internal error", reason="INTERNAL")


# -- the servicer --------------------------------------------------------------------------------


class ChatServicer(Servicer, chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.chat = ChatService(runtime)

    @unary
    async def Chat(
        self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> chat_pb2.ChatResponse:
        turn = turn_request(request)
        try:
            result = await self.chat.chat(dev, turn)
        except chat_errors.ChatError as exc:
            raise to_api_error(exc) from exc
        return response_to_proto(result)

    @streaming
    async def StreamChat(
        self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> AsyncIterator[chat_pb2.ChatEvent]:
        turn = turn_request(request)
        seen: set[int] = set()
        try:
            async for event in self.chat.stream(dev, turn):
                if isinstance(event, TurnResult):
                    yield chat_pb2.ChatEvent(response=response_to_proto(event))
                    continue
                delta = chat_pb2.ChatDelta(index=0, content=event.text)
                for call in event.tool_calls:
                    # A call is announced once, with its id and name; its arguments arrive whole
                    # in the final response.
                    index = int(call.get("index", 0))
                    if index in seen:
                        continue
                    seen.add(index)
                    function = call.get("function") or {}
                    delta.tool_calls.append(
                        executions_pb2.ToolCall(
                            id=call.get("id") or "", type="function", name=function.get("name") or ""
                        )
                    )
                if delta.content or delta.tool_calls:
                    yield chat_pb2.ChatEvent(delta=delta)
        except chat_errors.ChatError as exc:
            raise to_api_error(exc) from exc

    @unary
    async def RenderChat(
        self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> chat_pb2.RenderChatResponse:
        turn = turn_request(request)
        try:
            ctx = await self.chat.prepare(dev, turn, summarise=False)
        except chat_errors.ChatError as exc:
            raise to_api_error(exc) from exc
        given = {t.name: t for t in request.tools}
        tools: list[tools_pb2.Tool] = []
        for tool in ctx.tools:
            tools.append(tool_to_proto(dict(tool.row)) if tool.row is not None else given[tool.name])
        return chat_pb2.RenderChatResponse(
            messages=[message_to_proto(m) for m in ctx.messages()],
            docs=[doc_to_proto(d) for d in ctx.docs],
            token_count=ctx.tokens,
            tools=tools,
        )
