"""SageMaker backend: an endpoint variant's instances (or a serverless variant's provisioned concurrency).

* An instance-backed variant's ``DesiredInstanceCount`` is the number of instances
  (``update_endpoint_weights_and_capacities``, which leaves the other variants alone). A serverless
  variant's ``ProvisionedConcurrency`` is in concurrent invocations like Lambda (instances *
  max_concurrency, at most the variant's ``MaxConcurrency``); it changes through a new endpoint
  config (a copy of the current one) and ``update_endpoint``.
* Traffic weights: when the target also names ``primary_variant`` (the variant serving the
  endpoint's steady traffic), the burst variant ``variant_name`` gets ``DesiredWeight`` = the
  decision's ``spill_fraction`` and the primary variant ``1 - spill_fraction`` (clamped to [0, 1]).
  Weights are read back from ``describe_endpoint``. A capacity change and a weight change go in the
  SAME ``update_endpoint_weights_and_capacities`` call (for a serverless variant: in the same new
  endpoint config, as ``InitialVariantWeight``). Variants the policy does not name are never put in
  a request. A named instance variant whose count is not being changed has its count restated as
  described (an update that omits it may reset it, as the moto emulator does).

The profile: an endpoint that scaled its GPU instances to zero (only possible with inference
components) cannot answer until it has provisioned an instance again, which AWS says takes several
minutes (360 s is assumed), with invocations failing meanwhile. Instances kept in service
(``DesiredInstanceCount``) or provisioned concurrency of a serverless variant (CPU only, no GPUs)
are what make it fast. Scale-in after a burst is assumed 300 s later (a typical scale-in cooldown).
Quota: instances of the variant; price: per instance-hour.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Literal, Self

from pydantic import Field, model_validator

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
from scaler.core.errors import PermanentError
from scaler.core.profile import BackendProfile

IAM_ACTIONS: Final[tuple[str, ...]] = (
    "sagemaker:DescribeEndpoint",
    "sagemaker:DescribeEndpointConfig",
    "sagemaker:CreateEndpointConfig",
    "sagemaker:UpdateEndpoint",
    "sagemaker:UpdateEndpointWeightsAndCapacities",
)


class SageMakerTarget(ServerlessBase):
    """A SageMaker endpoint variant (instances, or a serverless variant's provisioned concurrency)."""

    PROFILE = BackendProfile(
        name="sagemaker",
        cold_start_seconds=360.0,
        keep_warm_seconds=300.0,
        provisionable=True,
        per_token=False,
        quota_unit="instances of the variant (serverless variant: concurrency)",
        price_unit="instance-hour (serverless variant: per second of compute)",
        adapter_calls="DescribeEndpoint(Config), UpdateEndpointWeightsAndCapacities, CreateEndpointConfig, "
        "UpdateEndpoint",
    )

    backend: Literal["sagemaker"] = Field(description="Amazon SageMaker real-time endpoints.")
    endpoint_name: str = Field(pattern=AWS_NAME_RE, description="SageMaker endpoint name.")
    variant_name: str = Field(pattern=AWS_NAME_RE, description="SageMaker production variant name.")
    primary_variant: str | None = Field(
        default=None,
        pattern=AWS_NAME_RE,
        description=(
            "SageMaker variant serving the rest of the endpoint's traffic: when set, variant_name gets "
            "DesiredWeight spill_fraction and this one 1 - spill_fraction."
        ),
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if self.primary_variant == self.variant_name:
            raise ValueError("primary_variant must differ from variant_name")
        return self

    @property
    def key(self) -> str:
        """Return ``sagemaker/endpoint/variant``."""
        return f"sagemaker/{self.endpoint_name}/{self.variant_name}"

    @property
    def weighted(self) -> tuple[str, str] | None:
        """Return (primary_variant, variant_name), or None without a primary variant."""
        return None if self.primary_variant is None else (self.primary_variant, self.variant_name)


def _is_serverless(variant: dict[str, Any]) -> bool:
    return (
        variant.get("CurrentServerlessConfig") is not None
        or variant.get("DesiredServerlessConfig") is not None
    )


class SageMakerServerless:
    """Capacity and traffic weights of the SageMaker endpoint variant a policy names (weights port too)."""

    def __init__(self, api: Api) -> None:
        """Create the adapter; ``api``'s clients are made on first use."""
        self.api = api

    async def read(self, target: ServerlessBase, *, max_concurrency: int) -> ServerlessState:
        """Return the variant's provisioned instances (desired) and those in service (current); raise
        TransientError or PermanentError."""
        own = narrow(target, SageMakerTarget)
        _, variants = await self.api.call(lambda: self._variants(own), what=f"read {own.key}")
        variant = variants.get(own.variant_name)
        if variant is None:
            raise PermanentError(f"{own.key}: no variant {own.variant_name!r} on the endpoint")
        desired_sl = variant.get("DesiredServerlessConfig") or variant.get("CurrentServerlessConfig")
        if desired_sl is not None:
            current_sl = variant.get("CurrentServerlessConfig") or {}
            units = int(desired_sl.get("ProvisionedConcurrency", 0))
            ready = min(int(current_sl.get("ProvisionedConcurrency", 0)), units)
            return ServerlessState(
                provisioned=instances_from_units(units=units, max_concurrency=max_concurrency),
                ready=instances_from_units(units=ready, max_concurrency=max_concurrency),
            )
        desired = int(variant.get("DesiredInstanceCount", variant.get("CurrentInstanceCount", 0)))
        return ServerlessState(
            provisioned=desired, ready=min(int(variant.get("CurrentInstanceCount", 0)), desired)
        )

    async def set_provisioned(
        self, target: ServerlessBase, *, instances: int, quota: int, max_concurrency: int
    ) -> None:
        """Set the variant's instances (or provisioned concurrency); raise on failure."""
        own = narrow(target, SageMakerTarget)
        await self._update(own, weights=None, instances=instances, max_concurrency=max_concurrency)

    async def read_weights(self, target: ServerlessBase) -> dict[str, float]:
        """Return the DesiredWeight (else CurrentWeight) of the variants ``target`` names.

        Raises PermanentError if a named variant is missing, TransientError on throttling and 5xx.
        """
        own = narrow(target, SageMakerTarget)
        _, by_name = await self.api.call(lambda: self._variants(own), what=f"read weights of {own.key}")
        result: dict[str, float] = {}
        for name in own.weighted or ():
            variant = by_name.get(name)
            if variant is None:
                raise PermanentError(f"{own.key}: no variant {name!r} on the endpoint")
            result[name] = float(variant.get("DesiredWeight", variant.get("CurrentWeight", 0.0)))
        return result

    async def set_weights(
        self,
        target: ServerlessBase,
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
        own = narrow(target, SageMakerTarget)
        stray = sorted(set(weights) - set(own.weighted or ()))
        if stray:
            raise PermanentError(f"{own.key}: weights for variants the policy does not name: {stray}")
        clamped = {name: min(max(float(w), 0.0), 1.0) for name, w in weights.items()}
        await self._update(own, weights=clamped, instances=instances, max_concurrency=max_concurrency)

    def _variants(self, target: SageMakerTarget) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Return the endpoint description and its variants by name."""
        endpoint = self.api.client("sagemaker", target.region).describe_endpoint(
            EndpointName=target.endpoint_name
        )
        return endpoint, {str(v.get("VariantName")): dict(v) for v in endpoint.get("ProductionVariants", [])}

    async def _update(
        self,
        target: SageMakerTarget,
        *,
        weights: dict[str, float] | None,
        instances: int | None,
        max_concurrency: int,
    ) -> None:
        """Change the burst variant's capacity and/or the named weights in one update; raise on failure."""
        change = f"weights {weights}" if weights is not None else f"provision {instances}"
        what = f"{change} on {target.key}"

        def run() -> None:
            endpoint, variants = self._variants(target)
            burst = variants.get(target.variant_name)
            if burst is None:
                raise PermanentError(f"{target.key}: no variant {target.variant_name!r} on the endpoint")
            if instances is not None and _is_serverless(burst):
                self._serverless_set(
                    target,
                    config_name=str(endpoint["EndpointConfigName"]),
                    instances=instances,
                    max_concurrency=max_concurrency,
                    weights=weights,
                )
                return
            entries: list[dict[str, Any]] = []
            if weights is None:
                entry: dict[str, Any] = {
                    "VariantName": target.variant_name,
                    "DesiredInstanceCount": instances,
                }
                weight = burst.get("DesiredWeight", burst.get("CurrentWeight"))
                if weight is not None:  # restated as read: an omitted field may be reset
                    entry["DesiredWeight"] = float(weight)
                entries.append(entry)
            else:
                for name, value in weights.items():
                    entry = {"VariantName": name, "DesiredWeight": value}
                    count = _instance_count(variants.get(name))
                    if name == target.variant_name and instances is not None:
                        entry["DesiredInstanceCount"] = instances
                    elif count is not None:  # restated as read: an omitted field may be reset
                        entry["DesiredInstanceCount"] = count
                    entries.append(entry)
            self.api.client("sagemaker", target.region).update_endpoint_weights_and_capacities(
                EndpointName=target.endpoint_name, DesiredWeightsAndCapacities=entries
            )

        await self.api.call(run, what=what)

    def _serverless_set(
        self,
        target: SageMakerTarget,
        *,
        config_name: str,
        instances: int,
        max_concurrency: int,
        weights: dict[str, float] | None = None,
    ) -> None:
        """Copy the endpoint config with the variant's ProvisionedConcurrency changed, and switch to it."""
        sm = self.api.client("sagemaker", target.region)
        config = sm.describe_endpoint_config(EndpointConfigName=config_name)
        variants: list[dict[str, Any]] = []
        for original in config["ProductionVariants"]:
            variant = dict(original)
            if weights is not None and variant.get("VariantName") in weights:
                variant["InitialVariantWeight"] = weights[str(variant.get("VariantName"))]
            if variant.get("VariantName") == target.variant_name:
                serverless = dict(variant.get("ServerlessConfig", {}))
                ceiling = int(serverless.get("MaxConcurrency", 1))
                wanted = units_from_instances(instances=instances, max_concurrency=max_concurrency)
                units = min(wanted, ceiling)
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
            except self.api.error as exc:  # made by an earlier attempt: same content, same name
                if "already exist" not in self.api.error_message(exc):
                    raise
            sm.update_endpoint(EndpointName=target.endpoint_name, EndpointConfigName=new_name)


def _instance_count(variant: dict[str, Any] | None) -> int | None:
    """Return an instance-backed variant's desired instance count as described, else None."""
    if variant is None or _is_serverless(variant):
        return None
    count = variant.get("DesiredInstanceCount", variant.get("CurrentInstanceCount"))
    return None if count is None else int(count)


BACKEND: Final = Backend(target=SageMakerTarget, adapter=SageMakerServerless, iam_actions=IAM_ACTIONS)
