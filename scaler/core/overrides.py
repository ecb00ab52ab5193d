"""Alert-driven overrides (pure): parse Alertmanager webhook payloads, keep active overrides, apply them.

An alert whose labels carry ``spillway_action`` becomes a time-bounded override for the model in its
``model`` label (or for every model when it has none):

* ``freeze``: no scale-down (replicas, standby and provisioned serverless stay at least as before);
* ``boost``: raise the replica floor to ``spillway_min_replicas`` (or the default boost);
* ``serverless_off``: keep everything on Kubernetes (serverless is treated as unavailable);
* ``kubernetes_off``: burst to serverless (Kubernetes is treated as unavailable).

An override ends when its alert is resolved, at the alert's ``endsAt``, or after the maximum duration,
whichever comes first. Applying overrides never crosses the policy's hard bounds. Time is an argument.
The payload is validated by a pydantic model of Alertmanager's version 4 webhook (strict types).

Everything an alert sender controls is bounded: the overrides in force (in total and per model, see
:class:`OverrideLimits`; new alerts beyond a cap are refused, refreshes of alerts in force never are),
alert names in reasons (:data:`MAX_ALERT_NAME` characters) and the override part of a decision's
reason (:data:`MAX_REASON_BYTES`, then "and N more").
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, Observed, Unavailable

ACTION_LABEL: Final = "spillway_action"
MODEL_LABEL: Final = "model"
MIN_REPLICAS_LABEL: Final = "spillway_min_replicas"
_UNSET_TIME: Final = "0001-01-01T00:00:00Z"
_FRACTION = re.compile(r"\.(\d{6})\d+")
_MAX_LABEL = 1024
MAX_ALERT_NAME: Final = 64  # characters of an alert name shown in reasons and logs
MAX_REASON_BYTES: Final = 1024  # UTF-8 bytes of the override part of one decision's reason
_MORE_ROOM = 24  # bytes kept for "; and N more"


class OverrideError(ValueError):
    """A webhook payload that cannot be used; ``reason`` is ``malformed`` or ``unknown_action``."""

    def __init__(self, reason: str, detail: str) -> None:
        """Create the error; ``detail`` names what was wrong and where."""
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Action(enum.StrEnum):
    """What an override does."""

    FREEZE = "freeze"
    BOOST = "boost"
    SERVERLESS_OFF = "serverless_off"
    KUBERNETES_OFF = "kubernetes_off"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Override:
    """One active override: from alert ``key`` (its fingerprint), for ``model`` (None = all models)."""

    key: str
    alert: str
    action: Action
    model: str | None
    ends_at: float
    min_replicas: int | None = None

    def describe(self) -> str:
        """Return a short human-readable form for decision reasons (the alert name cut to MAX_ALERT_NAME)."""
        extra = f" min={self.min_replicas}" if self.min_replicas is not None else ""
        return f"{self.action.value}{extra} (alert {shorten(self.alert)} until {self.ends_at:.0f})"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OverrideLimits:
    """Caps on the overrides in force: ``total`` in all, ``per_model`` for one model label ('*' = all)."""

    total: int = 64
    per_model: int = 16


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """A firing override not taken: ``reason`` is ``max_overrides`` or ``max_overrides_per_model``."""

    override: Override
    reason: str


DEFAULT_LIMITS: Final = OverrideLimits()


def shorten(text: str, limit: int = MAX_ALERT_NAME) -> str:
    """Return ``text`` cut to ``limit`` characters (the cut marked with "...")."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_all(overrides: Sequence[Override], *, limit: int = MAX_REASON_BYTES) -> str:
    """Return the overrides' descriptions joined by "; " in at most ``limit`` UTF-8 bytes.

    Those that do not fit are counted at the end ("and N more"); ``limit`` must be at least 32.
    """
    shown: list[str] = []
    size = 0
    for index, override in enumerate(overrides):
        text = override.describe()
        cost = len(text.encode()) + (2 if shown else 0)
        room = limit if index == len(overrides) - 1 else limit - _MORE_ROOM
        if size + cost > room:
            break
        shown.append(text)
        size += cost
    more = len(overrides) - len(shown)
    if more:
        shown.append(f"and {more} more")
    return "; ".join(shown)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WebhookUpdate:
    """What one webhook delivery says: overrides that fire, and keys of alerts that resolved."""

    firing: tuple[Override, ...]
    resolved: frozenset[str]


def parse_time(text: object, *, where: str) -> float | None:
    """Return an RFC 3339 time as unix seconds (None for Alertmanager's unset time); raise OverrideError."""
    if not isinstance(text, str) or len(text) > 64:
        raise OverrideError("malformed", f"{where}: expected an RFC 3339 time string, got {_show(text)}")
    if text in ("", _UNSET_TIME):
        return None
    cleaned = _FRACTION.sub(r".\1", text.strip()).replace("z", "Z")
    try:
        stamp = datetime.datetime.fromisoformat(cleaned)
    except ValueError:
        raise OverrideError("malformed", f"{where}: not an RFC 3339 time: {_show(text)}") from None
    if stamp.tzinfo is None:
        raise OverrideError("malformed", f"{where}: time without a zone: {_show(text)}")
    if stamp.year < 1970:
        return None
    return stamp.timestamp()


_Label = Annotated[str, StringConstraints(max_length=_MAX_LABEL)]


class _Alert(BaseModel):
    """One alert of an Alertmanager webhook, as far as Spillway reads it (other fields are ignored)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[_Label, _Label]
    endsAt: str = Field(default=_UNSET_TIME, max_length=64)  # noqa: N815  # Alertmanager's field name
    fingerprint: str | None = None


class _Webhook(BaseModel):
    """An Alertmanager webhook payload, version 4 (other fields are ignored)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    version: Literal["4"]
    alerts: list[_Alert]


def parse_webhook(
    payload: object, *, now: float, max_duration_seconds: float, default_boost: int
) -> WebhookUpdate:
    """Return the overrides an Alertmanager (version 4) webhook payload asks for.

    Alerts without a ``spillway_action`` label are not for Spillway and are skipped.
    Raises OverrideError (``malformed``) when the payload is not a version 4 webhook or a field has
    the wrong type or value, and (``unknown_action``) for an action Spillway does not know.
    """
    try:
        webhook = _Webhook.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = _where(first["loc"])
        raise OverrideError("malformed", f"{where}: {first['msg']}, got {_show(first['input'])}") from None
    firing: list[Override] = []
    resolved: set[str] = set()
    for i, alert in enumerate(webhook.alerts):
        override = _override(
            alert,
            where=f"alerts[{i}]",
            now=now,
            max_duration_seconds=max_duration_seconds,
            default_boost=default_boost,
        )
        if override is None:
            continue
        if alert.status == "resolved":
            resolved.add(override.key)
        else:
            firing.append(override)
    return WebhookUpdate(firing=tuple(firing), resolved=frozenset(resolved))


def _where(loc: tuple[int | str, ...]) -> str:
    """Return a validation error's location as the payload path (``alerts[2].labels.model``)."""
    if len(loc) >= 2 and loc[0] == "alerts":
        rest = "".join(f".{part}" for part in loc[2:])
        return f"alerts[{loc[1]}]{rest}"
    return "payload" + "".join(f".{part}" for part in loc)


def _override(
    alert: _Alert, *, where: str, now: float, max_duration_seconds: float, default_boost: int
) -> Override | None:
    """Return the override ``alert`` asks for (None when it is not for Spillway); raise OverrideError."""
    labels = alert.labels
    raw_action = labels.get(ACTION_LABEL)
    if raw_action is None:
        return None
    try:
        action = Action(raw_action)
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise OverrideError(
            "unknown_action",
            f"{where}.labels.{ACTION_LABEL}: unknown action {_show(raw_action)} (known: {known})",
        ) from None
    ends = parse_time(alert.endsAt, where=f"{where}.endsAt")
    deadline = now + max_duration_seconds
    if ends is not None and ends > now and alert.status == "firing":
        deadline = min(deadline, ends)
    min_replicas: int | None = None
    if action is Action.BOOST:
        text = labels.get(MIN_REPLICAS_LABEL)
        if text is None:
            min_replicas = default_boost
        elif text.isdigit() and len(text) <= 6:
            min_replicas = int(text)
        else:
            raise OverrideError(
                "malformed",
                f"{where}.labels.{MIN_REPLICAS_LABEL}: expected a non-negative integer, got {_show(text)}",
            )
    if alert.fingerprint:
        key = alert.fingerprint[:_MAX_LABEL]
    else:
        text = json.dumps(sorted(labels.items()))
        key = "labels:" + hashlib.sha256(text.encode()).hexdigest()  # bounded, whatever the labels
    return Override(
        key=key,
        alert=labels.get("alertname", "unnamed"),
        action=action,
        model=labels.get(MODEL_LABEL) or None,
        ends_at=deadline,
        min_replicas=min_replicas,
    )


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class OverrideBook:
    """The overrides in force, keyed by alert; expired ones are dropped when looked up."""

    def __init__(self) -> None:
        """Create an empty book."""
        self._by_key: dict[str, Override] = {}

    def update(
        self, update: WebhookUpdate, *, now: float, limits: OverrideLimits = DEFAULT_LIMITS
    ) -> list[Refused]:
        """Lift resolved overrides, add or refresh firing ones within ``limits``; return those refused.

        An override already in force (same key) is always refreshed; a new one is refused when the
        book holds ``limits.total`` overrides, or ``limits.per_model`` for its model label.
        """
        self._expire(now)
        for key in update.resolved:
            self._by_key.pop(key, None)
        per_model: dict[str | None, int] = {}
        for held in self._by_key.values():
            per_model[held.model] = per_model.get(held.model, 0) + 1
        refused: list[Refused] = []
        for override in update.firing:
            old = self._by_key.get(override.key)
            if old is not None and old.model == override.model:
                self._by_key[override.key] = override
                continue
            if old is not None:  # same alert, other model: counts as a new one for its model
                del self._by_key[override.key]
                per_model[old.model] -= 1
            if len(self._by_key) >= limits.total:
                refused.append(Refused(override=override, reason="max_overrides"))
            elif per_model.get(override.model, 0) >= limits.per_model:
                refused.append(Refused(override=override, reason="max_overrides_per_model"))
            else:
                self._by_key[override.key] = override
                per_model[override.model] = per_model.get(override.model, 0) + 1
        return refused

    def _expire(self, now: float) -> None:
        for key in [k for k, o in self._by_key.items() if o.ends_at <= now]:
            del self._by_key[key]

    def active(self, *, now: float, model: str | None = None) -> list[Override]:
        """Return the overrides in force at ``now`` (for ``model``, when given), dropping expired ones."""
        self._expire(now)
        found = [o for o in self._by_key.values() if model is None or o.model in (None, model)]
        return sorted(found, key=lambda o: (o.action.value, o.key))


def adjust_observed(observed: Observed, overrides: Iterable[Override]) -> Observed:
    """Return ``observed`` with the capacity the overrides switch off marked unavailable."""
    off = observed.unavailable
    for override in overrides:
        if override.action is Action.SERVERLESS_OFF:
            off |= Unavailable.SERVERLESS
        elif override.action is Action.KUBERNETES_OFF:
            off |= Unavailable.KUBERNETES
    if off == observed.unavailable:
        return observed
    return dataclasses.replace(observed, unavailable=off)


def adjust_decision(
    decision: Decision, *, overrides: Iterable[Override], previous: Decision | None, policy: ModelPolicy
) -> Decision:
    """Return ``decision`` with freeze and boost applied, within the policy's hard bounds.

    Every active override is named in the reason, within MAX_REASON_BYTES (the rest counted);
    ``bound_by`` says ``override-<action>`` when one changed the outcome.
    """
    active = list(overrides)
    if not active:
        return decision
    bounds = policy.bounds
    replicas, standby, serverless = decision.replicas, decision.standby, decision.serverless_provisioned
    bound_by = decision.bound_by
    for override in active:
        if override.action is Action.FREEZE and previous is not None:
            floor = min(previous.replicas, bounds.max_replicas)
            if floor > replicas:
                replicas, bound_by = floor, "override-freeze"
            standby = max(standby, min(previous.standby, bounds.max_standby))
            serverless = max(serverless, min(previous.serverless_provisioned, bounds.serverless_quota))
        elif override.action is Action.BOOST and override.min_replicas is not None:
            floor = min(override.min_replicas, bounds.max_replicas)
            if floor > replicas:
                replicas, bound_by = floor, "override-boost"
    named = describe_all(active)
    spill = decision.spill_fraction if math.isfinite(decision.spill_fraction) else 0.0
    return dataclasses.replace(
        decision,
        replicas=replicas,
        standby=standby,
        serverless_provisioned=serverless,
        spill_fraction=spill,
        bound_by=bound_by,
        reason=f"{decision.reason} [overrides: {named}]",
    )


def summary(overrides: Iterable[Override]) -> Mapping[str, list[str]]:
    """Return action -> sorted models ('*' = all) of the given overrides (for the metrics gauge)."""
    found: dict[str, set[str]] = {}
    for override in overrides:
        found.setdefault(override.action.value, set()).add(override.model or "*")
    return {action: sorted(models) for action, models in sorted(found.items())}
