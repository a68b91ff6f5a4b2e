"""The RayCluster this process runs in, read from the Kubernetes API server.

KubeRay sets RAY_CLUSTER_NAME on every Ray container, and Kubernetes mounts a pod's
service-account credentials under /var/run/secrets/kubernetes.io/serviceaccount (in k8s/ only
head pods get them: `automountServiceAccountToken`). With those, one GET on the API server's
in-cluster address is all it takes, the route Kubernetes documents for programs in a pod
("Accessing the Kubernetes API from a Pod"):

    GET https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT_HTTPS
        /apis/ray.io/v1/namespaces/<namespace>/rayclusters/<name>
    Authorization: Bearer <the mounted token>, verified against the mounted ca.crt

The `kubernetes` client library is not part of this project's environment; for one GET,
`requests` (which Ray already installs) is enough.

RBAC: `get` on `rayclusters` (API group ray.io) in the pod's own namespace. KubeRay's Role for
the in-tree autoscaler already grants the head pod's service account that (get/list/patch on
pods and rayclusters), so k8s/ adds nothing. Without the permission, without the mounted
credentials, or outside Kubernetes, `kuberay_manifest()` returns None and the caller falls
back to what Ray itself reports (live.py).
"""

from __future__ import annotations

import os

import requests

# Set by KubeRay on every Ray container: the name of the RayCluster the pod belongs to.
CLUSTER_NAME_ENV = "RAY_CLUSTER_NAME"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NAMESPACE_FILE = f"{SERVICE_ACCOUNT_DIR}/namespace"
TOKEN_FILE = f"{SERVICE_ACCOUNT_DIR}/token"
CA_FILE = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
RAY_API = "ray.io/v1"  # the API version of k8s/'s RayCluster, RayJob and RayService
REQUEST_TIMEOUT_S = 60


def api_server() -> str:
    """The API server's in-cluster HTTPS address, from the variables Kubernetes sets in every pod."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
    port = os.environ.get("KUBERNETES_SERVICE_PORT_HTTPS", "443")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"https://{host}:{port}"


class KubeRayApi:
    """GETs KubeRay objects of one namespace with the pod's service-account token."""

    def __init__(self, namespace: str):
        self.namespace = namespace

    def get(self, path: str) -> dict:
        """`path` starts with the resource type, e.g. "rayclusters/self-lengthen"."""
        with open(TOKEN_FILE, encoding="utf-8") as f:
            token = f.read().strip()
        url = f"{api_server()}/apis/{RAY_API}/namespaces/{self.namespace}/{path}"
        reply = requests.get(url, headers={"Authorization": f"Bearer {token}"}, verify=CA_FILE,
                             timeout=REQUEST_TIMEOUT_S)
        reply.raise_for_status()
        return reply.json()


def kuberay_manifest() -> dict | None:
    """The RayCluster this process runs in, as the API server returns it; None outside a
    KubeRay pod or when the API cannot be read."""
    name = os.environ.get(CLUSTER_NAME_ENV)
    if not name or not os.path.exists(NAMESPACE_FILE):
        return None
    try:
        with open(NAMESPACE_FILE, encoding="utf-8") as f:
            namespace = f.read().strip()
        return KubeRayApi(namespace).get(f"rayclusters/{name}")
    except Exception:  # noqa: BLE001 - no permission, no API server: fall back to what Ray knows
        return None
