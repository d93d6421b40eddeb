"""The one hardened pod shape every pod the operator renders shares (serving, canary, training).

UID/GID 10001 is the non-root user both images create (inference_image/Dockerfile,
operator/Dockerfile), so a pod runs as the user its image was built for; the operator's own
Deployment in the chart uses the same value. Callers add what differs (mounts, probes, env).
"""

from __future__ import annotations

from typing import Any

#: the non-root user of the RecOps images (``useradd --uid 10001`` in both Dockerfiles)
RUN_AS_USER = 10001


def _non_root() -> dict[str, Any]:
    """Said at both levels: a container's own securityContext would override the pod's."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def pod_security_context() -> dict[str, Any]:
    return {**_non_root(), "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER}


def container_security_context() -> dict[str, Any]:
    return {
        **_non_root(),
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }


def hardened_pod_fields() -> dict[str, Any]:
    """Pod-level fields besides the security context: no API token, no service-link env."""
    return {"automountServiceAccountToken": False, "enableServiceLinks": False}
