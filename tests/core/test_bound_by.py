"""``bound_by``: typed reasons plus ``schedule:<name>``, unchanged on the wire and in checkpoints."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from scaler.control import checkpoint
from scaler.control.controller import ModelController
from scaler.control.payload import decision_payload
from scaler.core.plan import plan
from scaler.core.policy import ModelPolicy
from scaler.core.types import REASONS, Decision, Reason, by_schedule, parse_bound_by, schedule_name
from scaler.forecast.models import DemandForecaster

REPO = Path(__file__).resolve().parents[2]


def _decision(bound_by: str) -> Decision:
    return Decision(
        at=60.0,
        replicas=2,
        standby=0,
        serverless_provisioned=1,
        spill_fraction=0.25,
        reason="r",
        bound_by=parse_bound_by(bound_by),
        quantile=0.9,
        cost_per_hour={"chosen": 1.0},
    )


def test_every_reason_and_a_schedule_read_back_as_themselves() -> None:
    assert set(typing.get_args(Reason)) == REASONS
    for text in [*sorted(REASONS), "schedule:night", "schedule:black-friday"]:
        assert parse_bound_by(text) == text
    assert by_schedule("night") == "schedule:night"
    assert schedule_name(by_schedule("night")) == "night"
    assert schedule_name("max_replicas") is None


@pytest.mark.parametrize("text", ["fractle", "schedule:", "", "Fractile", "max replicas"])
def test_a_misspelt_reason_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a reason"):
        parse_bound_by(text)


def test_the_decisions_topic_carries_bound_by_as_the_same_text() -> None:
    for text in ("schedule:night", "max_replicas", "no-data"):
        payload = decision_payload(model="m", decision=_decision(text), trigger="tick", dry_run=False)
        assert f'"bound_by": "{text}"' in json.dumps(payload)


def test_a_checkpoint_keeps_a_schedule_bound_and_an_unknown_reason_costs_only_its_name() -> None:
    policy = ModelPolicy.model_validate({"name": "m"})
    ctl = ModelController(
        policy=policy, forecaster=DemandForecaster.from_policy(policy), planner=plan, now=0.0
    )
    ctl.previous = _decision("schedule:night")

    def restored() -> ModelController:
        return checkpoint.restore(
            checkpoint.encode(ctl),
            policy=policy,
            load_forecaster=DemandForecaster.from_bytes,
            planner=plan,
            now=60.0,
        )

    assert restored().previous == ctl.previous
    # a reason another version wrote: the checkpoint (forecaster history, previous decision) is kept
    ctl.previous = dataclasses.replace(ctl.previous, bound_by="cost")  # type: ignore[arg-type]
    again = restored().previous
    assert again is not None
    assert again.bound_by == "none"
    assert again.replicas == ctl.previous.replicas


@pytest.mark.slow
def test_mypy_strict_refuses_a_misspelt_reason(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            from scaler.core.types import BoundBy, by_schedule

            good: BoundBy = "scale_down_delay"
            named: BoundBy = by_schedule("night")
            bad: BoundBy = "scale_down_dealy"
            raw: BoundBy = "schedule:night"
            """
        ),
        encoding="utf-8",
    )
    # in a process of its own: mypy's in-process API raises the interpreter's recursion limit for good
    command = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent"]
    done = subprocess.run(
        [*command, "--cache-dir", str(tmp_path / "cache"), str(probe)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["6", "7"], out  # the misspelling and the raw text
