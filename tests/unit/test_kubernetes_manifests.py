"""packaging/kubernetes/*.yaml checked offline against the Kubernetes API schema (the models of
the `kubernetes` client: every key known, every required field present, every value of its
type), and against what the installer does (label, handler, host mount, service account)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml
from bulkhead.install import containerd_config as cc
from bulkhead.install import node_k8s

MANIFESTS = Path(__file__).resolve().parents[2] / "packaging" / "kubernetes"
SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "bytes": (str,),
    "datetime": (str,), "object": (object,),
}


def schema_errors(value: Any, type_name: str, path: str = "") -> list[str]:
    """What in value does not fit the client's model `type_name` (a class or a type string)."""
    if m := re.fullmatch(r"List\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{path}: a list expected, got {value!r}"]
        return [e for i, item in enumerate(value)
                for e in schema_errors(item, m[1], f"{path}[{i}]")]
    if m := re.fullmatch(r"Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            return [f"{path}: a map expected, got {value!r}"]
        return [e for key, item in value.items()
                for e in schema_errors(item, m[1], f"{path}.{key}")]
    if type_name in SCALARS:
        wanted = SCALARS[type_name]
        if not isinstance(value, wanted) or (type_name == "int" and isinstance(value, bool)):
            return [f"{path}: {type_name} expected, got {value!r}"]
        return []
    model = getattr(k8s, type_name)
    if not isinstance(value, dict):
        return [f"{path}: a {type_name} object expected, got {value!r}"]
    by_json = {json: attr for attr, json in model.attribute_map.items()}
    errors = [f"{path}.{key}: no such field in {type_name}" for key in value if key not in by_json]
    required = [f.serialization_alias or f.alias or name
                for name, f in model.model_fields.items() if f.is_required()]
    errors += [f"{path}.{json}: required by {type_name}, missing"
               for json in required if json not in value]
    for key, item in value.items():
        if key in by_json:
            errors += schema_errors(item, model.openapi_types[by_json[key]], f"{path}.{key}")
    return errors


def model_for(doc: dict[str, Any]) -> str:
    """V1DaemonSet for apps/v1 DaemonSet, V1RuntimeClass for node.k8s.io/v1 RuntimeClass..."""
    version = str(doc.get("apiVersion", "")).rpartition("/")[2]
    name = version[:1].upper() + version[1:] + str(doc.get("kind", ""))
    assert hasattr(k8s, name), f"no model {name} for {doc.get('apiVersion')} {doc.get('kind')}"
    return name


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


DOCS = dict(documents())


@pytest.mark.parametrize("name", sorted(DOCS))
def test_manifest_fits_the_api_schema(name: str) -> None:
    doc = DOCS[name]
    assert schema_errors(doc, model_for(doc)) == []


def test_the_checker_catches_mistakes() -> None:
    runtime_class = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                     "metadata": {"name": "x"}, "overhead": {"podFixd": {}}}
    assert sorted(schema_errors(runtime_class, "V1RuntimeClass")) == [
        ".handler: required by V1RuntimeClass, missing",
        ".overhead.podFixd: no such field in V1Overhead"]
    ds = DOCS["node-installer.yaml:DaemonSet/bulkhead-node-installer"]
    broken = yaml.safe_load(yaml.safe_dump(ds).replace("hostPID: true", "hostPID: 'yes'"))
    assert schema_errors(broken, "V1DaemonSet") == [
        ".spec.template.spec.hostPID: bool expected, got 'yes'"]


def test_runtime_class_matches_the_installer() -> None:
    rc = DOCS["runtimeclass.yaml:RuntimeClass/bulkhead"]
    assert rc["handler"] == cc.RUNTIME_NAME
    assert rc["scheduling"]["nodeSelector"] == {node_k8s.LABEL_KEY: node_k8s.LABEL_VALUE}
    assert set(rc["overhead"]["podFixed"]) == {"memory", "cpu"}


def test_installer_daemonset_has_what_install_needs() -> None:
    ds = DOCS["node-installer.yaml:DaemonSet/bulkhead-node-installer"]
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostPID"] is True and container["securityContext"]["privileged"] is True
    assert "bulkhead node install --host-root /host" in container["args"][0]
    assert "bulkhead node uninstall --host-root /host" in " ".join(
        container["lifecycle"]["preStop"]["exec"]["command"])
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volume = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert {mount["host"], volume["host"]} == {"/host", "/"}
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    account = pod["serviceAccountName"]
    assert account in {n.split("/")[1] for n in DOCS if ":ServiceAccount/" in n}
    binding = DOCS["node-installer.yaml:ClusterRoleBinding/bulkhead-node-installer"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                    "namespace": ds["metadata"]["namespace"]}]
    role = DOCS[f"node-installer.yaml:ClusterRole/{binding['roleRef']['name']}"]
    assert {"nodes"} == set(role["rules"][0]["resources"]) and "patch" in role["rules"][0]["verbs"]
    uninstaller = DOCS["node-uninstaller.yaml:DaemonSet/bulkhead-node-uninstaller"]
    assert node_k8s.LABEL_KEY not in uninstaller["spec"]["template"]["spec"]["nodeSelector"]
