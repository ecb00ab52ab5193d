"""Reading policy files: examples validate; each bad file gives file:line: field: message naming the value."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler.core.policy_file import (
    MAX_POLICY_BYTES,
    MAX_YAML_NODES,
    PolicyError,
    Problem,
    load_policies,
    load_policy_file,
    parse_policy_text,
    read_policy_file,
)

POLICIES = Path(__file__).resolve().parents[2] / "policies"
EXAMPLES = sorted(POLICIES.glob("*.yaml"))


def problems_of(text: str, source: str = "p.yaml") -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(text, source=source)
    return [str(p) for p in caught.value.problems]


def test_there_are_example_policies() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"default.yaml", "steady-high-volume.yaml", "sporadic.yaml", "latency-critical.yaml"} <= names
    assert "business-hours.yaml" in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_policy_validates(path: Path) -> None:
    policy = load_policy_file(path)
    assert policy.models, f"{path.name} defines no model"


def test_business_hours_uses_a_real_time_zone_and_shared_anchors() -> None:
    policy = load_policy_file(POLICIES / "business-hours.yaml")
    assistant, summariser = policy.models
    assert {s.timezone for s in assistant.schedules} == {"Europe/Berlin"}
    assert assistant.schedules[0].start == "07:45"  # plain 07:45 is text, not base-60 465
    assert assistant.forecast.seasonalities_seconds == [86_400, 604_800]
    # the merge keeps the anchor's keys and overrides one
    assert summariser.forecast.bucket_seconds == assistant.forecast.bucket_seconds
    assert summariser.forecast.horizon_seconds == 2700


BASE = "models:\n  - name: m\n"

# (case, yaml text, expected "file:line: field:" prefix, a fragment the message must contain)
BAD_FILES = [
    (
        "negative price",
        BASE + "    prices:\n      replica_per_hour: -3.0\n",
        "p.yaml:4: models[0].prices.replica_per_hour:",
        "must be >= 0, got -3.0",
    ),
    (
        "quoted number",
        BASE + "    bounds:\n      max_replicas: \"3\"\n",
        "p.yaml:4: models[0].bounds.max_replicas:",
        'got "3"',
    ),
    (
        "boolean for a number",
        BASE + "    slo:\n      ttft_seconds: true\n",
        "p.yaml:4: models[0].slo.ttft_seconds:",
        "must be a number, got true",
    ),
    (
        "float for a count",
        BASE + "    bounds:\n      max_replicas: 2.5\n",
        "p.yaml:4: models[0].bounds.max_replicas:",
        "must be a whole number, got 2.5",
    ),
    (
        "unknown key with a close match",
        BASE + "    prices:\n      replica_per_hr: 3\n",
        "p.yaml:4: models[0].prices.replica_per_hr:",
        "unknown key 'replica_per_hr'; did you mean 'replica_per_hour'?",
    ),
    (
        "unknown key without a close match",
        BASE + "    colour: blue\n",
        "p.yaml:3: models[0].colour:",
        "unknown key 'colour'; valid keys: name, slo,",
    ),
    (
        "min above max",
        BASE + "    bounds:\n      min_replicas: 5\n      max_replicas: 2\n",
        "p.yaml:3: models[0].bounds:",
        "min_replicas (5) > max_replicas (2)",
    ),
    (
        "missing name",
        "models:\n  - slo:\n      attainment: 0.9\n",
        "p.yaml:2: models[0].name:",
        "required, but missing",
    ),
    (
        "yaml syntax error",
        BASE + "    prices: [1, 2\n    bounds: {}\n",
        "p.yaml:4:",
        "YAML syntax error: while parsing a flow sequence",
    ),
    (
        "empty file",
        "# only a comment\n",
        "p.yaml:",
        "file is empty",
    ),
    (
        "top level is a list",
        "\n- name: m\n",
        "p.yaml:2:",
        "top level must be a mapping with a 'models' list, got a list of 1",
    ),
    (
        "top level is a scalar",
        "hello\n",
        "p.yaml:1:",
        "got hello",
    ),
    (
        "duplicate key",
        BASE + "    bounds:\n      max_replicas: 3\n      max_replicas: 4\n",
        "p.yaml:5: models[0].bounds.max_replicas:",
        "duplicate key 'max_replicas' (first on line 4)",
    ),
    (
        "duplicate model in one file",
        BASE + "  - name: other\n  - name: m\n",
        "p.yaml:4: models[2].name:",
        "model 'm' is already defined on line 2",
    ),
    (
        "non-text key",
        BASE + "    on: 3\n",
        "p.yaml:3: models[0]:",
        'keys must be text, got on (write "on" in quotes)',
    ),
    (
        "unsafe tag",
        "models: !!python/object/apply:os.system ['true']\n",
        "p.yaml:1: models:",
        "YAML tag !!python/object/apply:os.system is not allowed in a policy file",
    ),
    (
        "bad weekday",
        BASE + "    schedules:\n      - name: w\n        days: [monday]\n        start: 08:00\n"
        "        end: 18:00\n        min_replicas: 1\n",
        "p.yaml:5: models[0].schedules[0].days[0]:",
        "got monday",
    ),
    (
        "unknown time zone",
        BASE + "    schedules:\n      - name: w\n        start: 08:00\n        end: 18:00\n"
        "        timezone: Europe/Atlantis\n        min_replicas: 1\n",
        "p.yaml:7: models[0].schedules[0].timezone:",
        "unknown time zone 'Europe/Atlantis'",
    ),
    (
        "bad model name",
        "models:\n  - name: my model\n",
        "p.yaml:2: models[0].name:",
        "got my model",
    ),
    (
        "quantile out of range",
        BASE + "    forecast:\n      quantile: 1.5\n",
        "p.yaml:4: models[0].forecast.quantile:",
        "must be < 1, got 1.5",
    ),
    (
        "null where text is needed",
        "models:\n  - name:\n",
        "p.yaml:2: models[0].name:",
        "must be text, got nothing (null)",
    ),
    (
        "wrong version",
        "version: 2\n" + BASE,
        "p.yaml:1: version:",
        "must be 1, got 2",
    ),
    (
        "no models",
        "models: []\n",
        "p.yaml:1: models:",
        "must have at least 1 items, got 0",
    ),
    (
        "two documents",
        BASE + "---\n" + BASE,
        "p.yaml:3:",
        "expected a single document",
    ),
    (
        "control character",
        "models:\n  - name: m\x07\n",
        "p.yaml:2:",
        "U+0007 is not allowed",
    ),
]


@pytest.mark.parametrize(
    ("text", "prefix", "fragment"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_bad_file_problem_names_line_field_and_value(text: str, prefix: str, fragment: str) -> None:
    lines = problems_of(text)
    assert any(line.startswith(prefix) and fragment in line for line in lines), lines


def test_every_problem_in_a_file_is_reported_not_just_the_first() -> None:
    text = BASE + "    prices:\n      replica_per_hour: -1\n    bounds:\n      max_replicas: -2\n"
    lines = problems_of(text)
    assert [line.split(": ")[0] for line in lines] == ["p.yaml:4", "p.yaml:6"]


def test_problem_prints_as_file_line_field_message() -> None:
    problem = Problem("policies/x.yaml", 14, "models[0].prices.replica_per_hour", "must be >= 0, got -3.0")
    assert str(problem) == "policies/x.yaml:14: models[0].prices.replica_per_hour: must be >= 0, got -3.0"
    assert str(Problem("x.yaml", None, "", "no such file")) == "x.yaml: no such file"


def test_times_and_exponents_read_as_yaml_1_2() -> None:
    text = BASE + (
        "    prices:\n      serverless_per_gpu_second: 2.1e-3\n"
        "    schedules:\n      - name: eve\n        start: 17:00\n        end: 9:00\n"
        "        min_replicas: 1\n"
    )
    lines = problems_of(text)
    # 17:00 stays text (no base-60 1020); 9:00 is text too, and the HH:MM check names it
    assert lines == ["p.yaml:8: models[0].schedules[0].end: '9:00' is not a time HH:MM (00:00-24:00)"]
    fixed = parse_policy_text(text.replace("9:00", "09:00"), source="p.yaml")
    assert fixed.models[0].prices.serverless_per_gpu_second == pytest.approx(0.0021)
    assert fixed.models[0].schedules[0].minutes() == (17 * 60, 9 * 60)


def test_extension_keys_hold_anchors_and_are_ignored() -> None:
    text = "x-prices: &cheap\n  replica_per_hour: 2.0\nmodels:\n  - name: a\n    prices: *cheap\n"
    assert parse_policy_text(text, source="p.yaml").models[0].prices.replica_per_hour == 2.0


def test_alias_bomb_is_refused_without_expanding_it() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    lines.append("models: *a8")
    problems = problems_of("\n".join(lines) + "\n")
    assert problems == [
        f"p.yaml: file expands to more than {MAX_YAML_NODES} YAML values (check anchors and aliases)"
    ]


def test_a_file_of_too_many_values_is_refused_before_its_tree_is_built() -> None:
    # the 380 KB policy: one list of 190,000 values took 1.7 s to read
    text = "x-junk: [" + ",".join(["1"] * 190_000) + "]\nmodels:\n  - name: m\n"
    assert problems_of(text) == [
        f"p.yaml: file has more than {MAX_YAML_NODES} YAML values; split it or remove unused ones"
    ]
    just_under = "x-junk: [" + ",".join(["1"] * (MAX_YAML_NODES - 10)) + "]\nmodels:\n  - name: m\n"
    assert parse_policy_text(just_under, source="p.yaml").models[0].name == "m"


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    problems = problems_of("models: " + "[" * 3000 + "]" * 3000 + "\n")
    assert len(problems) == 1
    assert problems[0].startswith("p.yaml")


# --- files -----------------------------------------------------------------------------------------


def test_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as handle:
        handle.write("models:\n  - name: m\n")
        handle.write(("# padding " + "x" * 1013 + "\n") * (10 * 1024))  # 10 MiB of comments
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: file is 10.0 MiB; policy files are limited to {MAX_POLICY_BYTES // 1024} KiB"
    ]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no such file"),
        ("directory", "is a directory, not a policy file"),
        ("latin-1", "not UTF-8 text: byte 0xe9 cannot be decoded"),
    ],
)
def test_unreadable_files_give_one_clear_problem(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    if setup == "directory":
        path.mkdir()
    elif setup == "latin-1":
        path.write_bytes(b"models:\n  - name: caf\xe9\n")
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    line = ":2" if setup == "latin-1" else ""
    assert [str(p) for p in caught.value.problems] == [f"{path}{line}: {message}"]


def _read_within(path: Path, *, seconds: float = 3.0) -> list[str]:
    """Return the problems of reading ``path``; fail (and unblock the reader) if it takes over ``seconds``."""
    found: list[list[str]] = []
    reader = threading.Thread(target=lambda: found.append([str(p) for p in read_policy_file(path).problems]))
    reader.start()
    reader.join(seconds)
    if reader.is_alive():
        with contextlib.suppress(OSError):  # a reader blocked in open() on a FIFO: give it a writer
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail(f"reading {path} blocked for more than {seconds} s")
    return found[0]


def test_a_fifo_is_refused_at_once_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    os.mkfifo(path)
    started = time.monotonic()
    assert _read_within(path) == [f"{path}: is a FIFO (named pipe), not a policy file"]
    assert time.monotonic() - started < 1.0


def test_devices_sockets_and_links_to_them_are_refused(tmp_path: Path) -> None:
    link = tmp_path / "link.yaml"
    link.symlink_to("/dev/zero")  # a file that never ends, behind a link
    assert _read_within(link) == [f"{link}: is a character device, not a policy file"]
    path = tmp_path / "s.yaml"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        assert _read_within(path) == [f"{path}: is a socket, not a policy file"]


def test_a_link_to_a_regular_file_is_read(tmp_path: Path) -> None:
    target = tmp_path / "real.yaml"
    target.write_text(BASE)
    link = tmp_path / "link.yaml"  # how a Kubernetes ConfigMap volume presents its files
    link.symlink_to(target)
    assert load_policy_file(link).models[0].name == "m"


def test_a_regular_file_swapped_for_a_fifo_after_the_check_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE)
    real_open = os.open

    def swap_then_open(name: object, flags: int, *args: object) -> int:
        if Path(str(name)) == path:  # the race: replaced between stat() and open()
            path.unlink()
            os.mkfifo(path)
        return real_open(name, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", swap_then_open)
    assert _read_within(path) == [f"{path}: is a FIFO (named pipe), not a policy file"]


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_policy_file(path).models[0].name == "m"


def test_load_policies_merges_files_by_model_name(tmp_path: Path) -> None:
    merged = load_policies([POLICIES / "default.yaml", POLICIES / "steady-high-volume.yaml"])
    assert list(merged) == ["llama-3.1-8b-instruct", "llama-3.1-70b-chat", "llama-3.1-8b-chat"]
    assert merged["llama-3.1-8b-chat"].prices.replica_per_hour == 2.5


def test_load_policies_names_both_files_for_a_duplicate_model(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(BASE)
    second.write_text("models:\n  - name: other\n  - name: m\n")
    with pytest.raises(PolicyError) as caught:
        load_policies([first, second])
    assert [str(p) for p in caught.value.problems] == [
        f"{second}:3: models[1].name: model 'm' is already defined in {first}:2"
    ]


def test_load_policies_reports_problems_from_every_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(BASE)
    bad.write_text("models:\n  - name: n\n    bounds: {max_replicas: -1}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies([good, bad, tmp_path / "gone.yaml"])
    sources = [p.source for p in caught.value.problems]
    assert sources == [str(bad), str(tmp_path / "gone.yaml")]


# --- property: nothing but PolicyError, whatever the text ------------------------------------------

DEFAULT_TEXT = (POLICIES / "default.yaml").read_text(encoding="utf-8")
YAML_PIECES = st.sampled_from(
    [":", "-", " ", "\n", "  ", "[", "]", "{", "}", "&a", "*a", "!!", "'", '"', "#", "?", "|", ">", "<<", "~",
     "true", "1e400", "-0", ".nan", "null", "x-", "models", "name", "\t", "%", "@", ",", "\x00", "\ufeff",
     "!!timestamp ", "!!int ", "!!float ", "!!binary ", "!!set ", "!!omap ", "!!str ", "!x ", "2024-13-45",
     "0x"]
)


@st.composite
def mutated_policy(draw: st.DrawFn) -> str:
    text = DEFAULT_TEXT
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.one_of(YAML_PIECES, st.text(max_size=4)))
        end = min(len(text), at + draw(st.integers(min_value=1, max_value=20)))
        if action == "insert":
            text = text[:at] + piece + text[at:]
        elif action == "delete":
            text = text[:at] + text[end:]
        else:
            text = text[:at] + piece + text[end:]
    return text


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _accepts_or_policy_error(text: str) -> None:
    problems: list[Problem] = []
    try:
        parse_policy_text(text, source="fuzz.yaml")
    except PolicyError as exc:
        problems = exc.problems or [Problem("", None, "", "PolicyError without problems")]
    assert all(str(p).startswith("fuzz.yaml") for p in problems), problems


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_policy())
def test_mutated_policy_raises_only_policy_error(text: str) -> None:
    _accepts_or_policy_error(text)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_garbage_text_raises_only_policy_error(text: str) -> None:
    _accepts_or_policy_error(text)


@settings(max_examples=150, deadline=None)
@given(
    section=st.sampled_from(["slo", "replica", "prices", "bounds", "forecast", "schedules", "name"]),
    key=st.sampled_from(["ttft_seconds", "max_replicas", "replica_per_hour", "quantile", "start", "zz"]),
    value=yaml_values,
)
def test_random_values_in_valid_places_raise_only_policy_error(section: str, key: str, value: object) -> None:
    model: dict[str, object] = {"name": "m"}
    model[section] = value if section == "name" else {key: value}
    _accepts_or_policy_error(yaml.safe_dump({"models": [model]}))


def test_a_file_with_very_many_problems_reports_the_first_and_a_count() -> None:
    text = "models:\n" + "".join(f"  - name: m{i}\n    bounds: {{max_replicas: -1}}\n" for i in range(80))
    lines = problems_of(text)
    assert len(lines) == 50
    assert lines[0] == "p.yaml:3: models[0].bounds.max_replicas: must be >= 0, got -1"
    assert lines[-1] == "p.yaml: ... and 31 more problems"
