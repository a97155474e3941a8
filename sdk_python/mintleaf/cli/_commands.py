"""The CLI's commands: each takes the client, the parsed arguments and the printer, and returns the
exit status. Server errors propagate as MintleafError (main prints them); bad arguments raise
UsageError."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .. import Client
from .._gen.google.protobuf import Struct, Value
from .._gen.mintleaf import v1
from ..waiting import TERMINAL, wait_for_execution
from ._output import Printer, compact, table, tidy, transition_line

__all__ = ["COMMANDS", "EXIT_WAITING", "UsageError"]

EXIT_WAITING = 3  # `run` stopped because the execution waits for input
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it

T = TypeVar("T")
Command = Callable[[Client, argparse.Namespace, Printer], int]


class UsageError(Exception):
    """A bad argument or missing configuration: printed as `error: ...`, exit status 2."""


# -- helpers --------------------------------------------------------------------------------------


def _all_pages(fetch: Callable[[str], tuple[list[T], str]]) -> list[T]:
    items, token = fetch("")
    while token:
        more, token = fetch(token)
        items += more
    return items


def _json_arg(text: str | None, path: str | None, what: str) -> Any:
    """The JSON given inline or in a file (`-`: stdin); None when neither is given."""
    if text is not None and path is not None:
        raise UsageError(f"give {what} inline or as a file, not both")
    if path is not None:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from exc


def _when(msg: Any) -> str:
    created = getattr(msg, "created_at", None)
    return created.strftime("%Y-%m-%d %H:%M:%S") if created is not None else ""


# -- agents ---------------------------------------------------------------------------------------


def agents_list(c: Client, a: argparse.Namespace, p: Printer) -> int:
    def page(token: str) -> tuple[list[v1.Agent], str]:
        r = c.agents.list_agents(v1.ListAgentsRequest(page_token=token))
        return r.agents, r.next_page_token

    agents = _all_pages(page)
    rows = [[x.id, x.name, x.model, _when(x)] for x in agents]
    p.message(v1.ListAgentsResponse(agents=agents), table(rows, ["ID", "NAME", "MODEL", "CREATED"]))
    return 0


def agents_get(c: Client, a: argparse.Namespace, p: Printer) -> int:
    p.message(c.agents.get_agent(v1.GetAgentRequest(id=a.id)))
    return 0


def agents_create(c: Client, a: argparse.Namespace, p: Printer) -> int:
    agent = v1.Agent(name=a.name, model=a.model, about=a.about, instructions=a.instructions or [])
    created = c.agents.create_agent(v1.CreateAgentRequest(agent=agent))
    p.message(created, f"created agent {created.id} ({created.name})")
    return 0


def agents_delete(c: Client, a: argparse.Namespace, p: Printer) -> int:
    p.message(c.agents.delete_agent(v1.DeleteAgentRequest(id=a.id)), f"deleted agent {a.id}")
    return 0


# -- tasks ----------------------------------------------------------------------------------------


def tasks_create(c: Client, a: argparse.Namespace, p: Printer) -> int:
    try:
        text = sys.stdin.read() if a.file == "-" else Path(a.file).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {a.file}: {exc.strerror}") from exc
    task = c.tasks.create_task(v1.CreateTaskRequest(agent_id=a.agent, task=v1.Task(yaml=text)))
    p.message(task, f"created task {task.id} ({task.name}, version {task.version})")
    for warning in task.warnings:
        p.note(f"warning: {warning}")
    return 0


def tasks_list(c: Client, a: argparse.Namespace, p: Printer) -> int:
    def page(token: str) -> tuple[list[v1.Task], str]:
        r = c.tasks.list_tasks(v1.ListTasksRequest(agent_id=a.agent or "", page_token=token))
        return r.tasks, r.next_page_token

    tasks = _all_pages(page)
    rows = [[t.id, t.name, str(t.version), t.agent_id, _when(t)] for t in tasks]
    p.message(v1.ListTasksResponse(tasks=tasks), table(rows, ["ID", "NAME", "VERSION", "AGENT", "CREATED"]))
    return 0


def tasks_get(c: Client, a: argparse.Namespace, p: Printer) -> int:
    task = c.tasks.get_task(v1.GetTaskRequest(id=a.id))
    if not p.json:
        task.explain = None  # how every string of the definition was read: noise for a reader
    p.message(task)
    return 0


# -- executions -----------------------------------------------------------------------------------


class _Follower:
    """Prints transitions as they arrive and remembers the last sequence, so a later stream resumes
    after it (no line twice)."""

    def __init__(self, p: Printer, to_stdout: bool) -> None:
        self.p, self.to_stdout, self.last = p, to_stdout, 0

    def __call__(self, t: v1.Transition) -> None:
        self.last = t.sequence
        if self.p.json:
            self.p.line(t)
        elif self.to_stdout:
            self.p.say(transition_line(t))
        else:
            self.p.note(transition_line(t))


def _describe_waits(ex: v1.Execution, p: Printer, hint: bool) -> None:
    for wait in ex.waits:
        if wait.kind == "tool_calls":
            calls = ", ".join(
                f"{tc.name}({compact(tc.arguments.to_dict() if tc.arguments else {})})"
                for tc in wait.tool_calls
            )
            p.note(f"execution {ex.id} waits for results of function tool calls: {calls}")
            p.note("  submit them with the SDK (ExecutionService.SubmitToolResults)")
            continue
        info = compact(wait.info.to_dict()) if wait.info is not None else "null"
        p.note(f"execution {ex.id} is waiting for input (wait {wait.id}): {info}")
        if not hint:
            continue
        command = f"mintleaf executions resume {ex.id} --input '<JSON>'"
        p.note(f"  resume it with: {command}" + (f" --wait-id {wait.id}" if len(ex.waits) > 1 else ""))


def _ask(wait: v1.Wait) -> Any:
    """Reads the answer to one wait from stdin (prompting on a terminal); None at end of input."""
    tty = sys.stdin.isatty()
    while True:
        if tty:
            try:
                line = input(f"answer for wait {wait.id} (JSON)> ")
            except EOFError:
                return None
        else:
            line = sys.stdin.readline()
            if not line:
                return None
        try:
            return json.loads(line)
        except json.JSONDecodeError as exc:
            if not tty:
                raise UsageError(f"the answer is not valid JSON: {exc}") from exc
            print(f"not valid JSON ({exc}); try again", file=sys.stderr)


def _finish(ex: v1.Execution, p: Printer) -> int:
    if p.json:
        p.line(ex)
    elif ex.status == v1.ExecutionStatus.SUCCEEDED:
        output = ex.output.to_dict() if ex.output is not None else None
        p.say(json.dumps(tidy(output), indent=2, ensure_ascii=False))
    else:
        p.note(f"execution {ex.id} {ex.status.name}" + (f": {ex.error}" if ex.error else ""))
    return 0 if ex.status == v1.ExecutionStatus.SUCCEEDED else 1


def follow(c: Client, p: Printer, ex: v1.Execution, interactive: bool) -> int:
    """Follows an execution live until it ends (exit 0 if it succeeded, else 1) or waits for input
    (exit 3, unless `interactive` answers from stdin and follows on). Ctrl-C: exit 130, not cancelled."""
    show = _Follower(p, to_stdout=False)
    p.note(f"following execution {ex.id} (Ctrl-C stops following; the execution keeps running)")
    try:
        while True:
            ex = wait_for_execution(
                c.executions, ex.id, until_awaiting_input=True, on_transition=show, after_sequence=show.last
            )
            if ex.status in TERMINAL:
                return _finish(ex, p)
            answerable = interactive and all(w.kind == "wait_for_input" for w in ex.waits)
            _describe_waits(ex, p, hint=not answerable)
            if not answerable:
                if p.json:
                    p.line(ex)
                return EXIT_WAITING
            for wait in ex.waits:
                answer = _ask(wait)
                if answer is None:
                    p.note(
                        f"  no answer read; resume it with: mintleaf executions resume {ex.id} --input '<JSON>'"
                    )
                    return EXIT_WAITING
                c.executions.resume_execution(
                    v1.ResumeExecutionRequest(id=ex.id, wait_id=wait.id, input=Value.from_dict(answer))
                )
    except KeyboardInterrupt:
        p.note(f"\nstopped following; execution {ex.id} was NOT cancelled and keeps running")
        p.note(f"  follow it again: mintleaf executions logs {ex.id} --follow")
        p.note(f"  cancel it:       mintleaf executions cancel {ex.id}")
        return EXIT_INTERRUPTED


def run(c: Client, a: argparse.Namespace, p: Printer) -> int:
    data = _json_arg(a.input, a.input_file, "the input")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError("the input must be a JSON object")
    ex = c.executions.create_execution(
        v1.CreateExecutionRequest(task_id=a.task_id, execution=v1.Execution(input=Struct.from_dict(data)))
    )
    if a.detach:
        p.message(ex, f"started execution {ex.id} ({ex.status.name})")
        return 0
    return follow(c, p, ex, a.interactive)


def executions_get(c: Client, a: argparse.Namespace, p: Printer) -> int:
    p.message(c.executions.get_execution(v1.GetExecutionRequest(id=a.id)))
    return 0


def executions_list(c: Client, a: argparse.Namespace, p: Printer) -> int:
    status = v1.ExecutionStatus[a.status] if a.status else v1.ExecutionStatus.UNSPECIFIED

    def page(token: str) -> tuple[list[v1.Execution], str]:
        req = v1.ListExecutionsRequest(task_id=a.task or "", status=status, page_token=token)
        r = c.executions.list_executions(req)
        return r.executions, r.next_page_token

    items = _all_pages(page)
    rows = [[x.id, x.status.name, x.task_id, str(x.task_version), _when(x)] for x in items]
    header = ["ID", "STATUS", "TASK", "VERSION", "CREATED"]
    p.message(v1.ListExecutionsResponse(executions=items), table(rows, header))
    return 0


def executions_logs(c: Client, a: argparse.Namespace, p: Printer) -> int:
    show = _Follower(p, to_stdout=True)
    if not a.follow:

        def page(token: str) -> tuple[list[v1.Transition], str]:
            r = c.executions.list_transitions(v1.ListTransitionsRequest(execution_id=a.id, page_token=token))
            return r.transitions, r.next_page_token

        for t in _all_pages(page):
            show(t)
        return 0
    try:
        ex = wait_for_execution(c.executions, a.id, on_transition=show)
    except KeyboardInterrupt:
        p.note(f"\nstopped following; execution {a.id} was not cancelled")
        return EXIT_INTERRUPTED
    p.note(f"execution {ex.id} {ex.status.name}" + (f": {ex.error}" if ex.error else ""))
    return 0


def executions_cancel(c: Client, a: argparse.Namespace, p: Printer) -> int:
    ex = c.executions.cancel_execution(v1.CancelExecutionRequest(id=a.id, reason=a.reason or ""))
    if ex.status == v1.ExecutionStatus.CANCELLED:
        p.message(ex, f"execution {ex.id} CANCELLED")
    else:  # a running step is stopped by its worker, a moment later
        p.message(ex, f"cancelling execution {ex.id} (now {ex.status.name})")
    return 0


def executions_resume(c: Client, a: argparse.Namespace, p: Printer) -> int:
    answer = _json_arg(a.input, a.input_file, "the input")
    if a.input is None and a.input_file is None:
        raise UsageError("give the answer with --input JSON or --input-file FILE")
    req = v1.ResumeExecutionRequest(id=a.id, wait_id=a.wait_id or "", input=Value.from_dict(answer))
    ex = c.executions.resume_execution(req)
    p.message(ex, f"resumed execution {ex.id} ({ex.status.name})")
    return 0


# -- sessions and chat ----------------------------------------------------------------------------


def sessions_create(c: Client, a: argparse.Namespace, p: Printer) -> int:
    session = v1.Session(agent=a.agent, user=a.user or "", situation=a.situation or "")
    created = c.sessions.create_session(v1.CreateSessionRequest(session=session))
    p.message(created, f"created session {created.id}")
    return 0


def chat(c: Client, a: argparse.Namespace, p: Printer) -> int:
    """One turn, streamed: deltas are printed as they come (human mode); --json prints the final
    ChatResponse only."""
    req = v1.ChatRequest(session_id=a.session_id, messages=[v1.ChatMessage(role="user", content=a.message)])
    streamed = False
    final: v1.ChatResponse | None = None
    for event in c.chat.stream_chat(req):
        if event.delta is not None and event.delta.content and not p.json:
            p.out.write(event.delta.content)
            p.out.flush()
            streamed = True
        if event.response is not None:
            final = event.response
    if p.json:
        if final is not None:
            p.message(final)
        return 0
    if streamed:
        p.say("")
    elif final is not None and final.choices and final.choices[0].message is not None:
        msg = final.choices[0].message
        p.say(msg.content)
        for tc in msg.tool_calls:
            args = tc.arguments.to_dict() if tc.arguments else {}
            p.note(f"tool call {tc.id}: {tc.name}({compact(args)})")
    return 0


COMMANDS: dict[str, Command] = {
    "agents list": agents_list,
    "agents get": agents_get,
    "agents create": agents_create,
    "agents delete": agents_delete,
    "tasks create": tasks_create,
    "tasks list": tasks_list,
    "tasks get": tasks_get,
    "run": run,
    "executions get": executions_get,
    "executions list": executions_list,
    "executions logs": executions_logs,
    "executions cancel": executions_cancel,
    "executions resume": executions_resume,
    "sessions create": sessions_create,
    "chat": chat,
}
