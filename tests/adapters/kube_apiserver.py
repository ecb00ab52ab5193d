"""A Kubernetes API server for the actuator tests: kmock's emulator, extended to behave like a real one.

Run as a process: ``python kube_apiserver.py PORT``. kmock (pinned: this subclass reaches into its
request handling) stores objects and serves create/read/patch/list; this subclass adds what a real
API server does and kmock does not:

* ``metadata.resourceVersion`` and ``uid`` stamped on every write;
* ``PUT`` (replace) with 409 Conflict on a stale resourceVersion;
* the ``scale`` subresource of Deployments and StatefulSets (autoscaling/v1 Scale, GET/PATCH/PUT),
  and a stand-in controller that makes every replica ready at once (``status.readyReplicas``)
  unless readiness is held;
* ``labelSelector`` (equality terms) on list;
* a control API under ``/_control``: inject faults (status code or delay, for N matching
  requests), hold readiness, list the requests received (to check what was touched).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from typing import Any

import aiohttp.web
import kmock


class ApiServer(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator plus resourceVersion, PUT/409, scale subresource, label selectors, faults."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.version = 0
        self.faults: list[dict[str, Any]] = []
        self.received: list[dict[str, str]] = []
        self.hold_ready = False

    # -- helpers -------------------------------------------------------------------------------------
    def _find(self, request: kmock.Request) -> Any:
        for (resource, namespace, name), obj in self._objects.items():
            if resource == request.resource and namespace == request.namespace and name == request.name:
                return None if obj.deleted else obj
        return None

    def _stamp(self, obj: Any, *, new: bool) -> None:
        self.version += 1
        meta: dict[str, Any] = {"resourceVersion": str(self.version)}
        if new or not obj.get("metadata", {}).get("uid"):
            meta["uid"] = str(uuid.uuid4())
        obj.patch({"metadata": meta})
        spec = obj.get("spec", {})
        if "replicas" in spec and not self.hold_ready:
            replicas = spec["replicas"]
            obj.patch({"status": {"replicas": replicas, "readyReplicas": replicas}})

    @staticmethod
    def _status(code: int, message: str) -> aiohttp.web.Response:
        reason = {409: "Conflict", 404: "NotFound", 429: "TooManyRequests"}.get(code, "InternalError")
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        return aiohttp.web.json_response(body, status=code)

    def _scale(self, obj: Any) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "resourceVersion": meta.get("resourceVersion"),
                "uid": meta.get("uid"),
            },
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0)},
        }

    async def _control(self, request: kmock.Request) -> aiohttp.web.Response:
        path = request.url.path
        if path == "/_control/faults":
            self.faults.append(dict(request.data))
            return aiohttp.web.json_response({"faults": len(self.faults)})
        if path == "/_control/requests":
            return aiohttp.web.json_response(self.received)
        if path == "/_control/hold-ready":
            self.hold_ready = bool(request.data["hold"])
            return aiohttp.web.json_response({"hold": self.hold_ready})
        if path == "/_control/reset":
            self.faults.clear()
            self.received.clear()
            self.hold_ready = False
            return aiohttp.web.json_response({})
        return self._status(404, f"no control endpoint {path}")

    async def _fault(self, request: kmock.Request) -> aiohttp.web.Response | None:
        for fault in self.faults:
            if (
                fault["count"] > 0
                and fault["method"] == str(request.method.value).upper()
                and fault["path"] in request.url.path
            ):
                fault["count"] -= 1
                if "delay" in fault:
                    await asyncio.sleep(fault["delay"])
                    return None
                return self._status(fault["status"], f"injected {fault['status']}")
        return None

    # -- request handling ----------------------------------------------------------------------------
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.url.path.startswith("/_control/"):
            return await self._control(request)
        method = str(request.method.value).upper()
        self.received.append({"method": method, "path": request.url.path})
        fault = await self._fault(request)
        if fault is not None:
            return fault
        if request.resource is not None and request.name is not None:
            if request.subresource == "scale":
                return await self._serve_scale(request, method)
            if method == "PUT" and not request.subresource:
                return await self._replace(request)
        response = await super()._handle(request)
        if request.resource is not None and method in ("POST", "PATCH") and response.status < 300:
            name = request.name or (request.data or {}).get("metadata", {}).get("name")
            namespace = request.namespace or (request.data or {}).get("metadata", {}).get("namespace")
            probe = kmock.Request(resource=request.resource, namespace=namespace, name=name)
            obj = self._find(probe)
            if obj is not None:
                self._stamp(obj, new=method == "POST")
                return aiohttp.web.json_response(obj.raw, status=response.status)
        if request.resource is not None and method == "GET" and request.name is None:
            return self._select(request, response)
        return response

    def _select(self, request: kmock.Request, response: aiohttp.web.StreamResponse) -> Any:
        selector = request.params.get("labelSelector")
        if not selector or not isinstance(response, aiohttp.web.Response) or response.body is None:
            return response
        terms = dict(term.split("=", 1) for term in selector.replace("==", "=").split(","))
        data = json.loads(bytes(response.body))  # type: ignore[arg-type]
        data["items"] = [
            item
            for item in data.get("items", [])
            if all(item.get("metadata", {}).get("labels", {}).get(k) == v for k, v in terms.items())
        ]
        return aiohttp.web.json_response(data, status=response.status)

    async def _replace(self, request: kmock.Request) -> aiohttp.web.Response:
        async with self._lock:
            obj = self._find(request)
            if obj is None:
                return self._status(404, f"{request.name} not found")
            sent = (request.data or {}).get("metadata", {}).get("resourceVersion")
            if sent is not None and sent != obj["metadata"].get("resourceVersion"):
                return self._status(
                    409, "the object has been modified; please apply your changes to the latest version"
                )
            obj.patch(request.data)
            self._stamp(obj, new=False)
            return aiohttp.web.json_response(obj.raw)

    async def _serve_scale(self, request: kmock.Request, method: str) -> aiohttp.web.Response:
        async with self._lock:
            obj = self._find(request)
            if obj is None:
                return self._status(404, f"{request.name} not found")
            if method == "GET":
                return aiohttp.web.json_response(self._scale(obj))
            body = request.data or {}
            sent = body.get("metadata", {}).get("resourceVersion")
            if method == "PUT" and sent is not None and sent != obj["metadata"].get("resourceVersion"):
                return self._status(
                    409, "the object has been modified; please apply your changes to the latest version"
                )
            replicas = body.get("spec", {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                return self._status(422, "spec.replicas must be a non-negative integer")
            obj.patch({"spec": {"replicas": replicas}})
            self._stamp(obj, new=False)
            return aiohttp.web.json_response(self._scale(obj))


async def serve(port: int) -> None:
    """Serve the API on 127.0.0.1:``port`` until cancelled."""
    emulator = ApiServer()
    emulator.resources.load_bundled()
    async with emulator, kmock.Server(emulator, host="127.0.0.1", port=port):
        await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(int(sys.argv[1])))
