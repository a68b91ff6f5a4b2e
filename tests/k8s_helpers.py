"""Reading k8s/ without a Kubernetes cluster: render the kustomizations, load the KubeRay CRD
schemas, and pull the commands out of the manifests.

Rendering: `kubectl kustomize` (the real kustomize, built into kubectl) where kubectl is
installed, else `render()` below, a small renderer of the subset of kustomize that k8s/ uses:

    resources   files, and folders holding a kustomization.yaml
    images      name -> newName / newTag / digest, in every `containers` / `initContainers` list
    patches     `path:` or inline `patch:`, with a `target` (group, version, kind, name; kind and
                name are anchored regular expressions, as in kustomize); JSON 6902 operations
                add, remove, replace and test only

Strategic-merge patches are refused rather than approximated: on custom resources (RayCluster,
RayJob, RayService) kustomize has no merge keys and replaces lists whole, which is easy to get
wrong. A test checks that both renderers give the same objects where kubectl is present.
"""

from __future__ import annotations

import copy
import functools
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
CRD_DIR = REPO.parent / "shared" / "kuberay-crds"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayService": "ray.io_rayservices.yaml"}
KUSTOMIZATIONS = ("base", "overlays/gpu-8x", "overlays/cpu-demo")


class RenderError(ValueError):
    pass


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


# -- the renderer ---------------------------------------------------------------------------
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}


def render(folder: Path) -> list[dict]:
    """The objects `kustomize build folder` gives, for the subset described above."""
    folder = Path(folder)
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"{folder}/kustomization.yaml: {sorted(unknown)} not supported by this renderer")
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        objects += render(path) if path.is_dir() else load_docs(path)
    for patch in kustomization.get("patches", []):
        ops = yaml.safe_load((folder / patch["path"]).read_text(encoding="utf-8") if "path" in patch else patch["patch"])
        if not isinstance(ops, list):
            raise RenderError(f"{folder}: only JSON 6902 patches (a list of operations) are supported, got {patch}")
        targets = [o for o in objects if matches(o, patch.get("target", {}))]
        if not targets:
            raise RenderError(f"{folder}: patch {patch.get('path', '(inline)')} matches no object")
        for obj in targets:
            for op in ops:
                apply_op(obj, op)
    for image in kustomization.get("images", []):  # after the patches, as kustomize does
        for obj in objects:
            set_images(obj, image)
    return objects


def matches(obj: dict, target: dict) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    checks = [("group", group), ("version", version), ("kind", obj["kind"]), ("name", obj["metadata"]["name"])]
    return all(re.fullmatch(target[key], value) for key, value in checks if key in target)


def set_images(node, image: dict) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    container["image"] = new_image(container.get("image", ""), image)
            else:
                set_images(value, image)
    elif isinstance(node, list):
        for item in node:
            set_images(item, image)


def new_image(ref: str, image: dict) -> str:
    name, tag = ref.split("@")[0], None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name != image["name"]:
        return ref
    name = image.get("newName", name)
    if "digest" in image:
        return f"{name}@{image['digest']}"
    tag = image.get("newTag", tag)
    return f"{name}:{tag}" if tag else name


def pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"not a JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def resolve(node, parts: list[str], path: str):
    for part in parts:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError):
            raise RenderError(f"path {path} does not exist") from None
    return node


def apply_op(obj: dict, op: dict) -> None:
    kind, path = op["op"], op["path"]
    *parents, last = pointer(path)
    parent = resolve(obj, parents, path)
    if kind == "test":
        if resolve(parent, [last], path) != op["value"]:
            raise RenderError(f"test failed at {path}: {resolve(parent, [last], path)!r} != {op['value']!r}")
    elif kind == "add":
        value = copy.deepcopy(op["value"])
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            parent[last] = value
    elif kind in ("replace", "remove"):
        resolve(parent, [last], path)  # must exist
        key = int(last) if isinstance(parent, list) else last
        if kind == "remove":
            del parent[key]
        else:
            parent[key] = copy.deepcopy(op["value"])
    else:
        raise RenderError(f"JSON patch operation {kind!r} is not supported")


def kubectl_kustomize(folder: Path) -> list[dict] | None:
    """`kubectl kustomize folder`, or None where kubectl is not installed."""
    if not shutil.which("kubectl"):
        return None
    out = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RenderError(f"kubectl kustomize {folder}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def build(folder: Path) -> list[dict]:
    """The rendered objects: by the real kustomize if available, else by `render`."""
    objects = kubectl_kustomize(folder)
    return objects if objects is not None else render(folder)


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


# -- commands inside the manifests ----------------------------------------------------------
def base_rayjob(repo: Path = REPO) -> dict:
    [job] = [d for d in load_docs(repo / "k8s/base/rayjob.yaml") if d["kind"] == "RayJob"]
    return job


def entrypoint_argv(job: dict) -> list[str]:
    return shlex.split(job["spec"]["entrypoint"])


def k8s_entrypoint(repo: Path = REPO) -> list[str]:
    """The base RayJob's entrypoint as an argv list, with its config replaced by
    configs/tiny.yaml, e.g. ["python", "-m", "jobs.self_lengthen", "--config", "configs/tiny.yaml"]."""
    argv = entrypoint_argv(base_rayjob(Path(repo)))
    if "--config" not in argv:
        raise ValueError(f"the RayJob's entrypoint names no --config: {argv}")
    argv[argv.index("--config") + 1] = "configs/tiny.yaml"
    return argv


# -- the KubeRay CRD schemas ----------------------------------------------------------------
INT_FORMATS = {"int32": 2**31, "int64": 2**63}


def crd_schema(kind: str, strict: bool = True) -> dict:
    """spec.versions[name=v1].schema.openAPIV3Schema of the CRD for `kind`. With `strict`, an
    object schema that lists its properties rejects any other (as the API server does with
    field validation Strict, kubectl's default): a misspelt field fails instead of vanishing."""
    crd = yaml.safe_load((CRD_DIR / CRD_FILES[kind]).read_text(encoding="utf-8"))
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    return tighten(schema) if strict else schema


def tighten(node):
    if isinstance(node, dict):
        node = {k: tighten(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return node
    if isinstance(node, list):
        return [tighten(v) for v in node]
    return node


@functools.lru_cache(maxsize=None)
def validator(kind: str):
    import jsonschema

    checker = jsonschema.FormatChecker()
    for name, bound in INT_FORMATS.items():
        checker.checks(name)(lambda value, bound=bound: not isinstance(value, int) or -bound <= value < bound)
    return jsonschema.Draft7Validator(crd_schema(kind), format_checker=checker)


def schema_errors(obj: dict) -> list[str]:
    errors = validator(obj["kind"]).iter_errors(obj)
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message[:300]}"
            for e in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))]
