"""Lambda backend: provisioned concurrency on a function alias, reserved concurrency as the quota.

A Lambda execution environment serves one request at a time, so one serverless instance (the
capacity of one replica) is ``replica.max_concurrency`` concurrent executions. Pre-warmed instances
are provisioned concurrency on the alias (``put_provisioned_concurrency_config``; 0 deletes the
config); the quota is the function's reserved concurrency (``serverless_quota * max_concurrency``,
``put_function_concurrency``).

The profile: AWS Lambda has no GPUs; a function runs on at most 10,240 MB of memory and 6 vCPUs. A
new execution environment downloads the code (a container image of up to 10 GB), starts the runtime
and runs the initialisation code before the first request; for an LLM that is loading gigabytes of
weights, tens of seconds to minutes (120 s is assumed). Provisioned concurrency is initialised ahead
of traffic and answers without that start (AWS designs it for double-digit millisecond latency): it
is what makes Lambda fast, and it is billed per hour whether used or not. AWS keeps an idle
environment for a period it calls non-deterministic; 60 s is assumed. Quota: reserved concurrency
(concurrent executions); price: per GB-second of duration plus provisioned concurrency.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from scaler.backends.base import (
    AWS_NAME_RE,
    Api,
    Backend,
    ServerlessBase,
    ServerlessState,
    instances_from_units,
    narrow,
    units_from_instances,
)
from scaler.core.profile import BackendProfile

IAM_ACTIONS: Final[tuple[str, ...]] = (
    "lambda:GetProvisionedConcurrencyConfig",
    "lambda:PutProvisionedConcurrencyConfig",
    "lambda:DeleteProvisionedConcurrencyConfig",
    "lambda:GetFunctionConcurrency",
    "lambda:PutFunctionConcurrency",
)


class LambdaTarget(ServerlessBase):
    """A Lambda function alias carrying provisioned concurrency; its reserved concurrency is the quota."""

    PROFILE = BackendProfile(
        name="lambda",
        cold_start_seconds=120.0,
        keep_warm_seconds=60.0,
        provisionable=True,
        per_token=False,
        quota_unit="reserved concurrency = serverless_quota x max_concurrency executions",
        price_unit="GB-second of duration; provisioned concurrency per hour",
        adapter_calls="Get/Put/DeleteProvisionedConcurrencyConfig, Get/PutFunctionConcurrency",
    )

    backend: Literal["lambda"] = Field(description="AWS Lambda.")
    function_name: str = Field(pattern=AWS_NAME_RE, description="Lambda function name.")
    alias: str = Field(pattern=AWS_NAME_RE, description="Lambda alias carrying provisioned concurrency.")

    @property
    def key(self) -> str:
        """Return ``lambda/function:alias``."""
        return f"lambda/{self.function_name}:{self.alias}"


class LambdaServerless:
    """Provisioned concurrency of the Lambda alias a policy names (a ServerlessPort)."""

    def __init__(self, api: Api) -> None:
        """Create the adapter; ``api``'s clients are made on first use."""
        self.api = api

    async def read(self, target: ServerlessBase, *, max_concurrency: int) -> ServerlessState:
        """Return the alias's provisioned instances (requested) and those available; raise TransientError or
        PermanentError."""
        own = narrow(target, LambdaTarget)
        requested, available = await self.api.call(lambda: self._provisioned(own), what=f"read {own.key}")
        return ServerlessState(
            provisioned=instances_from_units(units=requested, max_concurrency=max_concurrency),
            ready=instances_from_units(units=min(available, requested), max_concurrency=max_concurrency),
        )

    async def set_provisioned(
        self, target: ServerlessBase, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        """Provision ``instances`` on the alias and the quota as reserved concurrency; raise on failure."""
        own = narrow(target, LambdaTarget)
        await self.api.call(
            lambda: self._set(own, instances=instances, quota=quota, max_concurrency=max_concurrency),
            what=f"provision {instances} on {own.key}",
        )

    async def set_quota(self, target: ServerlessBase, *, quota: int, max_concurrency: int) -> None:
        """Set the function's reserved concurrency to ``quota`` instances; raise on failure."""
        own = narrow(target, LambdaTarget)
        await self.api.call(
            lambda: self._quota(own, quota=quota, max_concurrency=max_concurrency),
            what=f"quota {quota} on {own.key}",
        )

    def _provisioned(self, target: LambdaTarget) -> tuple[int, int]:
        """Return the alias's (requested, available) provisioned concurrent executions."""
        lam = self.api.client("lambda", target.region)
        try:
            config = lam.get_provisioned_concurrency_config(
                FunctionName=target.function_name, Qualifier=target.alias
            )
        except self.api.error as exc:
            if self.api.error_code(exc) == "ProvisionedConcurrencyConfigNotFoundException":
                return 0, 0
            raise
        requested = int(config.get("RequestedProvisionedConcurrentExecutions", 0))
        return requested, int(config.get("AvailableProvisionedConcurrentExecutions", 0))

    def _set(self, target: LambdaTarget, *, instances: int, quota: int, max_concurrency: int) -> None:
        lam = self.api.client("lambda", target.region)
        reserved = self._quota(target, quota=quota, max_concurrency=max_concurrency)
        wanted = units_from_instances(instances=instances, max_concurrency=max_concurrency)
        units = min(wanted, reserved)
        if units == 0:
            try:
                lam.delete_provisioned_concurrency_config(
                    FunctionName=target.function_name, Qualifier=target.alias
                )
            except self.api.error as exc:
                if self.api.error_code(exc) != "ResourceNotFoundException":
                    raise
            return
        lam.put_provisioned_concurrency_config(
            FunctionName=target.function_name, Qualifier=target.alias, ProvisionedConcurrentExecutions=units
        )

    def _quota(self, target: LambdaTarget, *, quota: int, max_concurrency: int) -> int:
        """Set the function's reserved concurrency to the quota if it differs; return it (executions)."""
        lam = self.api.client("lambda", target.region)
        reserved = units_from_instances(instances=quota, max_concurrency=max_concurrency)
        current = lam.get_function_concurrency(FunctionName=target.function_name)
        if current.get("ReservedConcurrentExecutions") != reserved:
            lam.put_function_concurrency(
                FunctionName=target.function_name, ReservedConcurrentExecutions=reserved
            )
        return reserved


BACKEND: Final = Backend(target=LambdaTarget, adapter=LambdaServerless, iam_actions=IAM_ACTIONS)
