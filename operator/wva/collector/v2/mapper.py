"""Pod -> VariantAutoscaling resolution from watched state: no Kubernetes API call per lookup.

kopf handlers feed it: VAs (``register``/``unregister``: which Deployment a VA scales) and Pods
(``observe_pod`` with the Deployment, or ``observe_pod_owner`` with the Pod's controller owner
reference). A pod's ReplicaSet ``<deployment>-<pod-template-hash>`` is resolved to its Deployment at
lookup time, so it works whatever order the VA and Pod events arrive in.

A pod never observed falls back to the pod-name shape of a Deployment's pods,
``<deployment>-<rs-hash>-<pod-hash>`` (or ``<deployment>-<suffix>``): the longest registered
deployment name among those two candidates wins. Only those two shapes are tried, so a pod of
``llama-8b`` is never taken for a pod of ``llama``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

__all__ = ["PodVAMapper"]

logger = logging.getLogger(__name__)

_Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class _PodOwner:
    deployment: str | None = None
    replicaset: str | None = None


class PodVAMapper:
    """Thread-safe; every lookup is a handful of dict reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._va_by_deployment: dict[_Key, str] = {}
        self._deployment_by_va: dict[_Key, str] = {}
        self._pods: dict[_Key, _PodOwner] = {}

    # --- VAs -----------------------------------------------------------------------------------

    def register(self, va_name: str, namespace: str, deployment_name: str) -> None:
        """Record that VA ``va_name`` scales Deployment ``deployment_name`` (both in ``namespace``)."""
        with self._lock:
            previous = self._deployment_by_va.get((namespace, va_name))
            if previous is not None and previous != deployment_name:
                self._drop_deployment_link(namespace, previous, va_name)
            owner = self._va_by_deployment.get((namespace, deployment_name))
            if owner is not None and owner != va_name:
                logger.warning(
                    "Deployment claimed by two VAs: namespace=%s deployment=%s old=%s new=%s",
                    namespace,
                    deployment_name,
                    owner,
                    va_name,
                )
            self._va_by_deployment[(namespace, deployment_name)] = va_name
            self._deployment_by_va[(namespace, va_name)] = deployment_name

    def unregister(self, va_name: str, namespace: str) -> None:
        with self._lock:
            deployment = self._deployment_by_va.pop((namespace, va_name), None)
            if deployment is not None:
                self._drop_deployment_link(namespace, deployment, va_name)

    def _drop_deployment_link(self, namespace: str, deployment: str, va_name: str) -> None:
        # Only if it still points at this VA: another VA may have claimed the Deployment since.
        if self._va_by_deployment.get((namespace, deployment)) == va_name:
            del self._va_by_deployment[(namespace, deployment)]

    def deployment_for_va(self, va_name: str, namespace: str) -> str | None:
        with self._lock:
            return self._deployment_by_va.get((namespace, va_name))

    # --- Pods ----------------------------------------------------------------------------------

    def observe_pod(self, pod_name: str, namespace: str, deployment_name: str | None) -> None:
        """Record the Deployment a pod belongs to (None: known to belong to no Deployment)."""
        with self._lock:
            self._pods[(namespace, pod_name)] = _PodOwner(deployment=deployment_name or None)

    def observe_pod_owner(
        self, pod_name: str, namespace: str, owner_kind: str | None, owner_name: str | None
    ) -> None:
        """Record a pod from its controller owner reference (kind and name; None when it has none).

        A ``ReplicaSet`` owner is kept as such and resolved to ``<deployment>`` when its name is a
        registered deployment name plus one dash-suffix; a ``Deployment`` owner is taken directly;
        any other owner means the pod belongs to no Deployment.
        """
        if owner_kind == "ReplicaSet" and owner_name:
            owner = _PodOwner(replicaset=owner_name)
        elif owner_kind == "Deployment" and owner_name:
            owner = _PodOwner(deployment=owner_name)
        else:
            owner = _PodOwner()
        with self._lock:
            self._pods[(namespace, pod_name)] = owner

    def forget_pod(self, pod_name: str, namespace: str) -> None:
        with self._lock:
            self._pods.pop((namespace, pod_name), None)

    # --- lookups -------------------------------------------------------------------------------

    def get_va_for_pod(self, pod_name: str, namespace: str) -> str | None:
        """The name of the VA whose Deployment runs this pod, or None."""
        with self._lock:
            owner = self._pods.get((namespace, pod_name))
            if owner is None:
                return self._va_from_name_shape(pod_name, namespace)
            if owner.deployment is not None:
                return self._va_by_deployment.get((namespace, owner.deployment))
            if owner.replicaset is not None:
                return self._va_with_one_suffix(owner.replicaset, namespace)
            return None

    def _va_with_one_suffix(self, name: str, namespace: str) -> str | None:
        prefix, sep, suffix = name.rpartition("-")
        if not sep or not prefix or not suffix:
            return None
        return self._va_by_deployment.get((namespace, prefix))

    def _va_from_name_shape(self, pod_name: str, namespace: str) -> str | None:
        # Longest candidate first: "<deployment>-<suffix>", then "<deployment>-<rs-hash>-<pod-hash>".
        two_part = pod_name.rpartition("-")[0]
        for candidate in (two_part, two_part.rpartition("-")[0]):
            if candidate and not candidate.endswith("-"):
                va = self._va_by_deployment.get((namespace, candidate))
                if va is not None:
                    return va
        return None

    def va_count(self) -> int:
        """Number of registered VAs."""
        with self._lock:
            return len(self._deployment_by_va)

    def __len__(self) -> int:
        """Number of registered VAs (for size reports)."""
        return self.va_count()

    def __bool__(self) -> bool:
        # Always true, even when empty: ``mapper or PodVAMapper()`` must not swap a shared, still
        # empty mapper for a private one.
        return True
