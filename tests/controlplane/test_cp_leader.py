"""Leader election between two wva processes on a real Lease in the release namespace.

Two ``wva run`` processes, each configured like the chart's pod and authenticated as the chart's
ServiceAccount, compete for one Lease (its name unique to the test, a 6 s lease duration) while
watching the same namespace, which holds one VariantAutoscaling and its one-pod Deployment. It proves:

- exactly one process leads (``wva_leader`` 1, the other 0, and never two at once over several renew
  rounds), and the Lease object names that process as ``holderIdentity``;
- only the leader writes: the standby makes no write to any resource but the Lease (in particular no
  patch of ``variantautoscalings/status``) and exposes no ``wva_desired_replicas`` series, while the
  leader does and the VA gets its decision in status;
- after a SIGKILL of the leader (no chance to release the Lease) the standby takes over once the Lease
  expires: not before (it respects the holder's lease), and within lease duration + one renew interval
  + slack; the Lease names the new holder with ``leaseTransitions`` one higher; the new leader writes a
  fresh decision and, when load rises, scales the Deployment through its pods;
- a graceful SIGTERM of the leader releases the Lease, so a standby takes over well before the lease
  duration has passed;
- a partition, not a crash (the leader's connection to the apiserver hangs through a proxy, while
  Prometheus still answers it): the cut-off leader steps down by its renew deadline, before the standby
  can take the expired Lease, so at no moment do two processes lead and publish decisions; when the link
  returns it finds the Lease taken and stays a standby.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from conftest import LiveCluster
from cpsupport import (
    LEASE_SECONDS,
    RENEW_SECONDS,
    SLACK_SECONDS,
    LoadDriver,
    WvaProcess,
    assert_clean_log,
    condition,
    deploy_variant,
    desired_replicas,
    election_env,
    get_va,
    samples,
    wait_ready_pods,
    wait_until,
)
from test_cp_loop import IDLE, SATURATED, gauge

APP = "llama-elect"


# --- a connection to the apiserver that can be cut ---------------------------------------------------
class HoldingProxy:
    """A TCP forwarder to the apiserver (TLS passes through untouched). ``hold()`` cuts the link the way a
    network partition does: connections stay open and new ones are accepted, but no byte gets through,
    so every request hangs until the client's own timeout; ``release()`` lets traffic flow again."""

    def __init__(self, server_url: str) -> None:
        target = urllib.parse.urlsplit(server_url)
        self.target = (target.hostname or "127.0.0.1", target.port or 443)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="holding-proxy").start()

    def hold(self) -> None:
        self.flowing.clear()

    def release(self) -> None:
        self.flowing.set()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                while not self.flowing.wait(0.5):  # held: the bytes wait here, nothing is sent or closed
                    if self.closed.is_set():
                        return
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.flowing.set()
        for sock in [self.listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()


def through(proxy: HoldingProxy, wva: WvaProcess, tmp_path: Path) -> WvaProcess:
    """Point a not yet started process' kubeconfig at the proxy instead of the apiserver."""
    source = Path(wva.env["KUBECONFIG"])
    config = yaml.safe_load(source.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = proxy.url
    target = tmp_path / f"proxied-{source.name}"
    target.write_text(yaml.safe_dump(config))
    wva.env["KUBECONFIG"] = str(target)
    return wva


# --- reading a process' metrics ---------------------------------------------------------------------
def leader_gauge(wva: WvaProcess) -> float | None:
    """``wva_leader`` as the process exposes it now; None when it does not answer."""
    found = samples(wva.metrics(), "wva_leader")
    return found[0][1] if found else None


# the metrics port's TokenReviews and SubjectAccessReviews are creates that store nothing: every replica,
# standby included, makes them when the test reads its metrics
REVIEWS = frozenset({"tokenreviews", "subjectaccessreviews"})


def writes(metrics: str) -> dict[tuple[str, str], float]:
    """Requests of a mutating verb by (verb, resource), summed over outcomes; the reviews are no writes."""
    out: dict[tuple[str, str], float] = {}
    for labels, value in samples(metrics, "wva_kube_api_requests_total"):
        if labels.get("resource") in REVIEWS:
            continue
        if labels.get("verb") in ("create", "patch", "update", "delete") and value > 0:
            key = (labels["verb"], labels["resource"])
            out[key] = out.get(key, 0.0) + value
    return out


def status_patches(metrics: str) -> float:
    return writes(metrics).get(("patch", "variantautoscalings/status"), 0.0)


def desired_series(metrics: str) -> list[tuple[dict[str, str], float]]:
    return samples(metrics, "wva_desired_replicas")


# --- the Lease ----------------------------------------------------------------------------------------
def leader_among(processes: list[WvaProcess]) -> WvaProcess | None:
    """The one process reporting ``wva_leader`` 1 while every other reports 0, else None."""
    values = [leader_gauge(p) for p in processes]
    if values.count(1.0) == 1 and values.count(0.0) == len(values) - 1:
        return processes[values.index(1.0)]
    return None


def last_run_time(va: dict[str, Any]) -> datetime.datetime | None:
    value = ((va.get("status") or {}).get("desiredOptimizedAlloc") or {}).get("lastRunTime")
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def one_variant_for_election(live: LiveCluster, model: str) -> dict[str, str]:
    """One VA with a one-pod Deployment, and the env of processes that compete for the test's Lease."""
    deploy_variant(live.kube, live.namespace, APP, model, accelerator="L4", cost="5", min_replicas=1, max_replicas=3)
    wait_ready_pods(live.kube, live.namespace, APP, 1, 90, "the first pod ready")
    return election_env(live.lease)


def test_one_leader_writes_and_the_standby_takes_over_when_it_dies(live: LiveCluster) -> None:
    kube, namespace = live.kube, live.namespace
    apps = k8s.AppsV1Api(kube)
    env = one_variant_for_election(live, "meta/llama-leader")

    names = ["elect-a", "elect-b", "elect-c"]
    procs = {n: live.wva(n, **env) for n in names}
    pair = [procs["elect-a"], procs["elect-b"]]
    try:
        for proc in pair:  # both at once: they race for the Lease
            proc.start("--namespace", namespace)
        for proc in pair:
            proc.wait_ready(90)

        with LoadDriver(kube, namespace, APP) as load:
            load.set(**IDLE)
            # --- exactly one leader, named by the Lease ---------------------------------------------
            leader = wait_until(lambda: leader_among(pair), 60, "exactly one process with wva_leader 1")
            standby = pair[1 - pair.index(leader)]
            leader_name, standby_name = names[pair.index(leader)], names[pair.index(standby)]
            lease = live.read_lease()
            assert lease.spec.holder_identity == leader_name
            assert lease.spec.lease_duration_seconds == int(LEASE_SECONDS)
            # over three renew rounds the roles hold (never two leaders, never none) and the Lease is renewed
            first_renew = lease.spec.renew_time
            end = time.monotonic() + 3 * RENEW_SECONDS + 1
            while time.monotonic() < end:
                assert leader_among(pair) is leader, (leader_gauge(pair[0]), leader_gauge(pair[1]))
                time.sleep(0.3)  # sampling the roles over a fixed window: there is nothing to wait for
            lease = live.read_lease()
            assert lease.spec.holder_identity == leader_name and lease.spec.renew_time > first_renew

            # --- only the leader writes -----------------------------------------------------------------
            # the first cycles may run before Prometheus has scraped the pod: wait for the decision on metrics
            va = wait_until(
                lambda: (v := get_va(kube, namespace, APP)) and desired_replicas(v) == 1
                and (condition(v, "MetricsAvailable") or {}).get("status") == "True" and v,
                90, f"the leader's first decision on metrics; leader log:\n{leader.tail()}",
            )
            assert (condition(va, "TargetResolved") or {}).get("status") == "True", va.get("status")
            assert (condition(va, "MetricsAvailable") or {}).get("status") == "True", va.get("status")
            wait_until(lambda: gauge(leader.metrics(), "wva_desired_replicas", namespace, APP) == 1.0, 30,
                       "the leader's wva_desired_replicas")
            leader_metrics, standby_metrics = leader.metrics(), standby.metrics()
            assert status_patches(leader_metrics) >= 1, writes(leader_metrics)
            assert status_patches(standby_metrics) == 0, writes(standby_metrics)
            assert {resource for _verb, resource in writes(standby_metrics)} <= {"leases"}, writes(standby_metrics)
            assert desired_series(standby_metrics) == [], desired_series(standby_metrics)
            assert "Saturation engine started" not in standby.log_text()
            transitions_before = lease.spec.lease_transitions or 0

            # --- SIGKILL of the leader: the standby waits for the lease to expire, then takes over ------
            killed_at = time.monotonic()
            killed_wall = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
            leader.kill()
            wait_until(lambda: leader_gauge(standby) == 1.0, LEASE_SECONDS + RENEW_SECONDS + 30,
                       f"the standby leads; its log:\n{standby.tail()}", interval=0.1)
            handover = time.monotonic() - killed_at
            print(f"SIGKILL handover: {handover:.2f}s (lease {LEASE_SECONDS:g}s, renew {RENEW_SECONDS:g}s)")
            assert handover <= LEASE_SECONDS + RENEW_SECONDS + SLACK_SECONDS, f"handover took {handover:.2f}s"
            # the last renewal was at most one renew interval (plus a request) before the kill
            assert handover >= LEASE_SECONDS - RENEW_SECONDS - 1.0, f"took over a live lease after {handover:.2f}s"
            lease = live.read_lease()
            assert lease.spec.holder_identity == standby_name
            assert (lease.spec.lease_transitions or 0) == transitions_before + 1
            new_leader = standby

            # the new leader's decisions reach status: a fresh write first, then a scale-up on load
            va = wait_until(lambda: (v := get_va(kube, namespace, APP)) and (t := last_run_time(v))
                            and t > killed_wall and v, 60, f"a decision after the kill; log:\n{new_leader.tail()}")
            assert desired_replicas(va) == 1
            wait_until(lambda: gauge(new_leader.metrics(), "wva_desired_replicas", namespace, APP) == 1.0, 30,
                       "the new leader's wva_desired_replicas")
            assert status_patches(new_leader.metrics()) >= 1
            load.set(**SATURATED)
            wait_until(lambda: apps.read_namespaced_deployment(APP, namespace).spec.replicas == 3, 120,
                       f"the new leader scales up; log:\n{new_leader.tail()}")
            wait_ready_pods(kube, namespace, APP, 3, 90, "three ready pods")
            wait_until(lambda: desired_replicas(get_va(kube, namespace, APP)) == 3, 30, "status says 3")

            # --- SIGTERM of the leader releases the Lease: a fresh standby takes over at its next try ----
            third = procs["elect-c"].start("--namespace", namespace)
            third.wait_ready(90)
            wait_until(lambda: leader_among([new_leader, third]) is new_leader, 30, "the third process stands by")
            stopped_at = time.monotonic()
            code = new_leader.stop()
            exited = time.monotonic() - stopped_at
            assert code == 0, new_leader.tail()
            # renewed at most a renew interval before SIGTERM, the lease would still be valid for seconds:
            # a holder other than the stopped process means it released the Lease on its way out
            assert exited < LEASE_SECONDS - RENEW_SECONDS - 1.0, f"the leader took {exited:.2f}s to exit"
            lease = live.read_lease()
            assert lease.spec.holder_identity in (None, "elect-c"), lease.spec
            wait_until(lambda: leader_gauge(third) == 1.0, LEASE_SECONDS + 30, f"the third leads:\n{third.tail()}",
                       interval=0.1)
            graceful = time.monotonic() - stopped_at
            print(f"SIGTERM handover: {graceful:.2f}s (the leader exited after {exited:.2f}s)")
            # a released Lease is taken at the standby's next attempt, not after the lease ran out
            assert graceful < LEASE_SECONDS, f"graceful handover took {graceful:.2f}s"
            lease = live.read_lease()
            assert lease.spec.holder_identity == "elect-c"
            assert (lease.spec.lease_transitions or 0) == transitions_before + 2
            wait_until(lambda: gauge(third.metrics(), "wva_desired_replicas", namespace, APP) == 3.0, 60,
                       "the third leader publishes the decision")
    finally:
        codes = {n: p.stop() for n, p in procs.items() if p.alive}
    assert all(code == 0 for code in codes.values()), codes
    for name, proc in procs.items():
        assert_clean_log(proc, "leader election", name)


def test_a_leader_cut_off_from_the_apiserver_steps_down_before_the_standby_takes_over(live: LiveCluster) -> None:
    """A partition, not a crash: the leader's link to the apiserver hangs (Prometheus still answers it).

    The standby takes the Lease once it expires. The leader must have stopped leading by then, without
    waiting for its hung requests to time out: at no moment may both processes report ``wva_leader`` 1
    and both expose a ``wva_desired_replicas`` series (an HPA reading either would see two answers)."""
    kube, namespace = live.kube, live.namespace
    env = one_variant_for_election(live, "meta/llama-partition")
    proxy = HoldingProxy(live.plane.server)
    # the cut-off process serves its metrics as plain HTTP: a secure port asks the apiserver about every
    # token, so once its cached answer expires it could only answer 503, and the test reads its gauges
    leader = through(proxy, live.wva("cut-a", **env, WVA_METRICS_SECURE="false"), live.tmp_path)
    standby = live.wva("cut-b", **env)
    try:
        leader.start("--namespace", namespace)
        leader.wait_ready(90)
        wait_until(lambda: leader_gauge(leader) == 1.0, 30, "the proxied process leads")
        standby.start("--namespace", namespace)
        standby.wait_ready(90)
        with LoadDriver(kube, namespace, APP) as load:
            load.set(**IDLE)
            wait_until(lambda: gauge(leader.metrics(), "wva_desired_replicas", namespace, APP) == 1.0, 60,
                       f"the leader's decision; its log:\n{leader.tail()}")
            assert leader_among([leader, standby]) is leader

            held_at = time.monotonic()
            proxy.hold()
            # sample both gauges (the standby's first: a 1 read after its 1 is a true overlap) until the
            # standby has led, and the cut-off process not, for two renew intervals
            samples: list[tuple[float, float | None, float | None]] = []
            settled: float | None = None
            while (now := time.monotonic() - held_at) < LEASE_SECONDS + RENEW_SECONDS + 30:
                new, old = leader_gauge(standby), leader_gauge(leader)
                samples.append((now, new, old))
                if new == 1.0 and old == 0.0:
                    settled = now if settled is None else settled
                    if now - settled > 2 * RENEW_SECONDS:
                        break
                time.sleep(0.1)  # the moments matter, not only the end state: this samples, it does not wait
            took_over = min((t for t, new, _old in samples if new == 1.0), default=None)
            assert took_over is not None, f"the standby never led; its log:\n{standby.tail()}"
            last_led = max(t for t, _new, old in samples if old == 1.0)
            both = [round(t, 1) for t, new, old in samples if new == 1.0 and old == 1.0]
            print(f"partition: the standby led after {took_over:.2f}s; the cut-off leader last reported "
                  f"leading at {last_led:.2f}s")
            assert took_over <= LEASE_SECONDS + RENEW_SECONDS + SLACK_SECONDS, f"took {took_over:.2f}s"
            assert not both, (
                f"two leaders at {both} s after the cut (the standby led from {took_over:.2f}s, the cut-off "
                f"process until {last_led:.2f}s); its log:\n{leader.tail(15)}"
            )
            assert settled is not None, samples[-5:]
            assert desired_series(leader.metrics()) == [], "a process that stepped down publishes no decision"
            wait_until(lambda: gauge(standby.metrics(), "wva_desired_replicas", namespace, APP) == 1.0, 60,
                       "the new leader publishes the decision")

            # the link comes back: the old leader finds the Lease taken and stays a standby
            proxy.release()
            lease = live.read_lease()
            assert lease.spec.holder_identity == "cut-b"
            wait_until(lambda: "Leader election error" in leader.log_text(), 30, "the cut-off leader saw errors")
            end = time.monotonic() + 2 * RENEW_SECONDS + 1
            while time.monotonic() < end:
                assert leader_among([leader, standby]) is standby, (leader_gauge(leader), leader_gauge(standby))
                time.sleep(0.3)
    finally:
        proxy.release()
        codes = {"cut-a": leader.stop(), "cut-b": standby.stop()}
        proxy.close()
    assert codes == {"cut-a": 0, "cut-b": 0}, codes
    assert_clean_log(standby, "leader election")
