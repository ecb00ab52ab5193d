"""AWS serverless actuator: Lambda provisioned concurrency and SageMaker endpoint variant capacity.

One port (:class:`scaler.adapters.actuator.ServerlessPort`), two backends chosen by the policy's
``targets.serverless.backend``:

* **lambda**: a Lambda execution environment serves one request at a time, so one serverless
  instance (the capacity of one replica) is ``replica.max_concurrency`` concurrent executions.
  Pre-warmed instances are provisioned concurrency on the alias
  (``put_provisioned_concurrency_config``; 0 deletes the config); the quota is the function's
  reserved concurrency (``serverless_quota * max_concurrency``, ``put_function_concurrency``).
* **sagemaker**: an instance-backed variant's ``DesiredInstanceCount`` is the number of instances
  (``update_endpoint_weights_and_capacities``, which leaves the other variants alone). A serverless
  variant's ``ProvisionedConcurrency`` is in concurrent invocations like Lambda (instances *
  max_concurrency, at most the variant's ``MaxConcurrency``); it changes through a new endpoint
  config (a copy of the current one) and ``update_endpoint``.
* **sagemaker traffic weights**: when the target also names ``primary_variant`` (the variant
  serving the endpoint's steady traffic), the burst variant ``variant_name`` gets
  ``DesiredWeight`` = the decision's ``spill_fraction`` and the primary variant
  ``1 - spill_fraction`` (clamped to [0, 1]). Weights are read back from ``describe_endpoint``
  and left alone when every one is within 0.01 of the wanted value. A capacity change and a
  weight change go in the SAME ``update_endpoint_weights_and_capacities`` call (for a serverless
  variant: in the same new endpoint config, as ``InitialVariantWeight``). Variants the policy
  does not name are never put in a request. A named instance variant whose count is not being
  changed has its count restated as just described (an update that omits it may reset it, as the
  moto emulator does).

Credentials come from the standard boto3 chain; ``endpoint_url`` and ``region`` are settings.
boto3 is synchronous: every call runs in :func:`asyncio.to_thread`. botocore's own retries are
off: :mod:`scaler.adapters.actuator` retries with backoff and counts every retry.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Final

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from scaler.adapters.actuator import PermanentError, TransientError
from scaler.core import actuation
from scaler.core.policy import ServerlessTarget

IAM_ACTIONS: Final[tuple[str, ...]] = (
    "lambda:GetProvisionedConcurrencyConfig",
    "lambda:PutProvisionedConcurrencyConfig",
    "lambda:DeleteProvisionedConcurrencyConfig",
    "lambda:GetFunctionConcurrency",
    "lambda:PutFunctionConcurrency",
    "sagemaker:DescribeEndpoint",
    "sagemaker:DescribeEndpointConfig",
    "sagemaker:CreateEndpointConfig",
    "sagemaker:UpdateEndpoint",
    "sagemaker:UpdateEndpointWeightsAndCapacities",
)
_TRANSIENT_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ResourceConflictException",  # Lambda: an update is in progress
        "ServiceException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServerError",
    }
)


def _classify(exc: Exception, *, what: str) -> Exception:
    """Return the TransientError or PermanentError for a boto error (code and status only, no bodies)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        message = f"{what}: {code} (HTTP {status})"
        transient = code in _TRANSIENT_CODES or status == 429 or status >= 500
        return TransientError(message) if transient else PermanentError(message)
    return TransientError(f"{what}: {type(exc).__name__}")


class AwsServerless:
    """Provisioned serverless capacity of the Lambda alias or SageMaker variant a policy names."""

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        timeout_seconds: float = 5.0,
        session: boto3.session.Session | None = None,
    ) -> None:
        """Create the actuator; clients are made per (service, region) on first use."""
        self.endpoint_url = endpoint_url
        self.region = region
        self.session = session or boto3.session.Session()
        self.config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout_seconds,
            read_timeout=timeout_seconds,
        )
        self._clients: dict[tuple[str, str | None], Any] = {}

    def client(self, service: str, region: str | None) -> Any:
        """Return the (cached) boto3 client of ``service`` in ``region`` (or the default region)."""
        key = (service, region or self.region)
        if key not in self._clients:
            self._clients[key] = self.session.client(
                service, region_name=key[1], endpoint_url=self.endpoint_url, config=self.config
            )
        return self._clients[key]

    async def read(self, target: ServerlessTarget, *, max_concurrency: int) -> int:
        """Return the provisioned instances of ``target``; raise TransientError or PermanentError."""
        return await asyncio.to_thread(self._read, target, max_concurrency)

    async def set_provisioned(
        self, target: ServerlessTarget, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        """Provision ``instances`` on ``target`` (and the quota, for Lambda); raise on failure."""
        await asyncio.to_thread(self._set, target, instances, quota, max_concurrency)

    # -- Lambda -------------------------------------------------------------------------------------

    def _read(self, target: ServerlessTarget, max_concurrency: int) -> int:
        try:
            if target.backend == "lambda":
                units = self._lambda_provisioned(target)
                return actuation.instances_from_units(units=units, max_concurrency=max_concurrency)
            variant = self._variant(target)
            serverless = variant.get("CurrentServerlessConfig") or variant.get("DesiredServerlessConfig")
            if serverless is not None:
                units = int(serverless.get("ProvisionedConcurrency", 0))
                return actuation.instances_from_units(units=units, max_concurrency=max_concurrency)
            return int(variant.get("DesiredInstanceCount", variant.get("CurrentInstanceCount", 0)))
        except (ClientError, BotoCoreError) as exc:
            raise _classify(exc, what=f"read {_name(target)}") from None

    def _set(self, target: ServerlessTarget, instances: int, quota: int, max_concurrency: int) -> None:
        what = f"provision {instances} on {_name(target)}"
        try:
            if target.backend == "lambda":
                self._lambda_set(target, instances=instances, quota=quota, max_concurrency=max_concurrency)
            else:
                self._sagemaker_set(target, instances=instances, max_concurrency=max_concurrency)
        except (ClientError, BotoCoreError) as exc:
            raise _classify(exc, what=what) from None

    def _lambda_provisioned(self, target: ServerlessTarget) -> int:
        lam = self.client("lambda", target.region)
        try:
            config = lam.get_provisioned_concurrency_config(
                FunctionName=target.function_name, Qualifier=target.alias
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ProvisionedConcurrencyConfigNotFoundException":
                return 0
            raise
        return int(config.get("RequestedProvisionedConcurrentExecutions", 0))

    def _lambda_set(
        self, target: ServerlessTarget, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        lam = self.client("lambda", target.region)
        reserved = self._lambda_quota(target, quota=quota, max_concurrency=max_concurrency)
        units = min(actuation.lambda_units(instances=instances, max_concurrency=max_concurrency), reserved)
        if units == 0:
            try:
                lam.delete_provisioned_concurrency_config(
                    FunctionName=target.function_name, Qualifier=target.alias
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
            return
        lam.put_provisioned_concurrency_config(
            FunctionName=target.function_name, Qualifier=target.alias, ProvisionedConcurrentExecutions=units
        )

    def _lambda_quota(self, target: ServerlessTarget, *, quota: int, max_concurrency: int) -> int:
        """Set the function's reserved concurrency to the quota if it differs; return it (executions)."""
        lam = self.client("lambda", target.region)
        reserved = actuation.lambda_units(instances=quota, max_concurrency=max_concurrency)
        current = lam.get_function_concurrency(FunctionName=target.function_name)
        if current.get("ReservedConcurrentExecutions") != reserved:
            lam.put_function_concurrency(
                FunctionName=target.function_name, ReservedConcurrentExecutions=reserved
            )
        return reserved

    async def set_quota(self, target: ServerlessTarget, *, quota: int, max_concurrency: int) -> None:
        """Set a Lambda target's reserved concurrency to ``quota`` instances; raise on failure."""

        def run() -> None:
            try:
                self._lambda_quota(target, quota=quota, max_concurrency=max_concurrency)
            except (ClientError, BotoCoreError) as exc:
                raise _classify(exc, what=f"quota {quota} on {_name(target)}") from None

        await asyncio.to_thread(run)

    # -- SageMaker ----------------------------------------------------------------------------------

    async def read_weights(self, target: ServerlessTarget) -> dict[str, float]:
        """Return the DesiredWeight (else CurrentWeight) of the variants ``target`` names.

        Raises PermanentError if a named variant is missing, TransientError on throttling and 5xx.
        """

        def run() -> dict[str, float]:
            try:
                endpoint = self.client("sagemaker", target.region).describe_endpoint(
                    EndpointName=target.endpoint_name
                )
            except (ClientError, BotoCoreError) as exc:
                raise _classify(exc, what=f"read weights of {_name(target)}") from None
            by_name = {v.get("VariantName"): v for v in endpoint.get("ProductionVariants", [])}
            result: dict[str, float] = {}
            for name in _weighted_names(target):
                variant = by_name.get(name)
                if variant is None:
                    raise PermanentError(f"{_name(target)}: no variant {name!r} on the endpoint")
                result[name] = float(variant.get("DesiredWeight", variant.get("CurrentWeight", 0.0)))
            return result

        return await asyncio.to_thread(run)

    async def set_weights(
        self,
        target: ServerlessTarget,
        *,
        weights: dict[str, float],
        instances: int | None,
        max_concurrency: int,
    ) -> None:
        """Set the named variants' ``weights`` and, unless None, ``instances`` on the burst variant.

        One ``update_endpoint_weights_and_capacities`` call (a new endpoint config for a serverless
        burst variant whose capacity changes). Raises PermanentError for a weight on a variant the
        target does not name, TransientError or PermanentError when the API fails.
        """
        allowed = set(_weighted_names(target))
        stray = sorted(set(weights) - allowed)
        if stray:
            raise PermanentError(f"{_name(target)}: weights for variants the policy does not name: {stray}")
        clamped = {name: min(max(float(w), 0.0), 1.0) for name, w in weights.items()}

        def run() -> None:
            what = f"weights {clamped} on {_name(target)}"
            try:
                sm = self.client("sagemaker", target.region)
                endpoint = sm.describe_endpoint(EndpointName=target.endpoint_name)
                variants = {v.get("VariantName"): v for v in endpoint.get("ProductionVariants", [])}
                burst = variants.get(target.variant_name)
                if burst is None:
                    raise PermanentError(
                        f"{_name(target)}: no variant {target.variant_name!r} on the endpoint"
                    )
                serverless = (
                    burst.get("CurrentServerlessConfig") is not None
                    or burst.get("DesiredServerlessConfig") is not None
                )
                if instances is not None and serverless:
                    self._sagemaker_serverless_set(
                        target,
                        config_name=str(endpoint["EndpointConfigName"]),
                        instances=instances,
                        max_concurrency=max_concurrency,
                        weights=clamped,
                    )
                    return
                entries: list[dict[str, Any]] = []
                for name, weight in clamped.items():
                    entry: dict[str, Any] = {"VariantName": name, "DesiredWeight": weight}
                    count = _instance_count(variants.get(name))
                    if name == target.variant_name and instances is not None:
                        entry["DesiredInstanceCount"] = instances
                    elif count is not None:  # restated as read: an omitted field may be reset
                        entry["DesiredInstanceCount"] = count
                    entries.append(entry)
                sm.update_endpoint_weights_and_capacities(
                    EndpointName=target.endpoint_name, DesiredWeightsAndCapacities=entries
                )
            except (ClientError, BotoCoreError) as exc:
                raise _classify(exc, what=what) from None

        await asyncio.to_thread(run)

    def _variant(self, target: ServerlessTarget) -> dict[str, Any]:
        sm = self.client("sagemaker", target.region)
        endpoint = sm.describe_endpoint(EndpointName=target.endpoint_name)
        for variant in endpoint.get("ProductionVariants", []):
            if variant.get("VariantName") == target.variant_name:
                return dict(variant)
        raise PermanentError(f"{_name(target)}: no variant {target.variant_name!r} on the endpoint")

    def _sagemaker_set(self, target: ServerlessTarget, *, instances: int, max_concurrency: int) -> None:
        sm = self.client("sagemaker", target.region)
        endpoint = sm.describe_endpoint(EndpointName=target.endpoint_name)
        variants = {v.get("VariantName"): v for v in endpoint.get("ProductionVariants", [])}
        variant = variants.get(target.variant_name)
        if variant is None:
            raise PermanentError(f"{_name(target)}: no variant {target.variant_name!r} on the endpoint")
        if variant.get("CurrentServerlessConfig") is None and variant.get("DesiredServerlessConfig") is None:
            entry: dict[str, Any] = {"VariantName": target.variant_name, "DesiredInstanceCount": instances}
            weight = variant.get("DesiredWeight", variant.get("CurrentWeight"))
            if weight is not None:  # restated as read: an omitted field may be reset
                entry["DesiredWeight"] = float(weight)
            sm.update_endpoint_weights_and_capacities(
                EndpointName=target.endpoint_name, DesiredWeightsAndCapacities=[entry]
            )
            return
        self._sagemaker_serverless_set(
            target,
            config_name=str(endpoint["EndpointConfigName"]),
            instances=instances,
            max_concurrency=max_concurrency,
        )

    def _sagemaker_serverless_set(
        self,
        target: ServerlessTarget,
        *,
        config_name: str,
        instances: int,
        max_concurrency: int,
        weights: dict[str, float] | None = None,
    ) -> None:
        """Copy the endpoint config with the variant's ProvisionedConcurrency changed, and switch to it."""
        sm = self.client("sagemaker", target.region)
        config = sm.describe_endpoint_config(EndpointConfigName=config_name)
        variants: list[dict[str, Any]] = []
        for original in config["ProductionVariants"]:
            variant = dict(original)
            if weights is not None and variant.get("VariantName") in weights:
                variant["InitialVariantWeight"] = weights[str(variant.get("VariantName"))]
            if variant.get("VariantName") == target.variant_name:
                serverless = dict(variant.get("ServerlessConfig", {}))
                ceiling = int(serverless.get("MaxConcurrency", 1))
                units = min(
                    actuation.lambda_units(instances=instances, max_concurrency=max_concurrency), ceiling
                )
                if units > 0:
                    serverless["ProvisionedConcurrency"] = units
                else:
                    serverless.pop("ProvisionedConcurrency", None)
                variant["ServerlessConfig"] = serverless
            variants.append(variant)
        digest = hashlib.sha256(repr(variants).encode()).hexdigest()[:8]
        base = config_name.split("-spw-", maxsplit=1)[0][:50]
        new_name = f"{base}-spw-{digest}"
        if new_name != config_name:
            try:
                sm.create_endpoint_config(EndpointConfigName=new_name, ProductionVariants=variants)
            except ClientError as exc:  # made by an earlier attempt: same content, same name
                if "already exist" not in str(exc.response.get("Error", {}).get("Message", "")):
                    raise
            sm.update_endpoint(EndpointName=target.endpoint_name, EndpointConfigName=new_name)


def _instance_count(variant: dict[str, Any] | None) -> int | None:
    """Return an instance-backed variant's desired instance count as described, else None."""
    if variant is None or variant.get("CurrentServerlessConfig") or variant.get("DesiredServerlessConfig"):
        return None
    count = variant.get("DesiredInstanceCount", variant.get("CurrentInstanceCount"))
    return None if count is None else int(count)


def _weighted_names(target: ServerlessTarget) -> tuple[str, ...]:
    """Return the variants whose weights ``target`` governs (none without ``primary_variant``)."""
    if target.primary_variant is None or target.variant_name is None:
        return ()
    return (target.primary_variant, target.variant_name)


def _name(target: ServerlessTarget) -> str:
    if target.backend == "lambda":
        return f"lambda {target.function_name}:{target.alias}"
    return f"sagemaker {target.endpoint_name}/{target.variant_name}"
