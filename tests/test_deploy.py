"""The deploy files work as shipped (issue #8): systemd units, Kubernetes manifests, Dockerfile.

systemd: `systemd-analyze verify` is clean and `systemd-analyze security --offline=yes` rates
the services at or below MAX_EXPOSURE. Kubernetes: a small kustomize renderer (the features
the manifests use, and nothing else — it refuses the rest) builds the base and the overlay;
where a real kustomize is installed the test checks the renderer against it. Every object is
validated against the Kubernetes JSON schemas offline (kubernetes_validate), the CRDs by hand,
and the pieces that must agree with each other — the TOML in the ConfigMap, probes, ports,
mount paths, grace period, NetworkPolicy, alert expressions — are checked against each other.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from rotator.config import Config, VaultStoreConfig, parse_config
from rotator.policy import DUE_MARGIN_FRACTION

try:
    from rotator.daemon.metrics import METRIC_NAMES
except ImportError:
    # TODO(#8): rotator/daemon/metrics.py should export METRIC_NAMES; until it does, this copy of the
    # list in its docstring stands in (test_alert_metrics_are_exported checks the live registry).
    METRIC_NAMES = frozenset({
        "rotator_rotation_total",
        "rotator_rotation_duration_seconds",
        "rotator_token_last_success_timestamp_seconds",
        "rotator_token_expiration_timestamp_seconds",
        "rotator_certificate_expiration_timestamp_seconds",
        "rotator_credential_ready",
        "rotator_token_requests_total",
        "rotator_build_info",
    })

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
SERVICES = ("rotator.service", "rotator-oneshot.service")
UNITS = (*SERVICES, "rotator.timer")
EXAMPLE_TOML = SYSTEMD / "rotator.toml.example"
BASE = ROOT / "deploy" / "kubernetes" / "base"
OVERLAY = ROOT / "deploy" / "kubernetes" / "overlays" / "example"
KUSTOMIZATIONS = pytest.mark.parametrize("kdir", [BASE, OVERLAY], ids=["base", "overlay"])

MAX_EXPOSURE = 1.5
K8S_SCHEMA_VERSION = "1.30"
UID = 10001
SHUTDOWN_MARGIN = 5  # seconds between shutdown_timeout and the supervisor's SIGKILL, at least
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (package systemd)"
)
BASE_KINDS = sorted(["ConfigMap", "Deployment", "NetworkPolicy", "NetworkPolicy",
                     "PodDisruptionBudget", "Service", "ServiceAccount"])
OVERLAY_KINDS = sorted([*BASE_KINDS, "Namespace", "PrometheusRule", "ServiceMonitor"])


# ---------------------------------------------------------------------------- systemd helpers


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]} in file order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            assert current is not None, f"{path}: {line!r} outside a section"
            key, sep, value = line.partition("=")
            assert sep, f"{path}: {line!r} is not KEY=VALUE"
            current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def unit_value(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    values = unit_values(unit, section, key)
    assert len(values) == 1, f"[{section}] {key}= expected once, found {values}"
    return values[0]


TIMESPAN_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600,
                  "hr": 3600, "d": 86400}


def timespan(value: str) -> float:
    """systemd time span ('30min', '1h 30min', '45s', '90') in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts and re.fullmatch(r"(\s*\d+(\.\d+)?\s*[a-z]*)+\s*", value), value
    return sum(float(n) * TIMESPAN_UNITS[u or "s"] for n, u in parts)


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The shipped units in a temp dir, ExecStart pointed at an existing stub `rotator`."""
    stub = tmp_path / "bin" / "rotator"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        if name in SERVICES:
            text, count = re.subn(r"^ExecStart=/usr/bin/rotator ", f"ExecStart={stub} ", text,
                                  flags=re.MULTILINE)
            assert count == 1, f"{name}: expected one ExecStart=/usr/bin/rotator line"
        (tmp_path / name).write_text(text)
    return tmp_path


def example_config() -> Config:
    raw = tomllib.loads(EXAMPLE_TOML.read_text())
    return parse_config(raw, base_dir=Path("/etc/rotator"), source=Path("/etc/rotator/rotator.toml"))


# ---------------------------------------------------------------------------- systemd tests


@needs_systemd_analyze
def test_units_pass_systemd_analyze_verify(unit_dir: Path) -> None:
    """`systemd-analyze verify` prints nothing at all for the three units."""
    paths = [str(unit_dir / name) for name in UNITS]
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", *paths], capture_output=True, text=True,
                            timeout=60, cwd=unit_dir)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # The harness can see a broken unit (so "clean" above means something on this systemd).
    broken = unit_dir / "broken.service"
    broken.write_text((unit_dir / "rotator.service").read_text().replace(
        "[Service]\n", "[Service]\nRestartSecs=30s\n", 1))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(broken)], capture_output=True,
                            text=True, timeout=60, cwd=unit_dir)
    assert "RestartSecs" in result.stdout + result.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("name", SERVICES)
def test_service_exposure_at_most_limit(unit_dir: Path, name: str) -> None:
    """`systemd-analyze security --offline=yes` rates each service at or below 1.5."""
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", str(unit_dir / name)],
                            capture_output=True, text=True, timeout=60, cwd=unit_dir)
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    print(f"{name}: systemd-analyze security exposure {score}")
    assert score <= MAX_EXPOSURE, f"{name}: exposure {score} > {MAX_EXPOSURE}\n{result.stdout}"


def test_daemon_unit_lifecycle_settings() -> None:
    """rotator.service: notify + watchdog, HUP reload, bounded restarts, stop above shutdown_timeout."""
    unit = read_unit(SYSTEMD / "rotator.service")
    config = example_config()
    assert unit_value(unit, "Service", "Type") == "notify"
    assert unit_value(unit, "Service", "NotifyAccess") == "main"
    assert shlex.split(unit_value(unit, "Service", "ExecStart")) == [
        "/usr/bin/rotator", "--config", "/etc/rotator/rotator.toml", "run"]
    assert shlex.split(unit_value(unit, "Service", "ExecReload"))[-2:] == ["-HUP", "$MAINPID"]
    assert timespan(unit_value(unit, "Service", "WatchdogSec")) >= 10
    assert unit_value(unit, "Service", "Restart") == "on-failure"
    assert "2" in unit_value(unit, "Service", "RestartPreventExitStatus").split()
    # Restarts cannot storm the token endpoint: spaced out, and a bounded number per window.
    restart_sec = timespan(unit_value(unit, "Service", "RestartSec"))
    burst = int(unit_value(unit, "Unit", "StartLimitBurst"))
    window = timespan(unit_value(unit, "Unit", "StartLimitIntervalSec"))
    assert restart_sec >= 10 and 1 <= burst <= 10 and window >= 5 * 60
    assert burst * restart_sec < window, "the start limit must be reachable, else it never trips"
    stop = timespan(unit_value(unit, "Service", "TimeoutStopSec"))
    assert stop >= config.daemon.shutdown_timeout + SHUTDOWN_MARGIN
    assert unit_values(unit, "Install", "WantedBy") == ["multi-user.target"]


@pytest.mark.parametrize("name", SERVICES)
def test_service_sandbox_settings(name: str) -> None:
    """Both services carry the issue's hardening set, user and directories."""
    unit = read_unit(SYSTEMD / name)
    expected = {
        "DynamicUser": "yes", "UMask": "0077", "StateDirectory": "rotator",
        "LogsDirectory": "rotator", "ConfigurationDirectory": "rotator",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SystemCallArchitectures": "native",
        "MemoryDenyWriteExecute": "yes", "LockPersonality": "yes", "RestrictRealtime": "yes",
        "RestrictNamespaces": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
        "ProtectHostname": "yes", "ProtectProc": "invisible", "ProcSubset": "pid",
        "PrivateUsers": "yes", "RemoveIPC": "yes", "RestrictSUIDSGID": "yes",
    }
    actual = {key: unit_value(unit, "Service", key) for key in expected}
    assert actual == expected
    assert unit_values(unit, "Service", "SystemCallFilter")[0] == "@system-service"


def test_oneshot_shares_the_daemon_sandbox() -> None:
    """rotator-oneshot.service runs `rotate --all` in exactly rotator.service's sandbox."""
    lifecycle = {"Type", "NotifyAccess", "ExecStart", "ExecReload", "WatchdogSec", "Restart",
                 "RestartSec", "RestartPreventExitStatus", "TimeoutStopSec", "TimeoutStartSec",
                 "KillMode"}
    daemon = read_unit(SYSTEMD / "rotator.service")
    oneshot = read_unit(SYSTEMD / "rotator-oneshot.service")

    def sandbox(unit: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str]]:
        return [(k, v) for k, v in unit["Service"] if k not in lifecycle]

    assert sandbox(oneshot) == sandbox(daemon)
    assert unit_value(oneshot, "Service", "Type") == "oneshot"
    assert shlex.split(unit_value(oneshot, "Service", "ExecStart")) == [
        "/usr/bin/rotator", "--config", "/etc/rotator/rotator.toml", "rotate", "--all"]


def test_timer_period_matches_every() -> None:
    """rotator.timer starts the one-shot unit every `every`, with a delay under the due margin."""
    timer = read_unit(SYSTEMD / "rotator.timer")
    config = example_config()
    assert unit_value(timer, "Timer", "Unit") == "rotator-oneshot.service"
    period = timespan(unit_value(timer, "Timer", "OnUnitActiveSec"))
    delay = timespan(unit_value(timer, "Timer", "RandomizedDelaySec"))
    assert timespan(unit_value(timer, "Timer", "OnBootSec")) > 0
    for name, cred in config.credentials.items():
        # Each run finds the token due (age >= every - margin) and none lets it age past
        # every + a tenth.
        assert period == cred.every, name
        assert 0 < delay < cred.every * DUE_MARGIN_FRACTION, name
    assert unit_values(timer, "Install", "WantedBy") == ["timers.target"]


def test_example_config_fits_the_service() -> None:
    """rotator.toml.example is valid and reads/writes only where rotator.service allows."""
    config = example_config()
    unit = read_unit(SYSTEMD / "rotator.service")
    assert config.credentials and config.stores
    host = config.daemon.listen.rpartition(":")[0]
    assert host in ("127.0.0.1", "[::1]", "localhost")
    # Writable in the sandbox: StateDirectory= and LogsDirectory= only.
    assert config.daemon.state_dir == Path("/var/lib/rotator")
    assert config.daemon.audit_log is not None
    assert config.daemon.audit_log.parent == Path("/var/log/rotator")
    # Secrets come from LoadCredential=: each file the config names there is loaded, and back.
    loaded = {v.split(":", 1)[0] for v in unit_values(unit, "Service", "LoadCredential")}
    cred_dir = Path("/run/credentials/rotator.service")
    named = set()
    for store in config.stores.values():
        if isinstance(store, VaultStoreConfig):
            for path in (store.auth.role_id_file, store.auth.secret_id_file, store.auth.token_file):
                if path is not None:
                    assert path.parent == cred_dir, path
                    named.add(path.name)
    assert named and named == loaded
    stop = timespan(unit_value(unit, "Service", "TimeoutStopSec"))
    assert stop >= config.daemon.shutdown_timeout + SHUTDOWN_MARGIN


# ---------------------------------------------------------------------------- kustomize renderer

GENERATED = "__generated_by_kustomization__"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "PersistentVolume", "IngressClass"}
# Strategic merge: lists merged by key (as the Kubernetes types declare); other lists replace.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath", "imagePullSecrets": "name"}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization like `kustomize build` does, for the features used here."""
    objects = _build(directory)
    renamed = {}
    for obj in objects:
        if obj.pop(GENERATED, False):
            name = obj["metadata"]["name"]
            obj["metadata"]["name"] = renamed[name] = f"{name}-{kustomize_hash(obj['data'])}"
    for spec in _pod_specs(objects):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                volume["configMap"]["name"] = renamed.get(volume["configMap"]["name"],
                                                          volume["configMap"]["name"])
            for source in volume.get("projected", {}).get("sources", []):
                if "configMap" in source:
                    source["configMap"]["name"] = renamed.get(source["configMap"]["name"],
                                                              source["configMap"]["name"])
        for container in spec.get("containers", []):
            refs = [e for e in container.get("envFrom", []) if "configMapRef" in e] + [
                e for e in container.get("env", []) if "configMapKeyRef" in e.get("valueFrom", {})]
            if refs:
                raise NotImplementedError("ConfigMap references from env/envFrom")
    return objects


def kustomize_hash(data: dict[str, str]) -> str:
    """kustomize's ConfigMap name suffix (api/hasher: sha256 of Go's JSON, 10 chars, encoded)."""
    text = json.dumps({"data": data, "kind": "ConfigMap", "name": ""}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _build(directory: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - {"apiVersion", "kind", "resources", "namespace", "labels",
                           "configMapGenerator", "patches", "images"}
    if unknown:
        raise NotImplementedError(f"{directory}: the test's renderer lacks {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects.extend(_build(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)
    for gen in spec.get("configMapGenerator", []):
        if set(gen) - {"name", "files", "literals", "behavior"}:
            raise NotImplementedError(f"configMapGenerator: {sorted(gen)}")
        data = {}
        for entry in gen.get("files", []):
            key, _, source = entry.rpartition("=")
            data[key or Path(source).name] = (directory / source).read_text()
        for entry in gen.get("literals", []):
            key, _, value = entry.partition("=")
            data[key] = value
        behavior = gen.get("behavior", "create")
        if behavior == "create":
            objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": gen["name"]}, "data": data, GENERATED: True})
            continue
        (target,) = [o for o in objects if o.get(GENERATED) and o["metadata"]["name"] == gen["name"]]
        if behavior == "replace":
            target["data"] = data
        elif behavior == "merge":
            target["data"].update(data)
        else:
            raise NotImplementedError(f"configMapGenerator behavior {behavior!r}")
    for patch in spec.get("patches", []):
        if set(patch) - {"path", "patch"}:
            raise NotImplementedError(f"patches: {sorted(patch)} (only path/patch, no target)")
        text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
        for doc in yaml.safe_load_all(text):
            (target,) = [o for o in objects if o["kind"] == doc["kind"]
                         and o["metadata"]["name"] == doc["metadata"]["name"]]
            _strategic_merge(target, doc)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    for label in spec.get("labels", []):
        if set(label) - {"pairs", "includeSelectors", "includeTemplates"}:
            raise NotImplementedError(f"labels: {sorted(label)}")
        if label.get("includeSelectors"):
            raise NotImplementedError("labels.includeSelectors: true")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
            template = obj.get("spec", {}).get("template")
            if label.get("includeTemplates") and template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for image in spec.get("images", []):
        if set(image) - {"name", "newName", "newTag"}:
            raise NotImplementedError(f"images: {sorted(image)}")
        for pod in _pod_specs(objects):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    tag = image.get("newTag", tag)
                    container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
    return objects


def _strategic_merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise NotImplementedError(f"strategic merge directive {key}")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _strategic_merge(target[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(target.get(key), list):
            merge_key = MERGE_KEYS[key]
            for item in value:
                match = [t for t in target[key] if t.get(merge_key) == item.get(merge_key)]
                if match:
                    _strategic_merge(match[0], item)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _pod_specs(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for obj in objects:
        template = obj.get("spec", {}).get("template")
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job") and template:
            yield template["spec"]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def rotator_toml(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], Config]:
    configmap = one(objects, "ConfigMap")
    raw = tomllib.loads(configmap["data"]["rotator.toml"])
    return raw, parse_config(raw, base_dir=Path("/etc/rotator"))


def rotator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(objects, "Deployment", "rotator")["spec"]["template"]["spec"]["containers"]
    return container


def listen_port(config: Config) -> int:
    return int(config.daemon.listen.rpartition(":")[2])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------- Kubernetes tests


def test_renderer_hash_matches_kustomize() -> None:
    """The renderer's ConfigMap suffix is kustomize's (value taken from kustomize v5.5.0)."""
    assert kustomize_hash({"a": "b"}) == "4h2mbtbbt6"
    assert kustomize_hash({"rotator.toml": '[daemon]\nlisten = "0.0.0.0:9464"\n'}) == "f9khmbk54g"


@KUSTOMIZATIONS
def test_renderer_agrees_with_real_kustomize(kdir: Path) -> None:
    """Where kustomize (or kubectl) is installed, it renders exactly what the test renders."""
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(kdir)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(kdir)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed; the Python renderer stands alone")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    def key(obj: dict[str, Any]) -> tuple[str, str]:
        return obj["kind"], obj["metadata"]["name"]

    real = sorted((d for d in yaml.safe_load_all(result.stdout) if d), key=key)
    assert real == sorted(kustomize(kdir), key=key)


@KUSTOMIZATIONS
def test_objects_match_kubernetes_schemas(kdir: Path) -> None:
    """Every built-in object validates (strict) against the Kubernetes 1.30 and latest schemas."""
    import kubernetes_validate

    objects = kustomize(kdir)
    assert sorted(o["kind"] for o in objects) == (BASE_KINDS if kdir == BASE else OVERLAY_KINDS)
    versions = {K8S_SCHEMA_VERSION, kubernetes_validate.latest_version()}
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: test_service_monitor / test_prometheus_rule
        for version in sorted(versions):
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} ({version}) {where}: "
                            f"{exc.message}")
    if kdir == OVERLAY:
        namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
        assert namespaces == {one(objects, "Namespace")["metadata"]["name"]}
        # The overlay's `images` entry really replaced the base's placeholder image.
        image = rotator_container(objects)["image"]
        assert re.fullmatch(r"[\w.-]+\.[\w.-]+(:\d+)?/[\w./-]+:[\w.-]+", image), image
        assert not image.endswith(":latest")


@KUSTOMIZATIONS
def test_configmap_is_a_rotator_config_the_pods_can_serve(kdir: Path) -> None:
    """The ConfigMap's rotator.toml parses, is valid, listens on all interfaces and is mounted."""
    objects = kustomize(kdir)
    raw, config = rotator_toml(objects)
    assert raw["daemon"]["listen"] == config.daemon.listen
    assert config.daemon.listen.rpartition(":")[0] in ("0.0.0.0", "[::]")  # noqa: S104
    assert config.credentials
    # The daemon reads the file the ConfigMap volume provides.
    container = rotator_container(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    assert args[-1] == "run"
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]
    assert config_path.name in one(objects, "ConfigMap")["data"]


@KUSTOMIZATIONS
def test_probes_and_ports_match_listen(kdir: Path) -> None:
    """Probes hit /healthz and /readyz on the listen port; Service and policy use that port."""
    objects = kustomize(kdir)
    _, config = rotator_toml(objects)
    port = listen_port(config)
    container = rotator_container(objects)
    (cport,) = container["ports"]
    assert cport["containerPort"] == port
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] in (port, cport["name"])
    service = one(objects, "Service")
    (sport,) = service["spec"]["ports"]
    assert sport["targetPort"] in (port, cport["name"])
    ingress = [p for policy in (o for o in objects if o["kind"] == "NetworkPolicy")
               for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])]
    assert ingress == [{"protocol": "TCP", "port": port}]


@KUSTOMIZATIONS
def test_pod_runs_locked_down(kdir: Path) -> None:
    """Non-root 10001, read-only root, no escalation, no capabilities, RuntimeDefault, sized."""
    objects = kustomize(kdir)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    container = rotator_container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("privileged", False) is False
    assert sc.get("runAsUser", UID) == UID
    assert container["resources"] == {"requests": {"cpu": "10m", "memory": "64Mi"},
                                      "limits": {"cpu": "200m", "memory": "128Mi"}}
    # With a read-only root, every place the config writes must be a writable volume.
    _, config = rotator_toml(objects)
    writable = {m["mountPath"] for m in container["volumeMounts"]
                if not m.get("readOnly") and any(
                    v["name"] == m["name"] and "emptyDir" in v for v in pod["volumes"])}
    writes = [config.daemon.state_dir, config.daemon.audit_log and config.daemon.audit_log.parent]
    for path in filter(None, writes):
        assert str(path) in writable, f"{path} is not on a writable volume"


@KUSTOMIZATIONS
def test_grace_period_covers_shutdown_timeout(kdir: Path) -> None:
    """terminationGracePeriodSeconds >= shutdown_timeout + margin, so SIGKILL comes after it."""
    objects = kustomize(kdir)
    _, config = rotator_toml(objects)
    grace = one(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= config.daemon.shutdown_timeout + SHUTDOWN_MARGIN


@KUSTOMIZATIONS
def test_vault_kubernetes_auth_token_is_projected(kdir: Path) -> None:
    """jwt_file is a projected token with audience "vault"; the API token is not mounted."""
    objects = kustomize(kdir)
    _, config = rotator_toml(objects)
    (vault,) = [s for s in config.stores.values() if isinstance(s, VaultStoreConfig)]
    assert vault.auth.method == "kubernetes"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    account = one(objects, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert account["automountServiceAccountToken"] is False
    jwt = vault.auth.jwt_file
    (mount,) = [m for m in rotator_container(objects)["volumeMounts"]
                if m["mountPath"] == str(jwt.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (source,) = volume["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["path"] == jwt.name
    assert token["audience"] == "vault"
    assert 600 <= token["expirationSeconds"] <= 86400


@KUSTOMIZATIONS
def test_network_policy_allows_dns_store_and_token_endpoint_only(kdir: Path) -> None:
    """Egress: DNS, the Vault service named in the TOML, HTTPS to public addresses; nothing else."""
    objects = kustomize(kdir)
    _, config = rotator_toml(objects)
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    for policy in policies:
        assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
        assert "Egress" in policy["spec"]["policyTypes"]
    rules = [rule for policy in policies for rule in policy["spec"].get("egress", [])]
    assert all(rule.get("ports") and rule.get("to") for rule in rules), "an egress rule is open"

    def allowed(port: int, protocol: str = "TCP") -> list[dict[str, Any]]:
        return [rule for rule in rules
                if {"protocol": protocol, "port": port} in rule["ports"]]

    (dns_udp,) = allowed(53, "UDP")
    assert dns_udp is allowed(53)[0]
    assert dns_udp["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    for store in config.stores.values():
        assert isinstance(store, VaultStoreConfig)
        url = urlsplit(store.url)
        (rule,) = allowed(url.port or 443)
        service, namespace = url.hostname.split(".")[:2]
        (peer,) = rule["to"]
        assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": namespace}
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == service
    (https,) = allowed(443)
    blocks = {peer["ipBlock"]["cidr"]: set(peer["ipBlock"].get("except", [])) for peer in https["to"]}
    assert set(blocks) == {"0.0.0.0/0", "::/0"}
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= blocks["0.0.0.0/0"]
    for cred in config.credentials.values():
        assert urlsplit(cred.effective_token_url).port in (None, 443)
    assert len(rules) == 3


@KUSTOMIZATIONS
def test_two_replicas_with_disruption_budget(kdir: Path) -> None:
    """Two replicas, surge-only rollouts, a PDB keeping one, and selectors that match the pods."""
    objects = kustomize(kdir)
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert selects(one(objects, "Service")["spec"]["selector"], labels)


def test_service_monitor_scrapes_the_metrics_port() -> None:
    """The overlay's ServiceMonitor (CRD, checked by hand) selects the Service's metrics port."""
    objects = kustomize(OVERLAY)
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", monitor["metadata"]["name"])
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert _prom_duration(endpoint["scrapeTimeout"]) <= _prom_duration(endpoint["interval"])


def _prom_duration(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", value)
    assert match, f"{value!r} is not a Prometheus duration"
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400,
                                  "w": 604800}[match.group(2)]


def _alerts() -> dict[str, dict[str, Any]]:
    rule = one(kustomize(OVERLAY), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    groups = rule["spec"]["groups"]
    assert len({g["name"] for g in groups}) == len(groups) > 0
    alerts = {}
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"]
        for entry in group["rules"]:
            assert set(entry) <= {"alert", "expr", "for", "labels", "annotations"}, entry
            assert isinstance(entry["expr"], str)
            if "for" in entry:
                _prom_duration(entry["for"])
            assert entry["labels"]["severity"] in ("warning", "critical")
            assert entry["annotations"]["summary"]
            assert entry["alert"] not in alerts
            alerts[entry["alert"]] = entry
    return alerts


def _selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    promql_parser = pytest.importorskip("promql_parser")
    found = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: m.value for m in node.matchers.matchers}
            found.append((node.name or matchers.get("__name__"), matchers))

    promql_parser.walk(promql_parser.parse(expr), visit)  # raises ValueError on bad PromQL
    return found


def _threshold(expr: str) -> float:
    """The number on the right of the final comparison, e.g. 3 * 1800 in `... > 3 * 1800`."""
    match = re.search(r"[<>=]=?\s*([\d.\s*]+)$", expr.strip())
    assert match, expr
    value = 1.0
    for factor in match.group(1).split("*"):
        value *= float(factor)
    return value


def test_prometheus_rule_alerts() -> None:
    """The PrometheusRule (CRD, checked by hand) parses and carries the alerts operators asked for."""
    alerts = _alerts()
    by_metric: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, alert in alerts.items():
        for metric, _ in _selectors(alert["expr"]):
            by_metric.setdefault(metric, []).append((name, alert))
    expiry = sorted((_threshold(a["expr"]), a["labels"]["severity"])
                    for _, a in by_metric["rotator_certificate_expiration_timestamp_seconds"])
    assert expiry == [(3 * 86400, "critical"), (14 * 86400, "warning")]
    _, config = rotator_toml(kustomize(OVERLAY))
    (stale,) = by_metric["rotator_token_last_success_timestamp_seconds"]
    assert _threshold(stale[1]["expr"]) == 3 * 1800
    for cred in config.credentials.values():
        # Beyond the readiness deadline (2 x every): silent while tokens rotate on schedule.
        assert _threshold(stale[1]["expr"]) >= 2 * cred.every
    (ready,) = by_metric["rotator_credential_ready"]
    assert re.search(r"==\s*0\s*$", ready[1]["expr"]) and _prom_duration(ready[1]["for"]) == 600
    (failures,) = by_metric["rotator_rotation_total"]
    assert _threshold(failures[1]["expr"]) == 3
    assert "increase(" in failures[1]["expr"] and "[30m]" in failures[1]["expr"]
    assert ("rotator_rotation_total", {"result": "failure"}) in [
        (m, {k: v for k, v in matchers.items() if k != "__name__"})
        for m, matchers in _selectors(failures[1]["expr"])]


def _known_metric(name: str, names: frozenset[str] | set[str]) -> bool:
    """`name` is listed as is, or as its family (rotator_rotation for rotator_rotation_total)."""
    family = re.sub(r"_(total|bucket|sum|count|info)$", "", name)
    return name in names or family in names or f"{family}_total" in names


def test_alert_metrics_are_exported() -> None:
    """Every metric an alert reads is in METRIC_NAMES and in rotator.daemon.metrics' live registry."""
    from rotator.daemon.metrics import Metrics

    exported = set()
    for family in Metrics().registry.collect():
        exported.add(family.name)
        exported.update(family.name + s for s in {
            "counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count"), "info": ("_info",)}.get(family.type, ()))
    used = {metric for alert in _alerts().values() for metric, _ in _selectors(alert["expr"])}
    assert used, "no metric found in the alert expressions"
    unknown = {m for m in used if not _known_metric(m, METRIC_NAMES)}
    assert not unknown, f"not in METRIC_NAMES: {sorted(unknown)}"
    assert used <= exported, f"not exported by rotator.daemon.metrics: {sorted(used - exported)}"


# ---------------------------------------------------------------------------- Dockerfile


def test_dockerfile_matches_the_manifests() -> None:
    """Multi-stage python:3.11-slim, user 10001, port and entrypoint as the Deployment expects."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(lines), flags=re.MULTILINE))
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(stages) == 2
    for i in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], lines[i].split()[1])
        assert image == "python:3.11-slim"
    final = lines[stages[1]:]
    assert not any(re.search(r"apt-get|gcc|build-essential", line) for line in final)
    assert f"USER {UID}:{UID}" in final or f"USER {UID}" in final
    objects = kustomize(BASE)
    _, config = rotator_toml(objects)
    assert f"EXPOSE {listen_port(config)}" in final
    assert 'ENTRYPOINT ["rotator"]' in final and 'CMD ["run"]' in final
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == UID
    # Everything the build COPYs from the context survives .dockerignore's allow-list.
    ignore = (ROOT / ".dockerignore").read_text().split()
    allowed = {entry[1:].rstrip("/") for entry in ignore if entry.startswith("!")}
    assert "*" in ignore
    copied = [src for line in lines if line.startswith("COPY ") and "--from" not in line
              for src in line.split()[1:-1]]
    assert copied and set(copied) <= allowed
