"""`mintleaf`: the command-line client of a Mintleaf server, built on the SDK (stdlib argparse only).

    mintleaf agents create --name Ada
    mintleaf tasks create --agent AGENT_ID --file task.yaml
    mintleaf run TASK_ID --input '{"topic": "owls"}'

Design note. One module per concern: this one parses arguments and resolves the connection
(target, API key), `_commands` holds one function per command, `_output` the printing. Results go
to stdout, progress and hints to stderr (so `mintleaf run T > out.json` keeps only the output).
`--json` prints the messages' canonical protobuf JSON, the same as the REST gateway's. Global
options are accepted before or after the command. Rejected: click/typer (a dependency for a few
commands) and one hand-written table per message type for `get` (a generic field listing stays
right as the contract grows).

Exit status: 0 success; 1 a server or connection error, or an execution that failed or was
cancelled; 2 a usage error; 3 `run` stopped because the execution waits for input; 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import Client
from .._gen.mintleaf import v1
from ..errors import MintleafError
from ._commands import COMMANDS, EXIT_WAITING, UsageError
from ._output import Printer, describe_error

__all__ = ["EXIT_WAITING", "build_parser", "data_dir", "main"]

DEFAULT_TARGET = "127.0.0.1:50051"


def data_dir() -> Path:
    """The server's data directory, where an embedded server writes `api_key` on its first start:
    $MINTLEAF_DATA_DIR, else platformdirs' user data dir for "mintleaf" (as the server computes it)."""
    env = os.environ.get("MINTLEAF_DATA_DIR")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs  # the server's dependency; not the SDK's

        return Path(platformdirs.user_data_dir("mintleaf"))
    except ImportError:
        pass
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "mintleaf"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "mintleaf" / "mintleaf"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "mintleaf"


def api_key(given: str | None) -> str:
    """--api-key, else $MINTLEAF_API_KEY, else the key file of a local embedded server."""
    key = given or os.environ.get("MINTLEAF_API_KEY")
    if key:
        return key.strip()
    path = data_dir() / "api_key"
    try:
        key = path.read_text().strip()
    except OSError:
        key = ""
    if not key:
        raise UsageError(
            f"no API key: pass --api-key or set MINTLEAF_API_KEY (also looked in {path}, which a local"
            " `mintleaf-server serve` writes on its first start; MINTLEAF_DATA_DIR moves it)"
        )
    return key


def _status(text: str) -> str:
    name = text.upper()
    if name not in v1.ExecutionStatus.__members__ or name == "UNSPECIFIED":
        choices = ", ".join(s.name.lower() for s in v1.ExecutionStatus if s.name != "UNSPECIFIED")
        raise argparse.ArgumentTypeError(f"unknown status {text!r} (one of {choices})")
    return name


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--target", default=default, help=f"server host:port (env MINTLEAF_TARGET; default {DEFAULT_TARGET})"
    )
    parser.add_argument(
        "--api-key", default=default, help="API key (env MINTLEAF_API_KEY; else <data dir>/api_key)"
    )
    parser.add_argument(
        "--json", action="store_true", default=default, help="print canonical JSON of the messages"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=default,
        help="speak TLS, trusting the system's CAs (env MINTLEAF_TLS=1)",
    )
    parser.add_argument(
        "--ca-file", default=default, help="speak TLS, trusting this PEM CA instead (env MINTLEAF_CA_FILE)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mintleaf",
        description="Command-line client of a Mintleaf server.",
        epilog="exit status: 0 ok, 1 error or failed execution, 2 usage, 3 waiting for input, 130 Ctrl-C",
    )
    _global_options(parser, None)
    # Leaf commands accept the global options too; SUPPRESS keeps the top-level values otherwise.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def leaf(
        parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, key: str, help: str
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(command=key)
        return p

    agents = sub.add_parser("agents", help="create, list, show and delete agents").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(agents, "list", "agents list", "list agents")
    leaf(agents, "get", "agents get", "show an agent").add_argument("id")
    p = leaf(agents, "create", "agents create", "create an agent")
    p.add_argument("--name", required=True)
    p.add_argument("--model", default="", help="model name (default: the server's default model)")
    p.add_argument("--about", default="")
    p.add_argument("--instructions", "--instruction", action="extend", nargs="+", metavar="TEXT")
    leaf(agents, "delete", "agents delete", "delete an agent with its tools, tasks and docs").add_argument(
        "id"
    )

    tasks = sub.add_parser("tasks", help="create, list and show tasks").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = leaf(tasks, "create", "tasks create", "create a task from a YAML (or JSON) file, as written")
    p.add_argument("--agent", required=True, help="the owning agent's id")
    p.add_argument("--file", "-f", required=True, help="the task document (- for stdin)")
    leaf(tasks, "list", "tasks list", "list tasks").add_argument("--agent", help="only this agent's tasks")
    leaf(tasks, "get", "tasks get", "show a task (latest version)").add_argument("id")

    p = leaf(sub, "run", "run", "start an execution of a task and follow it live")
    p.add_argument("task_id")
    p.add_argument("--input", help="the input, a JSON object")
    p.add_argument("--input-file", metavar="FILE", help="the input from a JSON file (- for stdin)")
    p.add_argument("--detach", "-d", action="store_true", help="print the execution and return at once")
    p.add_argument(
        "--interactive", "-i", action="store_true", help="answer waits for input with JSON read from stdin"
    )

    ex = sub.add_parser("executions", help="show, list, follow, cancel and resume executions").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(ex, "get", "executions get", "show an execution").add_argument("id")
    p = leaf(ex, "list", "executions list", "list executions")
    p.add_argument("--task", help="only this task's executions")
    p.add_argument("--status", type=_status, help="only executions in this status (e.g. running, failed)")
    p = leaf(ex, "logs", "executions logs", "print an execution's transitions")
    p.add_argument("id")
    p.add_argument("--follow", "-f", action="store_true", help="then follow live ones until it ends")
    p = leaf(ex, "cancel", "executions cancel", "cancel an execution")
    p.add_argument("id")
    p.add_argument("--reason", help="recorded on the cancelled transition")
    p = leaf(ex, "resume", "executions resume", "resume an execution waiting for input")
    p.add_argument("id")
    p.add_argument("--input", help="the answer, any JSON value")
    p.add_argument("--input-file", metavar="FILE", help="the answer from a JSON file (- for stdin)")
    p.add_argument("--wait-id", help="the wait to answer (needed only when several are open)")

    sessions = sub.add_parser("sessions", help="create sessions").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = leaf(sessions, "create", "sessions create", "create a session with an agent")
    p.add_argument("--agent", required=True, help="the agent's id")
    p.add_argument("--user", help="a user's id")
    p.add_argument("--situation", help="the session's situation (system prompt context)")

    p = leaf(sub, "chat", "chat", "send a message in a session and print the reply as it streams")
    p.add_argument("session_id")
    p.add_argument("message")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    printer = Printer(bool(args.json))
    target = args.target or os.environ.get("MINTLEAF_TARGET") or DEFAULT_TARGET
    try:
        key = api_key(args.api_key)
        ca_file = args.ca_file or os.environ.get("MINTLEAF_CA_FILE") or None
        tls = bool(args.tls) or os.environ.get("MINTLEAF_TLS", "") in ("1", "true", "yes")
        try:
            roots = Path(ca_file).read_bytes() if ca_file else None
        except OSError as exc:
            raise UsageError(f"cannot read the CA file {ca_file}: {exc.strerror}") from exc
        with Client(target, api_key=key, tls=tls, root_certificates=roots) as client:
            return COMMANDS[args.command](client, args, printer)
    except UsageError as exc:
        printer.note(f"mintleaf: error: {exc}")
        return 2
    except MintleafError as exc:
        for line in describe_error(exc, target):
            printer.note(line)
        return 1
    except KeyboardInterrupt:
        printer.note("interrupted")
        return 130
    except BrokenPipeError:
        # `mintleaf ... | head`: the reader is gone; silence the interpreter's own flush error.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 1
