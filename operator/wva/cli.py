"""The ``wva`` command: ``run`` the operator, ``demo`` it locally, ``emulate`` a vLLM pod, print ``version``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wva import __version__

if TYPE_CHECKING:
    from wva.settings import Settings

log = logging.getLogger("wva")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # kopf's own chatter at INFO is per-object; keep it one level quieter than ours
    logging.getLogger("kopf").setLevel(max(logging.getLogger().level, logging.WARNING))


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. With ``command`` (the sub-command being run), only that sub-command's own
    arguments are defined: the others are listed by ``wva --help`` but their modules are not imported,
    so ``wva run`` never loads the demo's simulator or the replay tools. Without it, everything is."""
    parser = argparse.ArgumentParser(prog="wva", description="Workload-Variant-Autoscaler for vLLM on Kubernetes")
    parser.add_argument("--version", action="version", version=f"wva {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def wanted(name: str) -> bool:
        return command is None or command == name

    run = sub.add_parser(
        "run",
        help="run the operator",
        description=(
            "Run the operator against the cluster (in-cluster config, else kubeconfig). Configuration comes "
            "from environment variables (PROMETHEUS_BASE_URL, COLLECTOR_V2, GLOBAL_OPT_INTERVAL, ACTUATION_MODE, "
            "...; see docs/configuration.md)."
        ),
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], metavar="NS",
        help="watch only this namespace (repeatable; also WATCH_NAMESPACE=a,b)",
    )
    run.add_argument("--metrics-port", type=int, default=8443,
                     help="port of /metrics and /debug/decisions (default 8443; -1 disables)")
    run.add_argument(
        "--metrics-secure", nargs="?", const="true", default=None, metavar="BOOL",
        help="serve the metrics port over HTTPS and authenticate and authorize every request with the "
             "Kubernetes API (TokenReview, SubjectAccessReview); false: plain HTTP without authentication "
             "(default: WVA_METRICS_SECURE, else true)",
    )
    run.add_argument(
        "--metrics-cert-path", default=None, metavar="DIR",
        help="folder with tls.crt and tls.key for the metrics port, reloaded when they change "
             "(default: WVA_METRICS_CERT_PATH, else a self-signed certificate made at start)",
    )
    run.add_argument("--probe-port", type=int, default=8081,
                     help="port of /healthz and /readyz, always plain HTTP (default 8081)")
    run.add_argument("--log-level", default=None, help="debug, info, warning or error (default: LOG_LEVEL or info)")
    run.add_argument(
        "--shards", default=None, metavar="K",
        help="split the model groups over K operator processes, each deciding only its own shard "
             "(default: WVA_SHARDS, else 1)",
    )
    run.add_argument(
        "--shard-index", default=None, metavar="I",
        help="this process' shard, 0 to K-1, or 'ordinal' for the trailing -<n> of POD_NAME (a StatefulSet "
             "ordinal) (default: WVA_SHARD_INDEX, else 0)",
    )

    demo = sub.add_parser("demo", help="run the whole autoscaler locally on an embedded environment")
    if wanted("demo"):
        from wva.sim.demo_cli import add_demo_arguments

        add_demo_arguments(demo)

    backtest = sub.add_parser("backtest", help="replay the engine over a model's recorded Prometheus history")
    if wanted("backtest"):
        from wva.replay.backtest_cli import add_backtest_arguments

        add_backtest_arguments(backtest)

    emulate = sub.add_parser("emulate", help="serve one emulated vLLM pod's /metrics (for e2e deployments)")
    emulate.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0: a pod listens on its pod IP)"
    )
    emulate.add_argument("--port", type=int, default=8000)
    emulate.add_argument("--model", required=True)
    emulate.add_argument("--pod", default=os.environ.get("POD_NAME", "vllm"))
    emulate.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "default"))

    explain = sub.add_parser(
        "explain", help="explain a VariantAutoscaling's last decision (from the operator, a file or Prometheus)"
    )
    if wanted("explain"):
        from wva.replay.explain_cli import add_explain_arguments

        add_explain_arguments(explain)

    sub.add_parser("version", help="print the version")
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` runs: its first word that is not an option (``wva`` has no option with a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def run_operator(
    namespaces: Sequence[str], metrics_port: int, probe_port: int, log_level: str | None,
    metrics_secure: str | None = None, metrics_cert_path: str | None = None,
    shards: str | None = None, shard_index: str | None = None,
) -> int:
    import kopf

    from wva.settings import Settings, SettingsError, with_shard_flags

    try:
        settings = Settings.from_env(require_prometheus=os.environ.get("METRICS_SOURCE", "").strip().lower() != "pods")
        settings = with_shard_flags(settings, shards, shard_index)
        settings = _metrics_flags(settings, metrics_port, probe_port, metrics_secure, metrics_cert_path)
    except SettingsError as exc:
        configure_logging("INFO")
        for problem in exc.problems:
            log.error("Configuration error: %s", problem)
        return 2
    configure_logging(log_level or settings.log_level)
    import wva.handlers  # noqa: F401  (registers the handlers)
    from wva.gctuning import tune_gc
    from wva.runtime import Runtime
    from wva.servingcerts import ServingCertError

    try:
        runtime = Runtime.build(settings, metrics_port=metrics_port, probe_port=probe_port)
    except ServingCertError as exc:
        log.error("Configuration error: metrics serving certificate %s: %s", settings.metrics_cert_path, exc)
        return 2
    tune_gc()  # after the imports and the build: what exists now lives as long as the process
    watched = list(namespaces) or list(settings.watch_namespaces)
    if runtime.resync is not None:
        runtime.resync.namespaces = watched
    memo = kopf.Memo(runtime=runtime)
    log.info("Starting wva %s namespaces=%s", __version__, ",".join(watched) or "<all>")
    asyncio.run(
        kopf.operator(
            clusterwide=not watched,
            namespaces=watched,
            standalone=True,
            memo=memo,
        )
    )
    return 0


def _metrics_flags(
    settings: Settings, metrics_port: int, probe_port: int, secure: str | None, cert_path: str | None
) -> Settings:
    """The settings with ``--metrics-secure`` / ``--metrics-cert-path`` applied over the environment's."""
    from wva.settings import SettingsError, metrics_cert_dir, metrics_secure_flag

    update: dict[str, object] = {}
    problems: list[str] = []
    for flag, raw, field, parse in (("--metrics-secure", secure, "metrics_secure", metrics_secure_flag),
                                    ("--metrics-cert-path", cert_path, "metrics_cert_path", metrics_cert_dir)):
        if raw is None:
            continue
        try:
            update[field] = parse(raw)
        except ValueError as exc:
            problems.append(f"{flag}={raw!r}: {exc}")
    merged = settings.model_copy(update=update)
    if merged.metrics_cert_path and not merged.metrics_secure:
        problems.append("--metrics-cert-path needs secure metrics (--metrics-secure is false)")
    if merged.metrics_secure and metrics_port >= 0 and metrics_port == probe_port:
        problems.append(f"--metrics-port and --probe-port are both {metrics_port}: with secure metrics the probes "
                        "(plain HTTP, no token) need a port of their own")
    if problems:
        raise SettingsError(problems)
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(_command_of(argv)).parse_args(argv)
    if args.command == "version":
        print(f"wva {__version__}")
        return 0
    if args.command == "run":
        return run_operator(args.namespace, args.metrics_port, args.probe_port, args.log_level,
                            args.metrics_secure, args.metrics_cert_path, args.shards, args.shard_index)
    if args.command == "emulate":
        configure_logging(os.environ.get("LOG_LEVEL", "info"))
        from wva.sim.vllm import serve_single_pod

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_single_pod(args.model, args.port, args.namespace, args.pod, host=args.host))
        return 0
    if args.command == "explain":
        from wva.replay.explain_cli import run_explain

        return run_explain(args)
    if args.command == "demo":
        from wva.sim.demo_cli import run_demo

        return run_demo(args)
    if args.command == "backtest":
        from wva.replay.backtest_cli import run_backtest

        return run_backtest(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
