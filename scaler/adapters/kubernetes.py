"""Kubernetes actuator: replicas of the Deployment/StatefulSet named in a policy, and its warm standby.

Replicas change only through the ``scale`` subresource, with optimistic concurrency: the Scale is
read, and replaced with its ``resourceVersion``; a 409 Conflict means someone else changed it, so
the call is reported as transient and :mod:`scaler.adapters.actuator` re-reads and re-applies
(never forced). Every change records a Kubernetes Event on the workload with the reason.

Operators stay in charge: a workload annotated ``spillway.io/paused: "true"`` is read back as
paused (the actuators then never write it); before replicas of a Deployment go down, the pods to
remove first are marked with a low ``controller.kubernetes.io/pod-deletion-cost`` (pods: list, patch).

Warm standby: a second workload of the same model (``targets.kubernetes.standby_name``) whose pods
carry labels outside the model's Service selector: loaded and warm, taking no traffic. Promotion is
"serving up first, standby down after" (:func:`scaler.core.actuation.order_for_promotion`): the
serving pods take the nodes, image cache and GPU capacity the standby pool kept warm, and the pool
is refilled when the planner asks for it again.

Warm standby by label (:meth:`KubernetesActuator.set_standby_pods`): standby pods can also be pods
of the serving workload itself, loaded and Ready, kept out of the Service because their label
``spillway.io/role`` says ``standby`` while the Service selects ``serving``. The workload runs
``replicas + standby`` pods (its template says ``serving``); promotion is one label patch per pod
(the EndpointSlice controller adds it to the Service within about a second), and the pod keeps its
GPU, image and loaded weights: a standby costs what a replica costs. Starting pods are chosen as
standby first, so a scale-up promotes a warm standby at once and the refill cold-starts instead.

Cold starts: every read also lists the workload's pods (its selector) and reports each one's
``creationTimestamp`` and the ``lastTransitionTime`` of its ``Ready`` condition
(:func:`pod_cold_starts`), for :mod:`scaler.control.leadtime`; a failed listing only leaves them out.

The official client is synchronous: every call runs in :func:`asyncio.to_thread`.
:data:`RBAC_RULES` lists every verb on every resource this module calls (the Helm chart's Role).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
import uuid
from typing import TYPE_CHECKING, Any, Final

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError, SSLError

from scaler.adapters.actuator import (
    ConflictError,
    KubeState,
    PermanentError,
    PodInfo,
    Superseded,
    TransientError,
)
from scaler.control.leadtime import ColdStart
from scaler.core import operators
from scaler.core.policy import KubernetesTarget

if TYPE_CHECKING:
    from scaler.settings import KubernetesSettings

RBAC_RULES: Final[tuple[dict[str, tuple[str, ...]], ...]] = (
    {"apiGroups": ("apps",), "resources": ("deployments", "statefulsets"), "verbs": ("get",)},
    {
        "apiGroups": ("apps",),
        "resources": ("deployments/scale", "statefulsets/scale"),
        "verbs": ("get", "update"),
    },
    {"apiGroups": ("",), "resources": ("events",), "verbs": ("create",)},
    {"apiGroups": ("",), "resources": ("pods",), "verbs": ("list", "patch")},
)
ROLE_LABEL: Final = "spillway.io/role"  # serving: behind the Service; standby: warm, out of it
COMPONENT: Final = "spillway-scaler"
EVENT_REASON: Final = "SpillwayScaled"
_TRANSIENT_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})  # 409 is a ConflictError


def api_client_for(kubernetes: KubernetesSettings) -> client.ApiClient:
    """Return the API client the ``kubernetes`` settings section names (see :func:`load_api_client`).

    Raises ValueError as :func:`load_api_client` does.
    """

    def path(value: object) -> str | None:
        return str(value) if value is not None else None

    return load_api_client(
        host=kubernetes.host,
        token_file=path(kubernetes.token_file),
        ca_file=path(kubernetes.ca_file),
        kubeconfig=path(kubernetes.kubeconfig),
        context=kubernetes.context,
        in_cluster=kubernetes.in_cluster,
    )


def load_api_client(
    *,
    host: str | None,
    kubeconfig: str | None,
    in_cluster: bool,
    token_file: str | None = None,
    ca_file: str | None = None,
    context: str | None = None,
) -> client.ApiClient:
    """Return an API client from one source: ``host`` (with ``token_file`` and ``ca_file``), in-cluster
    config, or the kubeconfig file (``context``, else its current context).

    The token file is read again whenever it changes (projected tokens rotate). Raises ValueError
    naming the source when the configuration cannot be loaded.
    """
    configuration = client.Configuration()
    configuration.retries = 0  # one retry layer only: scaler.adapters.actuator (backoff, metrics)
    if host is not None:
        configuration.host = host
        if ca_file is not None:
            _readable(ca_file, what="kubernetes_ca_file")
            configuration.ssl_ca_cert = ca_file
        if token_file is not None:
            _use_token_file(configuration, token_file)
        return client.ApiClient(configuration)
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
    except (config.ConfigException, OSError) as exc:
        source = (
            "in-cluster service account" if in_cluster else f"kubeconfig {kubeconfig or '~/.kube/config'}"
        )
        raise ValueError(f"kubernetes: cannot load {source}: {exc}") from None
    return client.ApiClient(configuration)


def _readable(path: str, *, what: str) -> bytes:
    """Return the bytes of ``path``; raise ValueError naming the setting ``what`` when it cannot be read."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"kubernetes: cannot read {what} {path}: {exc.strerror}") from None


def _use_token_file(configuration: client.Configuration, path: str) -> None:
    """Authenticate ``configuration`` with the bearer token in ``path``, re-read when the file changes.

    Raises ValueError when the file cannot be read or is empty now; later, an unreadable or empty
    file keeps the last good token (the API's 401 then reports the problem).
    """
    token = _readable(path, what="kubernetes_token_file").decode("utf-8", "replace").strip()
    if not token:
        raise ValueError(f"kubernetes: kubernetes_token_file {path} is empty")
    seen = {"mtime": os.stat(path).st_mtime}
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}

    def refresh(target: client.Configuration) -> None:
        try:
            mtime = os.stat(path).st_mtime
            if mtime == seen["mtime"]:
                return
            with open(path, "rb") as file:
                fresh = file.read().decode("utf-8", "replace").strip()
        except OSError:
            return
        if fresh:
            target.api_key = {"authorization": fresh}
            seen["mtime"] = mtime

    configuration.refresh_api_key_hook = refresh  # type: ignore[assignment]  # typed None upstream


_HINTS: Final = {
    401: "the API refused the credentials (token or kubeconfig user)",
    403: "forbidden by RBAC (see the chart's Role and rbac.targets)",
    404: "not found (check the policy's targets: namespace, kind, name)",
}


def _classify(exc: Exception, *, what: str) -> Exception:
    """Return the TransientError or PermanentError for a client exception (message without bodies).

    Permanent: a 4xx other than 408/409/429 (401, 403 and 404 with a hint) and a TLS verification
    failure; everything else (5xx, throttling, conflicts, timeouts, connection errors) is transient.
    """
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = f"{what}: HTTP {status} {exc.reason}"
        if status in _HINTS:
            message = f"{message}: {_HINTS[status]}"
        if status == 409:
            return ConflictError(message)
        return (
            TransientError(message) if status in _TRANSIENT_STATUS or status == 0 else PermanentError(message)
        )
    reason = getattr(exc, "reason", None)
    if isinstance(exc, SSLError | ssl.SSLError) or isinstance(reason, SSLError | ssl.SSLError):
        return PermanentError(
            f"{what}: TLS verification of the API server failed (check kubernetes_ca_file or the "
            f"kubeconfig's certificate-authority): {reason or exc}"
        )
    return TransientError(f"{what}: {type(exc).__name__}: {exc}")


class KubernetesActuator:
    """Reads and scales the workloads a policy names (and only those)."""

    def __init__(self, api: client.ApiClient, *, request_timeout: float = 5.0) -> None:
        """Wrap ``api``; each HTTP request is bounded by ``request_timeout`` seconds."""
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.version = client.VersionApi(api)
        self.timeout = request_timeout

    async def read(self, target: KubernetesTarget, *, name: str) -> KubeState:
        """Return desired/ready/starting replicas of ``name``; raise TransientError or PermanentError."""
        return await asyncio.to_thread(self._read, target, name)

    async def set_replicas(
        self,
        target: KubernetesTarget,
        *,
        name: str,
        replicas: int,
        reason: str,
        only_from: int | None = None,
    ) -> None:
        """Replace the Scale of ``name`` at the version just read and record an Event.

        Raises TransientError (409 included: retry re-reads) or PermanentError, and Superseded when
        ``only_from`` is given and the Scale no longer says that many replicas (changed out of band).
        """
        await asyncio.to_thread(self._set_replicas, target, name, replicas, reason, only_from)

    def _read(self, target: KubernetesTarget, name: str) -> KubeState:
        what = f"{target.kind} {target.namespace}/{name}"
        read = (
            self.apps.read_namespaced_deployment
            if target.kind == "Deployment"
            else self.apps.read_namespaced_stateful_set
        )
        try:
            obj = read(name, target.namespace, _request_timeout=self.timeout)
        except (ApiException, HTTPError, OSError) as exc:
            raise _classify(exc, what=f"read {what}") from None
        desired = int(obj.spec.replicas or 0) if obj.spec is not None else 0
        status = obj.status
        ready = int(status.ready_replicas or 0) if status is not None else 0
        meta = obj.metadata or client.V1ObjectMeta()
        return KubeState(
            desired=desired,
            ready=ready,
            starting=max(desired - ready, 0),
            paused=operators.is_paused(meta.annotations),
            generation=int(meta.generation) if meta.generation is not None else None,
            resource_version=meta.resource_version,
            pods=self._pod_starts(target, obj),
        )

    def _pod_starts(self, target: KubernetesTarget, workload: Any) -> tuple[ColdStart, ...]:
        """Return the cold starts of ``workload``'s pods; () when its selector or the listing fails."""
        spec = workload.spec
        query = _label_selector(spec.selector if spec is not None else None)
        if not query:
            return ()
        try:
            listed = self.core.list_namespaced_pod(
                target.namespace, label_selector=query, _request_timeout=self.timeout
            )
        except (ApiException, HTTPError, OSError):
            return ()
        return pod_cold_starts(listed.items or [])

    def _set_replicas(
        self, target: KubernetesTarget, name: str, replicas: int, reason: str, only_from: int | None
    ) -> None:
        what = f"{target.kind} {target.namespace}/{name}"
        deployment = target.kind == "Deployment"
        read = (
            self.apps.read_namespaced_deployment_scale
            if deployment
            else self.apps.read_namespaced_stateful_set_scale
        )
        replace = (
            self.apps.replace_namespaced_deployment_scale
            if deployment
            else self.apps.replace_namespaced_stateful_set_scale
        )
        try:
            scale = read(name, target.namespace, _request_timeout=self.timeout)
            meta = scale.metadata or client.V1ObjectMeta()
            before = int(scale.spec.replicas or 0) if scale.spec is not None else 0
            if before == replicas:
                return
            if only_from is not None and before != only_from:
                raise Superseded(f"{what} has {before} replicas, not the {only_from} read back")
            body = client.V1Scale(
                metadata=client.V1ObjectMeta(
                    name=name, namespace=target.namespace, resource_version=meta.resource_version
                ),
                spec=client.V1ScaleSpec(replicas=replicas),
            )
            replace(name, target.namespace, body, _request_timeout=self.timeout)
        except (ApiException, HTTPError, OSError) as exc:
            raise _classify(exc, what=f"scale {what} to {replicas}") from None
        self._event(target, name=name, uid=meta.uid, message=f"{before} -> {replicas} replicas; {reason}")

    async def record_event(
        self, target: KubernetesTarget, *, name: str, reason: str, message: str, warning: bool = False
    ) -> None:
        """Record an Event ``reason`` on the workload ``name`` (Warning if ``warning``); never raises."""
        await asyncio.to_thread(self._event_on, target, name, reason, message, warning)

    async def list_pods(self, target: KubernetesTarget, *, name: str) -> list[PodInfo]:
        """Return the pods selected by the workload ``name`` that are not being deleted.

        Raises TransientError or PermanentError (a workload without a selector is a PermanentError).
        """
        return await asyncio.to_thread(self._list_pods, target, name)

    async def set_deletion_cost(self, target: KubernetesTarget, *, pod: str, cost: int | None) -> None:
        """Patch the pod's pod-deletion-cost annotation (None removes it); raise on failure."""
        await asyncio.to_thread(self._set_deletion_cost, target, pod, cost)

    def _event_on(
        self, target: KubernetesTarget, name: str, reason: str, message: str, warning: bool
    ) -> None:
        read = (
            self.apps.read_namespaced_deployment
            if target.kind == "Deployment"
            else self.apps.read_namespaced_stateful_set
        )
        try:
            meta = read(name, target.namespace, _request_timeout=self.timeout).metadata
        except (ApiException, HTTPError, OSError):
            meta = None
        uid = meta.uid if meta is not None else None
        self._event(target, name=name, uid=uid, message=message, reason=reason, warning=warning)

    def _list_pods(self, target: KubernetesTarget, name: str) -> list[PodInfo]:
        what = f"pods of {target.kind} {target.namespace}/{name}"
        try:
            items = self._live_pods(target, name)
        except (ApiException, HTTPError, OSError) as exc:
            raise _classify(exc, what=f"list {what}") from None
        if items is None:
            raise PermanentError(f"list {what}: the workload has no label selector")
        pods = []
        for pod in items:
            meta = pod.metadata
            if not meta.name:
                continue
            cost = (meta.annotations or {}).get(operators.DELETION_COST_ANNOTATION)
            pods.append(PodInfo(name=meta.name, deletion_cost=cost))
        return pods

    def _set_deletion_cost(self, target: KubernetesTarget, pod: str, cost: int | None) -> None:
        value = None if cost is None else str(int(cost))
        body = {"metadata": {"annotations": {operators.DELETION_COST_ANNOTATION: value}}}
        try:
            self.core.patch_namespaced_pod(pod, target.namespace, body, _request_timeout=self.timeout)
        except (ApiException, HTTPError, OSError) as exc:
            raise _classify(exc, what=f"mark pod {target.namespace}/{pod}") from None

    async def server_version(self) -> tuple[str, str] | None:
        """Return the API server's (major, minor) from ``/version``, or None when it cannot be read."""
        return await asyncio.to_thread(self._server_version)

    def _server_version(self) -> tuple[str, str] | None:
        try:
            info = self.version.get_code(_request_timeout=self.timeout)
        except (ApiException, HTTPError, OSError):
            return None
        return str(info.major or ""), str(info.minor or "")

    async def read_split(self, target: KubernetesTarget) -> tuple[KubeState, KubeState]:
        """Return (serving, standby) counts of ``target.name`` whose standby pods are labelled standby.

        Raises TransientError or PermanentError.
        """
        return await asyncio.to_thread(self._read_split, target)

    def _read_split(self, target: KubernetesTarget) -> tuple[KubeState, KubeState]:
        whole = self._read(target, target.name)
        what = f"pods of {target.kind} {target.namespace}/{target.name}"
        try:
            pods = self._live_pods(target, target.name) or []
        except (ApiException, HTTPError, OSError) as exc:
            raise _classify(exc, what=f"read {what}") from None
        standby = [p for p in pods if (p.metadata.labels or {}).get(ROLE_LABEL) == "standby"]
        sb_ready = sum(1 for p in standby if _pod_ready(p))
        serving_ready = sum(1 for p in pods if _pod_ready(p)) - sb_ready
        desired = max(whole.desired - len(standby), 0)
        serving = KubeState(
            desired=desired, ready=serving_ready, starting=max(desired - serving_ready, 0), pods=whole.pods
        )
        return serving, KubeState(desired=len(standby), ready=sb_ready, starting=len(standby) - sb_ready)

    def _live_pods(self, target: KubernetesTarget, name: str) -> list[Any] | None:
        """Return the pods of workload ``name`` that are not being deleted, None when it has no selector.

        Raises the client's errors.
        """
        read = (
            self.apps.read_namespaced_deployment
            if target.kind == "Deployment"
            else self.apps.read_namespaced_stateful_set
        )
        workload = read(name, target.namespace, _request_timeout=self.timeout)
        query = _label_selector(workload.spec.selector if workload.spec is not None else None)
        if not query:
            return None
        listed = self.core.list_namespaced_pod(
            target.namespace, label_selector=query, _request_timeout=self.timeout
        )
        return [
            p for p in listed.items or [] if p.metadata is not None and p.metadata.deletion_timestamp is None
        ]

    async def set_label_standby(
        self, target: KubernetesTarget, *, replicas: int, standby: int, reason: str
    ) -> None:
        """Scale ``target.name`` to ``replicas + standby`` pods and label ``standby`` of them standby.

        Raises TransientError or PermanentError.
        """
        await asyncio.to_thread(self._set_replicas, target, target.name, replicas + standby, reason, None)
        await asyncio.to_thread(self._set_standby_pods, target, target.name, standby)

    async def set_standby_pods(self, target: KubernetesTarget, *, name: str, standby: int) -> dict[str, str]:
        """Label ``standby`` pods of workload ``name`` standby and the rest serving; return the patches made.

        Raises TransientError or PermanentError (a pod deleted meanwhile is skipped).
        """
        return await asyncio.to_thread(self._set_standby_pods, target, name, standby)

    def _set_standby_pods(self, target: KubernetesTarget, name: str, standby: int) -> dict[str, str]:
        what = f"{target.kind} {target.namespace}/{name}"
        try:
            pods = self._live_pods(target, name) or []
        except (ApiException, HTTPError, OSError) as exc:
            raise _classify(exc, what=f"label standby pods of {what}") from None
        rows = [
            (
                p.metadata.name,
                _pod_ready(p),
                (p.metadata.labels or {}).get(ROLE_LABEL),
                p.metadata.creation_timestamp.timestamp() if p.metadata.creation_timestamp else 0.0,
            )
            for p in pods
            if p.metadata.name is not None
        ]
        flips = standby_choice(rows, standby=standby)
        for pod_name, role in flips.items():
            body = {"metadata": {"labels": {ROLE_LABEL: role}}}
            try:
                self.core.patch_namespaced_pod(
                    pod_name, target.namespace, body, _request_timeout=self.timeout
                )
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise _classify(exc, what=f"label pod {target.namespace}/{pod_name} {role}") from None
            except (HTTPError, OSError) as exc:
                raise _classify(exc, what=f"label pod {target.namespace}/{pod_name} {role}") from None
        return flips

    def _event(
        self,
        target: KubernetesTarget,
        *,
        name: str,
        uid: str | None,
        message: str,
        reason: str = EVENT_REASON,
        warning: bool = False,
    ) -> None:
        """Record an Event on the workload; a failure here does not undo the change (best effort)."""
        now = dt.datetime.now(dt.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"{name}.{uuid.uuid4().hex[:12]}", namespace=target.namespace),
            involved_object=client.V1ObjectReference(
                api_version="apps/v1", kind=target.kind, name=name, namespace=target.namespace, uid=uid
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self.core.create_namespaced_event(target.namespace, event, _request_timeout=self.timeout)
        except (ApiException, HTTPError, OSError):
            return


def _label_selector(selector: Any) -> str:
    """Return a label selector string for a V1LabelSelector (matchLabels and matchExpressions); '' if none."""
    if selector is None:
        return ""
    parts = [f"{key}={value}" for key, value in sorted((selector.match_labels or {}).items())]
    for expression in selector.match_expressions or []:
        key, op, values = expression.key, expression.operator, sorted(expression.values or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def pod_cold_starts(pods: list[Any]) -> tuple[ColdStart, ...]:
    """Return one :class:`ColdStart` per live pod: creation -> its Ready condition's last transition
    (``ready_at`` None while not Ready). Pods being deleted before Ready, finished pods and pods
    without a creation time are left out (a cancelled start is no cold start)."""
    starts: list[ColdStart] = []
    for pod in pods:
        meta, status = pod.metadata, pod.status
        if meta is None or meta.creation_timestamp is None or meta.name is None:
            continue
        phase = status.phase if status is not None else None
        if phase in ("Succeeded", "Failed"):
            continue
        ready, ready_at = _pod_ready(pod), None
        for condition in (status.conditions if status is not None else None) or []:
            if condition.type == "Ready" and condition.status == "True" and condition.last_transition_time:
                ready_at = condition.last_transition_time.timestamp()
        if ready and ready_at is None:
            continue  # Ready, but not when: nothing to learn
        if ready_at is None and meta.deletion_timestamp is not None:
            continue
        starts.append(
            ColdStart(
                key=meta.name, uid=meta.uid, started_at=meta.creation_timestamp.timestamp(), ready_at=ready_at
            )
        )
    return tuple(starts)


def standby_choice(pods: list[tuple[str, bool, str | None, float]], *, standby: int) -> dict[str, str]:
    """Return the label patches (pod name -> ``serving``/``standby``) that leave ``standby`` pods in
    standby, from ``pods`` as (name, Ready, current role, creation time).

    Standby is taken, in order, from pods still starting (newest first: they serve latest), pods
    already standby, then Ready serving pods (newest first); every other pod serves. Pure.
    """

    def rank(pod: tuple[str, bool, str | None, float]) -> tuple[int, float]:
        _, ready, role, created = pod
        if not ready:
            return 0, -created
        return (1 if role == "standby" else 2), -created

    chosen = {pod[0] for pod in sorted(pods, key=rank)[: max(standby, 0)]}
    flips: dict[str, str] = {}
    for name, _, role, _ in pods:
        wanted = "standby" if name in chosen else "serving"
        if role != wanted:
            flips[name] = wanted
    return flips


def _pod_ready(pod: Any) -> bool:
    """Return True when ``pod`` has a Ready condition that is True."""
    status = pod.status
    conditions = (status.conditions if status is not None else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def describe_rules() -> list[dict[str, Any]]:
    """Return :data:`RBAC_RULES` as plain lists (a Role's ``rules``)."""
    return [{key: list(values) for key, values in rule.items()} for rule in RBAC_RULES]
