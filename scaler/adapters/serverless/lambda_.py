"""Lambda backend: provisioned concurrency on a function alias, reserved concurrency as the quota.

A Lambda execution environment serves one request at a time, so one serverless instance (the
capacity of one replica) is ``replica.max_concurrency`` concurrent executions. Pre-warmed instances
are provisioned concurrency on the alias (``put_provisioned_concurrency_config``; 0 deletes the
config); the quota is the function's reserved concurrency (``serverless_quota * max_concurrency``,
``put_function_concurrency``). Lambda has no GPUs: see :data:`scaler.core.backends.LAMBDA` for the
cold start this implies and why provisioned concurrency is what makes it fast.
"""

from __future__ import annotations

from typing import Final

from botocore.exceptions import ClientError

from scaler.adapters.serverless import _aws
from scaler.adapters.serverless._aws import AwsClients, Connection
from scaler.core import actuation
from scaler.core.policy import LambdaTarget, ServerlessTarget
from scaler.ports import PermanentError, ServerlessState

IAM_ACTIONS: Final[tuple[str, ...]] = (
    "lambda:GetProvisionedConcurrencyConfig",
    "lambda:PutProvisionedConcurrencyConfig",
    "lambda:DeleteProvisionedConcurrencyConfig",
    "lambda:GetFunctionConcurrency",
    "lambda:PutFunctionConcurrency",
)


def _own(target: ServerlessTarget) -> LambdaTarget:
    if not isinstance(target, LambdaTarget):
        raise PermanentError(f"{target.key}: not a lambda target")
    return target


class LambdaServerless:
    """Provisioned concurrency of the Lambda alias a policy names (a ServerlessPort)."""

    def __init__(self, connection: Connection) -> None:
        """Create the adapter; clients are made on first use."""
        self.aws = AwsClients(connection)

    async def read(self, target: ServerlessTarget, *, max_concurrency: int) -> ServerlessState:
        """Return the alias's provisioned instances (requested) and those available; raise TransientError or
        PermanentError."""
        own = _own(target)
        requested, available = await _aws.call(lambda: self._provisioned(own), what=f"read {own.key}")
        instances = actuation.instances_from_units
        return ServerlessState(
            provisioned=instances(units=requested, max_concurrency=max_concurrency),
            ready=instances(units=min(available, requested), max_concurrency=max_concurrency),
        )

    async def set_provisioned(
        self, target: ServerlessTarget, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        """Provision ``instances`` on the alias and the quota as reserved concurrency; raise on failure."""
        own = _own(target)
        await _aws.call(
            lambda: self._set(own, instances=instances, quota=quota, max_concurrency=max_concurrency),
            what=f"provision {instances} on {own.key}",
        )

    async def set_quota(self, target: ServerlessTarget, *, quota: int, max_concurrency: int) -> None:
        """Set the function's reserved concurrency to ``quota`` instances; raise on failure."""
        own = _own(target)
        await _aws.call(
            lambda: self._quota(own, quota=quota, max_concurrency=max_concurrency),
            what=f"quota {quota} on {own.key}",
        )

    def _provisioned(self, target: LambdaTarget) -> tuple[int, int]:
        """Return the alias's (requested, available) provisioned concurrent executions."""
        lam = self.aws.client("lambda", target.region)
        try:
            config = lam.get_provisioned_concurrency_config(
                FunctionName=target.function_name, Qualifier=target.alias
            )
        except ClientError as exc:
            if _aws.error_code(exc) == "ProvisionedConcurrencyConfigNotFoundException":
                return 0, 0
            raise
        requested = int(config.get("RequestedProvisionedConcurrentExecutions", 0))
        return requested, int(config.get("AvailableProvisionedConcurrentExecutions", 0))

    def _set(self, target: LambdaTarget, *, instances: int, quota: int, max_concurrency: int) -> None:
        lam = self.aws.client("lambda", target.region)
        reserved = self._quota(target, quota=quota, max_concurrency=max_concurrency)
        wanted = actuation.units_from_instances(instances=instances, max_concurrency=max_concurrency)
        units = min(wanted, reserved)
        if units == 0:
            try:
                lam.delete_provisioned_concurrency_config(
                    FunctionName=target.function_name, Qualifier=target.alias
                )
            except ClientError as exc:
                if _aws.error_code(exc) != "ResourceNotFoundException":
                    raise
            return
        lam.put_provisioned_concurrency_config(
            FunctionName=target.function_name, Qualifier=target.alias, ProvisionedConcurrentExecutions=units
        )

    def _quota(self, target: LambdaTarget, *, quota: int, max_concurrency: int) -> int:
        """Set the function's reserved concurrency to the quota if it differs; return it (executions)."""
        lam = self.aws.client("lambda", target.region)
        reserved = actuation.units_from_instances(instances=quota, max_concurrency=max_concurrency)
        current = lam.get_function_concurrency(FunctionName=target.function_name)
        if current.get("ReservedConcurrentExecutions") != reserved:
            lam.put_function_concurrency(
                FunctionName=target.function_name, ReservedConcurrentExecutions=reserved
            )
        return reserved
