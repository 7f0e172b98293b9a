"""``wva explain NAMESPACE/NAME``: why a VariantAutoscaling has the replicas it has.

Three ways to get the record: from a running operator (``--operator URL``, its metrics port),
from a saved file (``--records FILE``: what ``/debug/decisions/...`` returned, or the demo's
``decisions.json``), or recomputed from Prometheus at an instant (``--prometheus URL --config
FILE [--at TIME]``) with the engine's own decision function, without a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wva.decisions.explain import render_explanation

__all__ = ["ExplainError", "add_explain_arguments", "choose_record", "records_from_answer", "records_from_file",
           "records_from_operator", "run_explain"]

PROG = "wva explain"
DEFAULT_OPERATOR_URL = "https://localhost:8443"


class ExplainError(Exception):
    """A one-line user-facing problem."""


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="NAMESPACE/NAME", help="the VariantAutoscaling to explain")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--operator", metavar="URL", default=None,
                        help=f"a running operator's metrics endpoint (default {DEFAULT_OPERATOR_URL})")
    source.add_argument("--records", metavar="FILE", help="records saved from /debug/decisions or by the demo")
    source.add_argument("--prometheus", metavar="URL", help="recompute the decision from Prometheus (needs --config)")
    source.add_argument("--prometheus-data", metavar="DIR",
                        help="like --prometheus, on a saved Prometheus data folder (wva demo keeps one)")
    parser.add_argument("--config", metavar="FILE", help="model file for --prometheus (see docs/backtest.md)")
    parser.add_argument("--at", metavar="TIME", default="now",
                        help="instant for --prometheus: RFC 3339, Unix seconds, now or now-5m (default now)")
    parser.add_argument("--record", metavar="ID", help="a specific record id (default: the latest)")
    parser.add_argument("--output", "-o", choices=("text", "json"), default="text")
    parser.add_argument("--insecure-skip-tls-verify", action="store_true",
                        help="do not verify the Prometheus or operator TLS certificate (the operator's "
                             "own is self-signed unless it was given one)")
    parser.add_argument("--token-file", metavar="FILE",
                        help="a bearer token for the operator's secure metrics port, of an identity allowed to "
                             "get /debug/decisions/* (e.g. kubectl create token ... > FILE)")


def run_explain(args: argparse.Namespace) -> int:
    try:
        namespace, name = _target(args.target)
        record = _find(args, namespace, name)
    except ExplainError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(record, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render_explanation(record, name))
    return 0


def _target(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ExplainError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


def _find(args: argparse.Namespace, namespace: str, name: str) -> dict[str, Any]:
    if args.prometheus or args.prometheus_data:
        if not args.config:
            raise ExplainError("--prometheus needs --config FILE (the model file naming the variants)")
        if args.prometheus:
            return _recompute(args, args.prometheus, namespace, name)
        from wva.replay.saved_data import SavedDataError, serve_saved_data

        try:
            with serve_saved_data(args.prometheus_data) as url:
                return _recompute(args, url, namespace, name)
        except SavedDataError as exc:
            raise ExplainError(str(exc)) from None
    if args.config:
        raise ExplainError("--config is only used with --prometheus")
    if args.records:
        records = records_from_file(Path(args.records), namespace, name)
    else:
        records = records_from_operator(args.operator or DEFAULT_OPERATOR_URL, namespace, name,
                                         args.insecure_skip_tls_verify, token=read_token_file(args.token_file))
    return choose_record(records, args.record, namespace, name)


def choose_record(records: list[dict[str, Any]], record_id: str | None, namespace: str, name: str) -> dict[str, Any]:
    """The record with ``record_id``, else the latest."""
    if record_id:
        chosen = next((r for r in records if r.get("id") == record_id), None)
        if chosen is None:
            ids = ", ".join(str(r.get("id")) for r in records[-5:])
            raise ExplainError(f"no record {record_id!r} for {namespace}/{name} (latest: {ids})")
        return chosen
    return records[-1]


def records_from_file(path: Path, namespace: str, name: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExplainError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ExplainError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    records: Any = None
    if isinstance(data, Mapping) and "records" in data:
        if (data.get("namespace"), data.get("name")) == (namespace, name):
            records = data["records"]
    elif isinstance(data, Mapping) and isinstance(data.get("variantAutoscalings"), Mapping):
        records = data["variantAutoscalings"].get(f"{namespace}/{name}")
        if records is None:
            known = ", ".join(sorted(data["variantAutoscalings"])) or "none"
            raise ExplainError(f"{path}: no records for {namespace}/{name} (it has: {known})")
    if not isinstance(records, list) or not records:
        raise ExplainError(f"{path}: no records for {namespace}/{name}")
    return [r for r in records if isinstance(r, dict)]


def read_token_file(path: str | None) -> str | None:
    """The bearer token in ``path`` (surrounding whitespace dropped); None without a path."""
    if not path:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ExplainError(f"{path}: cannot read the token: {exc.strerror or exc}") from None
    if not token:
        raise ExplainError(f"{path}: the token file is empty")
    return token


def records_from_operator(
    base: str, namespace: str, name: str, insecure: bool, token: str | None = None
) -> list[dict[str, Any]]:
    url = f"{base.rstrip('/')}/debug/decisions/{urllib.parse.quote(namespace)}/{urllib.parse.quote(name)}"
    context = None
    if insecure and url.startswith("https:"):
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = ""
        with contextlib.suppress(ValueError, AttributeError):
            detail = str(json.loads(exc.read()).get("error", ""))
        if exc.code == 401:
            detail = detail or ("the operator's metrics port is secure: --token-file FILE with a token allowed to "
                                "get /debug/decisions/*" if not token else "the token was not accepted")
        elif exc.code == 403:
            detail = detail or "the token's identity may not get this path (ClusterRole <release>-metrics-reader)"
        raise ExplainError(f"{url}: HTTP {exc.code}{': ' + detail if detail else ''}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ExplainError(f"cannot read {url}: {reason}") from None
    return records_from_answer(data, url)


def records_from_answer(data: Any, where: str) -> list[dict[str, Any]]:
    """The records of a ``/debug/decisions/<ns>/<name>`` answer."""
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list) or not records:
        raise ExplainError(f"{where}: the answer holds no records")
    return [r for r in records if isinstance(r, dict)]


def _recompute(args: argparse.Namespace, url: str, namespace: str, name: str) -> dict[str, Any]:
    from prometheus_api_client import PrometheusConnect

    from wva.decisions import decide_group
    from wva.replay.config import ModelFileError, load_model_file
    from wva.replay.history import HistoryError, fetch_history, parse_time, replicas_at

    try:
        model = load_model_file(args.config)
        at = parse_time(args.at, time.time())
    except (ModelFileError, ValueError) as exc:
        raise ExplainError(str(exc)) from None
    if model.namespace != namespace:
        raise ExplainError(f"{args.config}: its namespace is {model.namespace!r}, not {namespace!r}")
    if name not in {v.name for v in model.variants}:
        known = ", ".join(v.name for v in model.variants)
        raise ExplainError(f"{args.config}: no variant {name!r} (it has: {known})")
    client = PrometheusConnect(url=url, disable_ssl=bool(args.insecure_skip_tls_verify))
    try:
        history = fetch_history(client, model, at, at, 1.0)
    except HistoryError as exc:
        raise ExplainError(f"{url}: {exc}") from None
    rows = replicas_at(model, history.samples[0], at)
    # without a cluster, the replicas that exist are the pods reporting at that instant
    current = {v.name: sum(1 for r in rows if r.variant_name == v.name) for v in model.variants}
    variants = [v.input(current[v.name]) for v in model.variants]
    decision = decide_group(
        model.model, model.namespace, variants, rows or None, model.config, now=at,
        unavailable=None if rows else f"no samples of model {model.model!r} in namespace {namespace!r} at "
                                      f"{args.at}", source="prometheus (recomputed)",
    )
    return decision.record.to_dict()
