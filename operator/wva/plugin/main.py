"""``kubectl wva``: the kubectl plugin (console script ``kubectl-wva``).

- ``kubectl wva status [-n NS | -A] [-o wide|json]``: every VariantAutoscaling with its replicas and
  the reason code of its last decision;
- ``kubectl wva explain [NS/]NAME``: the decision record of one VA, read from the operator through
  the API server's service proxy (or ``--operator URL`` / ``--records FILE``), rendered as by
  ``wva explain``; without a reachable operator, the VA's ``status.lastDecision``;
- ``kubectl wva config [NS/]NAME``: the effective configuration of the VA's model, each value with
  where it came from (built-in default, the saturation ConfigMap's ``default`` or model entry, the
  VA's own ``spec.scaleToZero``).

``--kubeconfig``, ``--context`` and ``-n/--namespace`` work as kubectl's, before or after the
command. The operator's namespace is found from its Deployment (label
``app.kubernetes.io/part-of=workload-variant-autoscaler``), or given with ``--wva-namespace``.
Errors are one line on stderr with exit code 2 (1 when the API server refuses or fails).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from wva.api.constants import GROUP, PLURAL, VERSION

__all__ = ["main"]

PROG = "kubectl wva"
PART_OF = "app.kubernetes.io/part-of=workload-variant-autoscaler"
DEFAULT_WVA_NAMESPACE = "workload-variant-autoscaler-system"
DEFAULT_SATURATION_CONFIG_MAP = "saturation-scaling-config"


class PluginError(Exception):
    """A one-line problem for the user; ``code`` is the exit status, ``status`` the API's HTTP status if any."""

    def __init__(self, message: str, code: int = 2, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--kubeconfig", metavar="FILE",
                        help="the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    common.add_argument("--context", metavar="NAME", help="the kubeconfig context to use")
    common.add_argument("-n", "--namespace", metavar="NS", help="the namespace (default: the context's)")
    common.add_argument("--wva-namespace", metavar="NS",
                        help="where the operator runs (default: found from its Deployment)")
    common.add_argument("--request-timeout", metavar="SECONDS", type=float, help="per API request (default 10)")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog=PROG, parents=[common], description="Inspect wva's autoscaling decisions.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", parents=[common], help="every VariantAutoscaling and its last decision")
    status.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    status.add_argument("-o", "--output", choices=("text", "wide", "json"), default="text")
    explain = commands.add_parser("explain", parents=[common], help="why one VA has the replicas it has")
    explain.add_argument("target", metavar="[NAMESPACE/]NAME")
    explain.add_argument("--operator", metavar="URL", help="the operator's metrics endpoint instead of the proxy")
    explain.add_argument("--records", metavar="FILE", help="records saved from /debug/decisions or by the demo")
    explain.add_argument("--record", metavar="ID", help="a specific record id (default: the latest)")
    explain.add_argument("-o", "--output", choices=("text", "json"), default="text")
    explain.add_argument("--insecure-skip-tls-verify", action="store_true",
                         help="with --operator https://...: do not verify its certificate")
    explain.add_argument("--token-file", metavar="FILE",
                         help="with --operator: a bearer token allowed to get /debug/decisions/* on the "
                              "operator's secure metrics port")
    config = commands.add_parser("config", parents=[common], help="the effective configuration of one VA's model")
    config.add_argument("target", metavar="[NAMESPACE/]NAME")
    config.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return parser


class Cluster:
    """The API calls the plugin makes (blocking: a short-lived command, not the operator)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config

        kubeconfig, context = getattr(args, "kubeconfig", None), getattr(args, "context", None)
        try:
            contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            if context and chosen is None:
                raise PluginError(f"context {context!r} not found in the kubeconfig")
            self.api = k8s_config.new_client_from_config(config_file=kubeconfig, context=context)
        except PluginError:
            raise
        except (k8s_config.ConfigException, OSError, TypeError, KeyError) as exc:
            raise PluginError(f"cannot load the kubeconfig: {exc}") from None
        self.default_namespace = str(((chosen or {}).get("context") or {}).get("namespace") or "default")
        self.timeout = float(getattr(args, "request_timeout", 10.0))
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self.apps = k8s.AppsV1Api(self.api)

    def _call(self, what: str, fn: Any, *a: Any, **kw: Any) -> Any:
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*a, _request_timeout=self.timeout, **kw)
        except ApiException as exc:
            reason = _api_message(exc)
            raise PluginError(f"{what}: {exc.status} {reason}", code=1, status=int(exc.status or 0)) from None
        except (HTTPError, OSError) as exc:
            raise PluginError(f"{what}: cannot reach the API server: {exc}", code=1) from None

    def vas(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            answer = self._call("list VariantAutoscalings", self.custom.list_cluster_custom_object, GROUP, VERSION,
                                PLURAL)
        else:
            answer = self._call(f"list VariantAutoscalings in {namespace}", self.custom.list_namespaced_custom_object,
                                GROUP, VERSION, namespace, PLURAL)
        return list(answer.get("items") or [])

    def va(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call(f"get VariantAutoscaling {namespace}/{name}",
                                           self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace,
                                           PLURAL, name)
        return found

    def operator(self, wva_namespace: str | None) -> tuple[str, dict[str, str]]:
        """(namespace, env of the operator container) from its Deployment; defaults when not found."""
        try:
            if wva_namespace:
                items = self._call("list Deployments", self.apps.list_namespaced_deployment, wva_namespace,
                                   label_selector=PART_OF).items
            else:
                items = self._call("list Deployments", self.apps.list_deployment_for_all_namespaces,
                                   label_selector=PART_OF).items
        except PluginError:
            items = []
        if not items:
            return wva_namespace or DEFAULT_WVA_NAMESPACE, {}
        deployment = sorted(items, key=lambda d: (d.metadata.namespace, d.metadata.name))[0]
        env: dict[str, str] = {}
        for container in deployment.spec.template.spec.containers or []:
            for var in container.env or []:
                if var.value is not None:
                    env.setdefault(var.name, var.value)
        return deployment.metadata.namespace, env

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            cm = self.core.read_namespaced_config_map(name, namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise PluginError(f"get ConfigMap {namespace}/{name}: {exc.status} {_api_message(exc)}", code=1) from None
        return {"data": dict(cm.data or {})}

    def decision_records(self, wva_namespace: str, namespace: str, name: str) -> list[dict[str, Any]]:
        """The operator's records for one VA through the API server's service proxy."""
        from wva.replay.explain_cli import records_from_answer

        services = self._call("list Services", self.core.list_namespaced_service, wva_namespace,
                              label_selector=PART_OF).items
        target = _metrics_port(services)
        if target is None:
            raise PluginError(f"no wva metrics Service in namespace {wva_namespace}")
        try:
            answer = self._call(
                f"GET the operator's /debug/decisions through services/{target}/proxy",
                self.core.connect_get_namespaced_service_proxy_with_path, target, wva_namespace,
                f"debug/decisions/{namespace}/{name}",
            )
        except PluginError as exc:
            if exc.status == 401:
                raise PluginError(f"{exc}: {PROXY_NO_TOKEN}", code=1) from None
            raise
        try:
            data = json.loads(answer) if isinstance(answer, str | bytes) else answer
        except ValueError:
            raise PluginError("the operator's answer is not JSON", code=1) from None
        return records_from_answer(data, f"services/{target}/proxy")


PROXY_NO_TOKEN = ("the operator's metrics port is secure and wants a bearer token, which the API server's "
                  "service proxy does not pass on")


def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def _metrics_port(services: Sequence[Any]) -> str | None:
    """``scheme:name:port`` of the operator's metrics Service port, for the service proxy."""
    for svc in sorted(services, key=lambda s: s.metadata.name):
        for port in svc.spec.ports or []:
            if port.name in ("http-metrics", "https-metrics", "metrics", "https"):
                scheme = "https" if (port.name or "").startswith("https") else "http"
                return f"{scheme}:{svc.metadata.name}:{port.port}"
    return None


def _target(text: str, namespace: str) -> tuple[str, str]:
    ns, sep, name = text.rpartition("/")
    if not sep:
        ns, name = namespace, text
    if not ns or not name or "/" in ns:
        raise PluginError(f"expected [NAMESPACE/]NAME, got {text!r}")
    return ns, name


def _namespace(args: argparse.Namespace, cluster: Cluster) -> str:
    return str(getattr(args, "namespace", None) or cluster.default_namespace)


def cmd_status(args: argparse.Namespace, cluster: Cluster) -> str:
    from wva.plugin.views import render_status

    namespace = None if args.all_namespaces else _namespace(args, cluster)
    vas = cluster.vas(namespace)
    if args.output == "json":
        from wva.plugin.views import STATUS_COLUMNS, status_rows

        rows = status_rows(vas, datetime.datetime.now(datetime.UTC))
        return json.dumps([dict(zip((c.lower() for c in STATUS_COLUMNS), r, strict=True)) for r in rows],
                          indent=2) + "\n"
    return render_status(vas, datetime.datetime.now(datetime.UTC), wide=args.output == "wide")


def cmd_explain(args: argparse.Namespace, cluster: Cluster | None) -> str:
    from pathlib import Path

    from wva.decisions.explain import render_explanation
    from wva.replay.explain_cli import (
        ExplainError,
        choose_record,
        read_token_file,
        records_from_file,
        records_from_operator,
    )

    default_ns = str(getattr(args, "namespace", None) or (cluster.default_namespace if cluster else "default"))
    namespace, name = _target(args.target, default_ns)
    try:
        if args.records:
            records = records_from_file(Path(args.records), namespace, name)
        elif args.operator:
            records = records_from_operator(args.operator, namespace, name, args.insecure_skip_tls_verify,
                                            token=read_token_file(getattr(args, "token_file", None)))
        else:
            assert cluster is not None
            wva_ns, _env = cluster.operator(getattr(args, "wva_namespace", None))
            try:
                records = cluster.decision_records(wva_ns, namespace, name)
            except (PluginError, ExplainError) as exc:
                va = cluster.va(namespace, name)
                if PROXY_NO_TOKEN in str(exc):
                    hint = ("use --operator https://localhost:8443 --token-file FILE --insecure-skip-tls-verify "
                            "after kubectl port-forward")
                else:
                    hint = f"needs get on services/proxy in {wva_ns}; or use --operator URL after kubectl port-forward"
                return _last_decision(va, f"{exc} ({hint})")
        record = choose_record(records, args.record, namespace, name)
    except ExplainError as exc:
        raise PluginError(str(exc)) from None
    if args.output == "json":
        return json.dumps(record, indent=2, sort_keys=True) + "\n"
    return render_explanation(record, name)


def _last_decision(va: Mapping[str, Any], why: str) -> str:
    meta = va.get("metadata") or {}
    decision = (va.get("status") or {}).get("lastDecision") or {}
    head = f"{meta.get('namespace')}/{meta.get('name')}: the full decision record is not available: {why}\n"
    if not decision:
        return head + "  no decision yet (status.lastDecision is empty)\n"
    return head + (f"  last decision {decision.get('reason')} at {decision.get('time')} "
                   f"(record {decision.get('recordID')}, config {decision.get('configHash')}):\n"
                   f"  {decision.get('message')}\n")


def cmd_config(args: argparse.Namespace, cluster: Cluster) -> str:
    from wva.plugin.views import effective_config, render_config

    namespace, name = _target(args.target, _namespace(args, cluster))
    va = cluster.va(namespace, name)
    model = (va.get("spec") or {}).get("modelID")
    siblings = [v for v in cluster.vas(namespace) if (v.get("spec") or {}).get("modelID") == model]
    wva_ns, env = cluster.operator(getattr(args, "wva_namespace", None))
    cm_name = env.get("SATURATION_CONFIG_MAP_NAME", DEFAULT_SATURATION_CONFIG_MAP)
    cm = cluster.config_map(wva_ns, cm_name)
    ref = f"{wva_ns}/{cm_name}" + ("" if cm is not None else " (not found: built-in defaults)")
    view = effective_config(va, siblings or [va], cm, config_map_ref=ref,
                            direct_actuation=env.get("ACTUATION_MODE", "hpa").lower() == "direct")
    if args.output == "json":
        return json.dumps(view.to_dict(), indent=2, sort_keys=True) + "\n"
    return render_config(view)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "explain" and (args.records or args.operator):
            out = cmd_explain(args, None)
        else:
            cluster = Cluster(args)
            out = {"status": cmd_status, "explain": cmd_explain, "config": cmd_config}[args.command](args, cluster)
    except PluginError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
