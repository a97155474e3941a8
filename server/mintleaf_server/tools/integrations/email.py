"""Email over SMTP (aiosmtplib): setup `host, port, user, password` (seed names; `username`,
`use_tls` and `start_tls` accepted too), arguments `to, from, subject, body`, output `{success}`.

The connection goes to a vetted address: a host named by the tool's setup or metadata passes the
address policy (resolved once, connected by IP, the name kept for STARTTLS/TLS checks); a host
from the server's `[integrations.email]` table is the operator's and is trusted."""

from __future__ import annotations

import asyncio
import socket
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from ..errors import ToolSetupInvalid, ToolTimeout
from ..network import resolve_checked
from .base import IntegrationCall, Method, Provider

__all__ = ["PROVIDER"]


def _addresses(value: Any) -> list[str]:
    if isinstance(value, str):
        return [a.strip() for a in value.split(",") if a.strip()]
    return [str(a).strip() for a in value if str(a).strip()]


async def _connect(host: str, port: int, call: IntegrationCall) -> socket.socket:
    ip = await resolve_checked(host, port, call.ctx.allow_networks(), call.ctx.resolver)
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(call.timeout):
            await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def send(call: IntegrationCall) -> dict[str, Any]:
    host = str(call.setting("host", required=True))
    raw_port = call.setting("port", default=None)
    use_tls = bool(call.setting("use_tls", default=False))
    try:
        port = int(raw_port) if raw_port not in (None, "") else (465 if use_tls else 587)
    except (TypeError, ValueError):
        raise ToolSetupInvalid("port", "must be a port number") from None
    if not 0 < port < 65536:
        raise ToolSetupInvalid("port", "must be between 1 and 65535")
    user = call.setting("user", default=None)
    password = call.setting("password", default=None)
    start_tls = call.setting("start_tls", default=None)

    message = EmailMessage()
    message["From"] = call.arguments["from"]
    message["To"] = ", ".join(_addresses(call.arguments["to"]))
    for header in ("cc", "bcc"):
        if call.arguments.get(header):
            message[header.capitalize()] = ", ".join(_addresses(call.arguments[header]))
    message["Subject"] = call.arguments["subject"]
    message.set_content(call.arguments["body"])

    user_chosen = "host" in call.user_setup
    sock = None
    try:
        if user_chosen:
            sock = await _connect(host, port, call)
        smtp = aiosmtplib.SMTP(
            hostname=host,
            port=None if sock is not None else port,
            sock=sock,
            username=str(user) if user else None,
            password=str(password) if password else None,
            use_tls=use_tls,
            start_tls=None if start_tls is None else bool(start_tls),
            timeout=call.timeout,
        )
        async with smtp:
            await smtp.send_message(message)
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise call.error(
            exc.code, "the SMTP server refused the login (check setup 'user' and 'password')", retryable=False
        ) from None
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [e.code for e in exc.recipients]
        raise call.error(
            codes[0] if codes else 550, "the SMTP server refused every recipient", retryable=False
        ) from None
    except aiosmtplib.SMTPTimeoutError:
        raise ToolTimeout("email: the SMTP server timed out") from None
    except TimeoutError:
        raise ToolTimeout("email: connecting to the SMTP server timed out") from None
    except aiosmtplib.SMTPResponseException as exc:
        raise call.error(
            exc.code, f"the SMTP server answered: {exc.message}", retryable=exc.code >= 400 and exc.code < 500
        ) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise call.error(
            0, f"could not send through {host}:{port} ({exc.__class__.__name__})", retryable=True
        ) from None
    finally:
        if sock is not None:
            sock.close()
    return {"success": True}


PROVIDER = Provider(
    name="email",
    description="Send an email through an SMTP server.",
    default_base_url="",
    setup_keys={
        "user": ("user", "username"),
        "host": ("host",),
        "port": ("port",),
        "password": ("password",),
    },
    methods={
        "send": Method(
            name="send",
            description="Send a plain-text email.",
            arguments={
                "type": "object",
                "properties": {
                    "to": {
                        "anyOf": [
                            {"type": "string", "minLength": 3},
                            {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        ],
                        "description": "Recipient address(es).",
                    },
                    "from": {"type": "string", "minLength": 3, "description": "Sender address."},
                    "subject": {"type": "string"},
                    "body": {"type": "string"},
                    "cc": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                    "bcc": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                },
                "required": ["to", "from", "subject", "body"],
                "additionalProperties": False,
            },
            run=send,
        )
    },
)
