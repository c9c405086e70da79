"""Corral's chart through Helm's real engine: value sets rendered, strictly linted and validated
against the Kubernetes schemas of the oldest and newest versions it claims; bad values refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.deploy.chart import (CHART, CRD_APIS, CRD_KINDS, KUBE_VERSIONS, by_kind, corral_container,
                                documents, env_of, render)

# Missing tools fail here (make install-test installs them); they are never skipped.
import helm_python  # noqa: E402
import kubernetes_validate  # noqa: E402

MODELFILE = "FROM gemma3:270m\nPARAMETER temperature 0.2\nSYSTEM You answer in one line.\n"

KEYS_FILE = "keys:\n  - id: team-a\n    sha256: " + "ab" * 32 + "\n    role: infer\n"

VALUE_SETS = {
    "defaults-cpu": {},
    "gpu4-pvc-preload-keys-monitor-keda": {
        "gpu": {"enabled": True, "count": 4, "runtimeClassName": "nvidia"},
        "corral": {"modelReplicas": 2},
        "persistence": {"enabled": True, "size": "200Gi", "storageClass": "fast"},
        "models": {"pull": ["qwen3:8b"], "preload": ["qwen3:8b=-1", "gemma3:270m"]},
        "auth": {"apiKeys": ["k-0123456789abcdef"]},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}},
        "keda": {"enabled": True, "minReplicaCount": 0, "maxReplicaCount": 8},
    },
    "mig": {
        "gpu": {"enabled": True, "mig": {"enabled": True, "profile": "3g.20gb"}, "runtimeClassName": "nvidia"},
    },
    "existing-claim-and-secret": {
        "persistence": {"enabled": True, "existingClaim": "ollama-store"},
        "auth": {"existingSecret": "corral-keys", "existingSecretKeys": {"apiKeys": "admin", "keysFile": "keys.yaml"}},
    },
    "everything": {
        "replicaCount": 2,
        "gpu": {"enabled": True, "count": 2, "resource": "nvidia.com/gpu.shared", "tolerate": False},
        "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi"}},
        "persistence": {"enabled": True, "accessModes": ["ReadWriteMany"], "subPath": "corral"},
        "models": {"pull": ["registry.internal:5000/library/m:1"], "insecureRegistries": ["registry.internal:5000"],
                   "registryAuth": {"existingSecret": "regcred", "key": "auth"},
                   "create": [{"name": "helper:latest", "modelfile": MODELFILE}], "preload": ["helper:latest"]},
        "auth": {"apiKeys": ["k-0123456789abcdef", "k-fedcba9876543210"], "keysFile": KEYS_FILE,
                 "metricsOpen": False},
        "corral": {"keepAlive": "-1", "numParallel": 32, "maxQueue": 1024, "maxLoadedModels": 4,
                   "contextLength": 8192, "origins": ["https://chat.internal"], "drainTimeout": 120,
                   "logFormat": "text", "devices": "cuda:0,cuda:1"},
        "terminationGracePeriodSeconds": 180,
        "autoscaling": {"enabled": True, "maxReplicas": 6, "targetMemoryUtilizationPercentage": 85},
        "metrics": {"podMonitor": {"enabled": True}, "dashboard": {"enabled": True}},
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                               "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "corral"}}}}]}},
        "priorityClassName": "llm-serving",
        "extraEnv": [{"name": "CORRAL_HEADER_TIMEOUT", "value": "30"}],
        "extraEnvFrom": [{"configMapRef": {"name": "corral-extra"}}],
        "extraVolumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}],
        "extraVolumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
        "initContainers": [{"name": "wait", "image": "busybox:1.36", "command": ["true"]}],
        "lifecycle": {"postStart": {"exec": {"command": ["ollama", "list"]}}},
        "ingress": {"enabled": True, "className": "nginx", "tls": [{"hosts": ["corral.local"], "secretName": "tls"}]},
        "httpRoute": {"enabled": True, "parentRefs": [{"name": "gw", "namespace": "gateway"}],
                      "hostnames": ["corral.internal"]},
        "service": {"type": "NodePort", "nodePort": 31434},
        "podAnnotations": {"a": "b"}, "podLabels": {"team": "ml"},
        "imagePullSecrets": [{"name": "pull"}],
    },
}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def value_set(request):
    return request.param


def _docs(name: str, kube_version: str = KUBE_VERSIONS[-1], apis=CRD_APIS):
    return documents(render(VALUE_SETS[name], kube_version=kube_version, api_versions=apis))


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_strict_lint_is_clean(value_set, kube_version):
    report = helm_python.lint(str(CHART), VALUE_SETS[value_set], strict=True, kube_version=f"v{kube_version}")
    bad = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert not bad, json.dumps(report, indent=1)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_document_passes_kubernetes_validate_strict(value_set, kube_version):
    docs = _docs(value_set, kube_version)
    assert docs
    for doc in docs:
        path = doc.pop("__path__")
        if doc["kind"] in CRD_KINDS:
            continue  # no schema ships for CRDs: checked by the assertions below
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path} ({doc['kind']}) fails Kubernetes {kube_version}: {exc}")


def test_defaults_are_a_cpu_pod_with_truthful_probes():
    kinds = by_kind(_docs("defaults-cpu"))
    assert set(kinds) == {"Deployment", "Service", "ServiceAccount", "Pod"}  # the Pod is the helm test
    container = corral_container(_docs("defaults-cpu"))
    assert container["image"] == "localhost/corral:cpu"
    assert container["imagePullPolicy"] in ("Always", "IfNotPresent", "Never")
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    env = env_of(container)
    assert env["OLLAMA_HOST"] == "0.0.0.0:11434"
    assert env["OLLAMA_MODELS"] == "/root/.ollama/models"
    assert "limits" not in container["resources"]
    (deployment,) = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > int(env["CORRAL_DRAIN_TIMEOUT"])
    assert pod["volumes"][0] == {"name": "models", "emptyDir": {}}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert "tolerations" not in pod and "runtimeClassName" not in pod
    (test_pod,) = kinds["Pod"]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "/api/version" in test_pod["spec"]["containers"][0]["args"][0]
    assert '"num_predict": 2' in test_pod["spec"]["containers"][0]["args"][0]


def test_gpu4_set_gives_gpus_volume_models_keys_monitor_and_keda():
    docs = _docs("gpu4-pvc-preload-keys-monitor-keda")
    kinds = by_kind(docs)
    container = corral_container(docs)
    assert container["image"] == "localhost/corral:cuda"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 4}
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    assert "replicas" not in kinds["Deployment"][0]["spec"]  # KEDA owns it
    assert pod["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    env = env_of(container)
    assert env["CORRAL_PULL"] == "qwen3:8b"
    assert env["CORRAL_PRELOAD"] == "qwen3:8b=-1,gemma3:270m"
    assert env["CORRAL_REPLICAS"] == "2"
    assert env["CORRAL_API_KEY"] == {"secretKeyRef": {"name": "corral-auth", "key": "api-keys"}}
    assert "CORRAL_API_KEYS_FILE" not in env
    (pvc,) = kinds["PersistentVolumeClaim"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "200Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    (secret,) = kinds["Secret"]
    assert secret["stringData"]["api-keys"] == "k-0123456789abcdef"
    (monitor,) = kinds["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert monitor["spec"]["selector"]["matchLabels"] == kinds["Service"][0]["spec"]["selector"]
    (scaled,) = kinds["ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"][0]["metadata"]["name"]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 8)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and "vllm:num_requests_waiting" in trigger["metadata"]["query"]
    assert trigger["metadata"]["threshold"] == "5"
    assert "HorizontalPodAutoscaler" not in kinds


def test_mig_asks_for_the_slice_not_whole_gpus():
    container = corral_container(_docs("mig"))
    assert container["resources"]["limits"] == {"nvidia.com/mig-3g.20gb": 1}


def test_existing_claim_and_secret_are_used_not_created():
    docs = _docs("existing-claim-and-secret")
    kinds = by_kind(docs)
    assert "PersistentVolumeClaim" not in kinds and "Secret" not in kinds
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "ollama-store"
    assert {"name": "auth", "secret": {"secretName": "corral-keys"}} in pod["volumes"]
    env = env_of(corral_container(docs))
    assert env["CORRAL_API_KEY"] == {"secretKeyRef": {"name": "corral-keys", "key": "admin"}}
    assert env["CORRAL_API_KEYS_FILE"] == "/etc/corral/auth/keys.yaml"


def test_everything_on_maps_every_setting():
    docs = _docs("everything")
    kinds = by_kind(docs)
    container = corral_container(docs)
    env = env_of(container)
    expected = {"OLLAMA_KEEP_ALIVE": "-1", "OLLAMA_NUM_PARALLEL": "32", "OLLAMA_MAX_QUEUE": "1024",
                "OLLAMA_MAX_LOADED_MODELS": "4", "OLLAMA_CONTEXT_LENGTH": "8192",
                "OLLAMA_ORIGINS": "https://chat.internal", "CORRAL_DRAIN_TIMEOUT": "120",
                "CORRAL_LOG_FORMAT": "text", "CORRAL_DEVICES": "cuda:0,cuda:1",
                "CORRAL_INSECURE_REGISTRIES": "registry.internal:5000",
                "CORRAL_CREATE": "helper:latest=/etc/corral/modelfiles/model-0",
                "CORRAL_METRICS_OPEN": "false", "CORRAL_HEADER_TIMEOUT": "30"}
    assert {k: env.get(k) for k in expected} == expected
    assert env["CORRAL_REGISTRY_AUTH"] == {"secretKeyRef": {"name": "regcred", "key": "auth"}}
    assert container["resources"]["limits"] == {"memory": "32Gi", "nvidia.com/gpu.shared": 2}
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert container["lifecycle"]["postStart"]["exec"]["command"] == ["ollama", "list"]
    (configmap,) = [c for c in kinds["ConfigMap"] if c["metadata"]["name"].endswith("-modelfiles")]
    assert configmap["data"]["model-0"] == MODELFILE
    (dashboard,) = [c for c in kinds["ConfigMap"] if c["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["corral.json"])["panels"]
    assert any("vllm:num_requests_waiting" in p["targets"][0]["expr"] for p in panels)
    (secret,) = kinds["Secret"]
    assert set(secret["stringData"]) == {"api-keys", "keys-file"}
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 180
    assert "tolerations" in pod and not any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == kinds["Service"][0]["spec"]["selector"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["subPath"] == "corral" and mounts["modelfiles"]["readOnly"] is True
    (hpa,) = kinds["HorizontalPodAutoscaler"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu", "memory"]
    assert kinds["PodDisruptionBudget"][0]["spec"] == {
        "maxUnavailable": 1, "selector": {"matchLabels": kinds["Service"][0]["spec"]["selector"]}}
    assert kinds["PodMonitor"][0]["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    assert kinds["Ingress"][0]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "http"}
    (route,) = kinds["HTTPRoute"]
    assert route["spec"]["parentRefs"] == [{"name": "gw", "namespace": "gateway"}]
    assert route["spec"]["rules"][0]["backendRefs"][0]["port"] == 11434
    assert kinds["Service"][0]["spec"]["ports"][0]["nodePort"] == 31434


def test_crd_objects_render_only_where_the_cluster_serves_them():
    kinds = by_kind(documents(render(VALUE_SETS["everything"] | VALUE_SETS["gpu4-pvc-preload-keys-monitor-keda"]
                                     | {"autoscaling": {"enabled": False}}, api_versions=[])))
    assert not CRD_KINDS & set(kinds), sorted(kinds)
    notes = render(VALUE_SETS["gpu4-pvc-preload-keys-monitor-keda"], api_versions=[])["corral/templates/NOTES.txt"]
    assert "no ScaledObject was made" in notes


BAD_VALUES = [
    ({"gpu": {"count": "4"}}, "/gpu/count", "want integer"),
    ({"replicaCount": -1}, "/replicaCount", "minimum"),
    ({"gpuCount": 4}, "additional properties 'gpuCount' not allowed", ""),
    ({"gpu": {"enabled": True, "typo": 1}}, "/gpu", "additional properties 'typo' not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", ""),
    ({"models": {"create": [{"name": "x"}]}}, "/models/create/0", "modelfile"),
    ({"gpu": {"mig": {"profile": "three"}}}, "/gpu/mig/profile", ""),
    ({"persistence": {"size": "lots"}}, "/persistence/size", ""),
    ({"corral": {"logFormat": "xml"}}, "/corral/logFormat", ""),
]


@pytest.mark.parametrize("values,where,what", BAD_VALUES, ids=[w for _, w, _ in BAD_VALUES])
def test_bad_values_are_refused_by_the_schema_with_their_path(values, where, what):
    with pytest.raises(helm_python.HelmValuesError) as info:
        render(values)
    assert where in str(info.value) and what in str(info.value), str(info.value)


def test_grace_period_must_exceed_the_drain_timeout():
    with pytest.raises(helm_python.HelmRenderError, match="must exceed corral.drainTimeout"):
        render({"terminationGracePeriodSeconds": 30, "corral": {"drainTimeout": 30}})


def test_hpa_and_keda_together_are_refused():
    with pytest.raises(helm_python.HelmRenderError, match="choose one"):
        render({"autoscaling": {"enabled": True}, "keda": {"enabled": True}})


def test_chart_readme_values_table_is_generated_from_schema_and_values():
    done = subprocess.run([sys.executable, str(CHART.parent / "values_table.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_chart_packages(tmp_path):
    """What `helm package` gives, for a chart repository or `helm push` to an OCI registry."""
    helm_python.package(str(CHART), destination=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["corral-0.1.0.tgz"]
