"""Alert overrides (pure): webhook parsing with clear errors, time bounds, and application within bounds."""

from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.core.overrides import (
    MAX_ALERT_NAME,
    MAX_REASON_BYTES,
    Action,
    Override,
    OverrideBook,
    OverrideError,
    OverrideLimits,
    WebhookUpdate,
    adjust_decision,
    adjust_observed,
    describe_all,
    parse_time,
    parse_webhook,
)
from scaler.core.policy import ModelPolicy
from scaler.core.types import Decision, Observed, Unavailable

NOW = 1_790_000_000.0
POLICY = ModelPolicy.model_validate(
    {
        "name": "llama",
        "bounds": {"min_replicas": 1, "max_replicas": 6, "max_standby": 2, "serverless_quota": 4},
    }
)


def alert(action: str | None, *, status: str = "firing", model: str | None = "llama", **labels: str) -> dict:
    all_labels = {"alertname": "HighLatency", **labels}
    if action is not None:
        all_labels["spillway_action"] = action
    if model is not None:
        all_labels["model"] = model
    return {
        "status": status,
        "labels": all_labels,
        "annotations": {},
        "startsAt": "2026-11-23T20:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"fp-{action}-{model}",
    }


def payload(*alerts: dict) -> dict:
    return {"version": "4", "status": "firing", "receiver": "spillway", "alerts": list(alerts)}


def decision(replicas: int, *, standby: int = 0, serverless: int = 0) -> Decision:
    return Decision(
        at=NOW,
        replicas=replicas,
        standby=standby,
        serverless_provisioned=serverless,
        spill_fraction=0.1,
        reason="cost-optimal",
        bound_by="cost",
        quantile=0.8,
        cost_per_hour={"total": 1.0},
    )


def parse(body: object) -> list:
    update = parse_webhook(body, now=NOW, max_duration_seconds=3600, default_boost=3)
    return [*update.firing, *sorted(update.resolved)]


@pytest.mark.parametrize(
    ("body", "reason", "names"),
    [
        ([], "malformed", "payload"),
        ({"version": "3", "alerts": []}, "malformed", "payload.version"),
        ({"version": "4", "alerts": {}}, "malformed", "payload.alerts"),
        (payload("nope"), "malformed", "alerts[0]"),
        (payload({"status": "firing", "labels": {"a": 1}}), "malformed", "alerts[0].labels"),
        (payload(alert("explode")), "unknown_action", "alerts[0].labels.spillway_action"),
        (payload(alert("freeze", status="pending")), "malformed", "alerts[0].status"),
        (payload({**alert("freeze"), "endsAt": "tomorrow"}), "malformed", "alerts[0].endsAt"),
        (payload(alert("boost", spillway_min_replicas="-2")), "malformed", "spillway_min_replicas"),
    ],
)
def test_bad_payloads_are_refused_with_a_reason_naming_the_field(
    body: object, reason: str, names: str
) -> None:
    with pytest.raises(OverrideError) as caught:
        parse(body)
    assert caught.value.reason == reason
    assert names in str(caught.value)


def test_firing_alerts_become_overrides_and_others_are_skipped() -> None:
    found = parse(
        payload(alert("boost", spillway_min_replicas="5"), alert(None), alert("freeze", model=None))
    )
    assert [(o.action, o.model, o.min_replicas) for o in found] == [
        (Action.BOOST, "llama", 5),
        (Action.FREEZE, None, None),
    ]
    assert all(o.ends_at == NOW + 3600 for o in found)  # no endsAt: the maximum duration bounds it


def test_boost_without_a_count_uses_the_default_and_ends_at_alert_end_if_sooner() -> None:
    ends = datetime.datetime.fromtimestamp(NOW + 10, tz=datetime.UTC).isoformat().replace("+00:00", "Z")
    (override,) = parse(payload({**alert("boost"), "endsAt": ends}))
    assert override.min_replicas == 3
    assert override.ends_at == pytest.approx(NOW + 10)
    assert parse_time(ends, where="t") == pytest.approx(NOW + 10)
    assert override.ends_at < NOW + 3600


def test_resolution_lifts_and_the_deadline_expires_overrides() -> None:
    book = OverrideBook()
    book.update(
        parse_webhook(
            payload(alert("freeze"), alert("serverless_off", model=None)),
            now=NOW,
            max_duration_seconds=60,
            default_boost=1,
        ),
        now=NOW,
    )
    assert [o.action for o in book.active(now=NOW, model="llama")] == [Action.FREEZE, Action.SERVERLESS_OFF]
    assert [o.action for o in book.active(now=NOW, model="other")] == [Action.SERVERLESS_OFF]
    book.update(
        parse_webhook(
            payload(alert("freeze", status="resolved")), now=NOW + 1, max_duration_seconds=60, default_boost=1
        ),
        now=NOW + 1,
    )
    assert [o.action for o in book.active(now=NOW + 1, model="llama")] == [Action.SERVERLESS_OFF]
    assert book.active(now=NOW + 60, model="llama") == []


def test_capacity_switches_mark_observed_unavailable() -> None:
    book = OverrideBook()
    book.update(
        parse_webhook(
            payload(alert("serverless_off"), alert("kubernetes_off")),
            now=NOW,
            max_duration_seconds=60,
            default_boost=1,
        ),
        now=NOW,
    )
    observed = Observed(
        replicas_ready=2, replicas_starting=0, standby_ready=0, standby_starting=0, serverless_provisioned=0
    )
    adjusted = adjust_observed(observed, book.active(now=NOW, model="llama"))
    assert adjusted.unavailable == Unavailable.SERVERLESS | Unavailable.KUBERNETES
    assert adjust_observed(observed, []) is observed


@pytest.mark.parametrize(
    ("action", "labels", "planned", "previous", "outcome"),
    [
        ("freeze", {}, decision(2), decision(5, standby=2, serverless=3), ((5, 2, 3), "override-freeze")),
        ("freeze", {}, decision(4), decision(3), ((4, 0, 0), "cost")),  # scale-up is still allowed
        ("freeze", {}, decision(2), decision(9), ((6, 0, 0), "override-freeze")),  # never above max_replicas
        ("boost", {"spillway_min_replicas": "4"}, decision(2), None, ((4, 0, 0), "override-boost")),
        ("boost", {"spillway_min_replicas": "50"}, decision(2), None, ((6, 0, 0), "override-boost")),
        ("boost", {"spillway_min_replicas": "1"}, decision(2), None, ((2, 0, 0), "cost")),
    ],
)
def test_freeze_and_boost_raise_floors_within_the_hard_bounds(
    action: str,
    labels: dict[str, str],
    planned: Decision,
    previous: Decision | None,
    outcome: tuple[tuple[int, int, int], str],
) -> None:
    expected, bound_by = outcome
    overrides = parse(payload(alert(action, **labels)))
    out = adjust_decision(planned, overrides=overrides, previous=previous, policy=POLICY)
    assert (out.replicas, out.standby, out.serverless_provisioned) == expected
    assert out.bound_by == bound_by
    assert f"overrides: {action}" in out.reason
    assert "HighLatency" in out.reason


def test_no_override_leaves_the_decision_untouched() -> None:
    planned = decision(2)
    assert adjust_decision(planned, overrides=[], previous=decision(5), policy=POLICY) is planned


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=30,
)
label_values = st.sampled_from(["freeze", "boost", "serverless_off", "kubernetes_off", "", "x"]) | st.text(
    max_size=8
)
alert_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]) | json_values,
        "labels": st.dictionaries(
            st.sampled_from(["spillway_action", "model", "spillway_min_replicas", "alertname"])
            | st.text(max_size=5),
            label_values,
            max_size=4,
        )
        | json_values,
        "endsAt": st.sampled_from(["0001-01-01T00:00:00Z", "2030-01-01T00:00:00+02:00", "bad"]) | json_values,
        "fingerprint": json_values,
    }
)


@settings(max_examples=300, deadline=None)
@given(
    body=json_values
    | st.fixed_dictionaries({"version": st.just("4"), "alerts": st.lists(alert_like, max_size=4)})
)
def test_hostile_payloads_only_ever_raise_override_error(body: object) -> None:
    body = json.loads(json.dumps(body, allow_nan=True))
    try:
        parse(body)
    except OverrideError as exc:
        outcome = exc.reason
    else:
        outcome = "accepted"
    assert outcome in ("accepted", "malformed", "unknown_action")


def flood(
    count: int, *, model: str | None = "llama", prefix: str = "f", name_length: int = 900
) -> WebhookUpdate:
    """Return a webhook of ``count`` firing boosts with distinct fingerprints and long alert names."""
    alerts = []
    for i in range(count):
        one = alert("boost", model=model, alertname=f"{prefix}{i}-" + "N" * name_length)
        one["fingerprint"] = f"{prefix}-{i}"
        alerts.append(one)
    return parse_webhook(payload(*alerts), now=NOW, max_duration_seconds=600, default_boost=2)


def test_the_book_refuses_new_overrides_beyond_its_caps_and_counts_why() -> None:
    book = OverrideBook()
    limits = OverrideLimits(total=5, per_model=3)
    refused = book.update(flood(4, model="a"), now=NOW, limits=limits)
    assert [r.reason for r in refused] == ["max_overrides_per_model"]
    refused = book.update(flood(4, model="b", prefix="g"), now=NOW, limits=limits)
    assert [r.reason for r in refused] == ["max_overrides", "max_overrides"]
    assert len(book.active(now=NOW)) == 5
    assert len(book.active(now=NOW, model="a")) == 3
    # an alert already in force is refreshed even at the cap; a resolution makes room for a new one
    again = book.update(flood(1, model="a"), now=NOW + 1, limits=limits)
    assert again == []
    lift = parse_webhook(
        payload({**alert("boost", status="resolved", model="b"), "fingerprint": "g-0"}),
        now=NOW + 1,
        max_duration_seconds=600,
        default_boost=2,
    )
    assert book.update(lift, now=NOW + 1, limits=limits) == []
    assert book.update(flood(3, model="c", prefix="h"), now=NOW + 1, limits=limits)[0].reason == (
        "max_overrides"
    )
    assert len(book.active(now=NOW + 1, model="c")) == 1
    # expired overrides free their slots
    assert book.update(flood(3, model="c", prefix="k"), now=NOW + 600, limits=limits) == []


def test_the_issue_flood_keeps_the_book_within_the_default_caps() -> None:
    book = OverrideBook()
    refused = 0
    for post in range(8):
        refused += len(book.update(flood(220, prefix=f"p{post}"), now=NOW))
    assert len(book.active(now=NOW)) == 16  # the default per-model cap
    assert refused == 8 * 220 - 16


def test_a_decision_reason_names_overrides_within_its_byte_budget() -> None:
    book = OverrideBook()
    book.update(flood(200, name_length=5000 // 6), now=NOW, limits=OverrideLimits(total=200, per_model=200))
    active = book.active(now=NOW, model="llama")
    out = adjust_decision(decision(2), overrides=active, previous=None, policy=POLICY)
    assert out.reason.startswith("cost-optimal [overrides: boost min=2 (alert ")
    named = out.reason.removeprefix("cost-optimal [overrides: ").removesuffix("]")
    assert len(named.encode()) <= MAX_REASON_BYTES
    shown = named.count("(alert ")
    assert 0 < shown < 200
    assert named.endswith(f"; and {200 - shown} more")
    names = [part.split("(alert ")[1].split(" until")[0] for part in named.split("; ")[:-1]]
    assert all(len(name) <= MAX_ALERT_NAME and name.endswith("...") for name in names)
    assert out.replicas == 2


override_lists = st.lists(
    st.builds(
        Override,
        key=st.text(max_size=5),
        alert=st.text(max_size=300),
        action=st.sampled_from(list(Action)),
        model=st.none() | st.text(max_size=5),
        ends_at=st.floats(min_value=0, max_value=1e12),
        min_replicas=st.none() | st.integers(min_value=0, max_value=999_999),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(overrides=override_lists, limit=st.integers(min_value=32, max_value=4096))
def test_describe_all_fits_its_limit_and_counts_what_it_leaves_out(overrides: list, limit: int) -> None:
    text = describe_all(overrides, limit=limit)
    assert len(text.encode()) <= limit
    full = "; ".join(o.describe() for o in overrides)
    if len(full.encode()) <= limit:
        assert text == full
    else:
        head, _, more = text.rpartition("and ")
        assert more.endswith(" more")
        left_out = int(more.removesuffix(" more"))
        shown = len(overrides) - left_out
        assert head == "".join(o.describe() + "; " for o in overrides[:shown])
