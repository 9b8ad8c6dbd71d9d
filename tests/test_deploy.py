"""The deployment files: docker-compose.yml, deploy/Dockerfile, deploy/kubernetes/, deploy/systemd/.

There is no container engine or cluster here, so each file is parsed and checked for what would break a
deployment: commands and probes that name a real `factsync` command or listener route, variables that
are real settings, selectors that select, stop timeouts longer than the workers' graceful stop.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from tests.conftest import make_settings
from worker.cli.main import main
from worker.cli.serve import STOP_MARGIN
from worker.config import CONFIG_ENV, ConfigError, Settings, load_settings
from worker.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
FACTSYNC = Path(sys.executable).parent / "factsync"
# The stop timeout every deployment must exceed: a worker's grace period plus the supervisor's margin.
DEFAULT_STOP = Settings().shutdown_grace + STOP_MARGIN


def is_setting(name: str) -> bool:
    """Whether FACTSYNC_A__B__C names a setting of worker/config.py (or the config file's variable)."""
    if name == CONFIG_ENV:
        return True
    if not name.startswith("FACTSYNC_"):
        return False
    parts = name.removeprefix("FACTSYNC_").lower().split("__")
    model: type[BaseModel] = Settings
    while parts:
        field = model.model_fields.get(parts.pop(0))
        if field is None:
            return False
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:  # sources, targets, routes: a name, then its settings
            if not parts:
                return True
            parts.pop(0)
            annotation = typing.get_args(annotation)[1]
        if not parts:
            return True
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return False
        model = annotation
    return True


def test_the_setting_names_are_checked_for_real() -> None:
    assert is_setting("FACTSYNC_REDIS_URL") and is_setting("FACTSYNC_WORKER_METRICS_PORT")
    assert is_setting("FACTSYNC_SOURCES__HOSTFACT__HOOK_SECRETS") and is_setting("FACTSYNC_DASHBOARD__TOKEN")
    assert is_setting("FACTSYNC_RETRY__MAX_TRIES")
    assert not is_setting("FACTSYNC_REDIS") and not is_setting("FACTSYNC_SOURCES__HOSTFACT__APIKEY")
    assert not is_setting("FACTSYNC_REDIS_URL__X") and not is_setting("REDIS_URL")


def runs(args: list[str]) -> None:
    """``factsync ARGS`` parses: the command and its options exist (``--help`` stops before running it)."""
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, f"factsync {shlex.join(args)}: {result.output}"


def routes() -> set[str]:
    app = create_app(make_settings("redis://127.0.0.1:9/0"), "redis://127.0.0.1:9/0")
    return {
        resource.canonical for resource in app.router.resources() if any(r.method == "GET" for r in resource)
    }


def seconds(value: str | int) -> float:
    """A compose duration ("45s", "1m30s") in seconds."""
    if isinstance(value, int):
        return value
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


# -- docker compose ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_compose_runs_redis_with_aof_and_noeviction(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    mounts = dict(volume.split(":")[:2] for volume in redis["volumes"])
    conf = mounts["./deploy/redis.conf"]
    assert redis["command"][1] == conf  # redis-server reads its config file from the first argument
    text = (ROOT / "deploy/redis.conf").read_text()
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"):
        assert re.search(rf"^{line}$", text, re.M), line
    assert mounts["redis-data"] == "/data" and "redis-data" in compose["volumes"]
    # Full, Redis must refuse writes (the listener answers 503, hooks.php spools), not be OOM-killed.
    assert 0 < maxmemory_mib(text) <= 0.7 * mib(redis["mem_limit"])


# Redis (kb, mb, gb) and Kubernetes/compose (Ki, Mi, Gi; k, m, g) size units, in MiB.
_MIB = {
    "k": 1 / 1024,
    "kb": 1 / 1024,
    "ki": 1 / 1024,
    "m": 1,
    "mb": 1,
    "mi": 1,
    "g": 1024,
    "gb": 1024,
    "gi": 1024,
}


def mib(size: str) -> float:
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]+)", size.strip())
    assert match, f"a size with a unit: {size!r}"
    return int(match.group(1)) * _MIB[match.group(2).lower()]


def maxmemory_mib(redis_conf: str) -> float:
    match = re.search(r"^maxmemory (\S+)$", redis_conf, re.M)
    assert match, "redis.conf sets maxmemory"
    return mib(match.group(1))


def test_compose_commands_healthchecks_and_variables(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("listener", "worker"):
        service = services[name]
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        runs(service["command"])
        for variable in service["environment"]:
            assert is_setting(variable), f"{name}: {variable} is no setting"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        # Redis asks a password (from .env), and the URL gives it.
        assert service["environment"]["FACTSYNC_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
        assert service["environment"]["FACTSYNC_REDIS_URL"].endswith("@redis:6379/0")
        config = service["environment"]["FACTSYNC_CONFIG"]
        assert any(volume.split(":")[1] == config for volume in service["volumes"])

    redis = services["redis"]
    assert "--requirepass" in redis["command"]
    assert redis["command"][redis["command"].index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")

    listener = services["listener"]
    # The dashboard and /metrics are served beside the hooks: published on the host's loopback only.
    assert listener["ports"] == ["127.0.0.1:8080:8080"]
    probe = " ".join(listener["healthcheck"]["test"])
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", probe)
    assert url is not None, probe
    assert url.group(2) == "/readyz" and url.group(2) in routes()
    assert listener["command"][listener["command"].index("--port") + 1] == url.group(1)

    worker = services["worker"]
    test = worker["healthcheck"]["test"]
    assert test[:2] == ["CMD", "factsync"] and test[2:] == ["check", "--this-host"]
    runs(test[2:])
    assert seconds(worker["stop_grace_period"]) > DEFAULT_STOP
    # Scaled with --scale: nothing fixed per container (a name, a published port) may stand in the way.
    assert "container_name" not in worker and "ports" not in worker


def test_the_dockerfile_is_slim_non_root_and_runs_factsync() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]
    assert re.fullmatch(r"python:3\.1[1-9]-slim", dict(instructions)["FROM"])
    user = [value for op, value in instructions if op == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root") and user.split(":")[0].isdigit(), "numeric, not root"
    assert dict(instructions)["ENTRYPOINT"] == '["factsync"]'
    for op, value in instructions:
        if op == "COPY":
            for source in value.split()[:-1]:
                assert (ROOT / source).exists(), source
    runs(yaml.safe_load(dict(instructions)["CMD"]))


# -- Kubernetes ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / resource).read_text()):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in found, f"{key} twice"
            found[key] = document
    return found


def pods(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: document["spec"]["template"]
        for (kind, name), document in manifests.items()
        if kind in ("Deployment", "StatefulSet")
    }


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_kubernetes_every_factsync_container_runs_a_real_command(
    manifests: dict[tuple[str, str], dict[str, Any]],
) -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    renamed = {image["name"] for image in kustomization["images"]}
    secret = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())
    seen = 0
    for name, template in pods(manifests).items():
        for container in template["spec"]["containers"]:
            if container["image"] != "factsync":
                continue
            seen += 1
            assert "factsync" in renamed, "the kustomization names the image to use"
            runs(container["args"])  # the image's entrypoint is `factsync`
            variables = [env["name"] for env in container.get("env", [])]
            assert all(is_setting(variable) for variable in variables), variables
            (source,) = container["envFrom"]
            assert source["secretRef"]["name"] == secret["metadata"]["name"]
            # Every entry a factsync setting, but Redis's own password (redis.yaml reads it).
            keys_read = [key for key in secret["stringData"] if key != "REDIS_PASSWORD"]
            assert all(is_setting(key) for key in keys_read), secret["stringData"]
            # The config file the variable names is the ConfigMap's, mounted where it says.
            config = Path(next(e["value"] for e in container["env"] if e["name"] == CONFIG_ENV))
            mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config.parent))
            volume = next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])
            config_map = manifests[("ConfigMap", volume["configMap"]["name"])]
            assert config.name in config_map["data"]
            ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
            for kind in ("readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                if "httpGet" in probe:
                    assert probe["httpGet"]["path"] in routes(), probe
                    assert probe["httpGet"]["port"] in ports, probe
                else:
                    command = probe["exec"]["command"]
                    assert command[0] == "factsync", command
                    runs(command[1:])
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True, name
    assert seen == 2, "a listener and a worker"


def test_kubernetes_worker_probe_grace_and_disruption_budget(
    manifests: dict[tuple[str, str], dict[str, Any]],
) -> None:
    worker = manifests[("Deployment", "factsync-worker")]
    template = worker["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["args"][0] == "worker"
    assert container["livenessProbe"]["exec"]["command"] == ["factsync", "check", "--this-host"]
    config = config_map_toml(manifests)
    assert template["spec"]["terminationGracePeriodSeconds"] > config["shutdown_grace"] + STOP_MARGIN
    assert selects(worker["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    # Each budget selects the pods of its own Deployment, and only those.
    for name in ("factsync-worker", "factsync-listener"):
        budget = manifests[("PodDisruptionBudget", name)]
        selector = budget["spec"]["selector"]["matchLabels"]
        matched = [pod for pod, labels in _pod_labels(manifests).items() if selects(selector, labels)]
        assert matched == [name], (name, matched)
        assert budget["spec"]["minAvailable"] >= 1
        assert manifests[("Deployment", name)]["spec"]["replicas"] > budget["spec"]["minAvailable"]
    # Metrics: the port the config gives workers is the port the pod declares and announces.
    assert config["worker_metrics_port"] == container["ports"][0]["containerPort"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(config["worker_metrics_port"])
    assert config["listen_host"] == "0.0.0.0", "reachable from outside the pod"


def _pod_labels(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {name: template["metadata"]["labels"] for name, template in pods(manifests).items()}


def test_kubernetes_services_select_their_pods(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    for (kind, name), service in manifests.items():
        if kind != "Service":
            continue
        matched = [
            pod
            for pod, labels in _pod_labels(manifests).items()
            if selects(service["spec"]["selector"], labels)
        ]
        assert len(matched) == 1, (name, matched)
        (container,) = pods(manifests)[matched[0]]["spec"]["containers"]
        names = {port["name"] for port in container["ports"]}
        assert all(port["targetPort"] in names for port in service["spec"]["ports"]), name
    # The Redis URL, with its password, comes from the Secret; it names the redis Service.
    secret = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())["stringData"]
    assert "redis_url" not in config_map_toml(manifests)
    assert secret["FACTSYNC_REDIS_URL"].endswith("@redis:6379/0")
    assert ("Service", "redis") in manifests


def test_kubernetes_redis_keeps_its_data_with_aof(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    redis = manifests[("StatefulSet", "redis")]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    conf = Path(container["command"][1])  # redis-server reads its config file from the first argument
    assert mounts["config"] == str(conf.parent)
    # A password from the Secret, for the server and for its probes' redis-cli.
    assert container["command"][2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"]}
    assert env["REDIS_PASSWORD"] == env["REDISCLI_AUTH"] == {"name": "factsync-keys", "key": "REDIS_PASSWORD"}
    config_map = manifests[("ConfigMap", "factsync-redis")]
    assert config_map["data"][conf.name] == (DEPLOY / "redis.conf").read_text(), "one redis.conf"
    limit = container["resources"]["limits"]["memory"]
    assert 0 < maxmemory_mib(config_map["data"][conf.name]) <= 0.7 * mib(limit)


def config_map_toml(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return tomllib.loads(manifests[("ConfigMap", "factsync-config")]["data"]["factsync.toml"])


def load_settings_from_config_map(
    manifests: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> Settings:
    path = tmp_path / "factsync.toml"
    path.write_text(manifests[("ConfigMap", "factsync-config")]["data"]["factsync.toml"])
    return load_settings(path)


def test_the_config_map_and_the_secret_make_a_whole_configuration(
    manifests: dict[tuple[str, str], dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = dict(yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())["stringData"])
    for name, value in secret.items():
        monkeypatch.setenv(name, value)
    # The placeholders cannot be deployed by mistake: factsync refuses them and names the setting.
    with pytest.raises(ConfigError, match="hook_secrets"):
        load_settings_from_config_map(manifests, tmp_path)
    secret["FACTSYNC_SOURCES__HOSTFACT__HOOK_SECRETS"] = '["whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz"]'
    monkeypatch.setenv(
        "FACTSYNC_SOURCES__HOSTFACT__HOOK_SECRETS", secret["FACTSYNC_SOURCES__HOSTFACT__HOOK_SECRETS"]
    )
    settings = load_settings_from_config_map(manifests, tmp_path)
    assert (
        settings.source("hostfact").api_key.get_secret_value()
        == secret["FACTSYNC_SOURCES__HOSTFACT__API_KEY"]
    )
    assert settings.target("wefact").api_key.get_secret_value() == secret["FACTSYNC_TARGETS__WEFACT__API_KEY"]
    assert settings.route("sales").target == "wefact"


# -- systemd ------------------------------------------------------------------------------------------------


def unit(path: Path) -> dict[str, list[str]]:
    """A unit file's settings, "Section.Key" -> values (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


UNITS = sorted(SYSTEMD.glob("*.service"))


def test_there_is_a_listener_unit_and_a_worker_template() -> None:
    assert [path.name for path in UNITS] == ["factsync-listener.service", "factsync-worker@.service"]


@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.name)
def test_a_systemd_unit_is_hardened_and_stops_gracefully(path: Path) -> None:
    settings = unit(path)

    def one(key: str) -> str:
        (value,) = settings[f"Service.{key}"]
        return value

    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "DynamicUser"):
        assert one(key) == "yes", key
    assert one("ProtectSystem") == "strict"
    # The data dir is the one place it may write.
    assert "FACTSYNC_DATA_DIR=" + one("ReadWritePaths").lstrip("-") in settings["Service.Environment"]
    assert one("Restart") == "on-failure"
    assert one("KillSignal") == "SIGTERM"
    assert float(one("TimeoutStopSec")) > DEFAULT_STOP
    for value in settings["Service.Environment"]:
        assert is_setting(value.split("=", 1)[0]), value
    # The command line runs: the same arguments, with this virtualenv's factsync.
    command = shlex.split(one("ExecStart"))
    assert command[0] == "/opt/factsync/bin/factsync"
    result = subprocess.run([str(FACTSYNC), *command[1:], "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze here")
    for path in UNITS:
        # Pointed at this virtualenv, since verify checks that the command exists.
        (tmp_path / path.name).write_text(
            path.read_text().replace("/opt/factsync/bin/factsync", str(FACTSYNC))
        )
    names = [str(tmp_path / name) for name in ("factsync-listener.service", "factsync-worker@1.service")]
    result = subprocess.run([analyze, "verify", *names], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr and "nvalid" not in result.stderr, result.stderr
