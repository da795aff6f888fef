#!/usr/bin/env python3
"""The part of deploy/check and deploy/render-k8s that is about bourse itself, which no installed
checker knows (checkov, kubernetes-validate, hadolint, check-jsonschema, yamllint, promtool and
docker-compose do the rest: deploy/README.md, "Validation", says which does what).

  deploytool.py helm-lint CHART [--values F]... [--kube-version v1.33.0]
  deploytool.py helm-render CHART --out DIR [--values F] [--name N] [--namespace NS] [--header H]
                [--kustomization]
  deploytool.py chart-policy DIR...          exposure, default-deny, ports, env names, references
  deploytool.py compose-policy COMPOSE_FILE  published ports, healthchecks, bind mounts, env names
  deploytool.py dockerignore FILE            the build context keeps and drops the right paths
  deploytool.py dashboards DEPLOY_DIR [--promtool P]
  deploytool.py metric-names DEPLOY_DIR
  deploytool.py metrics-check DEPLOY_DIR --bourse-bin PATH [--timeout S]
"""
from __future__ import annotations

import argparse
import functools
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
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BOURSE_ROLES = {"api", "quote-service", "relay", "exchange", "streamer"}
METRIC_RE = re.compile(r"\bbourse_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class Failures:
    def __init__(self, what: str):
        self.what = what
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def finish(self, ok_msg: str) -> int:
        for m in self.items:
            print(f"  FAIL {self.what}: {m}", file=sys.stderr)
        if self.items:
            return 1
        print(f"  ok   {self.what}: {ok_msg}")
        return 0


@functools.cache
def documented(heading: str) -> set[str]:
    """Names in the first column of a table of docs/operations.md (the config reference is
    generated from crates/bourse/src/config.rs; the metrics table is the metrics' contract)."""
    text = (REPO / "docs/operations.md").read_text().split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z0-9_]+)` \|", text, re.M))


def unknown_settings(names) -> list[str]:
    return sorted(n for n in names if n.startswith("BOURSE_") and n not in documented("## Configuration"))


# --- Helm: the helm-python-sdk, as there is no helm binary --------------------------------------

def load_values(paths: list[str] | None) -> dict:
    def merge(a: dict, b: dict) -> dict:
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                        for k, v in b.items()}}

    merged: dict = {}
    for p in paths or []:
        merged = merge(merged, yaml.safe_load(Path(p).read_text()) or {})
    return merged


def cmd_helm_lint(args) -> int:
    import helm_python as helm

    f = Failures("helm lint")
    sets = [("default values", [])] + [(Path(v).name, [v]) for v in args.values or []]
    for label, files in sets:
        report = helm.lint(args.chart, load_values(files), strict=True, kube_version=args.kube_version)
        for err in report.get("errors") or []:
            f.add(f"{label}: {err}")
        for m in report.get("messages") or []:
            if m.get("severity", 0) >= 2:  # warnings and errors; infos pass
                f.add(f"{label}: [{m.get('path')}] {m.get('error')}")
    return f.finish(f"{args.chart} with {len(sets)} value set(s), strict, kube {args.kube_version}")


def cmd_helm_render(args) -> int:
    import helm_python as helm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with helm.Chart.load(args.chart) as chart:
        manifests = chart.render(load_values(args.values), name=args.name, namespace=args.namespace,
                                 is_install=True)
    header = args.header + "\n" if args.header else ""
    n = 0
    for path, text in sorted(manifests.items()):
        base = os.path.basename(path)
        if base.endswith((".yaml", ".yml")) and not base.startswith("_") and any(yaml.safe_load_all(text)):
            (out / base).write_text(header + text.strip("\n") + "\n")
            n += 1
    if args.kustomization:
        files = sorted(p.name for p in out.glob("*.yaml"))
        (out / "kustomization.yaml").write_text(
            header + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
            + "".join(f"  - {name}\n" for name in files))
    print(f"  ok   helm render: {n} manifest file(s) -> {out}")
    return 0


# --- What the rendered chart promises (checkov checks the pods' security, probes, resources) -----

def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    return None


def pod_labels(doc: dict) -> dict:
    return doc["spec"]["template"]["metadata"].get("labels") or {}


def selects(sel: dict, labels: dict) -> bool:
    ops = {"In": lambda e, v: v in e.get("values", []), "NotIn": lambda e, v: v not in e.get("values", []),
           "Exists": lambda e, v: v is not None, "DoesNotExist": lambda e, v: v is None}
    return (all(labels.get(k) == v for k, v in (sel.get("matchLabels") or {}).items())
            and all(ops[e["operator"]](e, labels.get(e["key"])) for e in sel.get("matchExpressions") or []))


def cmd_chart_policy(args) -> int:
    f = Failures("chart policy")
    for d in args.dirs:
        files = sorted(p for p in Path(d).glob("*.yaml") if p.name != "kustomization.yaml")
        docs = [doc for p in files for doc in yaml.safe_load_all(p.read_text()) if doc]
        exposure(Path(d).name, docs, f)
        references(Path(d).name, docs, f)
    return f.finish(f"{len(args.dirs)} rendering(s): only the API exposed, default-deny NetworkPolicy, "
                    "ports and BOURSE_* settings of the roles, references between objects")


def exposure(label: str, docs: list[dict], f: Failures) -> None:
    """Only the API leaves the cluster, every pod starts from default-deny, roles listen where
    they are scraped, and every BOURSE_* variable is a setting of the binary."""
    if not any(d["kind"] == "Deployment" and pod_labels(d).get("app.kubernetes.io/component") == "api" for d in docs):
        f.add(f"{label}: no API Deployment whose pods carry app.kubernetes.io/component: api")
    netpols = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy"]
    if netpols and not any(s.get("policyTypes") == ["Ingress"] and "ingress" not in s for s in netpols):
        f.add(f"{label}: NetworkPolicies without a default-deny ingress policy")
    for d in docs:
        where = f"{label}: {d['kind']}/{d['metadata']['name']}"
        comp = (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
        if d["kind"] == "Service" and d["spec"].get("type", "ClusterIP") != "ClusterIP" and comp != "api":
            f.add(f"{where}: only the API may be exposed, found type {d['spec']['type']}")
        for svc in backends(d) if d["kind"] == "Ingress" else []:
            if not svc["name"].endswith("-api"):
                f.add(f"{where}: routes to {svc['name']}, only the API may be exposed")
        if d["kind"] == "ConfigMap":
            for n in unknown_settings(d.get("data") or {}):
                f.add(f"{where}: {n} is no setting of bourse (docs/operations.md, Configuration)")
        spec = pod_spec(d)
        if spec is None or comp not in BOURSE_ROLES:
            continue
        ann = d["spec"]["template"]["metadata"].get("annotations") or {}
        for c in spec["containers"]:
            port = str(c["ports"][0]["containerPort"])
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            if not (env.get("BOURSE_HTTP_ADDR") or "").endswith(":" + port):
                f.add(f"{where}: BOURSE_HTTP_ADDR {env.get('BOURSE_HTTP_ADDR')!r} is not containerPort {port}")
            if ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") != port:
                f.add(f"{where}: prometheus.io/port is not containerPort {port}")
            for n in unknown_settings(env):
                f.add(f"{where}: {n} is no setting of bourse (docs/operations.md, Configuration)")
            for n in sorted(set(env) - {"DB_PASSWORD", "AMQP_PASSWORD"}):
                if not n.startswith("BOURSE_"):
                    f.add(f"{where}: unexpected env {n}")


def backends(ingress: dict) -> list[dict]:
    return [p["backend"]["service"] for r in ingress["spec"].get("rules") or []
            for p in (r.get("http") or {}).get("paths") or []]


def references(label: str, docs: list[dict], f: Failures) -> None:
    """What one object names in another exists in the same rendering (the API server would
    accept a dangling name and the pod would hang or never be selected)."""
    named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    pods = [(d, pod_labels(d), pod_spec(d)) for d in docs if pod_spec(d)]

    def matching(sel: dict) -> list[dict]:
        return [spec for _, labels, spec in pods if selects(sel, labels)]

    for d in docs:
        kind, spec = d["kind"], d.get("spec") or {}
        where = f"{label}: {kind}/{d['metadata']['name']}"
        peers = [p["podSelector"] for r in spec.get("ingress") or [] for p in r.get("from") or []
                 if set(p) == {"podSelector"}]
        sels = {"Service": [{"matchLabels": spec.get("selector") or {}}],
                "PodDisruptionBudget": [spec.get("selector")],
                "NetworkPolicy": [spec.get("podSelector")] + peers}.get(kind, [])
        for sel in sels:
            if sel and not matching(sel):
                f.add(f"{where}: selector {sel} matches no pod")
        if kind == "Service":
            names = {p.get("name") for s in matching(sels[0]) for c in s["containers"] for p in c.get("ports", [])}
            for p in spec.get("ports") or []:
                if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                    f.add(f"{where}: targets port {p['targetPort']!r}, which its pods do not name")
        if kind in {"Deployment", "StatefulSet"} and not selects(spec["selector"], pod_labels(d)):
            f.add(f"{where}: selector does not match its own pod labels")
        ref = spec.get("scaleTargetRef") or {}
        if kind == "HorizontalPodAutoscaler" and (ref["kind"], ref["name"]) not in named:
            f.add(f"{where}: scales the missing {ref['kind']}/{ref['name']}")
        for svc in backends(d) if kind == "Ingress" else []:
            ports = {p.get("name") for p in named.get(("Service", svc["name"]), {}).get("spec", {}).get("ports", [])}
            if not ports or svc["port"].get("name") not in ports | {None}:
                f.add(f"{where}: routes to Service/{svc['name']} port {svc['port']}, which does not exist")
    secrets = {name: {**(d.get("data") or {}), **(d.get("stringData") or {})}
               for (kind, name), d in named.items() if kind == "Secret"}
    for d, _, spec in pods:
        where = f"{label}: {d['kind']}/{d['metadata']['name']}"
        if spec.get("serviceAccountName") and ("ServiceAccount", spec["serviceAccountName"]) not in named:
            f.add(f"{where}: ServiceAccount {spec['serviceAccountName']} is not in the chart")
        cms = [(v.get("configMap") or {}).get("name") for v in spec.get("volumes") or []]
        cms += [(s.get("configMapRef") or {}).get("name") for c in spec["containers"] for s in c.get("envFrom", [])]
        for cm in filter(None, cms):
            if ("ConfigMap", cm) not in named:
                f.add(f"{where}: uses the missing ConfigMap/{cm}")
        for c in spec["containers"]:
            defined: set[str] = set()
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                # With secrets.existingSecret the Secret is not in the chart: nothing to compare.
                if ref and secrets and not ref.get("optional") and ref["key"] not in secrets.get(ref["name"], {}):
                    f.add(f"{where}: env {e['name']} from a missing key {ref['key']} of Secret/{ref['name']}")
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
                    if var not in defined:
                        f.add(f"{where}: env {e['name']} refers to $({var}) before it is defined")
                defined.add(e["name"])


# --- Compose ------------------------------------------------------------------------------------

def cmd_compose_policy(args) -> int:
    f = Failures("compose policy")
    path = Path(args.file)
    services = yaml.safe_load(path.read_text())["services"]
    published = [n for n, s in services.items() if s.get("ports")]
    if sorted(published) != ["api", "grafana"]:
        f.add(f"publishes {published}; only the API and Grafana may, and both must")
    for name, svc in services.items():
        hc = svc.get("healthcheck") or {}
        if hc.get("disable") and svc.get("restart") != "no":
            f.add(f"{name}: a service without healthcheck must be a one-shot (restart: \"no\")")
        elif not hc.get("test") and not hc.get("disable"):
            f.add(f"{name}: no healthcheck")
        for dep, cond in (svc.get("depends_on") or {}).items():
            dhc = services.get(dep, {}).get("healthcheck") or {}  # unknown names: compose config
            if (cond or {}).get("condition") == "service_healthy" and (dhc.get("disable") or not dhc.get("test")):
                f.add(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        for vol in svc.get("volumes") or []:
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith((".", "/")) and not (path.parent / src).exists():
                f.add(f"{name}: bind mount source {src} does not exist")
        for n in unknown_settings(svc.get("environment") or {}):
            f.add(f"{name}: {n} is no setting of bourse (docs/operations.md, Configuration)")
    return f.finish(f"{len(services)} services; published: {', '.join(published)}; healthchecks and "
                    "depends_on conditions consistent; bind mounts exist; BOURSE_* are settings")


# --- Docker ignore file: Docker's patterns, compiled by docker-py (a dependency of checkov) ------

DOCKER_CONTEXT_KEEP = ["Cargo.toml", "Cargo.lock", "crates/bourse/src/main.rs", "crates/api/Cargo.toml",
                       "crates/store/migrations/postgres/0001_init.sql", "deploy/docker/healthcheck.sh"]
DOCKER_CONTEXT_DROP = ["target/release/bourse", "crates/api/target/debug/x", ".git/HEAD", "bourse.db",
                       "crates/x/apicalls.log.1", "deploy/compose.yaml", "deploy/helm/bourse/values.yaml",
                       "bench/results/run.txt"]


def cmd_dockerignore(args) -> int:
    from docker.utils.build import Pattern

    f = Failures("docker ignore file")
    lines = [line.strip() for line in Path(args.file).read_text().splitlines()]
    patterns = [Pattern(line) for line in lines if line and not line.startswith("#")]

    def ignored(path: str) -> bool:
        # BuildKit's rule: the last pattern that matches the path or one of its parents decides.
        parts = path.split("/")
        out = False
        for pat in patterns:
            if any(pat.match("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
                out = not pat.exclusion
        return out

    for p in DOCKER_CONTEXT_KEEP:
        if ignored(p):
            f.add(f"{p} would be left out of the build context")
    for p in DOCKER_CONTEXT_DROP:
        if not ignored(p):
            f.add(f"{p} would be sent in the build context")
    return f.finish(f"{Path(args.file).name} keeps the workspace sources and the healthcheck, drops "
                    "target/, .git, databases, logs and the rest of deploy/")


# --- Dashboards and the metrics they and the alert rules use ------------------------------------

def dashboard_exprs(deploy: Path) -> list[tuple[str, str]]:
    def walk(name: str, panels: list) -> list[tuple[str, str]]:
        return [(f"{name}: {p.get('title')}", t["expr"]) for p in panels for t in p.get("targets") or []
                if t.get("expr")] + [e for p in panels for e in walk(name, p.get("panels") or [])]

    return [e for p in sorted((deploy / "helm/bourse/files/dashboards").glob("*.json"))
            for e in walk(p.name, json.loads(p.read_text()).get("panels") or [])]


def used_metrics(expr: str) -> set[str]:
    # Histogram series (_bucket, _sum, _count) are announced under the base name.
    return {next((m[: -len(s)] for s in HISTOGRAM_SUFFIXES if m.endswith(s)), m) for m in METRIC_RE.findall(expr)}


def rule_exprs(deploy: Path) -> list[str]:
    return [r.get("expr", "") for p in sorted((deploy / "helm/bourse/files/prometheus").glob("*.yml"))
            for g in (yaml.safe_load(p.read_text()) or {}).get("groups") or [] for r in g.get("rules") or []]


def metric_names(deploy: Path) -> list[str]:
    exprs = [e for _, e in dashboard_exprs(deploy)] + rule_exprs(deploy)
    return sorted(set().union(*map(used_metrics, exprs)))


def cmd_dashboards(args) -> int:
    deploy = Path(args.deploy_dir)
    f = Failures("grafana dashboards")
    files = sorted((deploy / "helm/bourse/files/dashboards").glob("*.json"))
    uids: dict[str, str] = {}
    for p in files:
        d = json.loads(p.read_text())
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
    # PromQL syntax: promtool parses every expression as a recording rule.
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr_{i}:check", "expr": e} for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as t:
        yaml.safe_dump(rules, t)
        t.flush()
        r = subprocess.run([args.promtool, "check", "rules", t.name], capture_output=True, text=True)
    if r.returncode != 0:
        f.add("PromQL of a panel does not parse:\n" + r.stdout + r.stderr)
    known = documented("## Metrics")
    for where, e in exprs + [("alert rules", e) for e in rule_exprs(deploy)]:
        for m in sorted(used_metrics(e) - known):
            f.add(f"{where}: {m} is not one of the metrics of docs/operations.md (Metrics)")
    return f.finish(f"{len(files)} dashboard(s), {len(exprs)} PromQL expression(s) parse (promtool); "
                    "dashboards and alert rules use only the documented metric names")


def cmd_metric_names(args) -> int:
    print("\n".join(metric_names(Path(args.deploy_dir))))
    return 0


# --- Metrics of a running binary ----------------------------------------------------------------

def pending_metrics(deploy: Path) -> set[str]:
    """Metric names whose feature is not built yet (deploy/metrics-pending.txt, one a line): the gap
    stays visible instead of hidden by a placeholder metric. A pending name that the binary does
    export is an error, so the list only ever shrinks."""
    path = Path(os.environ.get("BOURSE_METRICS_PENDING", deploy / "metrics-pending.txt"))
    lines = path.read_text().splitlines() if path.is_file() else []
    return {n for n in (line.split("#", 1)[0].strip() for line in lines) if n}


def scrape(binary: str, timeout: float, tmp: Path) -> str:
    """Starts `binary serve` (SQLite in tmp, a free loopback port) and returns its /metrics page."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOURSE_")}
    env.update(BOURSE_HTTP_ADDR=f"127.0.0.1:{port}", BOURSE_DATABASE_URL=f"sqlite://{tmp}/check.db",
               BOURSE_REQUEST_LOG="", BOURSE_JWT_SECRET="deploy-check-only-" + os.urandom(8).hex())
    print(f"  ...  starting {binary} serve on 127.0.0.1:{port} (cwd {tmp})")
    with open(tmp / "serve.log", "w+") as log:
        proc = subprocess.Popen([binary, "serve"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/_healthcheck", timeout=2)
                    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
                except OSError:
                    time.sleep(0.3)
            log.seek(0)
            raise RuntimeError(f"no /_healthcheck within {timeout}s (exit code {proc.poll()}); "
                               f"its output:\n{log.read()[-3000:]}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def cmd_metrics_check(args) -> int:
    deploy = Path(args.deploy_dir)
    f = Failures("metrics of `bourse serve`")
    tmp = Path(tempfile.mkdtemp(prefix="bourse-metrics-check-"))
    try:
        page = scrape(os.path.abspath(args.bourse_bin), args.timeout, tmp)
    except (OSError, RuntimeError) as e:
        f.add(str(e))
        return f.finish("")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    helped = {line.split()[2] for line in page.splitlines() if line.startswith("# HELP ")}
    pending = pending_metrics(deploy)
    for name in sorted(pending & helped):
        f.add(f"{name} is exported now: remove it from deploy/metrics-pending.txt")
    wanted = metric_names(deploy)
    for name in wanted:
        if name in pending:
            print(f"  pend {name}: its feature is not built yet (deploy/metrics-pending.txt)")
        elif name not in helped:
            f.add(f"{name} is used by the dashboards/alerts but has no '# HELP {name}' line")
    return f.finish(f"all {len(wanted)} metric name(s) used by dashboards and alerts have # HELP lines "
                    "or are listed as pending")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def command(name, fn, *arguments):
        p = sub.add_parser(name)
        for flags, kw in arguments:
            p.add_argument(*flags, **kw)
        p.set_defaults(fn=fn)

    values = (["--values"], {"action": "append"})
    command("helm-lint", cmd_helm_lint, (["chart"], {}), values, (["--kube-version"], {"default": "v1.33.0"}))
    command("helm-render", cmd_helm_render, (["chart"], {}), values, (["--out"], {"required": True}),
            (["--name"], {"default": "bourse"}), (["--namespace"], {"default": "bourse"}),
            (["--header"], {"default": ""}), (["--kustomization"], {"action": "store_true"}))
    command("chart-policy", cmd_chart_policy, (["dirs"], {"nargs": "+"}))
    command("compose-policy", cmd_compose_policy, (["file"], {}))
    command("dockerignore", cmd_dockerignore, (["file"], {}))
    command("dashboards", cmd_dashboards, (["deploy_dir"], {}), (["--promtool"], {"default": "promtool"}))
    command("metric-names", cmd_metric_names, (["deploy_dir"], {}))
    command("metrics-check", cmd_metrics_check, (["deploy_dir"], {}), (["--bourse-bin"], {"required": True}),
            (["--timeout"], {"type": float, "default": 60}))
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
