#!/usr/bin/env python3
"""Invariants of sluice's Kubernetes manifests that no schema can check.

Usage: check_invariants.py RENDERED.yaml [--defaults config/sluice.toml] [--k8s-dir k8s]

RENDERED.yaml is the output of `kubectl kustomize k8s/`. The sluice configuration is
evaluated the way the binary does it: built-in defaults (config/sluice.toml of the
repository), then the ConfigMap's file, then the container's SLUICE__SECTION__KEY
variables. Prints one line per invariant ("ok" or "FAIL"), exits 1 if any failed.
Needs Python 3.11+ (tomllib) or tomli, and PyYAML.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

# Time a leaving node needs after server.shutdown_grace_ms: hand its pending records to
# the new owners, commit, release its lease. terminationGracePeriodSeconds must cover both.
HANDOVER_ALLOWANCE_MS = 20_000
# A scale-down stabilization window shorter than this lets the HPA flap: every scale-in
# is a drain and a rebalance.
MIN_SCALE_DOWN_WINDOW_S = 60
APP = "sluice"
ETCD = "etcd"
ENV_PREFIX = "SLUICE__"
# The [cluster] keys of the contract, used while the repository's defaults lack them.
CLUSTER_DEFAULTS = {
    "cluster.enabled": False,
    "cluster.node": "",
    "cluster.advertise": "",
    "cluster.etcd": [],
    "cluster.prefix": "/sluice/default",
    "cluster.lease_ttl_ms": 10000,
}


def image_files(dockerfile: Path) -> dict:
    """Files the image gets from the build context: image path -> path in the repository."""
    files = {}
    if not dockerfile.is_file():
        return files
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0].upper() == "COPY" and not words[1].startswith("--"):
            src, dst = words[1], words[2]
            files[dst if not dst.endswith("/") else dst + posixpath.basename(src)] = src
    return files


class Checker:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, why: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failed += 1
            print(f"  FAIL  {what}" + (f": {why}" if why else ""))
        return ok

    def fail(self, what: str, why: str) -> None:
        self.check(False, what, why)


def flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def same_type(default, value) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return type(default) is type(value)


def parse_env(default, raw: str):
    """Parse an env value by the type of the default it replaces, as the binary does."""
    raw = raw.strip()
    if isinstance(default, bool):
        if raw in ("true", "false"):
            return raw == "true"
        raise ValueError("expected true or false")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, list):
        if raw.startswith("["):
            return tomllib.loads(f"v = {raw}")["v"]
        if not raw:
            return []
        parts = [p.strip() for p in raw.split(",")]
        return [int(p) for p in parts] if default and isinstance(default[0], int) else parts
    return raw


def expand(value: str, env: dict) -> str:
    """Kubernetes' $(VAR) expansion, with the downward-API variables of pod 0."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def selects(selector: dict | None, labels: dict) -> bool:
    """Whether a Service selector (plain map) or a LabelSelector matches the labels."""
    if not selector:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        for key, value in (selector.get("matchLabels") or {}).items():
            if labels.get(key) != value:
                return False
        for expr in selector.get("matchExpressions") or []:
            key, op, values = expr["key"], expr["operator"], expr.get("values") or []
            if op == "In" and labels.get(key) not in values:
                return False
            if op == "NotIn" and labels.get(key) in values:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
        return True
    return all(labels.get(k) == v for k, v in selector.items())


def under(path: str, directory: str) -> bool:
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def port_of(bind: str) -> int | None:
    match = re.search(r":(\d+)$", bind)
    return int(match.group(1)) if match else None


def probe_port(probe: dict, container: dict):
    port = (probe.get("httpGet") or {}).get("port")
    if isinstance(port, str):
        for p in container.get("ports") or []:
            if p.get("name") == port:
                return p.get("containerPort")
    return port


def main() -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", type=Path)
    parser.add_argument("--defaults", type=Path, default=here.parent / "config" / "sluice.toml")
    parser.add_argument("--k8s-dir", type=Path, default=here)
    parser.add_argument(
        "--sluice-bin",
        type=Path,
        help="also run `SLUICE_BIN check-config` on the ConfigMap's file with pod 0's environment",
    )
    args = parser.parse_args()

    c = Checker()
    repo = args.defaults.resolve().parent.parent
    image_paths = image_files(args.k8s_dir / "Dockerfile")
    docs = [d for d in yaml.safe_load_all(args.rendered.read_text()) if d]
    by_kind: dict[str, list] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def named(kind: str, name: str):
        return next((d for d in by_kind.get(kind, []) if d["metadata"]["name"] == name), None)

    sts = named("StatefulSet", APP)
    etcd = named("StatefulSet", ETCD)
    if not c.check(sts is not None, f"StatefulSet {APP} is rendered"):
        return 1
    pod = sts["spec"]["template"]
    pod_spec = pod["spec"]
    pod_labels = pod["metadata"].get("labels") or {}
    container = next((x for x in pod_spec["containers"] if x["name"] == APP), pod_spec["containers"][0])
    env_list = container.get("env") or []
    env = {e["name"]: e for e in env_list}

    # --- configuration: defaults < ConfigMap file < container env -----------------------
    cmd = (container.get("command") or []) + (container.get("args") or [])
    config_path = (
        cmd[cmd.index("--config") + 1] if "--config" in cmd and cmd.index("--config") + 1 < len(cmd) else None
    )
    c.check(
        "serve" in cmd and config_path is not None, "container runs `serve --config FILE`", f"args are {cmd}"
    )
    mounts = container.get("volumeMounts") or []
    file_text = None
    if config_path:
        mount = next((m for m in mounts if under(config_path, m["mountPath"])), None)
        volume = mount and next(
            (v for v in pod_spec.get("volumes") or [] if v["name"] == mount["name"]), None
        )
        cm = volume and volume.get("configMap") and named("ConfigMap", volume["configMap"]["name"])
        key = mount and posixpath.relpath(config_path, mount["mountPath"])
        if c.check(
            bool(cm) and key in (cm.get("data") or {}),
            f"{config_path} comes from a rendered ConfigMap",
            "no ConfigMap volume mounted there holds that key",
        ):
            file_text = cm["data"][key]
    if file_text is None:
        print(f"invariants: stopped, the configuration is unknown ({c.failed} failed)")
        return 1

    defaults = flatten(tomllib.loads(args.defaults.read_text())) if args.defaults.is_file() else {}
    if not args.defaults.is_file():
        print(f"  note  {args.defaults} not found: checking against the contract's keys only")
    if not any(k.startswith("cluster.") for k in defaults):
        print(
            "  note  the built-in defaults have no [cluster] section yet: using the contract's cluster keys"
        )
        defaults.update(CLUSTER_DEFAULTS)
    try:
        file_values = flatten(tomllib.loads(file_text))
    except tomllib.TOMLDecodeError as e:
        c.fail("sluice.toml is valid TOML", str(e))
        return 1
    problems = []
    for key, value in file_values.items():
        if key not in defaults:
            problems.append(f"unknown key `{key}`")
        elif not same_type(defaults[key], value):
            problems.append(f"`{key}` should be a {type(defaults[key]).__name__}")
    effective = {**defaults, **file_values}
    for name, e in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if key not in defaults:
            problems.append(f"env {name}: unknown key `{key}`")
        elif "value" in e:
            try:
                effective[key] = parse_env(defaults[key], e["value"])
            except ValueError as err:
                problems.append(f"env {name}: {err}")
    c.check(
        not problems,
        "every configured key exists in the defaults and has their type (else exit 2)",
        "; ".join(problems),
    )

    if args.sluice_bin:
        # The binary itself: layering, key and type checks, cross-field validation.
        pod_env = {"POD_NAME": f"{APP}-0", "POD_NAMESPACE": "default", "HOSTNAME": f"{APP}-0"}
        for e in env_list:
            if "value" in e:
                pod_env[e["name"]] = expand(e["value"], pod_env)
        run_env = {k: v for k, v in pod_env.items() if k.startswith(ENV_PREFIX) or k == "HOSTNAME"}
        # Files the image provides are read from the repository instead.
        for key, value in effective.items():
            name = ENV_PREFIX + "__".join(part.upper() for part in key.split("."))
            if isinstance(value, str) and value in image_paths and name not in run_env:
                run_env[name] = str(repo / image_paths[value])
        run_env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
            f.write(file_text)
            f.flush()
            run = subprocess.run(
                [str(args.sluice_bin), "check-config", "--config", f.name],
                env=run_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        lines = [ln.strip() for ln in run.stderr.splitlines() if ln.strip()]
        c.check(
            run.returncode == 0,
            f"`{args.sluice_bin.name} check-config` accepts sluice.toml with pod {APP}-0's environment",
            f"exit {run.returncode}: " + " | ".join(lines[:10]),
        )
    c.check(
        effective.get("cluster.enabled") is True,
        "cluster.enabled = true",
        f"it is {effective.get('cluster.enabled')!r}",
    )

    bind = str(effective.get("server.bind", ""))
    bind_port = port_of(bind)
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    c.check(
        not bind.startswith(("127.", "localhost", "[::1]")) and bind_port in ports.values(),
        f"server.bind ({bind}) listens on all interfaces, on a declared container port",
        f"container ports are {ports}",
    )

    # --- graceful leave -------------------------------------------------------------------
    grace_ms = int(effective.get("server.shutdown_grace_ms", 0))
    tgps = pod_spec.get("terminationGracePeriodSeconds", 30)
    c.check(
        tgps * 1000 > grace_ms + HANDOVER_ALLOWANCE_MS,
        f"terminationGracePeriodSeconds ({tgps} s) > server.shutdown_grace_ms ({grace_ms} ms)"
        f" + handover allowance ({HANDOVER_ALLOWANCE_MS} ms)",
        f"{tgps * 1000} ms <= {grace_ms + HANDOVER_ALLOWANCE_MS} ms:"
        " the kubelet would SIGKILL a draining node",
    )

    # --- probes ---------------------------------------------------------------------------
    for kind, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        probe = container.get(kind) or {}
        got = (probe.get("httpGet") or {}).get("path")
        c.check(
            got == path and probe_port(probe, container) == bind_port,
            f"{kind} is GET {path} on port {bind_port}",
            f"it is {got!r} on port {probe_port(probe, container)!r}",
        )
    startup = container.get("startupProbe")
    if startup:
        got = (startup.get("httpGet") or {}).get("path")
        c.check(
            got == "/healthz",
            "startupProbe is GET /healthz (readiness may come much later)",
            f"it is {got!r}",
        )

    # --- security -------------------------------------------------------------------------
    def non_root(spec: dict, ctr: dict) -> tuple[bool, str]:
        psc, csc = spec.get("securityContext") or {}, ctr.get("securityContext") or {}
        run_as_non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        why = []
        if run_as_non_root is not True:
            why.append("runAsNonRoot is not true")
        if uid == 0:
            why.append("runAsUser is 0")
        if csc.get("allowPrivilegeEscalation") is not False:
            why.append("allowPrivilegeEscalation is not false")
        if csc.get("readOnlyRootFilesystem") is not True:
            why.append("readOnlyRootFilesystem is not true")
        return not why, ", ".join(why)

    ok, why = non_root(pod_spec, container)
    c.check(ok, f"{APP} runs as non-root, no privilege escalation, read-only root filesystem", why)
    c.check(
        (pod_spec.get("securityContext") or {}).get("fsGroup") not in (None, 0),
        f"{APP} pod sets a non-root fsGroup (its volume is writable by the non-root user)",
    )

    # --- data on the persistent volume ----------------------------------------------------
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []}
    pvc_dirs = [m["mountPath"] for m in mounts if m["name"] in claims]
    wanted = {"checkpoint.dir": effective.get("checkpoint.dir")}
    for sink in ("output", "dead_letter"):
        if effective.get(f"{sink}.kind") == "file":
            wanted[f"{sink}.path"] = effective.get(f"{sink}.path")
    off = [
        f"{k} = {v}"
        for k, v in wanted.items()
        if not (isinstance(v, str) and any(under(v, d) for d in pvc_dirs))
    ]
    c.check(
        bool(pvc_dirs) and not off,
        f"checkpoints and file sinks live on the volumeClaimTemplate ({', '.join(pvc_dirs) or 'none'})",
        "; ".join(off) or "no volumeClaimTemplate is mounted",
    )
    if effective.get("lookup.backend") == "memory":
        table = str(effective.get("lookup.memory.table", ""))
        c.check(
            table in image_paths or any(under(table, m["mountPath"]) for m in mounts),
            f"lookup.memory.table ({table}) is in the image or on a mounted volume",
            "a relative or unmounted path: the node cannot load its table",
        )

    # --- services, selectors --------------------------------------------------------------
    c.check(
        selects(sts["spec"]["selector"], pod_labels), f"StatefulSet {APP} selector matches its pod labels"
    )
    workloads = [s for s in by_kind.get("StatefulSet", [])]
    for kind in ("Service", "PodDisruptionBudget"):
        for obj in by_kind.get(kind, []):
            sel = obj["spec"].get("selector")
            hits = [
                w["metadata"]["name"]
                for w in workloads
                if selects(sel, w["spec"]["template"]["metadata"].get("labels") or {})
            ]
            target = f"StatefulSet {'/'.join(hits)}" if hits else "a StatefulSet"
            c.check(
                bool(hits),
                f"{kind} {obj['metadata']['name']} selects the pods of {target}",
                f"selector {sel} matches no StatefulSet's pod labels",
            )

    headless = named("Service", sts["spec"].get("serviceName", ""))
    if c.check(headless is not None, f"serviceName {sts['spec'].get('serviceName')!r} is a rendered Service"):
        hs = headless["spec"]
        c.check(
            hs.get("clusterIP") == "None"
            and hs.get("publishNotReadyAddresses") is True
            and selects(hs.get("selector"), pod_labels),
            f"{headless['metadata']['name']} is headless, publishes not-ready addresses, selects {APP} pods",
        )
    client = named("Service", APP)
    if c.check(client is not None, f"client Service {APP} exists"):
        targets = {p.get("targetPort") for p in client["spec"].get("ports") or []}
        c.check(
            any(t == bind_port or ports.get(t) == bind_port for t in targets)
            and selects(client["spec"].get("selector"), pod_labels),
            f"Service {APP} routes to the pods' port {bind_port}",
            f"target ports {targets}",
        )

    pdbs = [
        p for p in by_kind.get("PodDisruptionBudget", []) if selects(p["spec"].get("selector"), pod_labels)
    ]
    c.check(
        len(pdbs) == 1 and pdbs[0]["spec"].get("maxUnavailable") == 1,
        f"one PodDisruptionBudget covers {APP} pods, maxUnavailable 1",
        f"found {[(p['metadata']['name'], p['spec']) for p in pdbs]}",
    )

    # --- cluster identity: advertise URL --------------------------------------------------
    def defined_before(var: str, index: int, field: str) -> bool:
        for e in env_list[:index]:
            if e["name"] == var:
                return (((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")) == field
        return False

    adv_env = "SLUICE__CLUSTER__ADVERTISE"
    if adv_env in env and "value" in env[adv_env]:
        index = env_list.index(env[adv_env])
        value = env[adv_env]["value"]
        svc = sts["spec"].get("serviceName")
        c.check(
            re.fullmatch(
                rf"http://\$\(POD_NAME\)\.{re.escape(svc)}\.\$\(POD_NAMESPACE\)\.svc(\.[a-z0-9.-]+)?:{bind_port}",
                value,
            )
            is not None
            and defined_before("POD_NAME", index, "metadata.name")
            and defined_before("POD_NAMESPACE", index, "metadata.namespace"),
            f"{adv_env} is the pod's DNS name under {svc} on port {bind_port}, from the downward API",
            f"value {value!r}; POD_NAME/POD_NAMESPACE must come from fieldRef"
            " metadata.name/namespace, defined before it",
        )
    else:
        c.fail(f"{adv_env} is set per pod", "without it other nodes cannot reach this one")

    # --- autoscaling ----------------------------------------------------------------------
    hpas = [
        h
        for h in by_kind.get("HorizontalPodAutoscaler", [])
        if (h["spec"].get("scaleTargetRef") or {}).get("name") == APP
    ]
    partitions = effective.get("pipeline.partitions")
    if c.check(len(hpas) == 1, f"one HorizontalPodAutoscaler targets {APP}"):
        spec = hpas[0]["spec"]
        ref = spec["scaleTargetRef"]
        c.check(
            ref.get("kind") == "StatefulSet" and ref.get("apiVersion") == "apps/v1",
            f"HPA scaleTargetRef is apps/v1 StatefulSet {APP}",
            f"it is {ref}",
        )
        window = ((spec.get("behavior") or {}).get("scaleDown") or {}).get("stabilizationWindowSeconds")
        c.check(
            isinstance(window, int) and window >= MIN_SCALE_DOWN_WINDOW_S,
            f"HPA scale-down stabilization window ({window} s) >= {MIN_SCALE_DOWN_WINDOW_S} s",
        )
        mx, mn = spec.get("maxReplicas"), spec.get("minReplicas", 1)
        c.check(
            isinstance(partitions, int) and mn <= mx <= partitions,
            f"HPA minReplicas ({mn}) <= maxReplicas ({mx}) <= pipeline.partitions ({partitions})",
        )
        metrics = spec.get("metrics") or []
        pods_metrics = [m["pods"]["metric"]["name"] for m in metrics if m.get("type") == "Pods"]
        c.check(
            bool(pods_metrics) and len(pods_metrics) == len(metrics),
            f"HPA scales on per-pod (type Pods) metrics: {', '.join(pods_metrics)}",
        )
        rules_file = args.k8s_dir / "prometheus-adapter-rules.yaml"
        served = set()
        if rules_file.is_file():
            values = yaml.safe_load(rules_file.read_text()) or {}
            for rule in (values.get("rules") or {}).get("custom") or []:
                served.add((rule.get("name") or {}).get("as"))
        missing = [m for m in pods_metrics if m not in served]
        c.check(
            not missing,
            f"every HPA metric is served by a rule in {rules_file.name}",
            f"no adapter rule names {missing}",
        )
        c.check(
            "replicas" not in sts["spec"],
            f"StatefulSet {APP} leaves spec.replicas to the HPA",
            "with it, every `kubectl apply -k` resets the count and nodes leave and rejoin",
        )

    podmonitor_file = args.k8s_dir / "podmonitor.yaml"
    if podmonitor_file.is_file():
        pm = yaml.safe_load(podmonitor_file.read_text())
        c.check(selects(pm["spec"].get("selector"), pod_labels), f"{podmonitor_file.name} selects {APP} pods")

    # --- etcd -----------------------------------------------------------------------------
    if c.check(etcd is not None, f"StatefulSet {ETCD} is rendered"):
        replicas = etcd["spec"].get("replicas", 1)
        svc_name = etcd["spec"].get("serviceName")
        esvc = named("Service", svc_name)
        c.check(replicas >= 3 and replicas % 2 == 1, f"etcd has an odd number of members >= 3 ({replicas})")
        c.check(
            esvc is not None
            and esvc["spec"].get("clusterIP") == "None"
            and esvc["spec"].get("publishNotReadyAddresses") is True,
            f"etcd serviceName {svc_name!r} is headless and publishes not-ready addresses"
            " (members find each other before quorum)",
        )
        c.check(
            etcd["spec"].get("podManagementPolicy") == "Parallel",
            "etcd members start in parallel (OrderedReady would wait for a quorum that cannot form)",
        )
        expected = {f"{ETCD}-{i}" for i in range(replicas)}
        ectr = etcd["spec"]["template"]["spec"]["containers"][0]
        eargs = (ectr.get("command") or []) + (ectr.get("args") or [])
        initial = next((a.split("=", 1)[1] for a in eargs if a.startswith("--initial-cluster=")), "")
        members = {}
        for part in filter(None, initial.split(",")):
            name, _, url = part.partition("=")
            members[name] = url
        c.check(
            set(members) == expected
            and all(
                re.fullmatch(rf"http://{n}\.{re.escape(svc_name)}(\.[a-z0-9.-]+)?:2380", u)
                for n, u in members.items()
            ),
            f"etcd --initial-cluster names exactly {', '.join(sorted(expected))} at <member>.{svc_name}:2380",
            f"it is {initial!r}",
        )
        endpoints = effective.get("cluster.etcd") or []
        hosts = set()
        bad = []
        for url in endpoints:
            m = re.fullmatch(rf"http://({ETCD}-\d+)\.{re.escape(svc_name)}(\.[a-z0-9.-]+)?:2379", str(url))
            if m:
                hosts.add(m.group(1))
            else:
                bad.append(url)
        c.check(
            not bad and hosts == expected,
            f"cluster.etcd lists every etcd member's client URL ({len(expected)})",
            f"got {endpoints}",
        )
        quorum = replicas // 2 + 1
        epdb = [
            p
            for p in by_kind.get("PodDisruptionBudget", [])
            if selects(p["spec"].get("selector"), etcd["spec"]["template"]["metadata"].get("labels") or {})
        ]
        c.check(
            len(epdb) == 1
            and (
                epdb[0]["spec"].get("minAvailable") == quorum
                or epdb[0]["spec"].get("maxUnavailable") == replicas - quorum
            ),
            f"etcd PodDisruptionBudget keeps a quorum ({quorum} of {replicas})",
        )
        ok, why = non_root(etcd["spec"]["template"]["spec"], ectr)
        c.check(ok, "etcd runs as non-root, no privilege escalation, read-only root filesystem", why)
        c.check(
            etcd["spec"]["template"]["spec"].get("enableServiceLinks") is False,
            "etcd pods disable service links (ETCD_* variables would be read as etcd flags)",
        )

    total = c.passed + c.failed
    if c.failed:
        print(f"invariants: {c.failed} of {total} violated")
        return 1
    print(f"invariants: all {total} hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
