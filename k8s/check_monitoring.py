"""Checks of the optional monitoring files (k8s/check.sh runs it; promtool runs after it).

    python3 check_monitoring.py K8S_DIR METRICS_RS RULES_OUT

- prometheusrule.yaml is a PrometheusRule outside the kustomization (like podmonitor.yaml:
  the CRD may be absent), every alert has a severity and a summary; its spec (the groups)
  is written to RULES_OUT for `promtool check rules` and `promtool test rules`;
- grafana-dashboard.json is valid JSON with unique panel ids, every panel that is not a
  row queries something;
- every sluice_* metric either file names exists in METRICS_RS (src/metrics.rs), histogram
  series (_bucket, _sum, _count) included.
Prints one line per failure and exits 1 if there was any.
"""

import json
import re
import sys
from pathlib import Path

import yaml

METRIC = re.compile(r"\bsluice_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_sum", "_count")


def known_metrics(metrics_rs):
    return set(re.findall(r'"(sluice_[a-z0-9_]+)"', Path(metrics_rs).read_text()))


def unknown(names, known):
    out = set()
    for n in names:
        base = next((n[: -len(s)] for s in SUFFIXES if n.endswith(s)), n)
        if n not in known and base not in known:
            out.add(n)
    return out


def main(k8s_dir, metrics_rs, rules_out):
    k8s = Path(k8s_dir)
    known = known_metrics(metrics_rs)
    failures = []
    if not known:
        failures.append(f"no sluice_* metric found in {metrics_rs}")
    resources = yaml.safe_load((k8s / "kustomization.yaml").read_text()).get("resources", [])

    rule_file = k8s / "prometheusrule.yaml"
    rule = yaml.safe_load(rule_file.read_text())
    if rule.get("kind") != "PrometheusRule" or rule.get("apiVersion") != "monitoring.coreos.com/v1":
        failures.append(f"{rule_file.name} is not a monitoring.coreos.com/v1 PrometheusRule")
    if rule_file.name in resources:
        failures.append(f"{rule_file.name} is in the kustomization (the CRD may be absent: keep it optional)")
    groups = rule.get("spec", {}).get("groups", [])
    exprs, alerts = [], 0
    for g in groups:
        for r in g.get("rules", []):
            exprs.append(str(r.get("expr", "")))
            if "alert" in r:
                alerts += 1
                if not r.get("labels", {}).get("severity"):
                    failures.append(f"alert {r['alert']} has no severity label")
                if not r.get("annotations", {}).get("summary"):
                    failures.append(f"alert {r['alert']} has no summary")
    if alerts == 0:
        failures.append(f"{rule_file.name} has no alerts")
    for n in sorted(unknown({m for e in exprs for m in METRIC.findall(e)}, known)):
        failures.append(f"{rule_file.name} names {n}, which {metrics_rs} does not define")
    Path(rules_out).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))

    dash_file = k8s / "grafana-dashboard.json"
    try:
        dash = json.loads(dash_file.read_text())
    except json.JSONDecodeError as e:
        failures.append(f"{dash_file.name} is not valid JSON: {e}")
        dash = {}
    if dash_file.name in resources:
        failures.append(f"{dash_file.name} is in the kustomization")
    panels = list(dash.get("panels", []))
    for p in list(panels):
        panels.extend(p.get("panels", []))  # panels inside collapsed rows
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        failures.append(f"{dash_file.name}: panel ids are not unique")
    queries = []
    for p in panels:
        if p.get("type") == "row":
            continue
        qs = [t.get("expr", "") for t in p.get("targets", []) if t.get("expr")]
        if not qs:
            failures.append(f"{dash_file.name}: panel {p.get('title')!r} has no query")
        queries += qs
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        queries.append(q.get("query", "") if isinstance(q, dict) else str(q or ""))
    if not dash.get("uid") or not dash.get("title") or not queries:
        failures.append(f"{dash_file.name}: no uid, title or queries")
    for n in sorted(unknown({m for q in queries for m in METRIC.findall(q)}, known)):
        failures.append(f"{dash_file.name} names {n}, which {metrics_rs} does not define")

    for f in failures:
        print(f"FAIL  {f}")
    if not failures:
        print(f"    ok: {alerts} alerts, {len(panels)} dashboard panels, every sluice_* metric they name exists")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    sys.exit(main(*sys.argv[1:]))
