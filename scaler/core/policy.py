"""Typed policy model: what an SRE writes in a policy file, with bounds and documented defaults.

This module only declares the shape; :mod:`scaler.core.policy_file` reads YAML into it and turns
validation errors into ``file:line: field: message`` lines.

Default figures and their reasoning (see also README "Policy defaults"):

* Replica capacity: an 8B model (Llama-3.1-8B, bf16) on one H100-80GB under vLLM sustains roughly
  10,000-20,000 prompt tokens/s of prefill and 2,500-4,000 generated tokens/s in aggregate at high
  batch sizes (vLLM's published throughput benchmarks); we default to 12,000 prefill and 2,500 decode
  tokens/s and 64 concurrent sequences, conservative figures a latency SLO can hold at.
* Prices: one H100 replica on a Kubernetes node at $4.00/hour (on-demand H100 list prices in 2025-26
  range from about $2 at specialist clouds to about $7 per GPU-hour at hyperscalers); serverless GPU
  at $0.0021 per busy GPU-second ($7.56 per busy hour, about 1.9x the replica, in line with serverless
  GPU list prices). The replica therefore pays off above 4.00 / 7.56 = 53% utilisation.
* Lead times: a cold replica needs an image pull and model load; platform teams publish 1.5-8 minutes
  for an 8B model. We default to 300 s as the prior, and learn the real figure per model (p90 of the
  observed starts, clamped to [75 s, 1200 s] by default: a quarter to four times the prior).
* Warm standby: a pod of the serving workload, loaded and Ready, kept out of the Service by the label
  ``spillway.io/role: standby``; promotion is one label patch, after which the EndpointSlice and
  the gateway follow; 15 s covers that with a gateway that refreshes its endpoints every few
  seconds. The pod holds its GPU, so it costs what a replica costs (``standby_per_hour`` defaults to
  ``replica_per_hour``), and the planner only buys standby where it is cheaper than a serving replica
  (a serving replica is as warm and takes traffic). vLLM's sleep mode frees GPU memory but not the
  GPU the pod was scheduled on, so it saves nothing on a dedicated GPU.
* The serverless cold start defaults to the backend's profile (:mod:`scaler.backends`): minutes
  for Lambda and SageMaker capacity from zero, none for Bedrock, 15 s without a serverless target.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import weakref
import zoneinfo
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, Union

from pydantic import BaseModel, BeforeValidator, Field, TypeAdapter, field_validator, model_validator

from scaler.backends import BACKENDS
from scaler.backends.base import ServerlessBase
from scaler.core.operators import ExternalChanges
from scaler.core.profile import GENERIC, BackendProfile
from scaler.core.strict import Strict as _Strict

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]

MODEL_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,252}$"
LeadKind = Literal["replica", "serverless"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EXTENSION_PREFIX = "x-"  # top-level keys a policy file may add and the loader ignores (YAML anchors)
SCHEMA_URL = "https://json-schema.org/draft/2020-12/schema"
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


class Slo(_Strict):
    """Latency objective: `attainment` of requests must see TTFT (and queue wait) under target."""

    ttft_seconds: PositiveFloat | None = Field(
        default=2.0, description="Time-to-first-token target in seconds (queue wait + prefill)."
    )
    queue_wait_seconds: PositiveFloat | None = Field(
        default=None, description="Queue-wait target in seconds, if the SLO is stated on waiting alone."
    )
    attainment: Fraction = Field(default=0.99, description="Share of requests that must meet the targets.")

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if self.ttft_seconds is None and self.queue_wait_seconds is None:
            raise ValueError("set ttft_seconds or queue_wait_seconds (or both)")
        return self


class Replica(_Strict):
    """Capacity of one Kubernetes GPU replica (and, by default, of one serverless instance)."""

    prefill_tokens_per_second: PositiveFloat = Field(
        default=12_000.0, description="Aggregate prompt (prefill) throughput of one replica, tokens/s."
    )
    decode_tokens_per_second: PositiveFloat = Field(
        default=2_500.0, description="Aggregate generation (decode) throughput at full batch, tokens/s."
    )
    max_concurrency: PositiveInt = Field(
        default=64, le=4096, description="Sequences one replica serves at once (vLLM max_num_seqs)."
    )


class LeadTimes(_Strict):
    """How long each kind of capacity takes to become ready: the prior and the bounds of what is learned.

    With ``learn`` on, the controller plans with two figures of the cold starts it observed
    (:mod:`scaler.control.leadtime`: pods' creation -> Ready from the Kubernetes API, replicas' ``ready``
    transitions in metric events), each clamped to ``[floor, ceiling]``: the *coverage* lead (their
    ``quantile``, default p90), which what serves while replicas start (standby, provisioned serverless)
    must span, and the *typical* lead (their ``lifetime_quantile``, default 0: the fastest start seen;
    never above the coverage lead), where the lifetime a new replica is sized for begins. The
    configured value is both until ``min_observations`` were seen.

    Why the fastest: the replica whose timing a plan decides is the marginal one, added when its busy
    share u over its lifetime reaches the break-even c_k/c_s. Requested L seconds before that load, it
    is paid c_k for those L seconds; each second it is late (cold start C > L) sends u of its load to
    serverless at c_s u = c_k. Its cost, c_k L + c_k E[(C - L)+] = c_k E[max(L, C)], is flat up to the
    fastest start and rises after, at any prices; with ``serverless_quota`` 0 the coverage lead keeps
    replicas serving while new ones start, so the start is again only a cost.

    Floors default to a quarter of the configured value and ceilings to four times it (300 s: 75-1200 s,
    around the 1.5-8 min platform teams publish), so
    no bad observation can move a lead time far from what the SRE wrote.
    """

    cold_start_seconds: NonNegativeFloat = Field(
        default=300.0, le=7200, description="Requesting a replica until it serves (pull, load, warm-up)."
    )
    standby_promotion_seconds: NonNegativeFloat = Field(
        default=15.0,
        le=3600,
        description="Promoting a warm standby pod into service: one label patch, then the Service's "
        "endpoints and the gateway follow (seconds).",
    )
    serverless_cold_start_seconds: NonNegativeFloat | None = Field(
        default=None,
        le=3600,
        description="A serverless instance from zero to serving; default: the backend's profile (lambda "
        "120 s, sagemaker 360 s, 15 s without a serverless target; bedrock has none and refuses it).",
    )
    learn: bool = Field(default=True, description="Plan with measured cold starts (false: the values above).")
    quantile: Fraction = Field(
        default=0.9,
        description="Quantile of the observed cold starts that standby and serverless cover while "
        "replicas start (the coverage lead).",
    )
    lifetime_quantile: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        allow_inf_nan=False,
        description="Quantile of the observed cold starts where a new replica's lifetime window begins "
        "(the typical lead; at most the coverage lead). 0: the fastest start seen, where cost is least "
        "(a late marginal replica's load costs at c_s what the replica costs at c_k).",
    )
    lifetime_start_seconds: NonNegativeFloat | None = Field(
        default=None,
        le=7200,
        description="Where a new replica's lifetime window begins (the typical lead); unset: "
        "cold_start_seconds. The controller sets it to the learned lifetime_quantile.",
    )
    min_observations: PositiveInt = Field(
        default=3, le=64, description="Observations before the learned value replaces the configured one."
    )
    cold_start_floor_seconds: NonNegativeFloat | None = Field(
        default=None, le=7200, description="Least learned replica cold start (default: a quarter of it)."
    )
    cold_start_ceiling_seconds: NonNegativeFloat | None = Field(
        default=None, le=7200, description="Most learned replica cold start (default: 4 times it)."
    )
    serverless_cold_start_floor_seconds: NonNegativeFloat | None = Field(
        default=None, le=3600, description="Least learned serverless warm-up (default: a quarter of it)."
    )
    serverless_cold_start_ceiling_seconds: NonNegativeFloat | None = Field(
        default=None, le=3600, description="Most learned serverless warm-up (default: 4 times it)."
    )

    @model_validator(mode="after")
    def _bounds_hold_the_prior(self) -> Self:
        kinds: tuple[LeadKind, ...] = ("replica", "serverless")
        if self.serverless_cold_start_seconds is None:
            kinds = ("replica",)
        for kind in kinds:  # an unset serverless cold start is the backend's: checked where it is known
            floor, ceiling = self.bounds(kind)
            prior = self.configured(kind)
            if not floor <= prior <= ceiling:
                prefix = "cold_start" if kind == "replica" else "serverless_cold_start"
                raise ValueError(
                    f"{prefix}_floor_seconds ({floor:g}) <= {prefix}_seconds ({prior:g}) <= "
                    f"{prefix}_ceiling_seconds ({ceiling:g}) does not hold"
                )
        return self

    @property
    def typical_quantile(self) -> float:
        """Return the quantile the typical lead is read at: ``lifetime_quantile``, at most ``quantile``."""
        return min(self.lifetime_quantile, self.quantile)

    @property
    def typical_cold_start_seconds(self) -> float:
        """Return where a new replica's lifetime window begins: ``lifetime_start_seconds`` if set, else the
        cold start, never later than ``cold_start_seconds`` (the coverage must reach it)."""
        start = self.lifetime_start_seconds
        return self.cold_start_seconds if start is None else min(start, self.cold_start_seconds)

    def configured(self, kind: LeadKind) -> float:
        """Return the configured lead time of ``kind`` (``replica`` cold start or ``serverless``)."""
        if kind == "replica":
            return self.cold_start_seconds
        cold = self.serverless_cold_start_seconds  # unset: the backend's (ModelPolicy.lead_times_in_force)
        return GENERIC.cold_start_seconds if cold is None else cold

    def bounds(self, kind: LeadKind) -> tuple[float, float]:
        """Return (floor, ceiling) of the learned lead time of ``kind``."""
        if kind == "replica":
            floor, ceiling, limit = self.cold_start_floor_seconds, self.cold_start_ceiling_seconds, 7200.0
        else:
            floor = self.serverless_cold_start_floor_seconds
            ceiling, limit = self.serverless_cold_start_ceiling_seconds, 3600.0
        prior = self.configured(kind)
        low = prior / 4.0 if floor is None else floor
        high = min(prior * 4.0, limit) if ceiling is None else ceiling
        return low, high


class Prices(_Strict):
    """Prices in one currency (USD by convention)."""

    replica_per_hour: NonNegativeFloat = Field(
        default=4.00, description="One Kubernetes GPU replica, per hour, busy or not."
    )
    standby_per_hour: NonNegativeFloat | None = Field(
        default=None,
        description="One warm standby pod, per hour (default: replica_per_hour: a standby is a loaded pod "
        "of the serving workload holding its GPU, kept out of the Service by a label). The planner "
        "buys standby only when it is cheaper than a replica (e.g. standby pods on a spot pool).",
    )
    serverless_per_gpu_second: NonNegativeFloat = Field(
        default=0.0021, description="Serverless capacity per busy GPU-second."
    )
    serverless_per_million_tokens: NonNegativeFloat = Field(
        default=0.0, description="Serverless price per million (prompt + output) tokens, if billed per token."
    )
    serverless_per_million_input_tokens: NonNegativeFloat = Field(
        default=0.0, description="Serverless price per million prompt (input) tokens, e.g. Bedrock on-demand."
    )
    serverless_per_million_output_tokens: NonNegativeFloat = Field(
        default=0.0, description="Serverless price per million output tokens, e.g. Bedrock on-demand."
    )
    serverless_provisioned_per_hour: NonNegativeFloat = Field(
        default=1.00, description="Keeping one serverless instance provisioned (pre-warmed), per hour."
    )

    @property
    def standby(self) -> float:
        """Return the price of one warm standby per hour (``standby_per_hour``, else the replica's)."""
        return self.replica_per_hour if self.standby_per_hour is None else self.standby_per_hour


class Bounds(_Strict):
    """Hard limits no decision may cross (schedules may tighten or move them, never remove them)."""

    min_replicas: NonNegativeInt = Field(default=0, le=10_000, description="Fewest replicas in service.")
    max_replicas: NonNegativeInt = Field(default=16, le=10_000, description="Most replicas in service.")
    min_standby: NonNegativeInt = Field(
        default=0, le=10_000, description="Fewest warm standby replicas (model loaded, out of the Service)."
    )
    max_standby: NonNegativeInt = Field(default=2, le=10_000, description="Most warm standby replicas.")
    serverless_quota: NonNegativeInt = Field(
        default=16,
        le=100_000,
        description="Most serverless instances that may run at once (default: as many as max_replicas, so a "
        "burst the forecast did not see can be absorbed while replicas cold-start).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        if self.min_standby > self.max_standby:
            raise ValueError(f"min_standby ({self.min_standby}) > max_standby ({self.max_standby})")
        if self.max_replicas == 0 and self.serverless_quota == 0:
            raise ValueError("max_replicas and serverless_quota are both 0: the model could never be served")
        return self


class Behavior(_Strict):
    """How fast decisions may move."""

    interval_seconds: PositiveFloat = Field(default=10.0, le=3600, description="Planning interval.")
    max_step_up: PositiveInt = Field(default=4, description="Most replicas added by one decision.")
    max_step_down: PositiveInt = Field(default=1, description="Most replicas removed by one decision.")
    scale_down_delay_seconds: NonNegativeFloat = Field(
        default=600.0, le=86_400, description="A lower target must hold this long before replicas go."
    )
    stabilization_seconds: NonNegativeFloat = Field(
        default=60.0, le=86_400, description="Window over which upward targets are smoothed (max)."
    )
    external_changes: ExternalChanges = Field(
        default="respect-for-scale-down-delay",
        description=(
            "A replica count set on a target outside Spillway (kubectl scale, an operator): "
            "respect-for-scale-down-delay keeps it as a floor until scale_down_delay_seconds have "
            "passed since it was seen; correct overwrites it at once."
        ),
    )


class Forecast(_Strict):
    """Forecaster settings for this model."""

    bucket_seconds: PositiveInt = Field(default=60, le=3600, description="Aggregation bucket.")
    horizon_seconds: PositiveInt = Field(
        default=1800, le=7 * 86_400, description="How far ahead to forecast; at least the cold start."
    )
    seasonalities_seconds: list[PositiveInt] = Field(
        default_factory=lambda: [86_400],
        max_length=2,
        description="Season lengths (daily 86400, optionally weekly 604800).",
    )
    quantile: Fraction | None = Field(
        default=None,
        description="Override the cost-optimal fractile 1 - c_k/c_s used for replica sizing.",
    )
    history_seconds: PositiveInt = Field(
        default=14 * 86_400, le=90 * 86_400, description="History to seed from (Prometheus) and keep."
    )
    fallback_after_seconds: PositiveFloat = Field(
        default=120.0,
        le=86_400,
        description="Event silence after which load comes from Prometheus (or the last decision holds).",
    )

    @field_validator("seasonalities_seconds")
    @classmethod
    def _seasons_sorted(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate season lengths {value}")
        return sorted(value)


class Schedule(_Strict):
    """A recurring window (days of week, local start/end time) that overrides bounds while active."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1, max_length=7)
    start: str = Field(description="Local start time HH:MM.", json_schema_extra={"pattern": _HHMM.pattern})
    end: str = Field(
        description="Local end time HH:MM (before start: the window crosses midnight).",
        json_schema_extra={"pattern": _HHMM.pattern},
    )
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Berlin.")
    min_replicas: NonNegativeInt | None = None
    max_replicas: NonNegativeInt | None = None
    min_standby: NonNegativeInt | None = None
    max_standby: NonNegativeInt | None = None
    serverless_quota: NonNegativeInt | None = None

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a time HH:MM (00:00-24:00)")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: the window is empty")
        overrides = (self.min_replicas, self.max_replicas, self.min_standby, self.max_standby)
        if all(v is None for v in overrides) and self.serverless_quota is None:
            raise ValueError("a schedule must override at least one bound")
        return self

    def minutes(self) -> tuple[int, int]:
        """Return (start, end) as minutes after local midnight."""
        return _to_minutes(self.start), _to_minutes(self.end)

    def tz(self) -> dt.tzinfo:
        """Return the schedule's time zone."""
        return zoneinfo.ZoneInfo(self.timezone)


def _to_minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


# -- actuation targets (issue 5): the only resources the actuators may touch ---------------------------

K8S_NAME_RE = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
K8S_NAMESPACE_RE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class KubernetesTarget(_Strict):
    """The Kubernetes workload serving the model, and its warm standby pool."""

    namespace: str = Field(pattern=K8S_NAMESPACE_RE, description="Namespace of the workloads.")
    kind: Literal["Deployment", "StatefulSet"] = Field(
        default="Deployment", description="Kind of the serving workload (and of the standby one)."
    )
    name: str = Field(pattern=K8S_NAME_RE, description="Serving workload, behind the model's Service.")
    standby_name: str | None = Field(
        default=None,
        pattern=K8S_NAME_RE,
        description="Warm standby workload of the same model whose pods are NOT behind the Service.",
    )
    standby_label: bool = Field(
        default=False,
        description="Standby pods are pods of `name` labelled spillway.io/role=standby (the Service selects "
        "role serving): the workload runs replicas + standby pods and promotion is one label patch.",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if self.standby_name == self.name:
            raise ValueError("standby_name must differ from name")
        if self.standby_label and self.standby_name is not None:
            raise ValueError("standby_label and standby_name are two standby mechanisms: choose one")
        return self

    @property
    def key(self) -> str:
        """Return ``Kind/namespace/name``, the serving workload's name in logs, metrics and decisions."""
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def standby_key(self) -> str | None:
        """Return the standby's name like :attr:`key` (``...#standby`` for pods kept by label), or None."""
        if self.standby_name is not None:
            return f"{self.kind}/{self.namespace}/{self.standby_name}"
        return f"{self.key}#standby" if self.standby_label else None


SERVERLESS_TARGETS: Mapping[str, type[ServerlessBase]] = {name: b.target for name, b in BACKENDS.items()}
_WITH_INSTANCES = ", ".join(name for name, b in BACKENDS.items() if not b.profile.per_token)
_FIELD_BACKEND: dict[str, str] = {
    name: backend
    for backend, model in SERVERLESS_TARGETS.items()
    for name in model.model_fields
    if name not in ServerlessBase.model_fields
}


def _fields_of_other_backends(data: Any) -> Any:
    """Return ``data``; raise ValueError naming the backend a stray field belongs to (the backend's own
    model would only call it extra)."""
    if isinstance(data, dict):
        own = SERVERLESS_TARGETS.get(str(data.get("backend")))
        for key in data:
            owner = _FIELD_BACKEND.get(key)
            if owner is not None and own is not None and key not in own.model_fields:
                raise ValueError(f"field {key} is for backend {owner}, not {data.get('backend')}")
    return data


if TYPE_CHECKING:
    ServerlessTarget = ServerlessBase  # any backend's target: the union below, as the type checker sees it
else:
    ServerlessTarget = Annotated[
        Union[tuple(SERVERLESS_TARGETS.values())],  # noqa: UP007  # the registry's backends, tagged
        Field(discriminator="backend"),
        BeforeValidator(_fields_of_other_backends),
    ]
SERVERLESS_TARGET: TypeAdapter[ServerlessBase] = TypeAdapter(ServerlessTarget)


class Targets(_Strict):
    """What the actuators change for this model; a missing part is never actuated."""

    kubernetes: KubernetesTarget | None = Field(default=None, description="Replicas and warm standby.")
    serverless: ServerlessTarget | None = Field(default=None, description="Pre-warmed serverless capacity.")


# -- end of actuation targets -----------------------------------------------------------------------------


_SHARED_PARTS: tuple[str, ...] = ("slo", "replica", "lead_times", "prices", "bounds", "behavior", "forecast")
# one instance per distinct part: (type, its fields as JSON, the fields set explicitly) -> the part
_PARTS: weakref.WeakValueDictionary[tuple[type, str, frozenset[str]], _Strict] = weakref.WeakValueDictionary()


def _shared(part: _Strict) -> _Strict:
    """Return the instance equal to ``part`` (values and the fields set explicitly) first seen, or ``part``.

    Parts holding other models are returned as they are (their own set fields are not compared).
    """
    if any(isinstance(value, BaseModel) for value in part.__dict__.values()):
        return part
    key = (type(part), part.model_dump_json(), frozenset(part.model_fields_set))
    known = _PARTS.get(key)
    if known is None:
        _PARTS[key] = known = part
    return known


class ModelPolicy(_Strict):
    """Everything Spillway needs to scale one model."""

    name: str = Field(pattern=MODEL_NAME_RE, description="Model name as it appears in events.")
    slo: Slo = Field(default_factory=Slo)
    replica: Replica = Field(default_factory=Replica)
    lead_times: LeadTimes = Field(default_factory=LeadTimes)
    prices: Prices = Field(default_factory=Prices)
    bounds: Bounds = Field(default_factory=Bounds)
    behavior: Behavior = Field(default_factory=Behavior)
    forecast: Forecast = Field(default_factory=Forecast)
    schedules: list[Schedule] = Field(default_factory=list, max_length=64)
    targets: Targets | None = Field(
        default=None, description="Resources the actuators change; none: decisions are only published."
    )

    @model_validator(mode="after")
    def _share_parts(self) -> Self:
        """Use one instance of each part (slo, replica, ...) equal to another model's (they are frozen)."""
        fields = self.__dict__
        for name in _SHARED_PARTS:
            fields[name] = _shared(fields[name])
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        slo = self.slo
        prefill = 1.0 / self.replica.prefill_tokens_per_second
        if slo.ttft_seconds is not None and slo.ttft_seconds <= prefill:
            raise ValueError("slo.ttft_seconds is shorter than the prefill of a single token")
        names = [s.name for s in self.schedules]
        if len(set(names)) != len(names):
            raise ValueError(f"schedule names must be unique, got {names}")
        if self.serverless_profile.per_token:
            self._per_token_fields()
        return self

    def _per_token_fields(self) -> None:
        """Raise ValueError naming a field a per-token backend (bedrock) has no use for, or a free one."""
        backend = self.serverless_backend
        if self.lead_times.serverless_cold_start_seconds is not None:
            raise ValueError(
                f"lead_times.serverless_cold_start_seconds is for backends with instances "
                f"({_WITH_INSTANCES}): backend {backend} has no cold start"
            )
        for name in ("serverless_per_gpu_second", "serverless_provisioned_per_hour"):
            if name in self.prices.model_fields_set:
                raise ValueError(
                    f"prices.{name} is for backends with instances ({_WITH_INSTANCES}): backend {backend} "
                    "bills per token (prices.serverless_per_million_input_tokens / _output_tokens)"
                )
        per_input, per_output = self.serverless_token_prices
        if per_input <= 0.0 and per_output <= 0.0:
            raise ValueError(
                f"backend {backend} bills per token: set prices.serverless_per_million_input_tokens "
                "and prices.serverless_per_million_output_tokens"
            )

    @property
    def serverless_backend(self) -> str:
        """Return the serverless target's backend, or ``generic`` when the policy names none."""
        target = self.targets.serverless if self.targets is not None else None
        return target.backend if target is not None else "generic"

    @property
    def standby_promotion_seconds(self) -> float:
        """Return how long promoting a warm standby takes under this policy's standby mechanism.

        Standby pods of the serving workload (``standby_label``, and the simulator's model) are promoted
        in ``lead_times.standby_promotion_seconds``. A second standby workload (``standby_name``) is
        promoted by scaling the serving workload up, whose new pods start cold: a replica cold start.
        """
        lead = self.lead_times
        kube = self.targets.kubernetes if self.targets is not None else None
        if kube is not None and kube.standby_name is not None:
            return max(lead.standby_promotion_seconds, lead.cold_start_seconds)
        return lead.standby_promotion_seconds

    @property
    def serverless_profile(self) -> BackendProfile:
        """Return the backend's profile, with ``lead_times.serverless_cold_start_seconds`` if set."""
        target = self.targets.serverless if self.targets is not None else None
        profile = target.PROFILE if target is not None else GENERIC
        cold = self.lead_times.serverless_cold_start_seconds
        return profile if cold is None else dataclasses.replace(profile, cold_start_seconds=cold)

    @property
    def lead_times_in_force(self) -> LeadTimes:
        """Return ``lead_times`` with the serverless cold start filled in from the backend's profile."""
        lead = self.lead_times
        if lead.serverless_cold_start_seconds is not None:
            return lead
        cold = self.serverless_profile.cold_start_seconds
        return lead.model_copy(update={"serverless_cold_start_seconds": cold})

    @property
    def serverless_tokens_per_minute(self) -> int | None:
        """Return the tokens-per-minute quota of a per-token backend, None for backends with instances."""
        target = self.targets.serverless if self.targets is not None else None
        return target.tokens_per_minute_quota if target is not None else None

    @property
    def serverless_token_prices(self) -> tuple[float, float]:
        """Return serverless $ per million (input, output) tokens: the split prices plus the combined one."""
        prices = self.prices
        both = prices.serverless_per_million_tokens
        per_input = both + prices.serverless_per_million_input_tokens
        return per_input, both + prices.serverless_per_million_output_tokens

    @property
    def serverless_gpu_second_price(self) -> float:
        """Return $ per busy serverless GPU-second: 0 for per-token backends, which bill no GPU time."""
        return 0.0 if self.serverless_profile.per_token else self.prices.serverless_per_gpu_second

    @property
    def serverless_provisioned_price(self) -> float:
        """Return $ per provisioned serverless instance-hour: 0 where nothing can be provisioned."""
        return self.prices.serverless_provisioned_per_hour if self.serverless_profile.provisionable else 0.0

    def serverless_request_price(
        self, *, prompt_tokens: float, output_tokens: float, work_seconds: float
    ) -> float:
        """Return $ of one request on serverless: its busy instance-seconds ``work_seconds`` and tokens."""
        per_input, per_output = self.serverless_token_prices
        tokens = max(prompt_tokens, 0.0) * per_input + max(output_tokens, 0.0) * per_output
        return work_seconds * self.serverless_gpu_second_price + tokens / 1e6

    def break_even_for(self, *, prompt_tokens: float, output_tokens: float, work_seconds: float) -> float:
        """Return c_k / c_s for requests of this size (tokens and per-token prices included; may be inf)."""
        if work_seconds <= 0.0:
            return self.break_even_utilisation
        per_second = self.serverless_request_price(
            prompt_tokens=prompt_tokens, output_tokens=output_tokens, work_seconds=work_seconds
        ) / work_seconds
        if per_second <= 0.0:
            return float("inf")
        return self.prices.replica_per_hour / (per_second * 3600.0)

    @property
    def break_even_utilisation(self) -> float:
        """Return c_k / c_s: the busy share above which a replica is cheaper than serverless (may be > 1)."""
        busy_hour = self.prices.serverless_per_gpu_second * 3600.0
        if busy_hour <= 0.0:
            return float("inf")
        return self.prices.replica_per_hour / busy_hour

    @property
    def sizing_quantile(self) -> float | None:
        """Return the demand quantile replicas are sized to: the override, else ``1 - c_k/c_s``.

        None when replicas never pay off (``c_k >= c_s``): serverless then carries everything it can.
        """
        return self.sizing_quantile_for(self.break_even_utilisation)

    def sizing_quantile_for(self, ratio: float) -> float | None:
        """Return the sizing quantile at break-even ``ratio`` = c_k/c_s (the override, else ``1 - ratio``).

        The planner passes the ratio at the forecast's request size (:meth:`break_even_for`), which
        folds per-token prices into c_s; None when replicas never pay off.
        """
        if self.forecast.quantile is not None:
            return self.forecast.quantile
        return cost_optimal_fractile(ratio)


def cost_optimal_fractile(ratio: float) -> float | None:
    """Return the cost-optimal sizing quantile ``1 - ratio`` at break-even ``ratio`` = c_k/c_s.

    None when replicas never pay off (``ratio >= 1``). :meth:`ModelPolicy.sizing_quantile_for`
    returns it unless ``forecast.quantile`` overrides it.
    """
    return 1.0 - ratio if ratio < 1.0 else None


class PolicyFile(_Strict):
    """A policy file: one or more models."""

    version: Literal[1] = Field(default=1, description="Policy file format version.")
    models: list[ModelPolicy] = Field(min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"model {model.name!r} appears twice")
            seen.add(model.name)
        return self


def policy_json_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of a policy file, for editors and CI checks."""
    schema = PolicyFile.model_json_schema()
    return {
        "$schema": SCHEMA_URL,
        "title": "Spillway policy file",
        "description": "Scaling policies for one or more models (see: scaler policy explain FILE).",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
        "patternProperties": {f"^{EXTENSION_PREFIX}": {"description": "Ignored: anchors for aliases."}},
    }
