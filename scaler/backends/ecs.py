"""ECS backend: the desired task count of an Amazon ECS service, each task one serverless instance.

One task runs one vLLM server with the capacity of one replica, so pre-warmed instances are the
service's ``desiredCount`` (``update_service``) and ready instances its ``runningCount``
(``describe_services``). The quota is ``bounds.serverless_quota`` tasks: ECS has no per-service
limit to set. On AWS Fargate (serverless containers, billed per vCPU- and GB-second while a task
runs) there are no GPUs; GPU tasks need an EC2 or managed-instances capacity provider behind the
service, billed per instance-hour. Either way a task kept running is what makes it fast.

The profile: a new task is placed, pulls its image (a vLLM image is several GB) and loads the
model's weights before it serves: minutes; 240 s is assumed. A service scaled in by target
tracking keeps its tasks for the scale-in cooldown; 300 s is assumed.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from scaler.backends.base import AWS_NAME_RE, Api, Backend, ServerlessBase, ServerlessState, narrow
from scaler.core.errors import PermanentError
from scaler.core.profile import BackendProfile

IAM_ACTIONS: Final[tuple[str, ...]] = ("ecs:DescribeServices", "ecs:UpdateService")
CLUSTER_RE = r"^[A-Za-z0-9][A-Za-z0-9_./:-]{0,1599}$"  # a cluster name (1-255) or its ARN


class EcsTarget(ServerlessBase):
    """An ECS service whose running tasks are the model's burst capacity."""

    PROFILE = BackendProfile(
        name="ecs",
        cold_start_seconds=240.0,
        keep_warm_seconds=300.0,
        provisionable=True,
        per_token=False,
        quota_unit="tasks of the service (bounds.serverless_quota)",
        price_unit="task vCPU/GB-second (Fargate) or instance-hour of the capacity provider",
        adapter_calls="DescribeServices, UpdateService",
    )

    backend: Literal["ecs"] = Field(description="An Amazon ECS service (Fargate or EC2 GPU capacity).")
    cluster: str = Field(pattern=CLUSTER_RE, description="ECS cluster name or ARN.")
    service: str = Field(pattern=AWS_NAME_RE, description="ECS service name: one task per instance.")

    @property
    def key(self) -> str:
        """Return ``ecs/cluster/service``."""
        return f"ecs/{self.cluster}/{self.service}"


class EcsServerless:
    """The desired tasks of the ECS service a policy names (a ServerlessPort)."""

    def __init__(self, api: Api) -> None:
        """Create the adapter; ``api``'s clients are made on first use."""
        self.api = api

    async def read(self, target: ServerlessBase, *, max_concurrency: int) -> ServerlessState:
        """Return the service's desired tasks (provisioned) and running ones (ready, at most desired).

        Raises PermanentError for a missing or inactive service, TransientError on throttling and 5xx.
        """
        own = narrow(target, EcsTarget)
        service = await self.api.call(lambda: self._service(own), what=f"read {own.key}")
        desired = int(service.get("desiredCount", 0))
        return ServerlessState(provisioned=desired, ready=min(int(service.get("runningCount", 0)), desired))

    async def set_provisioned(
        self, target: ServerlessBase, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        """Set the service's desired count to ``instances``, at most ``quota``; raise on failure."""
        own = narrow(target, EcsTarget)
        count = max(min(instances, quota), 0)

        def update() -> None:
            self._service(own)  # a missing or draining service is named, not created
            self.api.client("ecs", own.region).update_service(
                cluster=own.cluster, service=own.service, desiredCount=count
            )

        await self.api.call(update, what=f"provision {count} on {own.key}")

    def _service(self, target: EcsTarget) -> dict[str, Any]:
        """Return the ACTIVE service's description; raise PermanentError if it is missing or not active."""
        reply = self.api.client("ecs", target.region).describe_services(
            cluster=target.cluster, services=[target.service]
        )
        services = [dict(s) for s in reply.get("services", []) if s.get("serviceName") == target.service]
        if not services:
            reasons = sorted({str(f.get("reason", "?")) for f in reply.get("failures", [])}) or ["not found"]
            raise PermanentError(f"{target.key}: no such service ({', '.join(reasons)})")
        status = str(services[0].get("status", "ACTIVE"))
        if status != "ACTIVE":
            raise PermanentError(f"{target.key}: service is {status}, not ACTIVE")
        return services[0]


BACKEND: Final = Backend(target=EcsTarget, adapter=EcsServerless, iam_actions=IAM_ACTIONS)
