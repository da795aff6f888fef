#!/usr/bin/env python3
"""Checks and generators behind deploy/check and deploy/render-k8s.

Runs in the tools virtualenv that deploy/check sets up (PyYAML, helm-python-sdk,
kubernetes-validate). Every subcommand prints what it checked and exits non-zero on failure.

  deploytool.py helm-lint CHART [--values F]... [--kube-version v1.33.0]
  deploytool.py helm-render CHART --out DIR [--values F] [--name N] [--namespace NS] [--header H]
  deploytool.py k8s-validate --kube-version 1.33.0 [--promtool P] FILE...
  deploytool.py chart-policy DIR...
  deploytool.py compose-policy COMPOSE_FILE
  deploytool.py sync DEPLOY_DIR [--check]
  deploytool.py dashboards DEPLOY_DIR [--promtool P]
  deploytool.py metric-names DEPLOY_DIR
  deploytool.py metrics-check DEPLOY_DIR --bourse-bin PATH [--timeout S]
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

# Canonical files live in the chart (a chart cannot read files outside its directory); the
# compose stack reads copies of them. `sync` writes the copies, `sync --check` compares.
SYNCED = [
    ("helm/bourse/files/dashboards", "grafana/dashboards", "*.json"),
    ("helm/bourse/files/prometheus", "prometheus/rules", "*.yml"),
]

BOURSE_ROLES = {"api", "quote-service", "relay", "exchange", "streamer"}
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
METRIC_RE = re.compile(r"\bbourse_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class Failures:
    def __init__(self, what: str):
        self.what = what
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def finish(self, ok_msg: str) -> int:
        if self.items:
            for m in self.items:
                print(f"  FAIL {self.what}: {m}", file=sys.stderr)
            print(f"  {self.what}: {len(self.items)} problem(s)", file=sys.stderr)
            return 1
        print(f"  ok   {self.what}: {ok_msg}")
        return 0


def load_values(paths: list[str] | None) -> dict:
    merged: dict = {}
    for p in paths or []:
        data = yaml.safe_load(Path(p).read_text()) or {}
        merged = deep_merge(merged, data)
    return merged


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# --- Helm ---------------------------------------------------------------------------------------

def cmd_helm_lint(args) -> int:
    import helm_python as helm

    f = Failures("helm lint")
    infos = 0
    sets = [("default values", [])] + [(Path(v).name, [v]) for v in args.values or []]
    for label, files in sets:
        report = helm.lint(args.chart, load_values(files), strict=True, kube_version=args.kube_version)
        for err in report.get("errors") or []:
            f.add(f"{label}: {err}")
        for m in report.get("messages") or []:
            sev = m.get("severity", 0)
            text = f"{label}: [{m.get('path')}] {m.get('error')}"
            if sev >= 2:
                f.add(text)
            else:
                infos += 1
    return f.finish(f"{args.chart} with {len(sets)} value set(s), strict, kube {args.kube_version} "
                    f"({infos} info message(s))")


def render(chart: str, values: dict, name: str, namespace: str) -> dict[str, str]:
    import helm_python as helm

    with helm.Chart.load(chart) as c:
        return c.render(values, name=name, namespace=namespace, is_install=True)


def cmd_helm_render(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifests = render(args.chart, load_values(args.values), args.name, args.namespace)
    written = []
    for path, text in sorted(manifests.items()):
        base = os.path.basename(path)
        if base.startswith("_") or base == "NOTES.txt" or not base.endswith((".yaml", ".yml")):
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        if not docs:
            continue
        body = text.strip("\n") + "\n"
        header = (args.header + "\n") if args.header else ""
        (out / base).write_text(header + body)
        written.append(base)
    if args.kustomization:
        lines = [
            (args.header + "\n") if args.header else "",
            "apiVersion: kustomize.config.k8s.io/v1beta1\n",
            "kind: Kustomization\n",
            "resources:\n",
        ]
        lines += [f"  - {w}\n" for w in sorted(set(written + args.extra_resource))]
        (out / "kustomization.yaml").write_text("".join(lines))
    print(f"  ok   helm render: {len(written)} manifest file(s) -> {out}")
    return 0


# --- Kubernetes schema validation ---------------------------------------------------------------

def iter_docs(files: list[str]):
    for fn in files:
        for i, doc in enumerate(yaml.safe_load_all(Path(fn).read_text())):
            if doc:
                yield fn, i, doc


def cmd_k8s_validate(args) -> int:
    import kubernetes_validate as kv

    f = Failures(f"kubernetes schemas {args.kube_version}")
    n = 0
    crds = 0
    for fn, i, doc in iter_docs(args.files):
        kind, api = doc.get("kind"), doc.get("apiVersion")
        where = f"{Path(fn).name}#{i} {kind}/{(doc.get('metadata') or {}).get('name')}"
        if (api, kind) in CRD_KINDS:
            crds += 1
            check_crd(doc, where, f, args.promtool)
            continue
        if kind == "Kustomization":
            continue
        n += 1
        try:
            kv.validate(doc, args.kube_version, strict=True)
        except kv.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            f.add(f"{where}: {path}: {e.message}")
        except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
            f.add(f"{where}: {e}")
    return f.finish(f"{n} object(s) valid (strict), {crds} Prometheus Operator object(s) checked")


def check_crd(doc: dict, where: str, f: Failures, promtool: str | None) -> None:
    spec = doc.get("spec") or {}
    allowed_meta = {"name", "namespace", "labels", "annotations"}
    extra = set(doc.get("metadata") or {}) - allowed_meta
    if extra:
        f.add(f"{where}: unexpected metadata keys {sorted(extra)}")
    if doc["kind"] == "ServiceMonitor":
        if not spec.get("selector") or not spec.get("endpoints"):
            f.add(f"{where}: needs spec.selector and spec.endpoints")
        for ep in spec.get("endpoints") or []:
            unknown = set(ep) - {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings",
                                 "scheme", "honorLabels", "targetPort"}
            if unknown:
                f.add(f"{where}: unknown endpoint keys {sorted(unknown)}")
            for r in ep.get("relabelings") or []:
                if set(r) - {"sourceLabels", "targetLabel", "regex", "replacement", "action", "separator", "modulus"}:
                    f.add(f"{where}: unknown relabeling keys {sorted(r)}")
    else:
        if set(spec) != {"groups"}:
            f.add(f"{where}: spec must hold only groups")
        if promtool:
            with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as t:
                yaml.safe_dump(spec, t)
            r = subprocess.run([promtool, "check", "rules", t.name], capture_output=True, text=True)
            os.unlink(t.name)
            if r.returncode != 0:
                f.add(f"{where}: promtool check rules: {r.stdout}{r.stderr}")


# --- Policy checks on rendered manifests --------------------------------------------------------

def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    return None


def cmd_chart_policy(args) -> int:
    f = Failures("chart policy")
    total = 0
    for d in args.dirs:
        files = sorted(str(p) for p in Path(d).glob("*.yaml") if p.name != "kustomization.yaml")
        docs = [(fn, doc) for fn, _, doc in iter_docs(files)]
        total += policy_for_render(Path(d).name, docs, f)
    return f.finish(f"{total} workload(s) in {len(args.dirs)} rendering(s): probes, resources, non-root, "
                    "read-only root, no capabilities; API labelled and the only exposed Service; "
                    "default-deny NetworkPolicy")


def policy_for_render(label: str, docs: list[tuple[str, dict]], f: Failures) -> int:
    workloads = 0
    api_found = False
    has_netpol = any(doc["kind"] == "NetworkPolicy" for _, doc in docs)
    default_deny = False
    for fn, doc in docs:
        kind = doc["kind"]
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        where = f"{label}: {kind}/{name}"
        labels = meta.get("labels") or {}
        if kind == "Service":
            stype = doc["spec"].get("type", "ClusterIP")
            comp = labels.get("app.kubernetes.io/component")
            if stype != "ClusterIP" and comp != "api":
                f.add(f"{where}: only the API may be exposed, found type {stype}")
        if kind == "Ingress":
            for rule in doc["spec"].get("rules") or []:
                for p in (rule.get("http") or {}).get("paths") or []:
                    svc = p["backend"]["service"]["name"]
                    if not svc.endswith("-api"):
                        f.add(f"{where}: routes to {svc}, only the API may be exposed")
        if kind == "NetworkPolicy":
            spec = doc["spec"]
            if "ingress" not in spec and spec.get("policyTypes") == ["Ingress"]:
                default_deny = True
        spec = pod_spec(doc)
        if spec is None:
            continue
        workloads += 1
        comp = labels.get("app.kubernetes.io/component")
        tlabels = doc["spec"]["template"]["metadata"].get("labels") or {}
        if comp == "api":
            api_found = True
            if kind != "Deployment" or tlabels.get("app.kubernetes.io/component") != "api":
                f.add(f"{where}: the API must be a Deployment whose pods carry app.kubernetes.io/component: api")
        psc = spec.get("securityContext") or {}
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            cw = f"{where} container {c['name']}"
            res = c.get("resources") or {}
            for k in ("requests", "limits"):
                if not (res.get(k) or {}).get("cpu") or not (res.get(k) or {}).get("memory"):
                    f.add(f"{cw}: resources.{k} needs cpu and memory")
            if kind != "Job":
                if "livenessProbe" not in c or "readinessProbe" not in c:
                    f.add(f"{cw}: needs livenessProbe and readinessProbe")
            csc = c.get("securityContext") or {}
            if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                f.add(f"{cw}: runAsNonRoot is not set")
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            if uid in (None, 0):
                f.add(f"{cw}: needs a non-zero runAsUser (numeric, so the kubelet can verify non-root)")
            if csc.get("readOnlyRootFilesystem") is not True:
                f.add(f"{cw}: readOnlyRootFilesystem must be true")
            if csc.get("allowPrivilegeEscalation") is not False:
                f.add(f"{cw}: allowPrivilegeEscalation must be false")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                f.add(f"{cw}: capabilities.drop must contain ALL")
            if comp in BOURSE_ROLES:
                ann = doc["spec"]["template"]["metadata"].get("annotations") or {}
                ports = [p.get("containerPort") for p in c.get("ports") or []]
                env = {e["name"]: e.get("value") for e in c.get("env") or []}
                addr = env.get("BOURSE_HTTP_ADDR", "")
                if not ports or not addr.endswith(f":{ports[0]}"):
                    f.add(f"{cw}: BOURSE_HTTP_ADDR {addr!r} does not match containerPort {ports}")
                if ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") != str(ports[0]):
                    f.add(f"{cw}: prometheus.io/port does not match the container port")
                for e in c.get("env") or []:
                    n = e["name"]
                    if not (n.startswith("BOURSE_") or n in {"DB_PASSWORD", "AMQP_PASSWORD"}):
                        f.add(f"{cw}: unexpected env {n}")
    if not api_found:
        f.add(f"{label}: no API Deployment labelled app.kubernetes.io/component: api")
    cross_references(label, [doc for _, doc in docs], f)
    if has_netpol and not default_deny:
        f.add(f"{label}: NetworkPolicies without a default-deny ingress policy")
    return workloads


def selector_matches(sel: dict, labels: dict) -> bool:
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        val = labels.get(e["key"])
        op = e["operator"]
        if op == "In" and val not in e.get("values", []):
            return False
        if op == "NotIn" and val in e.get("values", []):
            return False
        if op == "Exists" and e["key"] not in labels:
            return False
        if op == "DoesNotExist" and e["key"] in labels:
            return False
    return True


def cross_references(label: str, docs: list[dict], f: Failures) -> None:
    """References between objects of one rendering point at something that exists."""
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    pods = []  # (workload name, pod labels, pod spec)
    for d in docs:
        spec = pod_spec(d)
        if spec is not None:
            pods.append((d["metadata"]["name"], d["spec"]["template"]["metadata"].get("labels") or {}, spec, d))
    secrets = by_kind.get("Secret", {})
    configmaps = by_kind.get("ConfigMap", {})

    def any_pod(sel: dict) -> bool:
        return any(selector_matches(sel, lab) for _, lab, _, _ in pods)

    for name, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector") or {}
        matching = [(n, sp) for n, lab, sp, _ in pods if selector_matches({"matchLabels": sel}, lab)]
        if not matching:
            f.add(f"{label}: Service/{name} selects no pod")
        for port in svc["spec"].get("ports") or []:
            tp = port.get("targetPort")
            if isinstance(tp, str):
                names = {p.get("name") for _, sp in matching for c in sp["containers"] for p in c.get("ports") or []}
                if tp not in names:
                    f.add(f"{label}: Service/{name} targets port {tp!r}, which its pods do not name")
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        spec = d.get("spec") or {}
        if kind == "Deployment" or kind == "StatefulSet":
            sel = spec["selector"]
            if not selector_matches(sel, spec["template"]["metadata"].get("labels") or {}):
                f.add(f"{label}: {kind}/{name} selector does not match its own pod labels")
        if kind == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            if ref["name"] not in by_kind.get(ref["kind"], {}):
                f.add(f"{label}: HPA/{name} scales missing {ref['kind']}/{ref['name']}")
        if kind == "PodDisruptionBudget" and not any_pod(spec["selector"]):
            f.add(f"{label}: PDB/{name} selects no pod")
        if kind == "NetworkPolicy":
            if spec["podSelector"] and not any_pod(spec["podSelector"]):
                f.add(f"{label}: NetworkPolicy/{name} applies to no pod")
            for rule in spec.get("ingress") or []:
                for peer in rule.get("from") or []:
                    if set(peer) == {"podSelector"} and not any_pod(peer["podSelector"]):
                        f.add(f"{label}: NetworkPolicy/{name} allows a podSelector that matches no pod")
        if kind == "Ingress":
            for rule in spec.get("rules") or []:
                for path in (rule.get("http") or {}).get("paths") or []:
                    svc = path["backend"]["service"]
                    target = by_kind.get("Service", {}).get(svc["name"])
                    if not target:
                        f.add(f"{label}: Ingress/{name} routes to missing Service/{svc['name']}")
                    elif "name" in svc["port"] and svc["port"]["name"] not in {
                            p.get("name") for p in target["spec"]["ports"]}:
                        f.add(f"{label}: Ingress/{name} uses port {svc['port']['name']!r} unknown to the Service")
    for wname, _, spec, d in pods:
        where = f"{label}: {d['kind']}/{wname}"
        sa = spec.get("serviceAccountName")
        if sa and sa not in by_kind.get("ServiceAccount", {}):
            f.add(f"{where}: ServiceAccount {sa} is not in the chart")
        for vol in spec.get("volumes") or []:
            cm = (vol.get("configMap") or {}).get("name")
            if cm and cm not in configmaps:
                f.add(f"{where}: volume from missing ConfigMap/{cm}")
        for c in spec["containers"]:
            defined: set[str] = set()
            for src in c.get("envFrom") or []:
                cm = (src.get("configMapRef") or {}).get("name")
                if cm and cm not in configmaps:
                    f.add(f"{where}: envFrom missing ConfigMap/{cm}")
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and secrets and not ref.get("optional"):
                    sec = secrets.get(ref["name"])
                    if sec is None:
                        f.add(f"{where}: env {e['name']} from missing Secret/{ref['name']}")
                    elif ref["key"] not in (sec.get("data") or {}) | (sec.get("stringData") or {}):
                        f.add(f"{where}: env {e['name']}: Secret/{ref['name']} has no key {ref['key']}")
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
                    if var not in defined:
                        f.add(f"{where}: env {e['name']} refers to $({var}) before it is defined")
                defined.add(e["name"])


# --- Compose ------------------------------------------------------------------------------------

def cmd_compose_policy(args) -> int:
    f = Failures("compose policy")
    path = Path(args.file)
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services") or {}
    published = []
    for name, svc in services.items():
        if svc.get("ports"):
            published.append(name)
            if name not in {"api", "grafana"}:
                f.add(f"{name}: publishes ports; only the API and Grafana may")
        hc = svc.get("healthcheck") or {}
        if not hc.get("test") and not hc.get("disable"):
            f.add(f"{name}: no healthcheck")
        if hc.get("disable") and svc.get("restart") not in ("no", '"no"', False):
            f.add(f"{name}: a service without healthcheck must be a one-shot (restart: \"no\")")
        for dep, cond in (svc.get("depends_on") or {}).items():
            if dep not in services:
                f.add(f"{name}: depends on unknown service {dep}")
                continue
            c = (cond or {}).get("condition")
            dhc = services[dep].get("healthcheck") or {}
            if c == "service_healthy" and (dhc.get("disable") or not dhc.get("test")):
                f.add(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        for vol in svc.get("volumes") or []:
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith((".", "/")):
                if not (path.parent / src).exists():
                    f.add(f"{name}: bind mount source {src} does not exist")
    for want in ("api", "grafana"):
        if want not in published:
            f.add(f"{want}: must be published to the host")
    return f.finish(f"{len(services)} services; published: {', '.join(published)}; healthchecks and "
                    "depends_on conditions consistent; bind mounts exist")


# --- Docker ignore file -------------------------------------------------------------------------

DOCKER_CONTEXT_KEEP = ["Cargo.toml", "Cargo.lock", "crates/bourse/src/main.rs", "crates/api/Cargo.toml",
                       "crates/store/migrations/postgres/0001_init.sql", "deploy/docker/healthcheck.sh"]
DOCKER_CONTEXT_DROP = ["target/release/bourse", "crates/api/target/debug/x", ".git/HEAD", "bourse.db",
                       "crates/x/apicalls.log.1", "deploy/compose.yaml", "deploy/helm/bourse/values.yaml",
                       "bench/results/run.txt"]


def docker_pattern_re(pattern: str) -> re.Pattern:
    # Docker's rules: anchored at the context root, `*` within one path element, `**` across them;
    # a pattern that matches a directory excludes everything below it.
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out += "/?"
                i += 1
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile("^" + out + "(/.*)?$")


def docker_ignored(patterns: list[tuple[bool, re.Pattern]], path: str) -> bool:
    ignored = False
    for negate, rx in patterns:
        if rx.match(path):
            ignored = not negate
    return ignored


def cmd_dockerignore(args) -> int:
    f = Failures("docker ignore file")
    patterns = []
    for line in Path(args.file).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line[1:] if negate else line
        pat = os.path.normpath(pat.lstrip("/"))
        patterns.append((negate, docker_pattern_re(pat)))
    for p in DOCKER_CONTEXT_KEEP:
        if docker_ignored(patterns, p):
            f.add(f"{p} would be left out of the build context")
    for p in DOCKER_CONTEXT_DROP:
        if not docker_ignored(patterns, p):
            f.add(f"{p} would be sent in the build context")
    return f.finish(f"{Path(args.file).name} keeps the workspace sources and the healthcheck, drops "
                    "target/, .git, databases, logs and the rest of deploy/")


# --- Sync of canonical files --------------------------------------------------------------------

def cmd_sync(args) -> int:
    root = Path(args.deploy_dir)
    f = Failures("sync chart files -> compose copies")
    n = 0
    for src_rel, dst_rel, pattern in SYNCED:
        src, dst = root / src_rel, root / dst_rel
        srcs = {p.name for p in src.glob(pattern)}
        dsts = {p.name for p in dst.glob(pattern)} if dst.exists() else set()
        for name in sorted(srcs):
            n += 1
            if args.check:
                if name not in dsts or not filecmp.cmp(src / name, dst / name, shallow=False):
                    f.add(f"{dst_rel}/{name} differs from {src_rel}/{name} (run deploy/render-k8s)")
            else:
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, dst / name)
        for name in sorted(dsts - srcs):
            if args.check:
                f.add(f"{dst_rel}/{name} has no canonical copy in {src_rel} (run deploy/render-k8s)")
            else:
                (dst / name).unlink()
    return f.finish(f"{n} file(s) {'identical' if args.check else 'copied'}")


# --- Dashboards ---------------------------------------------------------------------------------

def dashboard_exprs(deploy: Path) -> list[tuple[str, str]]:
    out = []
    for p in sorted((deploy / "helm/bourse/files/dashboards").glob("*.json")):
        d = json.loads(p.read_text())

        def walk(panels):
            for panel in panels:
                for t in panel.get("targets") or []:
                    if t.get("expr"):
                        out.append((f"{p.name}: {panel.get('title')}", t["expr"]))
                walk(panel.get("panels") or [])

        walk(d.get("panels") or [])
    return out


def cmd_dashboards(args) -> int:
    deploy = Path(args.deploy_dir)
    f = Failures("grafana dashboards")
    uids = {}
    files = sorted((deploy / "helm/bourse/files/dashboards").glob("*.json"))
    for p in files:
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            f.add(f"{p.name}: invalid JSON: {e}")
            continue
        for key in ("uid", "title", "panels", "schemaVersion"):
            if key not in d:
                f.add(f"{p.name}: missing {key}")
        if d.get("uid") in uids:
            f.add(f"{p.name}: uid {d.get('uid')} also used by {uids[d.get('uid')]}")
        uids[d.get("uid")] = p.name
        ids = [pn.get("id") for pn in d.get("panels") or []]
        if len(ids) != len(set(ids)):
            f.add(f"{p.name}: duplicate panel ids")
        for pn in d.get("panels") or []:
            if (pn.get("datasource") or {}).get("type") != "prometheus":
                f.add(f"{p.name}: panel {pn.get('title')!r} has no prometheus datasource")
    exprs = dashboard_exprs(deploy)
    # PromQL syntax: every expression becomes a recording rule that promtool parses.
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr_{i}:check", "expr": e} for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as t:
        yaml.safe_dump(rules, t)
    r = subprocess.run([args.promtool, "check", "rules", t.name], capture_output=True, text=True)
    os.unlink(t.name)
    if r.returncode != 0:
        f.add("PromQL of a panel does not parse:\n" + r.stdout + r.stderr)
    for where, e in exprs:
        for m in sorted(used_metrics(e) - DOCUMENTED_METRICS):
            f.add(f"{where}: {m} is not one of the metrics named in docs/operations.md")
    for m in sorted(set(metric_names(deploy, dashboards=False)) - DOCUMENTED_METRICS):
        f.add(f"alert rules: {m} is not one of the metrics named in docs/operations.md")
    return f.finish(f"{len(files)} dashboard(s), {len(exprs)} PromQL expression(s) parse "
                    "(promtool); dashboards and alert rules use only the documented metric names")


# The metric names of docs/operations.md ("Metrics"): what dashboards and alerts may rely on.
DOCUMENTED_METRICS = {
    "bourse_http_requests_total", "bourse_http_request_duration_seconds", "bourse_ticks_ingested_total",
    "bourse_ticks_rejected_total", "bourse_ingest_lag_seconds", "bourse_target_hits_total",
    "bourse_orders_total", "bourse_outbox_depth", "bourse_outbox_oldest_age_seconds",
    "bourse_placement_attempts_total", "bourse_quote_requests_total", "bourse_quota_rejections_total",
}


def used_metrics(expr: str) -> set[str]:
    names = set()
    for m in METRIC_RE.findall(expr):
        # Histogram series (_bucket, _sum, _count) are announced under the base name.
        for suf in HISTOGRAM_SUFFIXES:
            if m.endswith(suf):
                m = m[: -len(suf)]
                break
        names.add(m)
    return names


def metric_names(deploy: Path, dashboards: bool = True, rules: bool = True) -> list[str]:
    names: set[str] = set()
    if dashboards:
        for _, e in dashboard_exprs(deploy):
            names |= used_metrics(e)
    if rules:
        for p in sorted((deploy / "helm/bourse/files/prometheus").glob("*.yml")):
            doc = yaml.safe_load(p.read_text()) or {}
            for g in doc.get("groups") or []:
                for r in g.get("rules") or []:
                    names |= used_metrics(r.get("expr", ""))
    return sorted(names)


def cmd_metric_names(args) -> int:
    for n in metric_names(Path(args.deploy_dir)):
        print(n)
    return 0


# --- Metrics of a running binary ----------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def pending_metrics(deploy: Path) -> set[str]:
    """Metric names whose feature is not built yet: listed in deploy/metrics-pending.txt, one a
    line, so that the gap is visible in the repository instead of hidden by a placeholder metric.
    A pending name that the binary does export is an error, so the list only ever shrinks."""
    path = Path(os.environ.get("BOURSE_METRICS_PENDING", deploy / "metrics-pending.txt"))
    if not path.is_file():
        return set()
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line)
    return names


def cmd_metrics_check(args) -> int:
    deploy = Path(args.deploy_dir)
    f = Failures("metrics of `bourse serve`")
    wanted = metric_names(deploy)
    binary = os.path.abspath(args.bourse_bin)
    if not os.access(binary, os.X_OK):
        f.add(f"{binary} is not an executable file")
        return f.finish("")
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bourse-metrics-check-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOURSE_")}
    env.update({
        "BOURSE_HTTP_ADDR": f"127.0.0.1:{port}",
        "BOURSE_DATABASE_URL": f"sqlite://{tmp}/check.db",
        "BOURSE_REQUEST_LOG": "",
        "BOURSE_JWT_SECRET": "deploy-check-only-" + os.urandom(8).hex(),
    })
    log = open(tmp / "serve.log", "w+")
    print(f"  ...  starting {binary} serve on 127.0.0.1:{port} (cwd {tmp})")
    proc = subprocess.Popen([binary, "serve"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + args.timeout
        healthy = False
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                f.add(f"`bourse serve` exited with {proc.returncode} before answering /_healthcheck")
                break
            try:
                status, _ = http_get(base + "/_healthcheck", timeout=2)
                if status == 200:
                    healthy = True
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            f.add(f"/_healthcheck did not answer 200 within {args.timeout}s")
        if healthy:
            status, body = http_get(base + "/metrics", timeout=10)
            if status != 200:
                f.add(f"/metrics answered {status}")
            helped = set()
            sampled = set()
            for line in body.splitlines():
                if line.startswith("# HELP "):
                    parts = line.split(None, 3)
                    if len(parts) >= 3:
                        helped.add(parts[2])
                elif line and not line.startswith("#"):
                    sampled.add(re.split(r"[{\s]", line, maxsplit=1)[0])
            pending = pending_metrics(deploy)
            for name in sorted(pending & helped):
                f.add(f"{name} is exported now: remove it from deploy/metrics-pending.txt")
            for name in wanted:
                if name in pending and name not in helped:
                    print(f"  pend {name}: its feature is not built yet (deploy/metrics-pending.txt)")
                    continue
                if name not in helped:
                    hint = " (it has samples but no # HELP line)" if any(
                        s == name or s.startswith(name + "_") for s in sampled) else ""
                    f.add(f"{name} is used by the dashboards/alerts but has no '# HELP {name}' line{hint}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.seek(0)
        tail = log.read()[-3000:]
        log.close()
        if f.items and tail:
            print("  --- last output of bourse serve ---", file=sys.stderr)
            print(tail, file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    return f.finish(f"all {len(wanted)} metric name(s) used by dashboards and alerts have # HELP lines or are listed as pending")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("helm-lint")
    p.add_argument("chart")
    p.add_argument("--values", action="append")
    p.add_argument("--kube-version", default="v1.33.0")
    p.set_defaults(fn=cmd_helm_lint)

    p = sub.add_parser("helm-render")
    p.add_argument("chart")
    p.add_argument("--out", required=True)
    p.add_argument("--values", action="append")
    p.add_argument("--name", default="bourse")
    p.add_argument("--namespace", default="bourse")
    p.add_argument("--header", default="")
    p.add_argument("--kustomization", action="store_true")
    p.add_argument("--extra-resource", action="append", default=[])
    p.set_defaults(fn=cmd_helm_render)

    p = sub.add_parser("k8s-validate")
    p.add_argument("--kube-version", required=True)
    p.add_argument("--promtool")
    p.add_argument("files", nargs="+")
    p.set_defaults(fn=cmd_k8s_validate)

    p = sub.add_parser("chart-policy")
    p.add_argument("dirs", nargs="+")
    p.set_defaults(fn=cmd_chart_policy)

    p = sub.add_parser("compose-policy")
    p.add_argument("file")
    p.set_defaults(fn=cmd_compose_policy)

    p = sub.add_parser("dockerignore")
    p.add_argument("file")
    p.set_defaults(fn=cmd_dockerignore)

    p = sub.add_parser("sync")
    p.add_argument("deploy_dir")
    p.add_argument("--check", action="store_true")
    p.set_defaults(fn=cmd_sync)

    p = sub.add_parser("dashboards")
    p.add_argument("deploy_dir")
    p.add_argument("--promtool", default="promtool")
    p.set_defaults(fn=cmd_dashboards)

    p = sub.add_parser("metric-names")
    p.add_argument("deploy_dir")
    p.set_defaults(fn=cmd_metric_names)

    p = sub.add_parser("metrics-check")
    p.add_argument("deploy_dir")
    p.add_argument("--bourse-bin", required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(fn=cmd_metrics_check)

    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
