"""deploy/: the container image and the Kubernetes manifests, checked without a cluster (tox -e deploy).

1. Every manifest renders (``kubectl kustomize``: the shipped overlay, base alone, and base with each
   component) and validates: built-in kinds with kubernetes-validate, strict (an unknown field
   fails), at the oldest Kubernetes the docs promise and the newest the pinned validator knows;
   KEDA's ScaledObject and prometheus-operator's ServiceMonitor against their CRDs' schemas vendored
   in deploy/schemas (strict too). Any other kind fails: nothing is skipped. The Dockerfile passes
   hadolint with deploy/container/hadolint.yaml.
2. The manifests agree with the daemons: flags and FASTWORKER_* variables parse with the daemons' own
   parsers, Services and probes reach the ports the flags bind, grace periods outlast the drain
   timeouts, the autoscalers query metrics a real control plane exports, and so on.
3. Each daemon, started with its manifest's command, args and environment as PID 1 of a PID
   namespace of its own (in a network namespace of its own, as the manifest's uid with no
   capabilities, on a read-only root with its volumes where the manifest mounts them), exits 0 on
   SIGTERM within its terminationGracePeriodSeconds, the worker after finishing its running task.
   The same harness shows that a PID 1 without a SIGTERM handler does not stop.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fastworker.client.envflags import apply_env_defaults
from fastworker.controlplane import cli as controlplane_cli
from fastworker.controlplane.metricsserver import LOOP_ANSWER_TIMEOUT
from fastworker.controlplane.testing import run_controlplane
from fastworker.protocol.addresses import parse_address, parse_http_address
from fastworker.worker import cli as worker_cli

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
CONTAINER = ROOT / "deploy" / "container"
SCHEMAS = ROOT / "deploy" / "schemas"
DOCS = ROOT / "docs" / "kubernetes.md"

#: The oldest Kubernetes docs/kubernetes.md promises, and the newest kubernetes-validate 1.37.0 knows.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
#: Custom resources the manifests use, and the vendored schema of each (deploy/schemas/vendor_crd_schema.py).
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda.sh_scaledobjects.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "monitoring.coreos.com_servicemonitors.json",
}
#: The namespace of the shipped overlay, used for the component renders too.
NAMESPACE = "fastworker"
#: Each daemon's parser, by the console script a manifest's command runs.
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "fastworker-controlplane": controlplane_cli.make_parser,
    "fastworker-worker": worker_cli.make_parser,
}
#: Seconds a daemon may need past --drain-timeout to stop. The worker: up to 5 s each to announce
#: the drain, report its last results, deregister and stop its child processes. The control plane:
#: the journal's last flush, 1 s per socket for pending replies, 5 s each for the dashboard and the
#: metrics listener.
STOP_MARGIN = {"fastworker-controlplane": 20, "fastworker-worker": 20}
#: Each control-plane container port's name, and the flag that binds it.
PORT_FLAGS = {
    "discovery": "discovery_address",
    "client": "client_address",
    "dispatch": "dispatch_address",
    "metrics": "metrics_address",
    "dashboard": "dashboard_address",
}
#: The Prometheus scaler's metadata keys in KEDA v2.20.2 (pkg/scalers/prometheus_scaler.go, plus the
#: authentication ones): KEDA's CRD takes any string map, so a misspelt key would go unnoticed.
KEDA_PROMETHEUS_KEYS = frozenset(
    {
        "serverAddress",
        "query",
        "queryParameters",
        "threshold",
        "activationThreshold",
        "namespace",
        "customHeaders",
        "ignoreNullValues",
        "unsafeSsl",
        "awsRegion",
        "timeout",
        "identityOwner",
        "authModes",
    }
)
#: Flags that take one value each time they are given (docs/reference.md); any other given twice is a mistake.
REPEATABLE = frozenset({"--dashboard-host"})
#: The Secrets the operator creates (docs/kubernetes.md), and their keys.
SECRETS = {
    "fastworker": ("secret", "secret-fallbacks", "dashboard-password"),
    "fastworker-tls": ("tls.crt", "tls.key", "ca.crt"),
}
#: The flags that name a file from a Secret.
SECRET_FILE_FLAGS = ("secret_file", "secret_fallbacks_file", "dashboard_password_file", "tls_cert", "tls_key", "tls_ca")


# --------------------------------------------------------------------------------------------- tools


def tool(name: str) -> str:
    """A command installed in this environment (tox -e deploy installs each): never skipped when missing."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert found, f"{name} is not installed: run these tests with `tox -e deploy`, which installs it"
    return found


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """Render a kustomization with kubectl's built-in kustomize (offline: it needs no cluster)."""
    done = subprocess.run(
        [tool("kubectl"), "kustomize", str(folder)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {folder} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def components() -> list[Path]:
    return sorted(path.parent for path in (KUBERNETES / "components").glob("*/kustomization.yaml"))


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """What every kustomization renders: the shipped overlay, base alone, and base with each component."""
    folders = {"deploy/kubernetes": KUBERNETES, "base": KUBERNETES / "base"}
    for component in components():
        folder = tmp_path_factory.mktemp(component.name)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": NAMESPACE,
            "resources": [os.path.relpath(KUBERNETES / "base", folder)],
            "components": [os.path.relpath(component, folder)],
        }
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        folders[f"base + components/{component.name}"] = folder
    return {name: kustomize(folder) for name, folder in folders.items()}


@pytest.fixture(scope="module")
def shipped(renders: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return renders["deploy/kubernetes"]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = find(objects, kind, name)
    return found


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def daemon_of(container: dict[str, Any]) -> str:
    name = Path(container["command"][0]).name
    assert name in PARSERS, f"container {container['name']} runs {container['command']}, not a FastWorker daemon"
    return name


def daemon_workload(objects: list[dict[str, Any]], daemon: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one workload and container that run ``daemon``."""
    found = [(w, c) for w in workloads(objects) for c in pod_spec(w)["containers"] if daemon_of(c) == daemon]
    assert len(found) == 1, f"{daemon} runs in {len(found)} containers"
    return found[0]


# ----------------------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    """One FROM ... AS name stage of a Dockerfile, its instructions as (INSTRUCTION, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


def dockerfile_stages(text: str) -> list[Stage]:
    """The stages of a Dockerfile: comments dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending.strip())
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction, arguments = instruction.upper(), arguments.strip()
        if instruction == "FROM":
            words = arguments.split()
            stages.append(Stage(words[-1] if len(words) == 3 and words[1].upper() == "AS" else "", words[0]))
        elif stages:
            stages[-1].instructions.append((instruction, " ".join(arguments.split())))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {stage.name: stage for stage in dockerfile_stages((CONTAINER / "Dockerfile").read_text())}


def image_env(stage: Stage) -> dict[str, str]:
    """The ENV a stage sets (KEY=VALUE form)."""
    env: dict[str, str] = {}
    for arguments in stage.all("ENV"):
        for word in shlex.split(arguments):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {arguments!r}: use the KEY=VALUE form"
            env[key] = value
    return env


def image_user(stage: Stage) -> tuple[int, int]:
    (user,) = stage.all("USER")
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def image_venv(stages: dict[str, Stage]) -> str:
    (venv,) = re.findall(r"python -m venv (\S+)", " ".join(stages["build"].all("RUN")))
    return venv


# --------------------------------------------------------------------------------------- validation


def strict_schema(schema: Any) -> Any:
    """A CRD's OpenAPI schema that refuses unknown fields, as the API server's strict field validation does.

    A CRD schema leaves additionalProperties open (the API server prunes unknown fields silently),
    so a misspelt field would pass; objects that keep unknown fields by design stay open.
    """
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: strict_schema(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


@pytest.fixture(scope="module")
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators = {}
    for key, path in CRD_SCHEMAS.items():
        vendored = json.loads(path.read_text())
        assert (vendored["apiVersion"], vendored["kind"]) == key, path
        schema = strict_schema(vendored["openAPIV3Schema"])
        # metadata is left to the API server by the CRD: check it as an ObjectMeta's usual fields.
        schema["properties"]["metadata"] = {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["name"],
            "additionalProperties": False,
        }
        validators[key] = jsonschema.Draft7Validator(schema)
    return validators


def validation_errors(
    manifest: dict[str, Any], version: str, crd_validators: dict[tuple[str, str], jsonschema.protocols.Validator]
) -> list[str]:
    """Why ``manifest`` is invalid at Kubernetes ``version`` (empty when it is valid); an unknown kind is an error."""
    name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key in crd_validators:
        return [
            f"{name}: {'.'.join(map(str, error.path))}: {error.message}"
            for error in crd_validators[key].iter_errors(manifest)
        ]
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{name}: no schema to validate it against ({exc.message}): vendor its CRD's in deploy/schemas"]
    return []


def test_every_manifest_file_is_rendered_by_a_kustomization() -> None:
    listed: set[Path] = set()
    for kustomization in KUBERNETES.rglob("kustomization.yaml"):
        data = yaml.safe_load(kustomization.read_text())
        expected = "Component" if kustomization.parent.parent.name == "components" else "Kustomization"
        assert data["kind"] == expected, kustomization
        for entry in data.get("resources", []) + data.get("components", []):
            target = (kustomization.parent / entry).resolve()
            assert target.exists(), f"{kustomization.relative_to(ROOT)} lists {entry}, which does not exist"
            listed.add(target)
    manifests = {p.resolve() for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml"}
    unlisted = sorted(str(p.relative_to(ROOT)) for p in manifests - listed)
    assert not unlisted, f"manifests no kustomization renders (so nothing validates them): {unlisted}"
    assert {p.name for p in components()} == {"keda", "hpa", "servicemonitor", "network-policy", "tls"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_validates(
    renders: dict[str, list[dict[str, Any]]],
    crd_validators: dict[tuple[str, str], jsonschema.protocols.Validator],
    version: str,
) -> None:
    errors = [
        f"{render}: {error}"
        for render, objects in renders.items()
        for manifest in objects
        for error in validation_errors(manifest, version, crd_validators)
    ]
    assert not errors, "\n".join(errors)
    kinds = {(o["apiVersion"], o["kind"]) for objects in renders.values() for o in objects}
    assert set(CRD_SCHEMAS) <= kinds  # both custom resources were checked against their CRDs
    assert {"StatefulSet", "Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy"} <= {k for _, k in kinds}


def test_the_validation_fails_broken_manifests(
    shipped: list[dict[str, Any]], crd_validators: dict[tuple[str, str], jsonschema.protocols.Validator]
) -> None:
    """Each check above can fail: a misspelt field, a wrong type, and a kind nobody can validate."""
    version = KUBERNETES_VERSIONS[0]
    statefulset = copy.deepcopy(one(shipped, "StatefulSet", "fastworker-controlplane"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["commands"] = ["x"]
    assert validation_errors(statefulset, version, crd_validators)
    deployment = copy.deepcopy(one(shipped, "Deployment", "fastworker-worker"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "90"
    assert validation_errors(deployment, version, crd_validators)
    scaled = copy.deepcopy(one(shipped, "ScaledObject", "fastworker-worker"))
    scaled["spec"]["minReplicas"] = 1  # KEDA's field is minReplicaCount
    assert validation_errors(scaled, version, crd_validators)
    monitor = copy.deepcopy(one(shipped, "ServiceMonitor", "fastworker-controlplane"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert validation_errors(monitor, version, crd_validators)
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validation_errors(unknown, version, crd_validators)


def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [tool("hadolint"), "--config", str(CONTAINER / "hadolint.yaml"), str(CONTAINER / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install requests\nCMD python -m http.server\n")
    done = subprocess.run(
        [tool("hadolint"), "--no-color", "--config", str(CONTAINER / "hadolint.yaml"), str(careless)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    for rule in ("DL3007", "DL3013", "DL3025", "DL3049"):  # latest tag, unpinned pip, shell-form CMD, labels
        assert rule in done.stdout, done.stdout


# ----------------------------------------------------------------------------------------- the image


def test_the_image_runs_what_the_manifests_name(stages: dict[str, Stage], shipped: list[dict[str, Any]]) -> None:
    assert list(stages) == ["build", "runtime", "demo"]  # the last stage, demo, is what a plain build makes
    for stage in stages.values():
        assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim|runtime", stage.base), stage.base
    assert stages["demo"].base == "runtime"
    runtime = stages["runtime"]
    # Every distribution of packages/ is built into the image.
    build = " ".join(stages["build"].all("RUN"))
    for package in sorted((ROOT / "packages").iterdir()):
        assert f"packages/{package.name}" in build, f"the image does not install {package.name}"
    assert "--only-binary=:all:" in build
    venv = image_venv(stages)
    assert image_env(runtime)["PATH"].startswith(f"{venv}/bin:")
    assert f"--from=build {venv} {venv}" in runtime.all("COPY")
    # Exec form everywhere a process starts: no shell that would be PID 1 and swallow SIGTERM.
    assert not runtime.all("ENTRYPOINT") and not stages["demo"].all("ENTRYPOINT")
    for instruction in ("CMD", "HEALTHCHECK"):
        (arguments,) = runtime.all(instruction)
        assert json.loads(arguments[arguments.index("CMD ") + 4 :] if instruction == "HEALTHCHECK" else arguments)
    assert runtime.all("STOPSIGNAL") == ["SIGTERM"]
    uid, gid = image_user(runtime)
    assert uid >= 10000 and gid >= 10000  # not root, and not a uid the host's users might have
    scripts = {
        name
        for pyproject in (ROOT / "packages").glob("*/pyproject.toml")
        for name in tomllib.loads(pyproject.read_text())["project"].get("scripts", {})
    }
    for workload in workloads(shipped):
        for container in pod_spec(workload)["containers"]:
            command = Path(container["command"][0])
            assert str(command.parent) == f"{venv}/bin" and command.name in scripts, container["command"]
            assert container["image"] == "fastworker:" + package_version()


def package_version() -> str:
    versions = {
        re.search(r'__version__ = "([^"]+)"', path.read_text()).group(1)  # type: ignore[union-attr]
        for path in (ROOT / "packages").glob("*/src/fastworker/*/version.py")
    }
    assert len(versions) == 1, versions
    return versions.pop()


def test_the_build_context_holds_what_the_dockerfile_copies(stages: dict[str, Stage]) -> None:
    ignore = (CONTAINER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything out, then each needed path back in
    kept = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for stage in stages.values():
        for arguments in stage.all("COPY"):
            if arguments.startswith("--from="):
                continue
            for source in arguments.split()[:-1]:
                source = source.rstrip("/")
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
                assert source in kept, f"COPY {source}: the .dockerignore leaves it out of the build context"


def test_the_demo_image_holds_the_task_modules_the_manifests_import(
    stages: dict[str, Stage], shipped: list[dict[str, Any]]
) -> None:
    modules = one(shipped, "ConfigMap", "fastworker")["data"]["task-modules"].replace(",", " ").split()
    (workdir,) = stages["runtime"].all("WORKDIR")
    copied = {Path(a.split()[0]).stem for a in stages["demo"].all("COPY") if a.split()[-1].rstrip("/") == workdir}
    assert modules and set(modules) <= copied, (modules, copied)


# -------------------------------------------------------------------------------- the daemons' flags


def expand(text: str, variables: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values ($$ escapes; unknown names stay)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return variables.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, text)


def container_env(
    container: dict[str, Any], objects: list[dict[str, Any]], pod_name: str, namespace: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(the container spec's own variables, resolved as the kubelet would; those plus the image's ENV)."""
    spec_env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            spec_env[item["name"]] = expand(item["value"], spec_env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
            spec_env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            spec_env[item["name"]] = one(objects, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            raise AssertionError(f"{item['name']}: a source this test cannot resolve: {source}")
    stages = {stage.name: stage for stage in dockerfile_stages((CONTAINER / "Dockerfile").read_text())}
    return spec_env, {**image_env(stages["runtime"]), **spec_env}


def pod_name_of(workload: dict[str, Any]) -> str:
    if workload["kind"] == "StatefulSet":
        return f"{workload['metadata']['name']}-0"
    return f"{workload['metadata']['name']}-5d8c7b9f4-x2k7q"


def container_args(container: dict[str, Any], spec_env: dict[str, str]) -> list[str]:
    return [expand(arg, spec_env) for arg in container.get("args", [])]


def flag_variables(daemon: str) -> set[str]:
    """The FASTWORKER_* variables a daemon reads: its --help names each one after its flag."""
    parser = PARSERS[daemon]()
    apply_env_defaults(parser, environ={})
    return set(re.findall(r"\[env\s+(FASTWORKER_[A-Z_]+)\]", parser.format_help()))


def parse_daemon(
    workload: dict[str, Any], container: dict[str, Any], objects: list[dict[str, Any]]
) -> argparse.Namespace:
    """The container's args and env as its daemon reads them (its own parser, env vars applied)."""
    daemon = daemon_of(container)
    spec_env, env = container_env(container, objects, pod_name_of(workload), NAMESPACE)
    args = container_args(container, spec_env)
    unknown = sorted(name for name in env if name.startswith("FASTWORKER_") and name not in flag_variables(daemon))
    assert not unknown, f"{daemon} has no flag for {unknown}"
    parser = PARSERS[daemon]()
    parser.allow_abbrev = False  # a manifest spells flags out: an abbreviation breaks when a flag is added
    apply_env_defaults(parser, environ=env)
    try:
        parsed, extra = parser.parse_known_args(args)
    except SystemExit:
        pytest.fail(f"{daemon} refuses its manifest's arguments {args}")
    assert not extra, f"{daemon} has no flags {extra}"
    return parsed


def test_every_flag_and_variable_parses_with_the_daemons_own_parsers(renders: dict[str, list[dict[str, Any]]]) -> None:
    for objects in renders.values():
        for workload in workloads(objects):
            for container in pod_spec(workload)["containers"]:
                parsed = parse_daemon(workload, container, objects)
                assert parsed.task_modules, "no task modules"
                flags = [arg.split("=", 1)[0] for arg in container.get("args", [])]
                repeated = {flag for flag in flags if flags.count(flag) > 1}
                assert repeated <= REPEATABLE, f"given twice, the last wins: {repeated - REPEATABLE}"
                # Settings worth nothing when left to their defaults in a container (see test_sizing).
                required = {
                    "fastworker-controlplane": ("--local-concurrency",),
                    "fastworker-worker": ("--concurrency",),
                }
                for flag in required[daemon_of(container)]:
                    assert flag in flags, f"{daemon_of(container)} needs {flag} set in a container"


def volume_of(workload: dict[str, Any], container: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (volumeMount, volume source) a container path lies on; the source of a claim template is the template."""
    mounts = [
        m for m in container.get("volumeMounts", []) if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")
    ]
    assert mounts, f"{path} is on no volume, so on the container's read-only root"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    for volume in pod_spec(workload).get("volumes", []):
        if volume["name"] == mount["name"]:
            return mount, volume
    for template in workload["spec"].get("volumeClaimTemplates", []):
        if template["metadata"]["name"] == mount["name"]:
            return mount, {"name": mount["name"], "volumeClaimTemplate": template}
    raise AssertionError(f"volumeMount {mount['name']} has no volume")


def test_secrets_come_from_mounted_secrets_never_the_command_line(renders: dict[str, list[dict[str, Any]]]) -> None:
    for objects in renders.values():
        for workload in workloads(objects):
            for container in pod_spec(workload)["containers"]:
                parsed = parse_daemon(workload, container, objects)
                text = " ".join(container.get("args", []))
                assert not re.search(r"--secret(=| |$)|--dashboard-password(=| |$)", text), "a secret in the args"
                named = {item["name"] for item in container.get("env", [])}
                assert not named & {"FASTWORKER_SECRET", "FASTWORKER_DASHBOARD_PASSWORD"}, "a secret in the env"
                assert parsed.secret_file
                for flag in SECRET_FILE_FLAGS:
                    path = getattr(parsed, flag, None)
                    if not path:
                        continue
                    mount, volume = volume_of(workload, container, path)
                    assert mount.get("readOnly") is True and "secret" in volume, (path, volume)
                    keys = SECRETS[volume["secret"]["secretName"]]
                    items = volume["secret"].get("items") or [{"key": key, "path": key} for key in keys]
                    assert {i["key"] for i in items} <= set(keys), items
                    assert os.path.relpath(path, mount["mountPath"]) in [i["path"] for i in items], path
    docs = DOCS.read_text()
    for secret, keys in SECRETS.items():
        assert f"kubectl create secret generic {secret} " in docs, f"docs/kubernetes.md does not create {secret}"
        for key in keys:
            assert f"--from-file={key}=" in docs, f"docs/kubernetes.md does not create the key {key} of {secret}"


def test_tls_covers_every_channel(renders: dict[str, list[dict[str, Any]]]) -> None:
    objects = renders["base + components/tls"]
    controlplane = parse_daemon(*daemon_workload(objects, "fastworker-controlplane"), objects)
    worker = parse_daemon(*daemon_workload(objects, "fastworker-worker"), objects)
    assert controlplane.tls_cert and controlplane.tls_key and not controlplane.tls_ca  # no client certificates
    assert worker.tls_ca and parse_address(worker.control_plane).scheme == "tls+tcp"
    assert not worker.tls_key, "the worker's volume holds the CA only"


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container.get("ports", [])}


def test_services_and_probes_reach_the_ports_the_flags_bind(shipped: list[dict[str, Any]]) -> None:
    workload, container = daemon_workload(shipped, "fastworker-controlplane")
    parsed = parse_daemon(workload, container, shipped)
    bound = {}
    for name, flag in PORT_FLAGS.items():
        value = getattr(parsed, flag)
        if "://" in value:
            address = parse_address(value)
            host, port = address.host, address.port
        else:
            host, port = parse_http_address(value)
        assert host == "0.0.0.0", f"--{flag.replace('_', '-')} binds {host}: a Service cannot reach it"
        bound[name] = port
    assert container_ports(container) == bound
    labels = workload["spec"]["template"]["metadata"]["labels"]
    for service in find(shipped, "Service"):
        selector = service["spec"]["selector"]
        selected = [
            w for w in workloads(shipped) if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {len(selected)} workloads"
        if selected[0] is not workload:
            continue
        assert selector.items() <= labels.items()
        for port in service["spec"].get("ports", []):
            assert port["targetPort"] in bound, f"{service['metadata']['name']}: no container port {port['targetPort']}"
            assert port["port"] == bound[port["targetPort"]], port  # the same number inside and out
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        assert probe["httpGet"] == {"path": "/healthz", "port": "metrics"}, kind
        # /healthz waits LOOP_ANSWER_TIMEOUT for the event loop before answering 503 itself.
        assert probe["timeoutSeconds"] > LOOP_ANSWER_TIMEOUT, kind
    assert workload["spec"]["serviceName"] in {s["metadata"]["name"] for s in find(shipped, "Service")}


def test_the_worker_s_probes_reach_the_port_its_health_flag_binds_and_the_paths_it_serves(
    shipped: list[dict[str, Any]],
) -> None:
    from fastworker.worker.health import HEALTH_PATH, READY_PATH

    workload, container = daemon_workload(shipped, "fastworker-worker")
    parsed = parse_daemon(workload, container, shipped)
    host, port = parse_http_address(parsed.health_address)
    assert host == "0.0.0.0", f"--health-address binds {host}: the kubelet cannot reach it"
    assert container_ports(container) == {"health": port}
    # Liveness on /healthz (it ignores the control plane); readiness on /readyz (registered and taking tasks)
    assert container["livenessProbe"]["httpGet"] == {"path": HEALTH_PATH, "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": "health"}
    for kind in ("livenessProbe", "readinessProbe"):
        assert container[kind]["timeoutSeconds"] > LOOP_ANSWER_TIMEOUT
    assert "startupProbe" not in container


def service_port(objects: list[dict[str, Any]], host: str, port: int) -> tuple[dict[str, Any], str]:
    """The Service a cluster DNS name names, and the target port name its ``port`` goes to."""
    labels = host.split(".")
    assert labels[1:] in ([], [NAMESPACE], [NAMESPACE, "svc"], [NAMESPACE, "svc", "cluster", "local"]), host
    service = one(objects, "Service", labels[0])
    (target,) = [p["targetPort"] for p in service["spec"]["ports"] if p["port"] == port]
    return service, target


def test_peers_reach_the_control_plane_through_its_service(shipped: list[dict[str, Any]]) -> None:
    workload, container = daemon_workload(shipped, "fastworker-controlplane")
    controlplane = parse_daemon(workload, container, shipped)
    worker = parse_daemon(*daemon_workload(shipped, "fastworker-worker"), shipped)
    address = parse_address(worker.control_plane)
    service, target = service_port(shipped, address.host, address.port)
    assert target == "discovery" and service["spec"]["publishNotReadyAddresses"] is True
    # The announcements tell peers to dial --advertise-host at the client and dispatch ports.
    for name in ("client", "dispatch"):
        port = parse_address(getattr(controlplane, f"{name}_address")).port
        assert service_port(shipped, controlplane.advertise_host, port)[1] == name
    assert controlplane.advertise_host.endswith(f".{NAMESPACE}.svc")  # reachable from other namespaces too


def test_listeners_beyond_loopback_are_protected(renders: dict[str, list[dict[str, Any]]]) -> None:
    """docs/security.md: a secret on every channel; the dashboard with a password; /metrics fenced off."""
    shipped = renders["deploy/kubernetes"]
    workload, container = daemon_workload(shipped, "fastworker-controlplane")
    parsed = parse_daemon(workload, container, shipped)
    assert parsed.secret_file and parsed.dashboard_password_file and not parsed.dashboard_insecure
    assert not parsed.no_dashboard and not parsed.no_metrics and not parsed.allow_pickle
    assert not parse_daemon(*daemon_workload(shipped, "fastworker-worker"), shipped).allow_pickle
    policies = find(renders["base + components/network-policy"], "NetworkPolicy")
    ports = container_ports(container)
    (controlplane_policy,) = [
        p
        for p in policies
        if p["spec"]["podSelector"]["matchLabels"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    ]
    for rule in controlplane_policy["spec"]["ingress"]:
        names = {p["port"] for p in rule["ports"]}
        assert names <= set(ports), names - set(ports)
        assert ("metrics" in names) == bool(rule.get("from")), "only /metrics is limited to the scraper's namespace"
    covered = {p["port"] for rule in controlplane_policy["spec"]["ingress"] for p in rule["ports"]}
    assert covered == set(ports), "a port the NetworkPolicy does not mention is closed by it"
    worker, _ = daemon_workload(shipped, "fastworker-worker")
    (worker_policy,) = [p for p in policies if p is not controlplane_policy]
    assert worker_policy["spec"]["podSelector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    assert worker_policy["spec"]["policyTypes"] == ["Ingress"] and not worker_policy["spec"].get("ingress")


def test_grace_periods_outlast_the_drain(shipped: list[dict[str, Any]]) -> None:
    for daemon in PARSERS:
        workload, container = daemon_workload(shipped, daemon)
        parsed = parse_daemon(workload, container, shipped)
        grace = pod_spec(workload)["terminationGracePeriodSeconds"]
        assert grace > parsed.drain_timeout + STOP_MARGIN[daemon], (daemon, grace, parsed.drain_timeout)
        assert "lifecycle" not in container, "the daemon drains on SIGTERM itself: a preStop hook only spends the grace"


def quantity(text: str | int) -> float:
    """A Kubernetes quantity as a number (cpu in cores, memory in bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert match, text
    return float(match.group(1)) * units.get(match.group(2), 1)


def test_pods_meet_the_restricted_pod_security_standard(
    shipped: list[dict[str, Any]], stages: dict[str, Stage]
) -> None:
    uid, gid = image_user(stages["runtime"])
    namespace = one(shipped, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in workloads(shipped):
        pod = pod_spec(workload)
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (container["name"], kind)
            # Every file a daemon writes is on a volume (the root is read-only).
            parsed = parse_daemon(workload, container, shipped)
            _, env = container_env(container, shipped, pod_name_of(workload), NAMESPACE)
            assert parsed.ready_file == env["FASTWORKER_READY_FILE"]
            assert "emptyDir" in volume_of(workload, container, parsed.ready_file)[1]
            if getattr(parsed, "journal", None):
                _, volume = volume_of(workload, container, parsed.journal)
                assert "volumeClaimTemplate" in volume, "the journal must outlive the pod"


def test_sizing_matches_the_limits(shipped: list[dict[str, Any]]) -> None:
    """The defaults count the node's cores, not the container's CPU limit; memory bounds must fit the limit."""
    workload, container = daemon_workload(shipped, "fastworker-worker")
    worker = parse_daemon(workload, container, shipped)
    limits = container["resources"]["limits"]
    assert worker.concurrency == quantity(limits["cpu"])
    assert worker.max_child_rss and worker.concurrency * worker.max_child_rss * 2**20 + 128 * 2**20 <= quantity(
        limits["memory"]
    )
    workload, container = daemon_workload(shipped, "fastworker-controlplane")
    controlplane = parse_daemon(workload, container, shipped)
    assert controlplane.local_concurrency == 0
    assert controlplane.max_queue > 0, "an unbounded queue grows until the memory limit kills the pod"
    assert controlplane.result_cache_mb * 2**20 <= quantity(container["resources"]["limits"]["memory"]) / 2


def autoscalers(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Each ScaledObject or HPA with the name of the workload it scales."""
    found = [(o, o["spec"]["scaleTargetRef"]["name"]) for o in find(objects, "ScaledObject")]
    return found + [(o, o["spec"]["scaleTargetRef"]["name"]) for o in find(objects, "HorizontalPodAutoscaler")]


def test_one_control_plane_and_autoscaled_workers(renders: dict[str, list[dict[str, Any]]]) -> None:
    for render, objects in renders.items():
        controlplane, _ = daemon_workload(objects, "fastworker-controlplane")
        worker, _ = daemon_workload(objects, "fastworker-worker")
        assert controlplane["kind"] == "StatefulSet" and controlplane["spec"]["replicas"] == 1
        assert "replicas" not in worker["spec"], "the autoscaler owns the worker count"
        scaling = autoscalers(objects)
        assert len(scaling) <= 1, f"{render}: two autoscalers on one Deployment fight"
        for autoscaler, target in scaling:
            assert autoscaler["spec"]["scaleTargetRef"]["kind"] == "Deployment" and target == worker["metadata"]["name"]
    assert [o["kind"] for o, _ in autoscalers(renders["deploy/kubernetes"])] == ["ScaledObject"]


def promql_metrics(query: str) -> set[str]:
    return set(re.findall(r"\bfastworker_[a-z_]+\b", query))


def test_the_scaledobject_is_one_keda_accepts(shipped: list[dict[str, Any]]) -> None:
    scaled = one(shipped, "ScaledObject", "fastworker-worker")
    spec = scaled["spec"]
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]  # the CRD's CEL rule
    names = set()
    for trigger in spec["triggers"]:
        assert trigger["type"] == "prometheus"
        metadata = trigger["metadata"]
        assert set(metadata) <= KEDA_PROMETHEUS_KEYS, set(metadata) - KEDA_PROMETHEUS_KEYS
        assert float(metadata["threshold"]) > 0 and metadata["ignoreNullValues"] == "false"
        assert trigger.get("metricType", "AverageValue") in ("AverageValue", "Value")
        # Only this deployment's control plane: the query names the namespace it is deployed in.
        assert re.findall(r'namespace="([^"]*)"', metadata["query"]) == [scaled["metadata"]["namespace"]]
        names |= promql_metrics(metadata["query"])
        assert trigger["name"] not in names
        names.add(trigger["name"])
    assert {"fastworker_queue_depth", "fastworker_queue_oldest_age_seconds"} <= names
    # KEDA 2.17's admission webhook: a fallback needs a non-cpu/memory trigger with metricType AverageValue set.
    if "fallback" in spec:
        assert any(
            t.get("metricType") == "AverageValue" for t in spec["triggers"] if t["type"] not in ("cpu", "memory")
        )


def test_the_servicemonitor_scrapes_the_metrics_service_as_job_fastworker(shipped: list[dict[str, Any]]) -> None:
    monitor = one(shipped, "ServiceMonitor", "fastworker-controlplane")
    (service,) = [
        s
        for s in find(shipped, "Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    assert [p["targetPort"] for p in service["spec"]["ports"] if p["name"] == endpoint["port"]] == ["metrics"]
    # deploy/monitoring/alerts.yml alerts on up{job="fastworker"}.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "fastworker"
    assert 'job="fastworker"' in (ROOT / "deploy" / "monitoring" / "alerts.yml").read_text()
    assert quantity(endpoint["scrapeTimeout"].rstrip("s")) < quantity(endpoint["interval"].rstrip("s"))


def test_the_autoscalers_query_metrics_a_real_control_plane_exports(renders: dict[str, list[dict[str, Any]]]) -> None:
    queried = set()
    for objects in renders.values():
        for autoscaler, _ in autoscalers(objects):
            if autoscaler["kind"] == "ScaledObject":
                for trigger in autoscaler["spec"]["triggers"]:
                    queried |= promql_metrics(trigger["metadata"]["query"])
            else:
                queried |= {m["external"]["metric"]["name"] for m in autoscaler["spec"]["metrics"]}
    assert {"fastworker_queue_depth", "fastworker_queue_oldest_age_seconds"} <= queried
    with run_controlplane(metrics=True) as controlplane:
        assert controlplane.metrics
        with urllib.request.urlopen(f"{controlplane.metrics}/metrics", timeout=10) as answer:
            exposition = answer.read().decode()
    families = list(text_string_to_metric_families(exposition))
    exported = {f.name for f in families} | {sample.name for f in families for sample in f.samples}
    assert queried <= exported, queried - exported
    # docs/kubernetes.md's prometheus-adapter rules, for the HPA, name the same metrics.
    assert all(name in DOCS.read_text() for name in queried)


# ------------------------------------------------------------------------------------ PID 1, SIGTERM

#: Runs in the new namespaces as root, then becomes the container's process by exec (keeping PID 1).
#: It keeps the interpreter, the test environment and the working directory reachable for the pod's
#: uid whatever the volumes hide (a pod mounts an emptyDir over /tmp) and wherever this machine keeps
#: them (here under /root, mode 0700: such a folder is covered, in this mount namespace only, by an
#: empty tmpfs), by binding each aside first and back after; then it binds the volumes, makes the
#: root read-only, brings loopback up, and drops to the pod's uid and gid without capabilities.
LAUNCHER = r"""
import fcntl, json, os, socket, struct, subprocess, sys
spec = json.loads(sys.argv[1])
os.umask(0o022)
def mount(*args):
    subprocess.run(["mount", *args], check=True)
staged, covers = [], []
for number, path in enumerate(os.path.realpath(p) for p in spec["reveal"]):
    stage = os.path.join(spec["staging"], str(number))
    os.mkdir(stage)
    mount("--bind", path, stage)
    staged.append((stage, path))
    parts = path.split("/")[1:]
    for depth in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:depth])
        if not os.stat(ancestor).st_mode & 0o001:
            if not any(ancestor == c or ancestor.startswith(c + "/") for c in covers):
                covers.append(ancestor)
            break
for cover in covers:
    mount("-t", "tmpfs", "-o", "mode=755,size=1m", "tmpfs", cover)
for source, target in spec["binds"]:
    mount("--bind", source, target)
for stage, path in staged:
    os.makedirs(path, exist_ok=True)
    mount("--bind", stage, path)
    spec["read_only"].append(path)
for target in spec["read_only"]:
    mount("-o", "remount,bind,ro", target)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH22x", fcntl.ioctl(sock, 0x8913, struct.pack("16sH22x", b"lo", 0)))[1]
fcntl.ioctl(sock, 0x8914, struct.pack("16sH22x", b"lo", flags | 0x1))
sock.close()
os.chdir(spec["cwd"])
argv = spec["argv"]
if spec["user"]:
    uid, gid, groups = spec["user"]
    groups = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", *groups, "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--", *argv]
os.execvpe(argv[0], argv, spec["env"])
"""

HTTP_GET = r"""
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(urllib.request.Request(sys.argv[1], headers={"Host": sys.argv[2]}), timeout=10) as answer:
        sys.stdout.write(f"{answer.status}\n{answer.read().decode()}")
except urllib.error.HTTPError as exc:
    sys.stdout.write(f"{exc.code}\n{exc.read().decode()}")
"""

CLIENT = r"""
import json, sys, time
from fastworker.client import SyncClient
action, argument = sys.argv[1], sys.argv[2]
with SyncClient(connect_timeout=15, request_timeout=15) as client:  # FASTWORKER_CONTROL_PLANE, _SECRET_FILE
    if action == "submit":
        task_id = client.delay("reports.checksum", "drain", int(argument))
        deadline = time.monotonic() + 30
        while client.status(task_id).state != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.02)
        print(json.dumps({"task_id": task_id, "state": str(client.status(task_id).state)}))
    else:
        info = client.wait(argument, timeout=60)
        print(json.dumps({"state": str(info.state), "worker": info.worker, "finished_at": info.finished_at}))
"""

#: Longest wait for a daemon to be ready, in seconds.
READY_TIMEOUT = 60.0


@dataclass
class Pod:
    """A container's process started by :func:`start_pod`: ``pid`` is its host pid, PID 1 inside."""

    name: str
    launcher: subprocess.Popen[bytes]
    pid: int
    log: Path
    root: Path
    mounts: dict[str, Path]

    def host_path(self, path: str) -> Path:
        """Where a path of the container's volumes lies on this machine."""
        mount = max((m for m in self.mounts if path == m or path.startswith(m + "/")), key=len)
        return self.mounts[mount] / os.path.relpath(path, mount)

    def in_netns(self, *argv: str, env: dict[str, str] | None = None, mount_hosts: Path | None = None) -> str:
        """Run a command in this pod's network namespace (as root) and return its stdout."""
        command = ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--"]
        if mount_hosts is not None:  # a private mount namespace whose /etc/hosts names the Services
            spec = {"binds": [[str(mount_hosts), "/etc/hosts"]], "read_only": [], "cwd": "/", "argv": list(argv)}
            spec |= {"user": None, "env": env or {}, "reveal": [], "staging": ""}
            argv = ("unshare", "--mount", "--", sys.executable, "-c", LAUNCHER, json.dumps(spec))
        done = subprocess.run([*command, *argv], capture_output=True, text=True, timeout=90, env=env, check=False)
        assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def http_get(self, port: int, path: str) -> tuple[int, str]:
        # A Host that is not loopback, as a kubelet probe or a scraper on another node sends.
        host = f"{self.name}.fastworker-controlplane-headless:{port}"
        status, _, body = self.in_netns(
            sys.executable, "-c", HTTP_GET, f"http://127.0.0.1:{port}{path}", host
        ).partition("\n")
        return int(status), body

    def stop(self, timeout: float) -> tuple[int, float]:
        """SIGTERM to PID 1, as the kubelet sends it; (its exit code, seconds it took)."""
        started = time.monotonic()
        os.kill(self.pid, signal.SIGTERM)
        code = self.launcher.wait(timeout=timeout)  # unshare --fork exits with its child's code
        return code, time.monotonic() - started

    def kill(self) -> None:
        for pid in (self.pid, self.launcher.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.launcher.wait(timeout=10)


def host_pid_of_pid1(launcher: subprocess.Popen[bytes], log: Path) -> int:
    """The host pid of the process that unshare --fork started (PID 1 of the new namespace)."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            found = children.read_text().split()
            if found:
                return int(found[0])
        assert launcher.poll() is None, f"exited with {launcher.returncode}:\n{log.read_text()}"
        time.sleep(0.01)
    raise AssertionError(f"no PID 1 under unshare {launcher.pid}")


def namespaced_pid(pid: int) -> int:
    """The pid the process has in its own (innermost) PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


def hosts_file(objects: list[dict[str, Any]], folder: Path) -> Path:
    """Cluster DNS for one network namespace: every Service's names on loopback."""
    names = []
    for service in find(objects, "Service"):
        name = service["metadata"]["name"]
        names += [name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.svc", f"{name}.{NAMESPACE}.svc.cluster.local"]
    path = folder / "hosts"
    path.write_text(f"127.0.0.1 localhost {' '.join(names)}\n::1 localhost\n")
    path.chmod(0o644)
    return path


@dataclass
class Cluster:
    """What the pods of one test share: a folder for their volumes, the Secret's values, and every pod started."""

    root: Path
    secrets: dict[str, dict[str, str]]
    pods: list[Pod] = field(default_factory=list)


def start_pod(
    objects: list[dict[str, Any]],
    daemon: str,
    cluster: Cluster,
    *,
    claims: dict[str, Path],
    netns_of: Pod | None = None,
    argv: list[str] | None = None,
) -> Pod:
    """Start the container that runs ``daemon`` as the kubelet would, as PID 1 of new namespaces.

    The command and args are the manifest's, with $(VAR) expanded; the environment is the image's ENV
    plus the container's env, and nothing else. Volumes: a Secret's keys in files (0440, the pod's
    group), an emptyDir, or a claim's folder from ``claims`` (kept across pods). A volume whose mount
    path exists here (/tmp) is mounted there; the others are folders elsewhere whose paths replace
    the mount paths in args and env (the one rewrite, with the image's /opt/fastworker/bin for this
    environment's). The root is read-only if the container asks, and the process runs as the
    pod's uid and gid with no capabilities. ``netns_of`` shares another pod's network namespace
    (the cluster network); ``argv`` replaces the command (the harness's own control run).
    """
    workload, container = daemon_workload(objects, daemon)
    pod = pod_spec(workload)
    name = pod_name_of(workload)
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    uid, gid, fs_group = context["runAsUser"], context["runAsGroup"], pod["securityContext"].get("fsGroup")
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cluster.root))
    folder.chmod(0o755)
    mounts: dict[str, Path] = {}
    binds: list[list[str]] = []
    read_only: list[str] = []
    rewrites: list[tuple[str, str]] = []
    for mount in container.get("volumeMounts", []):
        _, volume = volume_of(workload, container, mount["mountPath"])
        if "secret" in volume:
            source = folder / mount["name"]
            source.mkdir()
            values = cluster.secrets[volume["secret"]["secretName"]]
            items = volume["secret"].get("items") or [{"key": key, "path": key} for key in values]
            for item in items:
                file = source / item["path"]
                file.write_text(values[item["key"]])
                os.chown(file, 0, fs_group)
                file.chmod(volume["secret"].get("defaultMode", 0o644))
            source.chmod(0o755)
        elif "emptyDir" in volume:
            source = folder / mount["name"]
            source.mkdir()
            source.chmod(0o777)  # as the kubelet makes an emptyDir
        else:
            source = claims[volume["name"]]
        mounts[mount["mountPath"]] = source
        if Path(mount["mountPath"]).is_dir():
            binds.append([str(source), mount["mountPath"]])
            target = mount["mountPath"]
        else:
            binds.append([str(source), str(source)])  # its own mount, so it stays writable under a read-only root
            rewrites.append((mount["mountPath"], str(source)))
            target = str(source)
        if mount.get("readOnly"):
            read_only.append(target)
    binds.append([str(hosts_file(objects, folder)), "/etc/hosts"])
    if context.get("readOnlyRootFilesystem"):
        read_only.insert(0, "/")

    def rewrite(text: str) -> str:
        for mount_path, source in rewrites:
            text = re.sub(rf"(?<![\w/.-]){re.escape(mount_path)}(?=/|$)", source, text)
        return text

    spec_env, env = container_env(container, objects, name, NAMESPACE)
    env = {key: rewrite(value) for key, value in env.items()}
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"
    command = argv or [str(Path(sys.executable).parent / Path(container["command"][0]).name)]
    if argv is None:
        command += [rewrite(arg) for arg in container_args(container, spec_env)]
    staging = folder / "staging"
    staging.mkdir()
    spec = {
        "reveal": [sys.base_prefix, sys.prefix, str(ROOT / "examples" / "quickstart")],
        "staging": str(staging),
        "binds": binds,
        "read_only": read_only,
        "cwd": str(ROOT / "examples" / "quickstart"),  # the demo image's /app: example_tasks.py
        # The kubelet adds fsGroup (and supplementalGroups) to the process's groups.
        "user": [uid, gid, [g for g in [fs_group, *pod["securityContext"].get("supplementalGroups", [])] if g]],
        "argv": command,
        "env": env,
    }
    prefix = ["nsenter", f"--net=/proc/{netns_of.pid}/ns/net", "--"] if netns_of else []
    unshare = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *([] if netns_of else ["--net"])]
    log = cluster.root / f"{name}.log"
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            [*prefix, *unshare, "--", sys.executable, "-c", LAUNCHER, json.dumps(spec)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PATH": env["PATH"]},
        )
    try:
        pid = host_pid_of_pid1(launcher, log)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            launcher.kill()
        raise
    pod = Pod(name, launcher, pid, log, folder, mounts)
    cluster.pods.append(pod)
    return pod


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """Volumes live outside /tmp (which a pod mounts over); every pod started is killed by pid at the end."""
    root = Path(tempfile.mkdtemp(prefix="fastworker-pods-", dir="/dev/shm"))
    root.chmod(0o755)
    secret = {key: os.urandom(24).hex() + "\n" for key in SECRETS["fastworker"]}  # as kubectl --from-file keeps it
    started = Cluster(root, {"fastworker": secret})
    try:
        yield started
    finally:
        for pod in started.pods:
            pod.kill()
        shutil.rmtree(root, ignore_errors=True)


def wait_for(condition: Callable[[], bool], pod: Pod, what: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert pod.launcher.poll() is None, f"{pod.name} exited with {pod.launcher.returncode}:\n{pod.log.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"{pod.name}: {what} within {timeout:g} s:\n{pod.log.read_text()}")


def checksum_rounds(seconds: float) -> int:
    """How many rounds of example_tasks.checksum take about ``seconds`` on this machine."""
    rounds, digest, started = 200_000, b"drain", time.perf_counter()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return int(rounds * seconds / (time.perf_counter() - started))


def require_root() -> None:
    # Namespaces, mounts and setpriv need root, as the kubelet's container runtime has; CI runs as root.
    assert os.geteuid() == 0, "the PID 1 tests need root (unshare --pid --net, mount, setpriv)"
    for command in ("unshare", "nsenter", "setpriv", "mount"):
        tool(command)


def tls_secret(objects: list[dict[str, Any]], folder: Path) -> dict[str, str]:
    """The Secret fastworker-tls as docs/kubernetes.md makes it: a CA, and a certificate naming what peers dial."""
    worker = parse_daemon(*daemon_workload(objects, "fastworker-worker"), objects)
    controlplane = parse_daemon(*daemon_workload(objects, "fastworker-controlplane"), objects)
    names = sorted({parse_address(worker.control_plane).host, controlplane.advertise_host})
    folder.mkdir()
    (folder / "san.ext").write_text("subjectAltName=" + ",".join(f"DNS:{name}" for name in names) + "\n")
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *curve, "-days", "2", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=fastworker-ca"],
        ["req", *curve, "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={names[0]}"],
        ["x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
        + ["-extfile", "san.ext", "-out", "tls.crt"],
    ):
        subprocess.run([tool("openssl"), *args], cwd=folder, capture_output=True, timeout=60, check=True)
    return {key: (folder / key).read_text() for key in SECRETS["fastworker-tls"]}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("render", ["deploy/kubernetes", "base + components/tls"])
def test_both_daemons_run_as_pid_1_and_stop_cleanly_on_sigterm(
    renders: dict[str, list[dict[str, Any]]], render: str, cluster: Cluster
) -> None:
    require_root()
    objects = renders[render]
    controlplane_workload, controlplane_container = daemon_workload(objects, "fastworker-controlplane")
    worker_workload, worker_container = daemon_workload(objects, "fastworker-worker")
    controlplane_parsed = parse_daemon(controlplane_workload, controlplane_container, objects)
    worker_parsed = parse_daemon(worker_workload, worker_container, objects)
    if worker_parsed.tls_ca:
        cluster.secrets["fastworker-tls"] = tls_secret(objects, cluster.root / "certificates")
    (claim,) = controlplane_workload["spec"]["volumeClaimTemplates"]
    journal = cluster.root / "claim-journal"
    journal.mkdir()
    os.chown(journal, 0, pod_spec(controlplane_workload)["securityContext"]["fsGroup"])
    journal.chmod(0o2775)  # as fsGroup leaves a volume
    claims = {claim["metadata"]["name"]: journal}
    ready_file = container_env(worker_container, objects, "x", NAMESPACE)[1]["FASTWORKER_READY_FILE"]
    metrics_port = parse_http_address(controlplane_parsed.metrics_address)[1]

    controlplane = start_pod(objects, "fastworker-controlplane", cluster, claims=claims)
    wait_for(lambda: controlplane.host_path(ready_file).exists(), controlplane, "no ready file")
    assert namespaced_pid(controlplane.pid) == 1
    assert (
        os.stat(f"/proc/{controlplane.pid}").st_uid == pod_spec(controlplane_workload)["securityContext"]["runAsUser"]
    )
    ready = json.loads(controlplane.host_path(ready_file).read_text())
    assert ready["dashboard"], f"no dashboard served:\n{controlplane.log.read_text()}"
    assert ready["discovery"].startswith("tls+tcp://" if controlplane_parsed.tls_cert else "tcp://")
    assert controlplane.http_get(metrics_port, "/healthz") == (200, "ok\n")

    worker = start_pod(objects, "fastworker-worker", cluster, claims=claims, netns_of=controlplane)
    wait_for(lambda: worker.host_path(ready_file).exists(), worker, "not registered")
    assert namespaced_pid(worker.pid) == 1
    health_port = parse_http_address(worker_parsed.health_address)[1]
    assert worker.http_get(health_port, "/healthz") == (200, "ok\n")
    status, exposition = controlplane.http_get(metrics_port, "/metrics")
    assert status == 200
    online = {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "fastworker_worker_online"
    }
    assert online == {worker.name: 1.0}  # FASTWORKER_WORKER_ID from the pod's name

    # A client elsewhere in the cluster, configured as docs/kubernetes.md says.
    discovery = parse_address(worker_parsed.control_plane)
    service = discovery.host.split(".")[0]
    client_env = {
        "FASTWORKER_CONTROL_PLANE": f"{discovery.scheme}://{service}.{NAMESPACE}.svc:{discovery.port}",
        "FASTWORKER_SECRET_FILE": str(controlplane.host_path(controlplane_parsed.secret_file)),
        "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    if worker_parsed.tls_ca:
        client_env["FASTWORKER_TLS_CA"] = str(worker.host_path(worker_parsed.tls_ca))
    hosts = hosts_file(objects, cluster.root)

    def client(*args: str, pod: Pod = controlplane) -> dict[str, Any]:
        output = pod.in_netns(sys.executable, "-c", CLIENT, *args, env=client_env, mount_hosts=hosts)
        return json.loads(output.strip().splitlines()[-1])

    # A task runs on the worker when it gets SIGTERM: it must finish it, then exit 0 within its grace.
    submitted = client("submit", str(checksum_rounds(6.0)))
    assert submitted["state"] == "RUNNING", submitted
    sigterm_at = time.time()
    code, _ = worker.stop(timeout=pod_spec(worker_workload)["terminationGracePeriodSeconds"])
    assert code == 0, worker.log.read_text()
    assert (
        "drained: 1 succeeded, 0 failed or were cancelled, 0 handed back unstarted, 0 stopped at the drain timeout"
        in worker.log.read_text()
    )
    assert not worker.host_path(ready_file).exists()
    finished = client("wait", submitted["task_id"])
    assert (finished["state"], finished["worker"]) == ("SUCCESS", worker.name)
    assert finished["finished_at"] > sigterm_at, "the task was not running any more when the worker got SIGTERM"

    # The image's HEALTHCHECK agrees with /healthz.
    healthcheck = [sys.executable, str(CONTAINER / "healthcheck.py")]
    check_env = {"FASTWORKER_READY_FILE": str(controlplane.host_path(ready_file))}
    assert controlplane.in_netns(*healthcheck, env=check_env) == ""

    grace = pod_spec(controlplane_workload)["terminationGracePeriodSeconds"]
    code, _ = controlplane.stop(timeout=grace)
    assert code == 0, controlplane.log.read_text()
    assert not controlplane.host_path(ready_file).exists()
    assert (journal / Path(controlplane_parsed.journal).name).stat().st_size > 0

    # The next pod finds the journal on the claim: the finished task is still there.
    controlplane = start_pod(objects, "fastworker-controlplane", cluster, claims=claims)
    wait_for(lambda: controlplane.host_path(ready_file).exists(), controlplane, "no ready file")
    assert client("wait", submitted["task_id"], pod=controlplane)["state"] == "SUCCESS"
    code, _ = controlplane.stop(timeout=grace)
    assert code == 0, controlplane.log.read_text()
    done = subprocess.run(healthcheck, env=check_env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1 and "not ready" in done.stdout


@pytest.mark.timeout(60)
def test_the_harness_catches_a_pid_1_that_ignores_sigterm(shipped: list[dict[str, Any]], cluster: Cluster) -> None:
    """PID 1 gets no default action for SIGTERM: without a handler the signal is dropped, so the test above means something."""
    require_root()
    sleeper = start_pod(shipped, "fastworker-worker", cluster, claims={}, argv=["sleep", "120"])
    wait_for(
        lambda: namespaced_pid(sleeper.pid) == 1 and "sleep" in Path(f"/proc/{sleeper.pid}/cmdline").read_text(),
        sleeper,
        "not running",
    )
    with pytest.raises(subprocess.TimeoutExpired):
        sleeper.stop(timeout=3.0)
    assert sleeper.launcher.poll() is None  # still running: only SIGKILL ends it
