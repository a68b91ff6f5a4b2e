"""k8s/ checked without Kubernetes: every manifest against the KubeRay CRD schemas (or the
Kubernetes schemas, for core objects), the kustomizations rendered, the commands inside the
manifests run far enough to load their configs, read-only root filesystems with every path the
libraries write on a volume, images pulled by digest, the Dockerfile against the project, and
the shipped configs against the clusters the manifests describe (cluster/capacity/)."""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib

import pytest
import yaml

from cluster.capacity import (
    NodeGroup, check_capacity, cluster_spec, groups_from_autoscaler, groups_from_ray_nodes,
    groups_from_raycluster, parse_quantity,
)
from cluster.cli import add_settings_args, settings_from_args
from cluster.settings import load_settings
from tests.k8s_helpers import (
    CRD_DIR, CRD_FILES, K8S, KUSTOMIZATIONS, REPO, RenderError, build, by_kind, entrypoint_argv, k8s_entrypoint,
    kubectl_kustomize, load_docs, render, schema_errors,
)

needs_crds = pytest.mark.skipif(not CRD_DIR.is_dir(), reason=f"KubeRay CRD schemas not found at {CRD_DIR}")
RAY_KINDS = set(CRD_FILES)
S3_SECRET, AUTH_SECRET, API_KEY_SECRET = "self-lengthen-s3", "self-lengthen-ray-auth", "self-lengthen-api-key"
API_KEY_ENV = "SELF_LENGTHEN_API_KEY"
MANIFEST_SOURCE = "the largest cluster the manifests describe"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: build(K8S / name) for name in KUSTOMIZATIONS}


def manifest_files() -> list:
    """Every YAML file in k8s/ that holds Kubernetes objects (patches and kustomizations excluded)."""
    files = []
    for path in sorted(K8S.rglob("*.yaml")):
        docs = load_docs(path)
        if any(isinstance(d, dict) and "kind" in d and d["kind"] != "Kustomization" for d in docs):
            files.append(path)
    return files


def k8s_errors(obj: dict) -> list[str]:
    import kubernetes_validate  # a pinned dev dependency: a broken install fails here, it does not skip

    try:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{obj['kind']} {obj['metadata']['name']}: {err.message}"]
    return []


def object_errors(obj: dict) -> list[str] | None:
    """What is wrong with `obj`; None for a KubeRay object when the CRD schemas (../shared) are
    not there to check it against."""
    if obj["kind"] in RAY_KINDS:
        return schema_errors(obj) if CRD_DIR.is_dir() else None
    return k8s_errors(obj)


def assert_valid(objects: list[dict]) -> None:
    """Every object checked; the core ones fail the test even where KubeRay's are skipped."""
    results = [object_errors(o) for o in objects]
    errors = [e for r in results if r for e in r]
    assert not errors, "\n".join(errors)
    if any(r is None for r in results):
        pytest.skip(f"KubeRay CRD schemas not found at {CRD_DIR}: the core objects validated, the Ray ones not")


def pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """(where, pod template) of every pod a Ray object makes: head, worker groups, submitter."""
    where, spec = f"{obj['kind']} {obj['metadata']['name']}", cluster_spec(obj)
    out = [(f"{where} head", spec["headGroupSpec"]["template"])]
    out += [(f"{where} group {g['groupName']}", g["template"]) for g in spec.get("workerGroupSpecs", [])]
    if "submitterPodTemplate" in obj["spec"]:
        out.append((f"{where} submitter", obj["spec"]["submitterPodTemplate"]))
    return out


def all_ray_objects(rendered: dict) -> list[tuple[str, dict]]:
    return [(name, o) for name, objs in rendered.items() for o in objs if o["kind"] in RAY_KINDS]


# -- schemas --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_validates(path):
    assert_valid([doc for doc in load_docs(path) if doc.get("kind") != "Kustomization"])


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_rendered_object_validates(rendered, name):
    assert {o["kind"] for o in rendered[name]} == RAY_KINDS | {"NetworkPolicy"}
    assert_valid(rendered[name])


def test_pod_templates_validate_as_kubernetes_pod_templates(rendered):
    errors = []
    for variant, obj in all_ray_objects(rendered):
        for where, template in pod_templates(obj):
            core = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
            errors += [f"{variant} {where}: {e}" for e in k8s_errors(core)]
    assert not errors, "\n".join(errors)


@needs_crds
def test_the_schema_check_is_strict(rendered):
    cluster = copy.deepcopy(by_kind(rendered["base"], "RayCluster")[0])
    cluster["spec"]["enableInTreeAutoScaling"] = True  # misspelt: the API server would refuse it
    cluster["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "16"
    errors = "\n".join(schema_errors(cluster))
    assert "enableInTreeAutoScaling" in errors and "maxReplicas: '16' is not of type 'integer'" in errors


# -- rendering ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_renderer_gives_what_kustomize_gives(name):
    real = kubectl_kustomize(K8S / name)
    if real is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert {key(o): o for o in render(K8S / name)} == {key(o): o for o in real}


def write_overlay(tmp_path, patch: str) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{K8S / 'base'}]\npatches:\n  - target: {{kind: RayCluster}}\n    patch: |\n"
        + "".join(f"      {line}\n" for line in patch.splitlines()))


def test_the_renderer_applies_json_patches(tmp_path):
    write_overlay(tmp_path, "- {op: test, path: /spec/workerGroupSpecs/0/groupName, value: gpu-workers}\n"
                            "- {op: replace, path: /spec/workerGroupSpecs/0/maxReplicas, value: 3}\n"
                            "- {op: add, path: /spec/workerGroupSpecs/-, value: {groupName: extra}}\n"
                            "- {op: remove, path: /spec/autoscalerOptions/upscalingMode}")
    [cluster] = by_kind(render(tmp_path), "RayCluster")
    groups = cluster["spec"]["workerGroupSpecs"]
    assert groups[0]["maxReplicas"] == 3 and groups[1] == {"groupName": "extra"}
    assert "upscalingMode" not in cluster["spec"]["autoscalerOptions"]


@pytest.mark.parametrize("patch, error", [
    ("- {op: test, path: /spec/workerGroupSpecs/0/groupName, value: cpu-workers}", "test failed"),
    ("- {op: replace, path: /spec/workerGroupSpecs/3/maxReplicas, value: 3}", "does not exist"),
    ("spec: {enableInTreeAutoscaling: false}", "only JSON 6902 patches"),
])
def test_the_renderer_refuses_what_it_cannot_do_exactly(tmp_path, patch, error):
    write_overlay(tmp_path, patch)
    with pytest.raises(RenderError, match=error):
        render(tmp_path)


# -- what the manifests promise -------------------------------------------------------------
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_rayjob_builds_the_same_cluster_as_the_raycluster(rendered, name):
    [cluster], [job], [service] = (by_kind(rendered[name], k) for k in ("RayCluster", "RayJob", "RayService"))
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]
    serving = service["spec"]["rayClusterConfig"]  # the API key variable too: every cluster serves with it
    assert serving["headGroupSpec"] == cluster["spec"]["headGroupSpec"]
    # the serving cluster differs only in how many workers it keeps; gpu-8x keeps base's 1-GPU pods
    # for serving, as one replica needs one GPU
    workers = by_kind(rendered["base" if name == "overlays/gpu-8x" else name], "RayCluster")[0]["spec"]["workerGroupSpecs"]
    counts = ("replicas", "minReplicas", "maxReplicas")
    strip = lambda groups: [{k: v for k, v in g.items() if k not in counts} for g in groups]  # noqa: E731
    assert strip(serving["workerGroupSpecs"]) == strip(workers)


def test_every_pod_runs_as_non_root_with_bounded_resources(rendered):
    problems = []
    for variant, obj in all_ray_objects(rendered):
        autoscaler = {"name": "autoscaler", **cluster_spec(obj)["autoscalerOptions"]}
        for where, template in pod_templates(obj):
            spec = template["spec"]
            security = spec.get("securityContext", {})
            if not security.get("runAsNonRoot") or not security.get("runAsUser"):
                problems.append(f"{variant} {where}: no runAsNonRoot/runAsUser")
            containers = spec["containers"] + ([autoscaler] if where.endswith(" head") else [])
            for c in containers:
                res = c.get("resources", {})
                for kind in ("requests", "limits"):
                    if not {"cpu", "memory"} <= set(res.get(kind, {})):
                        problems.append(f"{variant} {where} {c['name']}: no cpu/memory {kind}")
                if res.get("requests", {}).get("nvidia.com/gpu") != res.get("limits", {}).get("nvidia.com/gpu"):
                    problems.append(f"{variant} {where} {c['name']}: GPU requests differ from limits")
                if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{variant} {where} {c['name']}: privilege escalation not ruled out")
    assert not problems, "\n".join(problems)


def test_every_ray_container_has_shared_memory(rendered):
    problems = []
    for variant, obj in all_ray_objects(rendered):
        for where, template in pod_templates(obj):
            if where.endswith("submitter"):
                continue
            spec = template["spec"]
            memory_volumes = {v["name"]: v["emptyDir"] for v in spec.get("volumes", [])
                              if v.get("emptyDir", {}).get("medium") == "Memory"}
            mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0].get("volumeMounts", [])}
            if mounts.get("/dev/shm") not in memory_volumes:
                problems.append(f"{variant} {where}: no emptyDir medium Memory at /dev/shm")
                continue
            shm = parse_quantity(memory_volumes[mounts["/dev/shm"]]["sizeLimit"])
            store = int(cluster_group(obj, where).get("rayStartParams", {}).get("object-store-memory", 0))
            limit = parse_quantity(spec["containers"][0]["resources"]["limits"]["memory"])
            if not store < shm < limit:
                problems.append(f"{variant} {where}: want object store {store} < /dev/shm {shm} < memory limit {limit}")
    assert not problems, "\n".join(problems)


def cluster_group(obj: dict, where: str) -> dict:
    spec = cluster_spec(obj)
    if where.endswith(" head"):
        return spec["headGroupSpec"]
    name = where.rsplit(" ", 1)[-1]
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == name)


def embedded_env_names(obj: dict) -> list[str]:
    """Environment variable names set by a RayJob's runtimeEnvYAML or a RayService's apps."""
    envs = []
    if "runtimeEnvYAML" in obj["spec"]:
        envs.append(yaml.safe_load(obj["spec"]["runtimeEnvYAML"]).get("env_vars", {}))
    if "serveConfigV2" in obj["spec"]:
        envs += [app.get("runtime_env", {}).get("env_vars", {})
                 for app in yaml.safe_load(obj["spec"]["serveConfigV2"])["applications"]]
    return [name for env in envs for name in env]


def test_credentials_come_only_from_secrets(rendered):
    secret_name = re.compile(r"(?:^|_)(?:SECRET|TOKEN|PASSWORD|ACCESS_KEY|API_KEY)(?:_|$)|^AWS_")
    for variant, objs in rendered.items():
        assert not by_kind(objs, "Secret"), f"{variant}: a Secret is part of the kustomization"
        for obj in [o for o in objs if o["kind"] in RAY_KINDS]:
            assert cluster_spec(obj)["authOptions"] == {"mode": "token", "secretName": AUTH_SECRET}
            leaked = [n for n in embedded_env_names(obj) if secret_name.search(n)]
            assert not leaked, f"{variant} {obj['kind']}: {leaked} set in an embedded config"
            for where, template in pod_templates(obj):
                for c in template["spec"]["containers"]:
                    literal = [e["name"] for e in c.get("env", []) if "value" in e and secret_name.search(e["name"])]
                    assert not literal, f"{variant} {where}: {literal} given inline"
                    if not where.endswith("submitter"):
                        assert {"secretRef": {"name": S3_SECRET}} in c.get("envFrom", []), f"{variant} {where}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_clusters_autoscale_with_autoscaler_v2(rendered, name):
    for obj in [o for o in rendered[name] if o["kind"] in RAY_KINDS]:
        spec = cluster_spec(obj)
        assert spec["rayVersion"] == importlib.import_module("ray").__version__
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["autoscalerOptions"]["version"] == "v2" and spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
        head = spec["headGroupSpec"]
        assert {"name": "RAY_enable_autoscaler_v2", "value": "1"} in head["template"]["spec"]["containers"][0]["env"]
        assert head["rayStartParams"]["num-cpus"] == "0", "nothing should be scheduled on the head"
        assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
        for _, template in pod_templates(obj):
            assert template["spec"]["restartPolicy"] == "Never"
        for g in spec["workerGroupSpecs"]:
            assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"], g["groupName"]
        if name != "overlays/cpu-demo":
            gpus = [g for g in spec["workerGroupSpecs"]
                    if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
            assert gpus and all(g["minReplicas"] < g["maxReplicas"] for g in gpus)


# -- the commands inside the manifests ------------------------------------------------------
def settings_from_argv(argv: list[str]):
    """What `python -m <module> <args>` would load: the jobs' own argument parser."""
    parser = argparse.ArgumentParser()
    add_settings_args(parser)
    return settings_from_args(parser.parse_args(argv))


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_rayjob_runs_the_loop_with_a_config_that_loads(rendered, name):
    [job] = by_kind(rendered[name], "RayJob")
    spec = job["spec"]
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode")
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    assert spec["ttlSecondsAfterFinished"] > 0

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    from ray.runtime_env import RuntimeEnv

    assert set(runtime_env) <= RuntimeEnv.known_fields, set(runtime_env) - RuntimeEnv.known_fields
    RuntimeEnv(**runtime_env)

    argv = entrypoint_argv(job)
    assert argv[:3] == ["python", "-m", "jobs.self_lengthen"], argv
    assert callable(importlib.import_module(argv[2]).main)
    config = argv[argv.index("--config") + 1]
    assert (REPO / config).is_file(), config
    settings = settings_from_argv(argv[3:])
    assert settings.ray.address is None, "the job gets RAY_ADDRESS; a config must not pin an address"
    assert settings.storage.is_s3, "pods share no disk: the run must live on S3"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_rayservice_serves_the_generator_through_jobs_serve(rendered, name):
    [service] = by_kind(rendered[name], "RayService")
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert set(config) <= set(ServeDeploySchema.model_fields)
    ServeDeploySchema.model_validate(config)
    [app] = config["applications"]
    assert set(app) <= set(ServeApplicationSchema.model_fields)
    assert app["import_path"] == "jobs.serve:app_builder"
    module, attr = app["import_path"].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    args = app["args"]
    assert args["round"] == "latest" or isinstance(args["round"], int)
    settings = load_settings(REPO / args["config"], args.get("set", []))
    assert settings.storage.is_s3


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_rayservice_requires_an_api_key_from_a_secret(rendered, name):
    """The app checks `Authorization: Bearer` against the variable api_key_env names (tested for
    real in tests/test_serve_app.py): every pod of the RayService has it, from the Secret."""
    [service] = by_kind(rendered[name], "RayService")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    [app] = config["applications"]
    assert app["args"]["api_key_env"] == API_KEY_ENV
    from_secret = {"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": API_KEY_SECRET, "key": "api_key"}}}
    for where, template in pod_templates(service):
        for c in template["spec"]["containers"]:
            assert from_secret in c.get("env", []), f"{name} {where} {c['name']}: no {API_KEY_ENV} from {API_KEY_SECRET}"
    example = {d["metadata"]["name"]: d for d in load_docs(K8S / "secrets.example.yaml")}
    assert "api_key" in example[API_KEY_SECRET]["stringData"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_loops_own_app_requires_the_api_key_too(rendered, name):
    """The RayJob's loop serves its roles on 0.0.0.0:8000 inside the cluster: its entrypoint names
    the same variable as serving.api_key_env, and every pod of its cluster (and of the
    RayCluster built the same way) has it from the Secret."""
    [job] = by_kind(rendered[name], "RayJob")
    assert loop_settings(job).serving.api_key_env == API_KEY_ENV
    from_secret = {"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": API_KEY_SECRET, "key": "api_key"}}}
    for where, c, _ in ray_containers({name: rendered[name]}):
        if " RayService " not in f" {where} ":
            assert from_secret in c.get("env", []), f"{where}: no {API_KEY_ENV}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_serve_runs_haproxy_as_its_http_proxy_in_every_cluster(rendered, name):
    """Measured with bench/api_fast_paths.py: HAProxy in front of the OpenAI ingress serves the
    same replay 1.2-1.45x faster than Serve's own proxy, with the API key still checked. Every
    Ray process must see the flag, so every Ray pod has it (not the RayJob's submitter)."""
    flag = {"name": "RAY_SERVE_ENABLE_HA_PROXY", "value": "1"}
    for where, c, _ in ray_containers({name: rendered[name]}):
        assert flag in c.get("env", []), f"{where}: no {flag['name']}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_a_network_policy_limits_who_reaches_the_pods(rendered, name):
    [policy] = by_kind(rendered[name], "NetworkPolicy")
    spec = policy["spec"]
    pod_labels = [t["metadata"]["labels"] for _, o in all_ray_objects({name: rendered[name]}) for _, t in pod_templates(o)]
    assert all(spec["podSelector"]["matchLabels"].items() <= labels.items() for labels in pod_labels)
    assert spec["policyTypes"] == ["Ingress"]
    ports = {p["port"] for rule in spec["ingress"] for p in rule.get("ports", [])}
    assert 8000 in ports, "the OpenAI endpoint is not limited to labelled clients"
    for rule in spec["ingress"]:
        if not rule.get("ports"):  # all ports: only from the clusters' own pods
            assert rule["from"] == [{"podSelector": spec["podSelector"]}], rule
        assert rule.get("from"), "a rule without `from` admits everyone"
    service = by_kind(rendered[name], "RayService")[0]
    assert yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]["port"] == 8000


def test_only_head_pods_mount_a_service_account_token(rendered):
    """The head's autoscaler sidecar and the capacity check read the Kubernetes API; no other
    pod does. The autoscaler and the submitter run with a read-only root filesystem."""
    for variant, obj in all_ray_objects(rendered):
        spec = cluster_spec(obj)
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["autoscalerOptions"]["securityContext"]["readOnlyRootFilesystem"] is True
        for where, template in pod_templates(obj):
            wanted = where.endswith(" head")
            assert template["spec"].get("automountServiceAccountToken") is wanted, f"{variant} {where}"
            if where.endswith("submitter"):
                [c] = template["spec"]["containers"]
                assert c["securityContext"]["readOnlyRootFilesystem"] is True
                assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}


# -- read-only root filesystems, and what stays writable ------------------------------------
# Every container's root filesystem is read-only. What Ray, vLLM, torch, Triton, DeepSpeed and
# the Hugging Face libraries write goes to emptyDir volumes mounted at exactly these paths:
WRITABLE = {
    "/tmp": "Ray's session folder (logs, sockets, spilled objects), tempfile, the weight copies of training and engines",
    "/dev/shm": "Ray's object store, vLLM's and NCCL's shared memory",
    "/home/ray/.cache": "the caches the variables below point to",
}
# and these variables move every cache that would otherwise land in the read-only $HOME (/home/ray)
CACHE_ENV = {"XDG_CACHE_HOME", "XDG_CONFIG_HOME", "HF_HOME", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR",
             "TRITON_HOME", "TRITON_CACHE_DIR", "TORCH_EXTENSIONS_DIR", "CUDA_CACHE_PATH", "NUMBA_CACHE_DIR"}
POD_HOME = "/home/ray"


def containers_of(obj: dict) -> list[tuple[str, dict, dict]]:
    """(where, container, pod spec) for every container and init container of a Ray object's pods."""
    out = []
    for where, template in pod_templates(obj):
        spec = template["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            out.append((f"{where} {c['name']}", c, spec))
    return out


def ray_containers(rendered: dict) -> list[tuple[str, dict, dict]]:
    """The containers that run Ray (head and workers: not the submitter, which runs `ray job submit`)."""
    return [(f"{variant} {where}", c, spec) for variant, obj in all_ray_objects(rendered)
            for where, c, spec in containers_of(obj) if " submitter " not in where]


def writable_mounts(container: dict, spec: dict) -> set[str]:
    """The container's mount paths backed by a writable emptyDir."""
    empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    return {m["mountPath"].rstrip("/") or "/" for m in container.get("volumeMounts", [])
            if m["name"] in empty_dirs and not m.get("readOnly")}


def under(path: str, mounts: set[str]) -> bool:
    return any(path == m or path.startswith(m + "/") for m in mounts)


def path_env(container: dict) -> dict[str, str]:
    """The container's variables that hold an absolute path."""
    return {e["name"]: e["value"] for e in container.get("env", []) if str(e.get("value", "")).startswith("/")}


def test_every_container_has_a_read_only_root_filesystem(rendered):
    """Ray's head and workers, the autoscaler sidecar and the RayJob's submitter, in every variant."""
    problems, seen = [], 0
    for variant, obj in all_ray_objects(rendered):
        if cluster_spec(obj)["autoscalerOptions"].get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
            problems.append(f"{variant} {obj['kind']} autoscaler")
        for where, c, _ in containers_of(obj):
            seen += 1
            if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
                problems.append(f"{variant} {where}")
    assert seen >= 7 * len(KUSTOMIZATIONS)  # 3 objects x (head + worker group) + the submitter
    assert not problems, "a writable root filesystem:\n" + "\n".join(problems)


def test_ray_containers_write_only_to_mounted_volumes(rendered):
    """/tmp, /dev/shm and /home/ray/.cache are emptyDir volumes in every Ray container, every
    cache variable is set, and every path a variable names lies inside one of those volumes.
    All Ray containers share one layout (the next test resolves it once for all of them)."""
    problems, layouts = [], set()
    for where, c, spec in ray_containers(rendered):
        mounts = writable_mounts(c, spec)
        problems += [f"{where}: {path} is not a writable emptyDir mount" for path in sorted(set(WRITABLE) - mounts)]
        env = path_env(c)
        problems += [f"{where}: {name} is not set" for name in sorted(CACHE_ENV - set(env))]
        problems += [f"{where}: {name}={value} is outside the writable volumes"
                     for name, value in sorted(env.items()) if not under(value, mounts)]
        layouts.add(tuple(sorted(env.items())))
    assert not problems, "\n".join(problems)
    assert len(layouts) == 1, f"the Ray containers differ in their cache variables: {layouts}"


# Where each library writes, asked of the library itself (run in a fresh interpreter with only the
# container's variables): a misspelt variable, or a library that moved its default, shows here.
WHERE_THEY_WRITE = r"""
import json, os, tempfile
out = {}
def ask(label, fn):
    try:
        out[label] = fn()
    except ImportError:
        out[label] = None
def hf():
    import huggingface_hub.constants as c
    return [c.HF_HOME, c.HF_HUB_CACHE, c.HF_XET_CACHE] if hasattr(c, "HF_XET_CACHE") else [c.HF_HOME, c.HF_HUB_CACHE]
def triton_dirs():
    from triton import knobs
    return [knobs.cache.dir, knobs.cache.dump_dir, knobs.cache.override_dir]
def torch_extensions():  # where DeepSpeed's JIT-built ops go (torch.utils.cpp_extension.load)
    from torch.utils.cpp_extension import _get_build_directory
    return _get_build_directory("probe", False)
def inductor():
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    return cache_dir()
def torch_hub():
    import torch.hub
    return torch.hub.get_dir()
def vllm_dirs():
    import vllm.envs as e
    return [e.VLLM_CACHE_ROOT, e.VLLM_CONFIG_ROOT]
def numba_dir():
    from numba.core import config
    return config.CACHE_DIR
def matplotlib_dir():
    import matplotlib
    return [os.path.join(matplotlib._get_xdg_config_dir(), "matplotlib"),
            os.path.join(matplotlib._get_xdg_cache_dir(), "matplotlib")]
def ray_temp():
    from ray._common.utils import get_default_ray_temp_dir
    return get_default_ray_temp_dir()
ask("huggingface", hf)
ask("triton", triton_dirs)
ask("torch extensions", torch_extensions)
ask("torchinductor", inductor)
ask("torch hub", torch_hub)
ask("vllm", vllm_dirs)
ask("numba", numba_dir)
ask("matplotlib", matplotlib_dir)
ask("ray", ray_temp)
ask("tempfile", tempfile.gettempdir)
print(json.dumps(out))
"""


def test_the_libraries_caches_resolve_into_the_mounted_volumes(rendered, tmp_path):
    """With the Ray containers' environment (HOME /home/ray, no TMPDIR, the cache variables),
    every library names a folder inside /tmp, /dev/shm or /home/ray/.cache. The pod's paths are
    re-rooted under tmp_path, so nothing is written outside it."""
    where, container, spec = ray_containers(rendered)[0]  # one layout for all (the test above)
    root = os.path.realpath(tmp_path)
    for mount in writable_mounts(container, spec):  # the volumes exist in the pod: make them here
        os.makedirs(root + mount, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": root + POD_HOME, "TMPDIR": root + "/tmp",  # /tmp, re-rooted
           **{name: root + value for name, value in path_env(container).items()}}
    out = subprocess.run([sys.executable, "-c", WHERE_THEY_WRITE], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    answers = json.loads(out.stdout.strip().splitlines()[-1])
    for required in ("huggingface", "torch extensions", "torchinductor", "ray", "tempfile"):  # the rest may be absent
        assert answers[required] is not None, f"{required} is not installed"
    mounts = {root + m for m in writable_mounts(container, spec)}
    outside = []
    for label, paths in answers.items():
        for path in [paths] if isinstance(paths, str) else paths or []:
            if not path:
                continue  # e.g. numba without NUMBA_CACHE_DIR: next to the source (read-only: not cached)
            if not under(os.path.realpath(path), mounts):
                outside.append(f"{label}: {path[len(root):] if path.startswith(root) else path}")
    assert not outside, f"{where}: written outside the mounted volumes:\n" + "\n".join(outside)


# -- images by digest -----------------------------------------------------------------------
DIGEST_REF = re.compile(r"[a-z0-9][a-z0-9._/-]*(?::[\w][\w.-]{0,127})?@sha256:[0-9a-f]{64}")


def image_refs(node, where: str = "") -> list[tuple[str, str]]:
    """(where, reference) of every `image` in an object: containers, init containers, and the
    autoscaler's (which KubeRay takes from the head's container when it is not set)."""
    if isinstance(node, dict):
        found = [(where, node["image"])] if isinstance(node.get("image"), str) else []
        return found + [r for k, v in node.items() for r in image_refs(v, f"{where}/{k}")]
    if isinstance(node, list):
        return [r for i, v in enumerate(node) for r in image_refs(v, f"{where}/{i}")]
    return []


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_image_is_pulled_by_digest(rendered, name):
    refs = [(f"{o['kind']} {o['metadata']['name']}{w}", r) for o in rendered[name] for w, r in image_refs(o)]
    assert len(refs) >= 7, refs  # 3 objects x (head + worker group) + the submitter
    by_tag = [f"{where}: {ref}" for where, ref in refs if not DIGEST_REF.fullmatch(ref)]
    assert not by_tag, "images by tag, not digest:\n" + "\n".join(by_tag)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pinning_the_pushed_image_reaches_every_container(tmp_path, name):
    """What k8s/README.md tells you to do with the image you pushed: one `images` entry with
    newName and digest, in an overlay of any of the kustomizations, pins every container."""
    digest = "sha256:" + "5e1f" * 16
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(K8S / name, tmp_path)}]\nimages:\n  - name: self-lengthen-ray\n"
        f"    newName: registry.example.com/ml/self-lengthen-ray\n    digest: {digest}\n")
    refs = {ref for obj in build(tmp_path) for _, ref in image_refs(obj)}
    assert refs == {f"registry.example.com/ml/self-lengthen-ray@{digest}"}


# -- capacity: configs against the clusters the manifests describe --------------------------
def loop_settings(job: dict):
    return settings_from_argv(entrypoint_argv(job)[3:])


def service_settings(service: dict):
    [app] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    return load_settings(REPO / app["args"]["config"], app["args"].get("set", []))


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_shipped_configs_fit_the_manifests(rendered, name):
    [cluster], [job], [service] = (by_kind(rendered[name], k) for k in ("RayCluster", "RayJob", "RayService"))
    loop = loop_settings(job)
    # the RayCluster is there for `ray job submit` of the same command
    for obj in (cluster, job):
        assert check_capacity(loop, groups_from_raycluster(obj), source=MANIFEST_SOURCE) == []
    assert check_capacity(service_settings(service), groups_from_raycluster(service), "serve", MANIFEST_SOURCE) == []


def qwen2(*overrides: str):
    return load_settings(REPO / "configs/qwen2-7b-instruct.yaml", list(overrides))


def test_capacity_rejects_more_training_workers_than_the_manifests_have(rendered):
    [job] = by_kind(rendered["base"], "RayJob")
    problems = check_capacity(qwen2("training.num_workers=64"), groups_from_raycluster(job), source=MANIFEST_SOURCE)
    assert ("training needs 64 workers x {GPU: 1, CPU: 6} = 64 GPU, but the largest cluster the manifests "
            "describe has 16 GPU (group gpu-workers: maxReplicas 16 x 1 GPU)") in problems


def test_capacity_rejects_a_replica_larger_than_any_node(rendered):
    [job] = by_kind(rendered["base"], "RayJob")
    problems = check_capacity(qwen2("serving.generator.resources={GPU: 2, CPU: 6}"), groups_from_raycluster(job))
    assert len(problems) == 1
    assert problems[0].startswith("synthesis: one of the generator+extender replicas needs {GPU: 2, CPU: 7} on a single node")


def test_capacity_rejects_bundles_that_fit_in_total_but_not_per_node(rendered):
    [job] = by_kind(rendered["overlays/gpu-8x"], "RayJob")  # 2 nodes x 8 GPUs
    settings = qwen2("serving.generator.resources={GPU: 3, CPU: 6}", "serving.generator.max_replicas=5")
    [problem] = check_capacity(settings, groups_from_raycluster(job))
    assert "the totals fit, but the bundles do not pack" in problem and "4 of 5 generator+extender replicas placed" in problem


def test_capacity_counts_idle_replicas_when_serving_stays_up_during_training(rendered):
    [job] = by_kind(rendered["base"], "RayJob")  # 16 GPUs: 8 for training, 9 idle replicas is one too many
    groups = groups_from_raycluster(job)
    assert check_capacity(qwen2("serving.generator.min_replicas=9"), groups) == []
    [problem] = check_capacity(qwen2("serving.generator.min_replicas=9", "serving.release_during_training=false"), groups)
    assert problem.startswith("training needs 8 workers x {GPU: 1, CPU: 6} + 9 idle generator+extender replicas")


def test_capacity_in_full_mode_counts_both_roles(rendered):
    [job] = by_kind(rendered["base"], "RayJob")
    # full mode serves each role on its own replicas: 16 + 8 GPUs do not fit 16
    settings = qwen2("serving.mode=full", "training.method=full")
    [problem] = check_capacity(settings, groups_from_raycluster(job))
    assert "16 generator replicas" in problem and "8 extender replicas" in problem and "= 24 GPU" in problem


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_node_groups_agree_with_the_ray_autoscaler(rendered, name):
    try:
        from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    except ImportError:
        pytest.skip("this Ray has no KubeRay autoscaling config reader")
    for obj in [o for o in rendered[name] if o["kind"] in RAY_KINDS]:
        cr = {"metadata": {"name": "x", "namespace": "default"}, "spec": cluster_spec(obj)}
        types = _derive_autoscaling_config_from_ray_cr(cr)["available_node_types"]
        theirs = {name: {r: v for r, v in t["resources"].items() if v} for name, t in types.items()}
        ours = {("headgroup" if g.name == "head" else g.name): g.resources for g in groups_from_raycluster(obj)}
        assert ours == theirs
        assert {g.name: g.max_count for g in groups_from_raycluster(obj) if g.name != "head"} == {
            name: t["max_workers"] for name, t in types.items() if name != "headgroup"}


def test_node_groups_of_a_live_cluster():
    node = {"Alive": True, "Resources": {"CPU": 4.0, "memory": 8e9, "object_store_memory": 2e9,
                                         "node:127.0.0.1": 1.0, "node:__internal_head__": 1.0}}
    dead = {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}
    groups = groups_from_ray_nodes([node, dead])
    assert groups == [NodeGroup("nodes-1", 1, {"CPU": 4.0, "memory": 8e9})]
    tiny = load_settings(REPO / "configs/tiny.yaml")
    # the tiny config's two engines (2 CPUs each) and its shard worker need 4.25 CPUs; its two
    # training workers beside the engines it keeps up (release_during_training: false) need 6
    synthesis, training = check_capacity(tiny, groups, source="the cluster as it is now")
    assert "= 4.25 CPU, but the cluster as it is now has 4 CPU" in synthesis
    assert training.startswith("training needs 2 workers") and "= 6 CPU, but the cluster as it is now" in training
    assert check_capacity(tiny, groups_from_ray_nodes([{**node, "Resources": {"CPU": 8.0}}])) == []

    autoscaler = groups_from_autoscaler([{"name": "gpu-workers", "resources": {"CPU": 12, "GPU": 1}, "max_count": 16},
                                         {"name": "spot", "resources": {"CPU": 12, "GPU": 1}, "max_count": -1}])
    assert check_capacity(qwen2("training.num_workers=64"), autoscaler) == []
    assert check_capacity(qwen2("training.num_workers=64"), autoscaler[:1]) != []


def test_live_groups_inside_kuberay_read_the_raycluster(rendered, tmp_path, monkeypatch):
    """In a KubeRay pod the check reads the RayCluster through the Kubernetes API (faked here)."""
    import cluster.capacity as capacity
    from cluster.capacity import kuberay_api

    [manifest] = by_kind(rendered["overlays/gpu-8x"], "RayCluster")
    asked = []

    class FakeApi:
        def __init__(self, namespace):
            self.namespace = namespace

        def get(self, path):
            asked.append((self.namespace, path))
            return manifest

    (tmp_path / "namespace").write_text("team-a\n")
    monkeypatch.setattr(kuberay_api, "NAMESPACE_FILE", str(tmp_path / "namespace"))
    monkeypatch.setattr(kuberay_api, "KubeRayApi", FakeApi)
    monkeypatch.setenv("RAY_CLUSTER_NAME", "self-lengthen")
    live = capacity.live_groups()
    assert asked == [("team-a", "rayclusters/self-lengthen")]
    assert live.groups == groups_from_raycluster(manifest) and not live.may_grow
    assert live.source == "the largest cluster RayCluster self-lengthen allows"


def test_the_raycluster_is_read_with_the_pods_service_account(tmp_path, monkeypatch):
    """One GET on the API server's in-cluster address, the mounted token as bearer, the
    mounted CA as the only trusted one: `get rayclusters` is the RBAC this needs."""
    from cluster.capacity import kuberay_api

    (tmp_path / "token").write_text("t0ken\n")
    monkeypatch.setattr(kuberay_api, "TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT_HTTPS", "6443")
    calls = []

    class Reply:
        def raise_for_status(self):
            pass

        def json(self):
            return {"kind": "RayCluster"}

    monkeypatch.setattr(kuberay_api.requests, "get", lambda url, **kw: calls.append((url, kw)) or Reply())
    assert kuberay_api.KubeRayApi("team-a").get("rayclusters/x") == {"kind": "RayCluster"}
    [(url, kw)] = calls
    assert url == "https://10.0.0.1:6443/apis/ray.io/v1/namespaces/team-a/rayclusters/x"
    assert kw["headers"] == {"Authorization": "Bearer t0ken"} and kw["verify"] == kuberay_api.CA_FILE


@pytest.mark.cluster
def test_live_groups_of_an_embedded_ray():
    """live_groups() against a real (embedded) Ray, in a process of its own."""
    script = (
        "import json, ray\n"
        "ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)\n"
        "from cluster.capacity import live_groups\n"
        "live = live_groups()\n"
        "print(json.dumps({'source': live.source, 'may_grow': live.may_grow,\n"
        "                  'groups': [[g.name, g.max_count, g.resources] for g in live.groups]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    live = json.loads(out.stdout.strip().splitlines()[-1])
    assert live["may_grow"] and live["source"] == "the cluster as it is now"
    groups = [NodeGroup(name, count, resources) for name, count, resources in live["groups"]]
    assert [g.resources["CPU"] for g in groups] == [4.0]
    synthesis, training = check_capacity(load_settings(REPO / "configs/tiny.yaml"), groups, source=live["source"])
    assert "4.25 CPU" in synthesis and "6 CPU" in training


# -- helpers for other tests ----------------------------------------------------------------
def test_k8s_entrypoint_is_the_rayjobs_command_with_the_tiny_config():
    argv = k8s_entrypoint(REPO)
    job_argv = entrypoint_argv(load_docs(K8S / "base/rayjob.yaml")[0])
    config_at = job_argv.index("--config") + 1
    assert argv[:config_at] == job_argv[:config_at] and argv[config_at + 1:] == job_argv[config_at + 1:]
    assert argv[config_at] == "configs/tiny.yaml"
    # relative local paths resolve where the job starts (the working dir it was submitted with)
    assert settings_from_argv(argv[3:]).model.base == os.path.abspath("models/tiny")


# -- the image ------------------------------------------------------------------------------
DOCKERFILE = K8S / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_is_the_ray_image_of_the_pinned_ray_with_the_project():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    ray_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("ray["))
    ray_version = ray_pin.split("==")[1]
    args = {a.split("=")[0]: a.split("=", 1)[1] for kind, a in dockerfile_instructions() if kind == "ARG" and "=" in a}
    assert args["RAY_IMAGE"] == f"rayproject/ray:{ray_version}-py311-gpu"
    assert args["VLLM_EXTRA"] == "gpu" and "vllm==0.29.0" in pyproject["project"]["optional-dependencies"]["gpu"]
    assert "deepspeed==0.19.8" in pyproject["project"]["dependencies"]
    runs = " ".join(a for kind, a in dockerfile_instructions() if kind == "RUN")
    assert '".[${VLLM_EXTRA}]"' in runs

    user = next(a for kind, a in dockerfile_instructions() if kind == "USER")
    assert int(user.split(":")[0]) != 0
    copied = {a.split()[-2] for kind, a in dockerfile_instructions() if kind == "COPY"}
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"the image does not copy {pattern}"
    assert "configs" in copied


def test_the_modules_the_dockerfile_names_import():
    runs = " ".join(a for kind, a in dockerfile_instructions() if kind == "RUN")
    modules = {m for group in re.findall(r'python -c "import ([\w., ]+)"', runs) for m in group.split(", ")}
    modules |= set(re.findall(r"python -m ([\w.]+)", runs))
    assert {"jobs.self_lengthen", "jobs.serve", "toyworld"} <= modules
    for module in sorted(modules):
        importlib.import_module(module)


def test_no_registry_host_is_named():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "://" not in text
    images = [a.split("=", 1)[1] for kind, a in dockerfile_instructions() if kind == "ARG" and a.startswith("RAY_IMAGE=")]
    images += re.findall(r"RAY_IMAGE=(\S+)", text)
    for variant in KUSTOMIZATIONS:
        for path in (K8S / variant).glob("*.yaml"):
            images += re.findall(r"image: *(\S+)", path.read_text(encoding="utf-8"))
    for image in images:
        first = image.split("/")[0]
        assert "/" not in image or not ("." in first or ":" in first), f"{image} names a registry host"


# -- the GPU-hours estimate quoted in the runbook -------------------------------------------
def test_the_runbook_quotes_the_current_gpu_hours_estimate():
    from cluster.capacity.gpu_hours import estimate

    runbook = (REPO / "docs/runbook.md").read_text(encoding="utf-8")
    quoted = re.search(r"<!-- gpu_hours -->\n```json\n(.*?)\n```", runbook, re.S)
    assert quoted, "docs/runbook.md lost its quoted estimate"
    expected = estimate(qwen2())
    assert json.loads(quoted.group(1)) == json.loads(json.dumps(expected)), (
        "the estimate changed: paste the output of `python -m bench.gpu_hours` into docs/runbook.md")


def test_entrypoints_quote_cleanly(rendered):
    # KubeRay hands the entrypoint to a shell: keep it free of anything a shell would rewrite
    for variant, objs in rendered.items():
        [job] = by_kind(objs, "RayJob")
        assert shlex.join(entrypoint_argv(job)) == job["spec"]["entrypoint"], variant
