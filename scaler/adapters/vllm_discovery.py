"""vLLM scrape targets from a Kubernetes label selector: the bridge's ``--selector``.

:class:`PodDiscovery` lists the pods of one namespace matching the selector through the official
client (read-only: pods ``list``), with the daemon's connection settings
(:func:`scaler.adapters.kubernetes.load_api_client`). :func:`targets_of` keeps the pods that can
serve: not being deleted, with a pod IP, and condition ``Ready`` true. Each becomes
``http://IP:PORT/PATH``, replica = the pod's name; ``port`` is a number or the name of a container
port of the pod (like a Service's ``targetPort``), so pods need not all listen on the same one.
An API error (refused credentials, RBAC, unreachable, timeout) raises :class:`DiscoveryError` with a
short reason; the bridge then keeps its last good list.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from scaler.adapters.vllm import DiscoveryError

_REASONS = {401: "unauthorized", 403: "forbidden", 404: "not_found"}


def port_of(pod: Any, port: int | str) -> int | None:
    """Return ``port`` if it is a number, else the number of the pod's container port named ``port``."""
    if isinstance(port, int):
        return port
    containers = (pod.spec.containers or []) if pod.spec is not None else []
    for container in containers:
        for declared in container.ports or ():
            if declared.name == port:
                return int(declared.container_port)
    return None


def is_ready(pod: Any) -> bool:
    """Return True if ``pod`` is not being deleted, has an IP and its condition Ready is True."""
    status = pod.status
    if pod.metadata.deletion_timestamp is not None or status is None or not status.pod_ip:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or ())


def targets_of(pods: Iterable[Any], *, port: int | str, path: str) -> dict[str, str]:
    """Return URL -> pod name for the Ready pods of ``pods`` (those without the named ``port`` skipped)."""
    found: dict[str, str] = {}
    for pod in sorted(pods, key=lambda p: str(p.metadata.name)):
        number = port_of(pod, port)
        if number is None or not is_ready(pod):
            continue
        ip = str(pod.status.pod_ip)
        host = f"[{ip}]" if ":" in ip else ip
        found[f"http://{host}:{number}{path}"] = str(pod.metadata.name)
    return found


class PodDiscovery:
    """Lists the Ready pods of ``namespace`` matching ``selector`` as vLLM targets."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        selector: str,
        port: int | str = 8000,
        path: str = "/metrics",
        request_timeout: float = 5.0,
    ) -> None:
        """Create a discovery over ``api``; nothing is requested until :meth:`targets`."""
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.selector = selector
        self.port = port
        self.path = path if path.startswith("/") else f"/{path}"
        self.request_timeout = request_timeout

    async def targets(self) -> dict[str, str]:
        """Return URL -> pod name of the matching Ready pods; raise DiscoveryError if unlistable."""
        return await asyncio.to_thread(self._targets)

    def _targets(self) -> dict[str, str]:
        try:
            listed = self.core.list_namespaced_pod(
                self.namespace, label_selector=self.selector, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            reason = _REASONS.get(int(exc.status or 0), "api_error")
            raise DiscoveryError(
                reason, f"listing pods {self.selector!r} in {self.namespace}: HTTP {exc.status}"
            ) from None
        except (HTTPError, OSError) as exc:  # connection refused, TLS, timeouts
            detail = f"listing pods in {self.namespace}: {type(exc).__name__}: {str(exc)[:200]}"
            raise DiscoveryError("unreachable", detail) from None
        return targets_of(listed.items, port=self.port, path=self.path)
