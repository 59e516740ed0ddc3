"""What a StatefulSet's pod would run, read from `kubectl kustomize k8s/` output.

    python3 pod_spec.py RENDERED.yaml STATEFULSET POD NAMESPACE CONFIG_DIR

Prints one JSON object for pod POD (e.g. sluice-1) of STATEFULSET as the kubelet would
start its (single) container: the command and args with `$(VAR)` references expanded, the
environment with the downward API's metadata.name / metadata.namespace filled in (the
only valueFrom sources the manifests use; any other fails, so that a new one cannot be
silently dropped), the volume mounts (ConfigMap volumes are written out under
CONFIG_DIR/<volume>/ for a read-only bind mount), the security context and the probes.
tests/containers/cluster.sh turns it into `podman run` flags.
"""

import json
import re
import sys
from pathlib import Path

import yaml


class SpecError(Exception):
    pass


def expand(text, env):
    """Kubernetes' $(VAR) expansion: defined names are replaced, `$$` is a literal `$`,
    anything else is left as it is."""

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, text)


def field_ref(path, pod, namespace):
    if path == "metadata.name":
        return pod
    if path == "metadata.namespace":
        return namespace
    raise SpecError(f"env valueFrom.fieldRef {path} is not supported by the container test")


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise SpecError(f"probe port {port!r} is not a named port of the container")


def probe(container, kind):
    p = container.get(kind)
    if not p:
        return None
    if "httpGet" not in p:
        raise SpecError(f"{kind} is not an httpGet probe")
    return {"path": p["httpGet"].get("path", "/"), "port": port_number(container, p["httpGet"]["port"])}


def main(rendered, sts_name, pod, namespace, config_dir):
    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    sts = by_kind.get("StatefulSet", {}).get(sts_name)
    if sts is None:
        raise SpecError(f"no StatefulSet {sts_name} in {rendered}")
    spec = sts["spec"]["template"]["spec"]
    if len(spec["containers"]) != 1 or spec.get("initContainers"):
        raise SpecError(f"{sts_name}: the container test runs exactly one container per pod")
    c = spec["containers"][0]
    if c.get("envFrom"):
        raise SpecError(f"{sts_name}: envFrom is not supported by the container test")

    env, order = {}, []
    for e in c.get("env", []):
        if "valueFrom" in e:
            ref = e["valueFrom"].get("fieldRef")
            if ref is None:
                raise SpecError(f"env {e['name']}: only valueFrom.fieldRef is supported")
            value = field_ref(ref["fieldPath"], pod, namespace)
        else:
            value = expand(e.get("value", ""), env)
        if e["name"] not in env:
            order.append(e["name"])
        env[e["name"]] = value

    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = []
    for m in c.get("volumeMounts", []):
        name, path = m["name"], m["mountPath"]
        if m.get("subPath"):
            raise SpecError(f"volumeMount {name}: subPath is not supported by the container test")
        if name in claims:
            mounts.append({"kind": "claim", "claim": name, "path": path})
            continue
        v = volumes.get(name)
        if v is None:
            raise SpecError(f"volumeMount {name} names no volume")
        if "configMap" in v:
            cm = by_kind.get("ConfigMap", {}).get(v["configMap"]["name"])
            if cm is None:
                raise SpecError(f"volume {name}: ConfigMap {v['configMap']['name']} is not rendered")
            if v["configMap"].get("items"):
                raise SpecError(f"volume {name}: configMap items are not supported")
            out = Path(config_dir) / name
            out.mkdir(parents=True, exist_ok=True)
            for key, text in (cm.get("data") or {}).items():
                (out / key).write_text(text)
            mounts.append({"kind": "configmap", "dir": str(out), "path": path, "configmap": cm["metadata"]["name"]})
        elif "emptyDir" in v:
            mounts.append({"kind": "emptydir", "path": path, "size": (v["emptyDir"] or {}).get("sizeLimit")})
        else:
            raise SpecError(f"volume {name}: only ConfigMap, emptyDir and claim volumes are supported")

    pod_sc = spec.get("securityContext", {})
    sc = c.get("securityContext", {})
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    out = {
        "pod": pod,
        "statefulset": sts_name,
        "service": sts["spec"].get("serviceName"),
        "image": c["image"],
        "command": [expand(a, env) for a in c["command"]] if c.get("command") else None,
        "args": [expand(a, env) for a in c.get("args", [])],
        "env": [[k, env[k]] for k in order],
        "mounts": mounts,
        "user": None if user is None else (f"{user}:{group}" if group is not None else str(user)),
        "read_only_root": bool(sc.get("readOnlyRootFilesystem", False)),
        "cap_drop": sc.get("capabilities", {}).get("drop", []),
        "no_new_privileges": sc.get("allowPrivilegeEscalation") is False,
        "ports": {p.get("name", str(p["containerPort"])): p["containerPort"] for p in c.get("ports", [])},
        "readiness": probe(c, "readinessProbe"),
        "liveness": probe(c, "livenessProbe"),
        "grace_seconds": spec.get("terminationGracePeriodSeconds", 30),
    }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    try:
        main(*sys.argv[1:])
    except (SpecError, KeyError, yaml.YAMLError) as e:
        sys.exit(f"pod_spec.py: {e}")
