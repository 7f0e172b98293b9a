"""Only the Lease holder runs the engine and publishes decisions; a standby takes over when it goes."""

from __future__ import annotations

from operator_harness import operator_settings, wait_for
from wva.runtime import Runtime
from wva.sim.local_api import LocalKubernetesAPI


class _NoProm:
    """Leader election needs no metrics source; a stand-in whose probe succeeds."""

    def custom_query(self, _query: str) -> list[object]:
        return []


def _runtime(api: LocalKubernetesAPI, pod: str) -> Runtime:
    settings = operator_settings(
        api,
        "http://127.0.0.1:9",
        POD_NAME=pod,
        LEADER_ELECTION="true",
        LEADER_ELECTION_LEASE_DURATION="1s",
    )
    return Runtime.build(settings, prom=_NoProm(), serve_http=False, run_engine_loop=False)


async def test_one_leader_publishes_and_a_standby_takes_over(kube_api: LocalKubernetesAPI) -> None:
    first, second = _runtime(kube_api, "wva-0"), _runtime(kube_api, "wva-1")
    await first.start()
    try:
        await wait_for(lambda: first.is_leader, timeout=10, what="first replica to lead")
        await second.start()
        first.emitter.emit("va", "ns", "L4", 3, 2)
        assert second.elector is not None
        elector = second.elector
        await wait_for(lambda: elector.attempts >= 2, timeout=10, what="standby to try the lease twice")
        assert not second.is_leader
        lease = kube_api.objects["coordination.k8s.io/v1/leases", "wva-system", "wva-leader"]
        assert lease["spec"]["holderIdentity"] == "wva-0"
        await wait_for(lambda: second.readiness()[0], timeout=10, what="standby readiness")
        assert "standby" in second.readiness()[1]

        await first.stop()  # releases the lease and drops its decision series
        assert first.emitter.value(
            "wva_desired_replicas", variant_name="va", namespace="ns", accelerator_type="L4"
        ) is None
        await wait_for(lambda: second.is_leader, timeout=10, what="standby to take over")
        lease = kube_api.objects["coordination.k8s.io/v1/leases", "wva-system", "wva-leader"]
        assert lease["spec"]["holderIdentity"] == "wva-1"
        assert lease["spec"]["leaseTransitions"] >= 1
    finally:
        await second.stop()
        if first.started:
            await first.stop()
