#!/usr/bin/env python3
"""Offline checks of Pulse's deployment files, run by scripts/check-deploy.

  check.py static             compose schema + settings, kustomize render + schemas + settings,
                             Grafana dashboards' metric names against the code
  check.py all BIN_DIR        both
  check.py guides BIN_DIR     the guides' `# test` blocks against ingest + gateway on a private Redis;
                              the frontend guide's against a standalone `pulse` (anonymous, demo
                              fleet, as `cargo run --release`), its `// test` JavaScript with Node

Every check prints one `ok`/`FAIL`/`skip` line; the script ends with
`deploy checks: N passed, M failed` and exits non-zero on any failure.
"""

from __future__ import annotations

import copy
import glob
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
import tomllib
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
K8S_VERSION = os.environ.get("PULSE_K8S_VERSION", "1.33.0")
# Binaries other engineers are still writing: a reference to one that does not
# exist yet is reported as skipped rather than failed.
PENDING_BINARIES = {"pulse", "pulse-probe"}

passed = 0
failed = 0


def ok(what: str) -> None:
    global passed
    passed += 1
    print(f"  ok    {what}")


def fail(what: str, why: str) -> None:
    global failed
    failed += 1
    print(f"  FAIL  {what}: {why}")


def skip(what: str, why: str) -> None:
    print(f"  skip  {what}: {why}")


def check(what: str, problems: list[str]) -> None:
    if problems:
        fail(what, "; ".join(problems))
    else:
        ok(what)


def summary() -> int:
    print(f"deploy checks: {passed} passed, {failed} failed")
    return 1 if failed else 0


# --------------------------------------------------------------------------
# What the binaries accept: binary name -> settings keys and HTTP port
# --------------------------------------------------------------------------

def flatten(table: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in table.items():
        key = f"{prefix}{k}"
        keys.add(key)
        if isinstance(v, dict):
            keys |= flatten(v, key + ".")
    return keys


def struct_fields(path: Path, struct: str) -> set[str]:
    text = path.read_text()
    m = re.search(r"pub struct " + struct + r"\s*\{(.*?)\n\}", text, re.S)
    if not m:
        return set()
    return set(re.findall(r"^\s*pub (\w+):", m.group(1), re.M))


# Sections whose struct lives in a shared crate: the defaults may leave some
# optional keys out (telemetry.otlp_endpoint), so take the struct's fields too.
SHARED_SECTIONS = {
    "telemetry": ("crates/runtime/src/settings/blocks.rs", "TelemetrySettings"),
    "redis": ("crates/bus/src/settings.rs", "RedisSettings"),
    "http": ("crates/runtime/src/settings/blocks.rs", "HttpSettings"),
    "auth": ("crates/auth/src/lib.rs", "AuthSettings"),
}


class Binary:
    def __init__(self, name: str, crate: Path):
        self.name = name
        self.crate = crate
        self.defaults: dict = {}
        self.toml_files: list[Path] = []
        self.keys: set[str] = set()

    @property
    def port(self) -> int | None:
        return self.defaults.get("http", {}).get("port")

    def env_key(self, env_name: str) -> str | None:
        """`PULSE__REDIS__URL` -> `redis.url`; None when not a settings variable."""
        if not env_name.startswith("PULSE__"):
            return None
        return ".".join(env_name[len("PULSE__"):].lower().split("__"))

    def accepts(self, env_name: str) -> bool:
        return self.env_key(env_name) in self.keys


def discover_binaries() -> dict[str, Binary]:
    bins: dict[str, Binary] = {}
    for manifest in sorted(ROOT.glob("crates/*/Cargo.toml")):
        crate = manifest.parent
        data = tomllib.loads(manifest.read_text())
        names = [b["name"] for b in data.get("bin", [])]
        if not names and (crate / "src/main.rs").exists():
            names = [data["package"]["name"]]
        names += [p.stem for p in (crate / "src/bin").glob("*.rs") if p.stem not in names]
        if not names:
            continue
        tomls: list[Path] = []
        for src in crate.glob("src/**/*.rs"):
            for rel in re.findall(r'include_str!\(\s*"([^"]+\.toml)"\s*\)', src.read_text()):
                p = (src.parent / rel).resolve()
                if p.exists() and p not in tomls:
                    tomls.append(p)
        for name in names:
            b = Binary(name, crate)
            b.toml_files = tomls
            for t in tomls:
                d = tomllib.loads(t.read_text())
                for k, v in d.items():
                    if isinstance(v, dict) and isinstance(b.defaults.get(k), dict):
                        b.defaults[k].update(v)
                    else:
                        b.defaults[k] = v
            b.keys = flatten(b.defaults)
            for section, (path, struct) in SHARED_SECTIONS.items():
                if section in b.defaults or section in ("telemetry", "redis"):
                    b.keys |= {f"{section}.{f}" for f in struct_fields(ROOT / path, struct)}
                    b.keys.add(section)
            bins[name] = b
    return bins


def binary_of(command, bins: dict[str, Binary], what: str) -> Binary | None:
    """The Binary a container command starts; reports unknown ones."""
    if not command:
        return None
    name = command[0] if isinstance(command, list) else str(command).split()[0]
    if name in bins:
        return bins[name]
    if name.startswith("pulse"):
        if name in PENDING_BINARIES:
            skip(f"{what}: binary {name}", "not in the workspace yet")
        else:
            fail(f"{what}: binary {name}", "no workspace crate builds a binary of that name")
    return None


def settings_file_problems(path: Path, binary: Binary) -> list[str]:
    problems = []
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        return [f"{path}: {e}"]
    for key in sorted(flatten(data)):
        if key not in binary.keys and not any(key.startswith(k + ".") for k in binary.keys if k.endswith("api_keys")):
            problems.append(f"{path.relative_to(ROOT)}: key {key} is not a setting of {binary.name}")
    return problems


# --------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------

INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value):
    if isinstance(value, str):
        return INTERP.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def env_dict(env) -> dict[str, str]:
    if isinstance(env, dict):
        return {k: "" if v is None else str(v) for k, v in env.items()}
    out = {}
    for item in env or []:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def check_compose(bins: dict[str, Binary]) -> None:
    print("docker-compose.yml")
    import jsonschema

    path = ROOT / "docker-compose.yml"
    raw = yaml.safe_load(path.read_text())
    schema = json.loads((HERE / "compose-spec.schema.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.path))
    check("compose file matches the Compose specification schema",
          [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:10]])

    doc = interpolate(raw)
    services: dict = doc.get("services", {})
    required = {"redis", "ingest", "heartbeat-checker", "gateway-1", "gateway-2", "lb"}
    check("services redis, ingest, heartbeat-checker, gateway-1, gateway-2, lb exist",
          [f"missing {s}" for s in sorted(required - services.keys())])
    check("every service has a health check",
          [s for s, d in services.items() if not d.get("healthcheck", {}).get("test")])
    problems = []
    for s, d in services.items():
        deps = d.get("depends_on", {})
        for dep in deps if isinstance(deps, (list, dict)) else []:
            if dep not in services:
                problems.append(f"{s} depends on unknown {dep}")
            elif not services[dep].get("profiles") is None and not d.get("profiles"):
                problems.append(f"{s} (always on) depends on {dep} which is only in a profile")
    check("depends_on names existing services, outside profiles", problems)
    profiles = {p for d in services.values() for p in d.get("profiles", [])}
    check("profiles demo, tracing and cluster exist",
          [f"missing {p}" for p in ("demo", "tracing", "cluster") if p not in profiles])
    nodes = [s for s, d in services.items() if "cluster" in d.get("profiles", []) and "--cluster-enabled" in d.get("command", [])]
    check("profile cluster: six cluster-enabled Redis nodes (three masters, three replicas)",
          [] if len(nodes) == 6 else [f"{len(nodes)} nodes"])
    hc = services.get("heartbeat-checker", {})
    check("heartbeat-checker runs 2 replicas", [] if hc.get("deploy", {}).get("replicas", 1) >= 2 else ["replicas < 2"])

    problems = []
    for s, d in services.items():
        for vol in d.get("volumes", []):
            src = str(vol).split(":")[0]
            if src.startswith("./") and not (ROOT / src).exists():
                problems.append(f"{s}: volume source {src} does not exist")
    check("every bind-mounted file exists", problems)

    ports: dict[str, int] = {}
    for s, d in services.items():
        b = binary_of(d.get("command"), bins, f"compose service {s}")
        if not b:
            continue
        env = env_dict(d.get("environment"))
        problems = []
        for name in env:
            if name.startswith("PULSE__") and not b.accepts(name):
                problems.append(f"{name} is not a setting of {b.name} ({b.env_key(name)})")
        if b.port is None:
            # A client (pulse-probe): no HTTP port of its own.
            check(f"compose service {s} ({b.name}): settings names", problems)
            continue
        port = int(env.get("PULSE__HTTP__PORT") or b.port)
        ports[s] = port
        expose = [int(str(p).split("/")[0]) for p in d.get("expose", [])]
        if expose and port not in expose:
            problems.append(f"exposes {expose}, {b.name} listens on {port}")
        test = " ".join(d.get("healthcheck", {}).get("test", []))
        for hp in re.findall(r"/dev/tcp/[^/]+/(\d+)", test):
            if int(hp) != port:
                problems.append(f"health check probes port {hp}, {b.name} listens on {port}")
        if "/readyz" not in test and "/healthz" not in test:
            problems.append("health check does not call /readyz or /healthz")
        if "PULSE_CONFIG" in env:
            mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in d.get("volumes", []) if ":" in str(v)}
            src = mounts.get(env["PULSE_CONFIG"])
            if not src:
                problems.append(f"PULSE_CONFIG {env['PULSE_CONFIG']} is not mounted")
            else:
                problems += settings_file_problems(ROOT / src, b)
        check(f"compose service {s} ({b.name}): port {port}, settings names, health check", problems)

    conf = (ROOT / "deploy/compose/nginx.conf").read_text()
    problems = []
    for host, port in re.findall(r"^\s*server\s+([A-Za-z0-9_.-]+):(\d+)", conf, re.M):
        if host not in services:
            problems.append(f"upstream {host} is not a compose service")
        elif host in ports and int(port) != ports[host]:
            problems.append(f"upstream {host}:{port}, the service listens on {ports[host]}")
    for loc in ("/api/", "/ws", "/sse", "/"):
        if not re.search(r"location\s+" + re.escape(loc) + r"\s*\{", conf):
            problems.append(f"no location {loc}")
    ws = re.search(r"location\s+/ws\s*\{(.*?)\n\s*\}", conf, re.S)
    if not ws or "Upgrade $http_upgrade" not in ws.group(1) or "proxy_read_timeout" not in ws.group(1):
        problems.append("location /ws lacks upgrade headers or a read timeout")
    lb_ports = services.get("lb", {}).get("ports", [])
    listen = re.findall(r"^\s*listen\s+(\d+)", conf, re.M)
    for p in lb_ports:
        inner = str(p).split(":")[-1]
        if inner not in listen:
            problems.append(f"lb publishes container port {inner}, nginx listens on {listen}")
    if not any(str(p).split(":")[-2:-1] == ["8080"] for p in lb_ports):
        problems.append("the load balancer is not published on localhost:8080")
    check("nginx.conf: upstreams match compose services and ports; /api /ws /sse / routed", problems)

    # The demo reads without a token: nothing is published beyond loopback
    # unless the operator says so.
    problems = []
    for s, d in services.items():
        for p in d.get("ports", []):
            parts = str(p).split(":")
            if len(parts) < 3 or parts[0] not in ("127.0.0.1", "localhost", "::1"):
                problems.append(f"{s} publishes {p} on every interface")
    check("published ports bind to loopback by default", problems)
    problems = []
    for s, d in services.items():
        if not binary_of(d.get("command"), bins, f"compose service {s}") and s != "lb":
            continue
        nofile = d.get("ulimits", {}).get("nofile", {})
        soft = nofile.get("soft", 0) if isinstance(nofile, dict) else nofile
        if int(soft) < 65536:
            problems.append(f"{s}: nofile {nofile or 'default'}")
    check("Pulse services and the load balancer raise the open-file limit (nofile >= 65536)", problems)


# --------------------------------------------------------------------------
# Kubernetes: a small kustomize (the subset our files use)
# --------------------------------------------------------------------------

SUPPORTED_KUSTOMIZE = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}


def strategic_merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(i, dict) and "name" in i for i in base + patch)):
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            for idx, cur in enumerate(out):
                if cur["name"] == item["name"]:
                    out[idx] = strategic_merge(cur, item)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def set_labels(obj: dict, pairs: dict) -> None:
    obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def render(directory: Path) -> list[dict]:
    kfile = directory / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - SUPPORTED_KUSTOMIZE
    if unknown:
        raise ValueError(f"{kfile.relative_to(ROOT)}: fields {sorted(unknown)} are not supported by this checker")
    docs: list[dict] = []
    for res in k.get("resources", []):
        p = (directory / res).resolve()
        if p.is_dir():
            docs += render(p)
        else:
            docs += [d for d in yaml.safe_load_all(p.read_text()) if d]
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"patch {patch}: only `path:` strategic-merge patches are supported")
        for pd in yaml.safe_load_all((directory / patch["path"]).read_text()):
            matches = [i for i, d in enumerate(docs)
                       if d["kind"] == pd["kind"] and d["metadata"]["name"] == pd["metadata"]["name"]]
            if len(matches) != 1:
                raise ValueError(f"patch {patch['path']}: {len(matches)} targets for {pd['kind']}/{pd['metadata']['name']}")
            docs[matches[0]] = strategic_merge(docs[matches[0]], pd)
    for entry in k.get("labels", []):
        for d in docs:
            set_labels(d, entry["pairs"])
            if entry.get("includeTemplates") and d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
                set_labels(d["spec"]["template"], entry["pairs"])
    for r in k.get("replicas", []):
        hits = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == r["name"]]
        if not hits:
            raise ValueError(f"replicas: no Deployment {r['name']}")
        for d in hits:
            d["spec"]["replicas"] = r["count"]
    for img in k.get("images", []):
        for d in docs:
            pod = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag or 'latest')}"
    if "namespace" in k:
        for d in docs:
            if d["kind"] != "Namespace":
                d["metadata"]["namespace"] = k["namespace"]
    return docs


def k8s_semantics(label: str, docs: list[dict], bins: dict[str, Binary]) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    check(f"{label}: no duplicate resources", [f"{n}" for n in names if names.count(n) > 1])
    need = {"Deployment", "Service", "Ingress", "ConfigMap", "Secret", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    check(f"{label}: has {', '.join(sorted(need))}", [f"no {k}" for k in sorted(need - by_kind.keys())])
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})

    deploy_ports: dict[str, tuple[dict, dict[str, int]]] = {}
    for name, dep in by_kind.get("Deployment", {}).items():
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        problems: list[str] = []
        sel = dep["spec"]["selector"]["matchLabels"]
        if any(pod["metadata"].get("labels", {}).get(k) != v for k, v in sel.items()):
            problems.append("selector does not match the pod labels")
        named_ports: dict[str, int] = {}
        for c in spec["containers"]:
            b = binary_of(c.get("command"), bins, f"{label}: Deployment {name}")
            if not b:
                continue
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            port = int(env.get("PULSE__HTTP__PORT") or b.port)
            cports = {p.get("name", str(p["containerPort"])): p["containerPort"] for p in c.get("ports", [])}
            named_ports.update(cports)
            if port not in cports.values():
                problems.append(f"container ports {list(cports.values())}, {b.name} listens on {port}")
            for e in c.get("env", []):
                if e["name"].startswith("PULSE__") and not b.accepts(e["name"]):
                    problems.append(f"env {e['name']} is not a setting of {b.name}")
                ref = e.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    s = secrets.get(ref["secretKeyRef"]["name"])
                    key = ref["secretKeyRef"]["key"]
                    if not s or key not in {**s.get("stringData", {}), **s.get("data", {})}:
                        problems.append(f"env {e['name']}: no Secret key {ref['secretKeyRef']['name']}/{key}")
                if "configMapKeyRef" in ref:
                    cm = configmaps.get(ref["configMapKeyRef"]["name"])
                    if not cm or ref["configMapKeyRef"]["key"] not in cm.get("data", {}):
                        problems.append(f"env {e['name']}: no ConfigMap key {ref['configMapKeyRef']}")
            for ef in c.get("envFrom", []):
                if "configMapRef" in ef and ef["configMapRef"]["name"] not in configmaps:
                    problems.append(f"envFrom: no ConfigMap {ef['configMapRef']['name']}")
                if "secretRef" in ef and ef["secretRef"]["name"] not in secrets:
                    problems.append(f"envFrom: no Secret {ef['secretRef']['name']}")
            for probe in ("readinessProbe", "livenessProbe"):
                pr = c.get(probe, {}).get("httpGet")
                if not pr:
                    problems.append(f"no {probe}")
                    continue
                pp = pr["port"]
                if (cports.get(pp) if isinstance(pp, str) else pp) != port:
                    problems.append(f"{probe} port {pp} is not {port}")
                want = "/readyz" if probe == "readinessProbe" else "/healthz"
                if pr["path"] != want:
                    problems.append(f"{probe} path {pr['path']}, want {want}")
            ann = pod["metadata"].get("annotations", {})
            if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port):
                problems.append(f"prometheus annotations missing or not on port {port}")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits"):
                problems.append("no resource requests and limits")
            if b.name == "pulse-gateway":
                cm_env = {}
                for ef in c.get("envFrom", []):
                    cm_env.update(configmaps.get(ef.get("configMapRef", {}).get("name"), {}).get("data", {}))
                drain = env.get("PULSE__GATEWAY__DRAIN_WINDOW") or cm_env.get("PULSE__GATEWAY__DRAIN_WINDOW") \
                    or b.defaults["gateway"]["drain_window"]
                drain_s = duration_secs(drain)
                pre = c.get("lifecycle", {}).get("preStop", {})
                pre_s = 0
                if "exec" in pre and pre["exec"]["command"][:1] == ["sleep"]:
                    pre_s = int(pre["exec"]["command"][1])
                elif "sleep" in pre:
                    pre_s = int(pre["sleep"]["seconds"])
                else:
                    problems.append("gateway has no preStop sleep")
                grace = spec.get("terminationGracePeriodSeconds", 30)
                if grace < pre_s + drain_s + 5:
                    problems.append(f"terminationGracePeriodSeconds {grace} < preStop {pre_s}s + drain {drain_s}s + 5s")
        deploy_ports[name] = (pod["metadata"].get("labels", {}), named_ports)
        check(f"{label}: Deployment {name}: ports, probes, env, annotations, resources", problems)

    for name, cm in configmaps.items():
        users = [bins[c["command"][0]] for d in by_kind.get("Deployment", {}).values()
                 for c in d["spec"]["template"]["spec"]["containers"]
                 if c.get("command") and c["command"][0] in bins
                 and any(ef.get("configMapRef", {}).get("name") == name for ef in c.get("envFrom", []))]
        check(f"{label}: ConfigMap {name}: every PULSE__ key is a setting of a service that reads it",
              [f"{k}" for k in cm.get("data", {}) if k.startswith("PULSE__") and not any(b.accepts(k) for b in users)])
    for name, sec in secrets.items():
        problems = []
        for key, val in sec.get("stringData", {}).items():
            if key.endswith(".toml") and "ingest" in key:
                with tempfile.NamedTemporaryFile("w", suffix=".toml", dir=ROOT, delete=False) as f:
                    f.write(val)
                try:
                    problems += settings_file_problems(Path(f.name), bins["pulse-ingest"])
                finally:
                    os.unlink(f.name)
        check(f"{label}: Secret {name}: settings files hold only pulse-ingest keys", problems)

    services = by_kind.get("Service", {})
    for name, svc in services.items():
        problems = []
        sel = svc["spec"].get("selector", {})
        targets = [ports for labels, ports in deploy_ports.values() if all(labels.get(k) == v for k, v in sel.items())]
        if not targets:
            problems.append(f"selector {sel} matches no Deployment")
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            for ports in targets:
                if (isinstance(tp, str) and tp not in ports) or (isinstance(tp, int) and tp not in ports.values()):
                    problems.append(f"targetPort {tp} is not a container port")
        check(f"{label}: Service {name} selects a Deployment and its ports", problems)
    for name, ing in by_kind.get("Ingress", {}).items():
        problems = []
        ann = ing["metadata"].get("annotations", {})
        for a in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
            if int(ann.get(a, "60")) < 300:
                problems.append(f"{a} too short for WebSockets")
        paths = {}
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                be = p["backend"]["service"]
                paths[p["path"]] = be["name"]
                svc = services.get(be["name"])
                if not svc:
                    problems.append(f"backend {be['name']} is not a Service")
                elif be["port"].get("name") not in [sp.get("name") for sp in svc["spec"]["ports"]] \
                        and be["port"].get("number") not in [sp["port"] for sp in svc["spec"]["ports"]]:
                    problems.append(f"backend {be['name']} has no port {be['port']}")
        if paths.get("/api") != "pulse-ingest" or paths.get("/") != "pulse-gateway":
            problems.append(f"want /api -> pulse-ingest and / -> pulse-gateway, got {paths}")
        check(f"{label}: Ingress {name}: routes and WebSocket timeouts", problems)
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        for name, d in by_kind.get(kind, {}).items():
            if kind == "HorizontalPodAutoscaler":
                target = d["spec"]["scaleTargetRef"]["name"]
                bad = [] if target in by_kind.get("Deployment", {}) else [f"no Deployment {target}"]
            else:
                sel = d["spec"]["selector"]["matchLabels"]
                bad = [] if any(all(l.get(k) == v for k, v in sel.items()) for l, _ in deploy_ports.values()) \
                    else [f"selector {sel} matches no Deployment"]
            check(f"{label}: {kind} {name} targets a Deployment", bad)


def duration_secs(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*(ms|s|m|h)?", str(text).strip())
    if not m:
        raise ValueError(f"cannot read duration {text!r}")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600}[unit].__ceil__()


def check_kubernetes(bins: dict[str, Binary]) -> None:
    with tempfile.TemporaryDirectory(prefix="pulse-k8s-") as tmp:
        check_kubernetes_in(bins, Path(tmp))


def check_kubernetes_in(bins: dict[str, Binary], out: Path) -> None:
    for label, directory in (("k8s base", "deploy/kubernetes/base"), ("k8s overlay example", "deploy/kubernetes/overlays/example")):
        print(label)
        try:
            docs = render(ROOT / directory)
        except (ValueError, KeyError, OSError, yaml.YAMLError) as e:
            fail(f"{label}: kustomize render", str(e))
            continue
        ok(f"{label}: kustomize render ({len(docs)} resources)")
        rendered = out / (label.replace(" ", "-") + ".yaml")
        rendered.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        r = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", K8S_VERSION, str(rendered)],
                           capture_output=True, text=True)
        text = (r.stdout + r.stderr).strip()
        check(f"{label}: kubernetes-validate --strict -k {K8S_VERSION}",
              [] if r.returncode == 0 else [text[-2000:] or f"exit {r.returncode}"])
        k8s_semantics(label, docs, bins)
        if label.startswith("k8s overlay"):
            images = {c["image"] for d in docs if d["kind"] == "Deployment"
                      for c in d["spec"]["template"]["spec"]["containers"]}
            ns = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
            overlay = yaml.safe_load((ROOT / directory / "kustomization.yaml").read_text())
            wanted = {f"{i['newName']}:{i['newTag']}" for i in overlay.get("images", []) if i.get("name") == "pulse"}
            check(f"{label}: image and namespace applied",
                  ([] if wanted and images == wanted else [f"images {images}, overlay asks for {wanted}"])
                  + ([] if ns == {"pulse"} else [f"namespaces {ns}"]))


# What a histogram or summary adds to its name in the exposition format.
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def registered_metrics() -> set[str]:
    """Metric names the code registers: every `"pulse_…"` / `"process_…"`
    string literal in crates/ (the `process_*` ones are named in
    pulse-runtime's test of the process collector)."""
    names = set()
    for path in (ROOT / "crates").rglob("*.rs"):
        names |= set(re.findall(r'"((?:pulse|process)_[a-z0-9_]+)"', path.read_text()))
    return names


def check_grafana() -> None:
    print("Grafana dashboards")
    known = registered_metrics()
    dashboards = sorted((ROOT / "deploy/grafana").glob("*.json"))
    check("deploy/grafana has a dashboard", [] if dashboards else ["no *.json"])
    for path in dashboards:
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            fail(f"{path.name}: valid JSON", str(e))
            continue
        exprs = []

        def walk(node):
            if isinstance(node, dict):
                if isinstance(node.get("expr"), str):
                    exprs.append(node["expr"])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(doc)
        used = set()
        for expr in exprs:
            for name in re.findall(r"\b((?:pulse|process)_[a-z0-9_]+)\b", expr):
                for suffix in SERIES_SUFFIXES:
                    if name.endswith(suffix) and name[: -len(suffix)] in known:
                        name = name[: -len(suffix)]
                used.add(name)
        unknown = sorted(used - known)
        check(f"{path.name}: {len(exprs)} queries over {len(used)} metrics, each registered by the code",
              [f"{n} is not registered anywhere in crates/" for n in unknown])


def check_dockerfile(bins: dict[str, Binary]) -> None:
    print("Dockerfile")
    text = (ROOT / "Dockerfile").read_text()
    problems = []
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    if len(stages) < 2:
        problems.append("not multi-stage")
    elif "debian" not in stages[-1][0] or "slim" not in stages[-1][0]:
        problems.append(f"runtime stage is {stages[-1][0]}, want debian slim")
    runtime = text.split(stages[-1][0], 1)[-1] if stages else text
    if not re.search(r"^USER\s+(?!0\b|root\b)\S+", runtime, re.M):
        problems.append("runtime stage does not switch to a non-root user")
    if "--release" not in text:
        problems.append("no release build")
    if re.search(r"apt-get install[^\n]*(build-essential|gcc|curl|wget)", runtime):
        problems.append("runtime stage installs build or download tools")
    if "web/dashboard" not in text:
        problems.append("the dashboard is not copied")
    check("Dockerfile: multi-stage, release build, slim non-root runtime, dashboard", problems)
    cmd = re.findall(r'^CMD\s+\["([^"]+)"', text, re.M)
    if cmd:
        binary_of([cmd[-1]], bins, "Dockerfile CMD") and ok(f"Dockerfile CMD {cmd[-1]} is a workspace binary")
    ignore = (ROOT / ".dockerignore").read_text().split()
    check(".dockerignore excludes target/ and .git/",
          [p for p in ("target/", ".git/") if p not in ignore])


# --------------------------------------------------------------------------
# Guides: run the `# test` blocks against real servers
# --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def guide_blocks() -> list[tuple[str, int, str, str]]:
    """(guide, line, body, language): ```bash blocks starting `# test`, and
    ```js blocks starting `// test` (run with Node) or `// file: NAME` (saved
    for the examples after it to import)."""
    blocks = []
    for path in sorted((ROOT / "proto-docs/guides").glob("*.md")):
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = lines[i].strip()
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            lang = None
            if fence == "```bash" and nxt.startswith("# test"):
                lang = "bash"
            elif fence == "```js" and (nxt.startswith("// test") or nxt.startswith("// file:")):
                lang = "js"
            if lang:
                start = i + 1
                j = start
                while lines[j].strip() != "```":
                    j += 1
                blocks.append((str(path.relative_to(ROOT)), start + 1, "\n".join(lines[start:j]), lang))
                i = j
            i += 1
    return blocks


# The frontend guide's examples run against standalone `pulse` as
# `cargo run --release` starts it; a block titled `[secured]` runs against
# the ingest + gateway pair that requires tokens.
STANDALONE_GUIDES = {"proto-docs/guides/frontend-developer.md"}


def node_flags() -> list[str]:
    """Node 20 has `WebSocket` behind a flag; 22 and later have it built in."""
    r = subprocess.run(["node", "-p", "process.versions.node"], capture_output=True, text=True)
    major = int(r.stdout.split(".")[0]) if r.returncode == 0 else 0
    return ["--experimental-websocket"] if major and major < 22 else []


def js_workdir(logs: Path) -> Path:
    """A project with the web package installed from its `npm pack` tarball
    (as the frontend guide installs it), plus React for the hooks examples."""
    work = logs / "js"
    work.mkdir()
    (work / "package.json").write_text(json.dumps({"name": "guide-examples", "private": True, "type": "module"}))

    def pack(folder: Path) -> str:
        r = subprocess.run(["npm", "pack", "--json", "--pack-destination", str(work), str(folder)],
                           cwd=work, capture_output=True, text=True, check=True)
        return str(work / json.loads(r.stdout)[0]["filename"])

    specs = [pack(ROOT / "web")]
    for dep in ("react", "react-test-renderer"):
        local = ROOT / "web/node_modules" / dep
        specs.append(pack(local) if local.is_dir() else f"{dep}@^19")
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *specs],
                   cwd=work, capture_output=True, text=True, check=True, timeout=300)
    return work


def check_guides(bin_dir: Path) -> None:
    print("guides (examples against a real pulse-ingest and pulse-gateway)")
    before = failed
    procs: list[subprocess.Popen] = []
    logs = Path(tempfile.mkdtemp(prefix="pulse-guides-"))

    def stop(*_):
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(143)))
    try:
        rport, iport, gport = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=open(logs / "redis.log", "w"), stderr=subprocess.STDOUT, cwd=logs))
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", rport), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        # The services get the Kubernetes ConfigMap's variables, so that those
        # names are proven to load, then the test's own.
        base_cm = next(d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/base/configmap.yaml").read_text())
                       if d and d["kind"] == "ConfigMap")
        secret = "guide-test-secret-0123456789abcdef"
        env = dict(os.environ)
        env.update({k: str(v) for k, v in base_cm["data"].items()})
        env.update({
            "PULSE__REDIS__URL": f"redis://127.0.0.1:{rport}/",
            "PULSE__HTTP__HOST": "127.0.0.1",
            "PULSE__AUTH__SECRET": secret,
            "PULSE__AUTH__ANONYMOUS": "false",
            "PULSE__TELEMETRY__LOG_FORMAT": "pretty",
        })
        env.pop("PULSE_CONFIG", None)
        ienv = dict(env, PULSE__HTTP__PORT=str(iport), PULSE_CONFIG=str(ROOT / "deploy/compose/ingest.toml"))
        genv = dict(env, PULSE__HTTP__PORT=str(gport))
        procs.append(subprocess.Popen([str(bin_dir / "pulse-ingest")], env=ienv, cwd=ROOT,
                                      stdout=open(logs / "ingest.log", "w"), stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([str(bin_dir / "pulse-gateway")], env=genv, cwd=ROOT,
                                      stdout=open(logs / "gateway.log", "w"), stderr=subprocess.STDOUT))
        try:
            wait_http(f"http://127.0.0.1:{iport}/readyz", procs[1])
            wait_http(f"http://127.0.0.1:{gport}/readyz", procs[2])
            ok("pulse-ingest and pulse-gateway start with the k8s ConfigMap settings and the compose ingest.toml")
        except RuntimeError as e:
            fail("servers start", f"{e}; logs in {logs}")
            return
        blocks = guide_blocks()
        standalone_env = None
        if any(b[0] in STANDALONE_GUIDES for b in blocks):
            pulse_bin = bin_dir / "pulse"
            if pulse_bin.exists():
                sport = free_port()
                # The defaults of `cargo run --release`: no PULSE_* settings.
                senv = {k: v for k, v in os.environ.items() if not k.startswith("PULSE")}
                procs.append(subprocess.Popen([str(pulse_bin), "--port", str(sport), "--host", "127.0.0.1"],
                                              env=senv, cwd=ROOT, stdout=open(logs / "pulse.log", "w"),
                                              stderr=subprocess.STDOUT))
                try:
                    wait_http(f"http://127.0.0.1:{sport}/readyz", procs[-1])
                    ok("standalone pulse starts with its defaults (anonymous, demo fleet)")
                    standalone_env = {"PULSE_URL": f"http://127.0.0.1:{sport}",
                                      "PULSE_GATEWAY_URL": f"http://127.0.0.1:{sport}"}
                except RuntimeError as e:
                    fail("standalone pulse starts", f"{e}; logs in {logs}")
        guides = {b[0] for b in blocks}
        expected = {f"proto-docs/guides/{g}.md" for g in ("operator", "probe-author", "publisher", "frontend-developer")}
        check("every guide has tested examples", sorted(f"{g} has no `# test` block" for g in expected - guides))
        run_env = dict(os.environ)
        run_env.update({
            "PULSE_URL": f"http://127.0.0.1:{iport}",
            "PULSE_GATEWAY_URL": f"http://127.0.0.1:{gport}",
            "PULSE_AGENT_KEY": "demo-agent-key",
            "PULSE_PUBLISHER_KEY": "demo-publisher-key",
            "PULSE_JWT_SECRET": secret,
        })
        work: Path | None = None
        flags: list[str] = []
        for path, line, body, lang in blocks:
            first = body.splitlines()[0]
            title = first.removeprefix("# test").removeprefix("// test").strip(" :-") or "example"
            env = dict(run_env)
            if path in STANDALONE_GUIDES and "[secured]" not in title:
                if standalone_env is None:
                    skip(f"{path}:{line} {title}", "no standalone pulse binary")
                    continue
                env.update(standalone_env)
            if lang == "js":
                if work is None:
                    if not shutil.which("node") or not shutil.which("npm"):
                        skip(f"{path}:{line} {title}", "needs node and npm")
                        continue
                    try:
                        work = js_workdir(logs)
                        flags = node_flags()
                    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                        fail(f"{path}:{line} {title}", f"installing the web package: {e}\n{getattr(e, 'stderr', '')}")
                        continue
                if first.startswith("// file:"):
                    (work / first.removeprefix("// file:").strip()).write_text(body + "\n")
                    continue
                script = work / f"example-{Path(path).stem}-{line}.mjs"
                script.write_text(body + "\n")
                cmd, cwd = ["node", *flags, script.name], work
            else:
                cmd, cwd = ["bash", "-euo", "pipefail", "-c", body], logs
            try:
                r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired as e:
                fail(f"{path}:{line} {title}", f"timed out after 60 s\n{e.stdout!s:.1500}{e.stderr!s:.1500}")
                continue
            if r.returncode == 0:
                ok(f"{path}:{line} {title}")
            else:
                fail(f"{path}:{line} {title}", f"exit {r.returncode}\n{r.stdout[-1500:]}{r.stderr[-1500:]}")
    finally:
        stop()
    if failed == before:
        shutil.rmtree(logs, ignore_errors=True)
    else:
        print(f"  (server logs kept in {logs})")


def main() -> int:
    bins = discover_binaries()
    cmd = sys.argv[1] if len(sys.argv) > 1 else "static"
    steps = []
    if cmd in ("static", "all"):
        steps += [("Dockerfile", lambda: check_dockerfile(bins)), ("docker-compose.yml", lambda: check_compose(bins)),
                  ("Kubernetes manifests", lambda: check_kubernetes(bins)), ("Grafana", check_grafana)]
    if cmd in ("guides", "all"):
        steps.append(("guides", lambda: check_guides(Path(sys.argv[2]))))
    for what, step in steps:
        try:
            step()
        except Exception as e:  # a broken file must still end in the summary line
            import traceback
            traceback.print_exc()
            fail(f"{what}: checker crashed", f"{type(e).__name__}: {e}")
    if cmd not in ("static", "guides", "all"):
        print(__doc__)
        return 2
    return summary()


if __name__ == "__main__":
    sys.exit(main())
