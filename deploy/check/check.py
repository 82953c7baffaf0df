"""Checks the rendered manifests of deploy/ against what they deploy (scripts/deploy-check.sh).

Beyond the schemas (kubernetes-validate for Kubernetes' own kinds, crds.mjs for the custom
resources), the manifests must agree with spin.toml, which they are written for:
  - the SpinApp validates against the SpinApp CRD's schema (spinapp.schema.json);
  - every variable the SpinApp binds, and every SPIN_VARIABLE_* a container sets, is one of
    spin.toml's [variables];
  - every path the sweep CronJobs call is a route of spin.toml and a POST of openapi/;
  - every Secret key a workload reads is in the Secret, where the overlay makes the Secret;
  - every container runs as non-root with a read-only root filesystem, except where listed;
  - every metric the Grafana dashboard (deploy/grafana/nexus.json) queries is one the host
    registers (host/src/metrics.rs) or the outbound component writes
    (components/outbound/src/campaigns.rs), with the labels it has.

    python check.py SPIN_TOML OPENAPI_DIR RENDERED.yaml...
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml

# Containers whose images write to their root filesystem (a trial's PostgreSQL).
WRITABLE_ROOT = {("StatefulSet", "nexus-postgres", "postgres")}


def routes(manifest):
    """spin.toml's HTTP routes, as (prefix, wildcard)."""
    out = []
    for trigger in manifest.get("trigger", {}).get("http", []):
        route = trigger["route"]
        if route.endswith("/..."):
            out.append((route[: -len("...")], True))
        else:
            out.append((route, False))
    return out


def routed(path, http_routes):
    return any(
        path.startswith(prefix) if wildcard else path == prefix
        for prefix, wildcard in http_routes
    )


ROOT = Path(__file__).resolve().parents[2]

# The labels each kind of metric has, besides those Prometheus adds (namespace, pod, ...).
SCRAPE_LABELS = {"namespace", "pod", "instance", "job", "le"}


def registered_metrics():
    """The host's metrics as Prometheus exposes them (name -> label names), read from
    host/src/metrics.rs: each `registry.register("name", "help", field)`, the field's type
    (`Family<Labels, Counter>`, `Counter`, `Gauge`, `Histogram`) and its labels' struct."""
    source = (ROOT / "host/src/metrics.rs").read_text()
    label_structs = {
        name: set(re.findall(r"pub (\w+):", body))
        for name, body in re.findall(r"pub struct (\w+Labels) \{(.*?)\}", source, re.S)
    }
    families = {
        field: (label_struct, metric)
        for field, label_struct, metric in re.findall(
            r"pub (\w+): Family<(\w+), (\w+)>", source
        )
    }
    plain = dict(re.findall(r"pub (\w+): (Counter|Gauge|Histogram),", source))
    exposed = {}
    for name, field in re.findall(r'register\(\s*"(\w+)",\s*"[^"]*",\s*(\w+)', source):
        if field in families:
            label_struct, metric = families[field]
            labels = label_structs[label_struct]
        else:
            # A plain field, or a counter handed in by name (the pools' exhaustion counters).
            metric, labels = plain.get(field, "Counter"), set()
        base = f"nexus_{name}"
        if metric == "Counter":
            exposed[f"{base}_total"] = labels
        elif metric == "Histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                exposed[base + suffix] = labels
        else:
            exposed[base] = labels
    return exposed


def campaign_metrics():
    """The campaign metrics the outbound component writes in Prometheus's text format (name ->
    label names), read from components/outbound/src/campaigns.rs: each `# TYPE name gauge`,
    and the labels its lines carry (`name{{label=...`, as a Rust format string writes them)."""
    source = (ROOT / "components/outbound/src/campaigns.rs").read_text()
    exposed = {}
    for name in re.findall(r"# TYPE (nexus_\w+) gauge", source):
        exposed[name] = set(re.findall(name + r"\{\{(\w+)=", source))
    return exposed


def check_dashboard(failures):
    exposed = registered_metrics() | campaign_metrics()
    dashboard = json.loads((ROOT / "deploy/grafana/nexus.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [
        v["query"]["query"]
        for v in dashboard["templating"]["list"]
        if isinstance(v.get("query"), dict)
    ]
    used = 0
    for expr in expressions:
        for metric, selector in re.findall(r"(nexus_\w+)(\{[^}]*\})?", expr):
            used += 1
            if metric not in exposed:
                failures.append(f"deploy/grafana/nexus.json: {metric} is not a metric of the host")
                continue
            for label in re.findall(r"(\w+)\s*[=!~]+", selector):
                if label not in exposed[metric] | SCRAPE_LABELS:
                    failures.append(f"deploy/grafana/nexus.json: {metric} has no label {label}")
        for by in re.findall(r"by \(([^)]*)\)", expr):
            metrics = re.findall(r"nexus_\w+", expr)
            for label in (l.strip() for l in by.split(",")):
                if not any(label in exposed.get(m, set()) | SCRAPE_LABELS for m in metrics):
                    failures.append(f"deploy/grafana/nexus.json: no metric of {expr!r} has label {label}")
    return used


def posts(openapi_dir):
    """Every path of the OpenAPI documents that takes a POST."""
    out = set()
    for document in Path(openapi_dir).glob("*.json"):
        for path, operations in json.loads(document.read_text())["paths"].items():
            if "post" in operations:
                out.add(path)
    return out


def pod_spec(doc):
    kind = doc["kind"]
    spec = doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "Job"):
        return spec["template"]["spec"]
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return None


def main(spin_toml, openapi_dir, rendered):
    manifest = tomllib.loads(Path(spin_toml).read_text())
    documented = posts(openapi_dir)
    variables = set(manifest.get("variables", {}))
    http_routes = routes(manifest)
    schema = json.loads((Path(__file__).parent / "spinapp.schema.json").read_text())
    failures = []
    checked = 0
    for file in rendered:
        docs = [d for d in yaml.safe_load_all(Path(file).read_text()) if d]
        secrets = {
            d["metadata"]["name"]: set(d.get("data", {})) | set(d.get("stringData", {}))
            for d in docs
            if d["kind"] == "Secret"
        }
        for doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            where = f"{file}: {kind}/{name}"
            if kind == "SpinApp":
                checked += 1
                for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
                    path = ".".join(str(p) for p in error.absolute_path)
                    failures.append(f"{where}: {path}: {error.message}")
                for variable in doc["spec"].get("variables", []):
                    if variable["name"] not in variables:
                        failures.append(
                            f"{where}: binds variable {variable['name']!r}, which spin.toml does not declare"
                        )
            spec = pod_spec(doc)
            if spec is None:
                continue
            checked += 1
            for container in spec.get("containers", []):
                cname = container["name"]
                for env in container.get("env", []):
                    if env["name"].startswith("SPIN_VARIABLE_"):
                        variable = env["name"][len("SPIN_VARIABLE_") :].lower()
                        if variable not in variables:
                            failures.append(
                                f"{where}: {cname} sets {env['name']}, but spin.toml has no variable {variable!r}"
                            )
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref and ref["name"] in secrets and not ref.get("optional"):
                        if ref["key"] not in secrets[ref["name"]]:
                            failures.append(
                                f"{where}: {cname} reads key {ref['key']!r} of Secret {ref['name']}, which lacks it"
                            )
                for text in container.get("args", []) + container.get("command", []):
                    for path in re.findall(r"http://[a-z0-9.-]+(/[^\s\"']*)", text):
                        # "$path" stands for each of the loop's words: check every expansion.
                        loop = re.search(r"for path in ([a-z ]+);", text)
                        expansions = (
                            [path.replace("$path", word) for word in loop.group(1).split()]
                            if loop and "$path" in path
                            else [path]
                        )
                        for expanded in expansions:
                            if not routed(expanded, http_routes):
                                failures.append(
                                    f"{where}: {cname} calls {expanded}, which is no route of spin.toml"
                                )
                            elif expanded not in documented:
                                failures.append(
                                    f"{where}: {cname} calls {expanded}, which no OpenAPI document has as a POST"
                                )
                security = container.get("securityContext", {})
                if (kind, name, cname) not in WRITABLE_ROOT and not security.get(
                    "readOnlyRootFilesystem"
                ):
                    failures.append(f"{where}: {cname} has a writable root filesystem")
                if security.get("allowPrivilegeEscalation", True):
                    failures.append(f"{where}: {cname} allows privilege escalation")
            if not spec.get("securityContext", {}).get("runAsNonRoot"):
                failures.append(f"{where}: pods may run as root")
    queried = check_dashboard(failures)
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"deploy-check: the dashboard's {queried} metric references are metrics nexus serves")
    print(f"deploy-check: {checked} workloads and apps checked against spin.toml, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
