"""wva.rbac: the declared permissions and the checker that resolves rendered RBAC objects."""

from __future__ import annotations

from typing import Any

import pytest

from wva import rbac

SA = ("wva-system", "wva")


def role(name: str, rules: list[dict[str, Any]], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"kind": "Role" if namespace else "ClusterRole", "metadata": meta, "rules": rules}


def binding(
    kind: str,
    name: str,
    role_kind: str,
    role_name: str,
    namespace: str | None = None,
    subject: tuple[str, str] = SA,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "namespace": subject[0], "name": subject[1]}],
    }


def rule(group: str, resources: list[str], verbs: list[str], **extra: Any) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs, **extra}


def test_declared_rules_are_least_privilege() -> None:
    resources = {(r.api_group, r.resource) for r in rbac.RULES}
    assert ("", "secrets") not in resources
    assert ("", "nodes") not in resources
    assert all("*" not in r.verbs and r.resource != "*" for r in rbac.RULES)
    by_key = {(r.api_group, r.resource): r for r in rbac.RULES}
    assert by_key[("", "configmaps")].scope == "namespace"
    assert by_key[("coordination.k8s.io", "leases")].scope == "namespace"
    assert set(by_key[("llmd.ai", "variantautoscalings")].verbs) == {"get", "list", "watch"}
    assert set(by_key[("llmd.ai", "variantautoscalings/status")].verbs) == {"get", "patch"}
    # Nothing writes Deployments except the scale subresource in direct mode.
    assert set(by_key[("apps", "deployments")].verbs) == {"get", "list", "watch"}
    assert by_key[("apps", "deployments/scale")].direct_actuation_only
    scale = by_key[("apps", "deployments/scale")]
    assert (scale.plural, scale.subresource) == ("deployments", "scale")


def test_required_rules_depend_on_actuation_mode() -> None:
    hpa = {r.resource for r in rbac.required_rules("hpa")}
    direct = {r.resource for r in rbac.required_rules("direct")}
    assert direct - hpa == {"deployments/scale"}
    # pods are patched (the pod-deletion-cost annotation) only before a direct scale-down
    verbs = {m: {r.resource: set(r.verbs) for r in rbac.required_rules(m)}["pods"] for m in ("hpa", "direct")}
    assert verbs == {"hpa": {"get", "list", "watch"}, "direct": {"get", "list", "watch", "patch"}}
    assert rbac.required_rules() == rbac.required_rules("hpa")
    with pytest.raises(ValueError, match="ACTUATION_MODE"):
        rbac.required_rules("auto")


def test_bare_roles_grant_in_their_namespace_and_cluster_roles_everywhere() -> None:
    objects = [
        role("cm", [rule("", ["configmaps"], ["get", "list"])], namespace="wva-system"),
        role("pods", [rule("", ["pods"], ["list"])]),
    ]
    assert rbac.is_allowed("", "configmaps", "", "get", "wva-system", objects)
    assert not rbac.is_allowed("", "configmaps", "", "get", "other", objects)
    assert not rbac.is_allowed("", "configmaps", "", "list", None, objects)  # all namespaces
    assert not rbac.is_allowed("", "configmaps", "", "watch", "wva-system", objects)
    assert rbac.is_allowed("", "pods", "", "list", None, objects)
    assert rbac.is_allowed("", "pods", "", "list", "any", objects)
    assert not rbac.is_allowed("apps", "pods", "", "list", "any", objects)  # wrong group


def test_subresources_are_distinct_from_their_resource() -> None:
    objects = [role("r", [rule("apps", ["deployments"], ["get", "patch"])])]
    assert rbac.is_allowed("apps", "deployments", "", "patch", "ns", objects)
    assert not rbac.is_allowed("apps", "deployments", "scale", "patch", "ns", objects)
    objects = [role("r", [rule("apps", ["deployments/scale"], ["patch"])])]
    assert rbac.is_allowed("apps", "deployments", "scale", "patch", "ns", objects)
    assert not rbac.is_allowed("apps", "deployments", "", "patch", "ns", objects)


def test_wildcards_and_resource_names() -> None:
    objects = [role("w", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}])]
    assert rbac.is_allowed("llmd.ai", "variantautoscalings", "status", "patch", None, objects)
    named = [
        role("n", [rule("coordination.k8s.io", ["leases"], ["update"], resourceNames=["wva-leader"])], "ns")
    ]
    assert rbac.is_allowed("coordination.k8s.io", "leases", "", "update", "ns", named, name="wva-leader")
    assert not rbac.is_allowed("coordination.k8s.io", "leases", "", "update", "ns", named, name="other")
    assert not rbac.is_allowed("coordination.k8s.io", "leases", "", "update", "ns", named)


def test_bindings_decide_where_a_role_applies() -> None:
    cluster_role = role("va", [rule("llmd.ai", ["variantautoscalings"], ["list", "watch"])])
    # A ClusterRole bound by a RoleBinding grants only in that namespace.
    objects = [cluster_role, binding("RoleBinding", "b", "ClusterRole", "va", namespace="team-a")]
    assert rbac.is_allowed("llmd.ai", "variantautoscalings", "", "list", "team-a", objects)
    assert not rbac.is_allowed("llmd.ai", "variantautoscalings", "", "list", "team-b", objects)
    assert not rbac.is_allowed("llmd.ai", "variantautoscalings", "", "list", None, objects)
    # Bound cluster-wide it grants everywhere.
    objects = [cluster_role, binding("ClusterRoleBinding", "b", "ClusterRole", "va")]
    assert rbac.is_allowed("llmd.ai", "variantautoscalings", "", "watch", None, objects)
    # An unbound role grants nothing once bindings are in play.
    objects = [
        cluster_role,
        role("other", [rule("", ["pods"], ["get"])]),
        binding("ClusterRoleBinding", "b", "ClusterRole", "va"),
    ]
    assert not rbac.is_allowed("", "pods", "", "get", "ns", objects)


def test_subject_filter_ignores_bindings_for_other_accounts() -> None:
    objects = [
        role("va", [rule("llmd.ai", ["variantautoscalings"], ["get"])]),
        binding("ClusterRoleBinding", "b", "ClusterRole", "va", subject=("other-ns", "wva")),
    ]
    assert not rbac.is_allowed("llmd.ai", "variantautoscalings", "", "get", "x", objects, subject=SA)
    assert rbac.is_allowed(
        "llmd.ai", "variantautoscalings", "", "get", "x", objects, subject=("other-ns", "wva")
    )
    # A RoleBinding subject without namespace means the binding's namespace.
    rb = binding("RoleBinding", "b", "Role", "cm", namespace="wva-system")
    del rb["subjects"][0]["namespace"]
    objects = [role("cm", [rule("", ["configmaps"], ["get"])], namespace="wva-system"), rb]
    assert rbac.is_allowed("", "configmaps", "", "get", "wva-system", objects, subject=SA)


def _granting_objects(mode: str, watch: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Minimal RBAC objects that grant exactly rbac.required_rules(mode)."""
    cluster, own, watched = [], [], []
    for r in rbac.required_rules(mode):
        entry = rule(r.api_group, [r.resource], list(r.verbs))
        if r.scope == "namespace":
            own.append(entry)
        elif r.watched and watch:
            watched.append(entry)
        else:
            cluster.append(entry)
    objects = [
        role("c", cluster),
        binding("ClusterRoleBinding", "c", "ClusterRole", "c"),
        role("o", own, "wva-system"),
        binding("RoleBinding", "o", "Role", "o", "wva-system"),
    ]
    for ns in watch:
        objects += [role("w", watched, ns), binding("RoleBinding", "w", "Role", "w", ns)]
    return objects


@pytest.mark.parametrize("mode", ["hpa", "direct"])
def test_missing_permissions_empty_when_everything_is_granted(mode: str) -> None:
    objects = _granting_objects(mode)
    assert (
        rbac.missing_permissions(rbac.required_rules(mode), objects, own_namespace="wva-system", subject=SA)
        == []
    )


def test_missing_permissions_names_each_gap() -> None:
    objects = _granting_objects("hpa")
    missing = rbac.missing_permissions(rbac.required_rules("direct"), objects, own_namespace="wva-system")
    assert missing == [
        "apps/deployments/scale get in cluster-wide",
        "apps/deployments/scale patch in cluster-wide",
        "core/pods patch in cluster-wide",
    ]
    # The own-namespace role placed elsewhere leaves configmaps and leases uncovered.
    missing = rbac.missing_permissions(rbac.required_rules("hpa"), objects, own_namespace="elsewhere")
    assert "core/configmaps get in elsewhere" in missing
    assert "coordination.k8s.io/leases update in elsewhere" in missing


def test_missing_permissions_in_namespace_scoped_mode() -> None:
    objects = _granting_objects("hpa", watch=("a", "b"))
    rules = rbac.required_rules("hpa")
    assert (
        rbac.missing_permissions(rules, objects, own_namespace="wva-system", watch_namespaces=("a", "b"))
        == []
    )
    # Watching a namespace without a Role there is reported for every watched rule and verb.
    missing = rbac.missing_permissions(
        rules, objects, own_namespace="wva-system", watch_namespaces=("a", "c")
    )
    watched_verbs = sum(len(r.verbs) for r in rules if r.watched)
    assert len(missing) == watched_verbs and all(m.endswith(" in c") for m in missing)
    # Cluster-wide watching is not satisfied by per-namespace Roles.
    assert rbac.missing_permissions(rules, objects, own_namespace="wva-system")
