"""The Kubernetes API permissions wva needs, as data, and a checker for rendered RBAC objects.

``RULES`` is the single statement of least privilege: the Helm chart and the kustomize manifests
are tested against it, and integration tests replay recorded API calls through :func:`is_allowed`
to prove the operator never needs more than the manifests grant.

Scopes:

* ``"cluster"`` rules are granted by a ClusterRole bound cluster-wide. Rules marked ``watched``
  follow the watched namespaces instead when the operator runs namespace-scoped (one Role per
  watched namespace).
* ``"namespace"`` rules are granted by a Role in the operator's own namespace (``POD_NAMESPACE``).

The metrics port (secure by default) asks the API server about each scraper: wva's own rules include
``create`` on ``tokenreviews`` and ``subjectaccessreviews`` then. Whoever scrapes needs the other side,
:data:`METRICS_READER_PATHS` (``get`` on those non-resource URLs), granted by the metrics-reader
ClusterRole the manifests bind to the Prometheus ServiceAccount; :func:`is_allowed_path` checks it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "METRICS_READER_PATHS",
    "RULES",
    "ApiRequest",
    "PermissionRule",
    "Scope",
    "is_allowed",
    "is_allowed_path",
    "metrics_reader_rules",
    "missing_permissions",
    "required_rules",
]

Scope = Literal["cluster", "namespace"]


@dataclass(frozen=True)
class PermissionRule:
    """One grant: verbs on ``resource`` (``"plural"`` or ``"plural/subresource"``) of ``api_group``."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    scope: Scope
    watched: bool = False
    """In namespace-scoped mode this rule is granted in each watched namespace instead of cluster-wide."""
    direct_actuation_only: bool = False
    """Needed (and rendered) only when ``ACTUATION_MODE=direct``."""
    direct_actuation_verbs: tuple[str, ...] = ()
    """Verbs added to ``verbs`` only when ``ACTUATION_MODE=direct``."""
    secure_metrics_only: bool = False
    """Needed (and rendered) only while the metrics port is secure (``--metrics-secure``, the default)."""

    @property
    def plural(self) -> str:
        return self.resource.partition("/")[0]

    @property
    def subresource(self) -> str:
        return self.resource.partition("/")[2]


RULES: tuple[PermissionRule, ...] = (
    # kopf runs only event handlers: it never writes the VA object itself, only wva writes its status
    PermissionRule("llmd.ai", "variantautoscalings", ("get", "list", "watch"), "cluster", True),
    PermissionRule("llmd.ai", "variantautoscalings/status", ("get", "patch"), "cluster", True),
    PermissionRule("apps", "deployments", ("get", "list", "watch"), "cluster", True),
    PermissionRule(
        "apps", "deployments/scale", ("get", "patch"), "cluster", True, direct_actuation_only=True
    ),
    # patch: only the pod-deletion-cost annotation before a direct scale-down (wva.actuator.drain)
    PermissionRule("", "pods", ("get", "list", "watch"), "cluster", True, direct_actuation_verbs=("patch",)),
    PermissionRule("", "events", ("create", "patch"), "cluster", True),
    PermissionRule("events.k8s.io", "events", ("create", "patch"), "cluster", True),
    # Configuration and leader election live in the operator's own namespace only.
    PermissionRule("", "configmaps", ("get",), "namespace"),  # the two ConfigMaps, read before each cycle
    PermissionRule("coordination.k8s.io", "leases", ("get", "create", "patch", "update"), "namespace"),
    # kopf itself: CRD discovery and namespace tracking.
    PermissionRule("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), "cluster"),
    PermissionRule("", "namespaces", ("list", "watch"), "cluster"),
    # The secure metrics port: who is this bearer token, and may it get this path (wva.authfilter).
    PermissionRule("authentication.k8s.io", "tokenreviews", ("create",), "cluster", secure_metrics_only=True),
    PermissionRule("authorization.k8s.io", "subjectaccessreviews", ("create",), "cluster", secure_metrics_only=True),
)

METRICS_READER_PATHS: tuple[str, ...] = ("/metrics", "/debug/decisions", "/debug/decisions/*")
"""The metrics port's paths as RBAC non-resource URLs (``*`` at the end matches any rest of the path)."""


def metrics_reader_rules() -> list[dict[str, list[str]]]:
    """The rules of the metrics-reader ClusterRole: ``get`` on :data:`METRICS_READER_PATHS`, nothing else."""
    return [{"nonResourceURLs": list(METRICS_READER_PATHS), "verbs": ["get"]}]


def required_rules(actuation_mode: str = "hpa", secure_metrics: bool = True) -> tuple[PermissionRule, ...]:
    """The rules needed for an actuation mode (``hpa`` or ``direct``), with or without secure metrics."""
    if actuation_mode not in ("hpa", "direct"):
        raise ValueError(f"ACTUATION_MODE={actuation_mode!r} is not one of hpa, direct")
    direct = actuation_mode == "direct"
    return tuple(
        dataclasses.replace(r, verbs=(*r.verbs, *r.direct_actuation_verbs)) if direct and r.direct_actuation_verbs
        else r
        for r in RULES
        if (direct or not r.direct_actuation_only) and (secure_metrics or not r.secure_metrics_only)
    )


@dataclass(frozen=True)
class ApiRequest:
    """One Kubernetes API request. ``namespace=None`` means cluster scope (or all namespaces)."""

    api_group: str
    resource: str
    subresource: str
    verb: str
    namespace: str | None
    name: str | None = None


def _rule_matches(rule: Mapping[str, Any], req: ApiRequest) -> bool:
    groups = rule.get("apiGroups") or []
    resources = rule.get("resources") or []
    verbs = rule.get("verbs") or []
    names = rule.get("resourceNames") or []
    wanted = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
    if req.api_group not in groups and "*" not in groups:
        return False
    if wanted not in resources and "*" not in resources:
        return False
    if req.verb not in verbs and "*" not in verbs:
        return False
    return not names or (req.name is not None and req.name in names)


def _subject_matches(binding: Mapping[str, Any], subject: tuple[str, str] | None) -> bool:
    if subject is None:
        return True
    sa_namespace, sa_name = subject
    binding_ns = (binding.get("metadata") or {}).get("namespace")
    for s in binding.get("subjects") or []:
        if s.get("kind") != "ServiceAccount" or s.get("name") != sa_name:
            continue
        if (s.get("namespace") or binding_ns) == sa_namespace:
            return True
    return False


def _grants(
    objects: Sequence[Mapping[str, Any]], subject: tuple[str, str] | None
) -> list[tuple[str | None, Mapping[str, Any]]]:
    """Resolve roles (and bindings, when present) to ``(namespace or None for cluster-wide, rule)``."""
    roles: dict[tuple[str, str | None, str], Mapping[str, Any]] = {}
    bindings: list[Mapping[str, Any]] = []
    for obj in objects:
        kind = obj.get("kind")
        meta = obj.get("metadata") or {}
        if kind == "ClusterRole":
            roles[("ClusterRole", None, meta.get("name", ""))] = obj
        elif kind == "Role":
            roles[("Role", meta.get("namespace"), meta.get("name", ""))] = obj
        elif kind in ("RoleBinding", "ClusterRoleBinding"):
            bindings.append(obj)

    out: list[tuple[str | None, Mapping[str, Any]]] = []
    if not bindings:
        # Bare roles: a Role grants in its namespace, a ClusterRole everywhere.
        for (kind, ns, _), role in roles.items():
            for rule in role.get("rules") or []:
                out.append((ns if kind == "Role" else None, rule))
        return out

    for binding in bindings:
        if not _subject_matches(binding, subject):
            continue
        ref = binding.get("roleRef") or {}
        binding_ns = (binding.get("metadata") or {}).get("namespace")
        where: str | None
        if ref.get("kind") == "ClusterRole":
            bound = roles.get(("ClusterRole", None, ref.get("name", "")))
            where = None if binding.get("kind") == "ClusterRoleBinding" else binding_ns
        else:
            bound = roles.get(("Role", binding_ns, ref.get("name", "")))
            where = binding_ns
        for rule in (bound or {}).get("rules") or []:
            out.append((where, rule))
    return out


def is_allowed(
    api_group: str,
    resource: str,
    subresource: str,
    verb: str,
    namespace: str | None,
    objects: Sequence[Mapping[str, Any]],
    *,
    subject: tuple[str, str] | None = None,
    name: str | None = None,
) -> bool:
    """Whether rendered RBAC ``objects`` allow the request.

    ``objects`` are Role/ClusterRole dicts, optionally with RoleBinding/ClusterRoleBinding dicts.
    Without any binding, a Role grants in its own namespace and a ClusterRole cluster-wide. With
    bindings, only bound roles count (restricted to ``subject=(namespace, service_account)`` when
    given), and a ClusterRole bound by a RoleBinding grants only in that binding's namespace.
    ``namespace=None`` is a cluster-scoped request (including lists/watches across all namespaces),
    which only a cluster-wide grant allows.
    """
    req = ApiRequest(api_group, resource, subresource, verb, namespace, name)
    for where, rule in _grants(objects, subject):
        if where is not None and where != namespace:
            continue
        if _rule_matches(rule, req):
            return True
    return False


def _path_matches(pattern: str, path: str) -> bool:
    """RBAC's non-resource URL match: exact, ``*`` for everything, or a prefix ending in ``*``."""
    if pattern == "*" or pattern == path:
        return True
    return pattern.endswith("*") and path.startswith(pattern[:-1])


def is_allowed_path(
    path: str, verb: str, objects: Sequence[Mapping[str, Any]], *, subject: tuple[str, str] | None = None
) -> bool:
    """Whether rendered RBAC ``objects`` allow ``verb`` on the non-resource URL ``path``.

    Non-resource URLs are granted only by ClusterRoles through ClusterRoleBindings (a RoleBinding to such
    a role grants nothing for them). Without any binding a bare ClusterRole counts; ``subject`` restricts
    the bindings to one ``(namespace, service_account)``.
    """
    roles = {(o.get("metadata") or {}).get("name", ""): o for o in objects if o.get("kind") == "ClusterRole"}
    bindings = [o for o in objects if o.get("kind") == "ClusterRoleBinding"]
    if any(o.get("kind") in ("RoleBinding", "ClusterRoleBinding") for o in objects):
        granted = [roles.get((b.get("roleRef") or {}).get("name", "")) for b in bindings
                   if (b.get("roleRef") or {}).get("kind") == "ClusterRole" and _subject_matches(b, subject)]
    else:
        granted = list(roles.values())
    for role in granted:
        for rule in (role or {}).get("rules") or []:
            verbs = rule.get("verbs") or []
            urls = rule.get("nonResourceURLs") or []
            if (verb in verbs or "*" in verbs) and any(_path_matches(p, path) for p in urls):
                return True
    return False


def missing_permissions(
    rules: Iterable[PermissionRule],
    objects: Sequence[Mapping[str, Any]],
    *,
    own_namespace: str,
    watch_namespaces: Sequence[str] = (),
    subject: tuple[str, str] | None = None,
) -> list[str]:
    """Every (rule, verb, place) in ``rules`` that ``objects`` do not grant, as readable strings.

    ``watch_namespaces`` empty means cluster-wide watching.
    """
    missing: list[str] = []
    for rule in rules:
        if rule.scope == "namespace":
            places: list[str | None] = [own_namespace]
        elif rule.watched and watch_namespaces:
            places = list(watch_namespaces)
        else:
            places = [None]
        for verb in rule.verbs:
            for ns in places:
                if not is_allowed(
                    rule.api_group, rule.plural, rule.subresource, verb, ns, objects, subject=subject
                ):
                    where = ns or "cluster-wide"
                    missing.append(f"{rule.api_group or 'core'}/{rule.resource} {verb} in {where}")
    return missing
