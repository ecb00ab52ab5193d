"""Grouped settings: the sections of the flat Settings, and the grouped form of the config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from scaler.cli import build_parser
from scaler.commands.run import settings_from_args
from scaler.settings import SECRET_FIELDS, SECTIONS, Settings, SettingsError, load_settings

# one setting of each section moved off its default: (section, key, value in the file, value read)
SECTION_CASES: list[tuple[str, str, Any, Any]] = [
    ("kafka", "bootstrap_servers", ["a:9092", "b:9092"], ("a:9092", "b:9092")),
    ("policy", "files", ["p1.yaml", "p2.yaml"], (Path("p1.yaml"), Path("p2.yaml"))),
    ("http", "listen", "127.0.0.1:9001", "127.0.0.1:9001"),
    ("checkpoint", "dir", "/var/lib/spillway", Path("/var/lib/spillway")),
    ("burst", "window_seconds", 5, 5),
    ("alerts", "max_overrides", 9, 9),
    ("prometheus", "url", "http://prom.monitoring:9090", "http://prom.monitoring:9090"),
    ("kubernetes", "in_cluster", True, True),
    ("aws", "region", "eu-west-1", "eu-west-1"),
    ("actuator", "attempts", 7, 7),
    ("lease", "fencing", "off", "off"),
    ("keda", "listen", "0.0.0.0:9090", "0.0.0.0:9090"),
]


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    config = tmp_path / "scaler.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    return config


def _load(config: Path, env: dict[str, str] | None = None, **flags: object) -> Settings:
    return load_settings(config_file=config, env=env or {}, flags=flags)


def _problems(config: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        _load(config, env)
    return caught.value.problems


def test_every_section_has_a_case() -> None:
    assert sorted(c[0] for c in SECTION_CASES) == sorted(SECTIONS)


@pytest.mark.parametrize(("section", "key", "written", "read"), SECTION_CASES)
def test_a_grouped_setting_loads_like_its_flat_name(
    section: str, key: str, written: Any, read: Any, tmp_path: Path
) -> None:
    flat = SECTIONS[section].flat_names()[key]
    grouped = _load(_write(tmp_path, {section: {key: written}}))
    assert grouped == _load(_write(tmp_path, {flat: written}))
    assert getattr(grouped, flat) == read
    assert getattr(getattr(grouped, section), key) == read
    assert getattr(Settings(), flat) != read  # the case moved the setting off its default


def test_sections_carry_the_layered_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        {
            "kafka": {"group_id": "from-file", "client_id": "file-client", "topic_partitions": 12},
            "http": {"listen": "127.0.0.1:9000"},
            "lease": {"namespace": "ml", "renew_seconds": 4},
            "log_level": "warning",
        },
    )
    monkeypatch.setenv("SCALER_KAFKA_GROUP_ID", "from-env")
    monkeypatch.setenv("SCALER_LEASE_NAMESPACE", "ops")
    args = build_parser().parse_args(["run", "--config", str(config), "--listen", "127.0.0.1:9200"])
    s = settings_from_args(args)
    assert s.kafka.group_id == "from-env"  # env beats the file's section
    assert s.kafka.client_id == "file-client"
    assert s.kafka.topic_partitions == 12
    assert s.kafka.requests_topic == "llm.requests"  # a default
    assert (s.http.host, s.http.port) == ("127.0.0.1", 9200)  # the flag beats both
    assert (s.lease.namespace, s.lease.renew_seconds) == ("ops", 4)
    assert s.log_level == "warning"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"kafka_group_id": "a", "kafka": {"group_id": "b"}},
            "kafka.group_id: also given as kafka_group_id",
        ),
        (
            {"prometheus": {"url": "http://p:9090"}, "prometheus_url": "http://q:9090"},
            "prometheus.url: also given as prometheus_url",
        ),
        (
            {"fencing_leases": "on", "lease": {"fencing": "off"}},
            "lease.fencing: also given as fencing_leases",
        ),
    ],
)
def test_a_setting_given_both_flat_and_grouped_is_refused(
    data: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    problems = _problems(_write(tmp_path, data))
    assert problems == [f"{tmp_path / 'scaler.yaml'}: {expected}; give each setting once"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kafka": {"grup_id": "x"}}, "kafka.grup_id: not in the kafka section; did you mean group_id?"),
        (
            {"kafka": {"kafka_group_id": "x"}},
            "kafka.kafka_group_id: not in the kafka section; did you mean group_id?",
        ),
        (
            {"lease": {"renew_second": 3}},
            "lease.renew_second: not in the lease section; did you mean renew_seconds?",
        ),
        ({"aws": {"zone": "a"}}, "aws.zone: not in the aws section"),
        ({"kafak": {"group_id": "x"}}, "kafak: Extra inputs are not permitted"),
        ({"kafka": "broker:9092"}, "kafka: a section is a mapping of setting: value"),
    ],
)
def test_an_unknown_key_is_named_with_the_nearest_one(
    data: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    problems = _problems(_write(tmp_path, data))
    assert len(problems) == 1
    assert expected in problems[0], problems


def test_a_misspelt_section_or_flat_name_gets_a_suggestion(tmp_path: Path) -> None:
    assert _problems(_write(tmp_path, {"kafak": {"group_id": "x"}}))[0].endswith("; did you mean kafka?")
    assert _problems(_write(tmp_path, {"kafka_grup_id": "x"}))[0].endswith("; did you mean kafka_group_id?")
    assert not _problems(_write(tmp_path, {"zzz": 1}))[0].endswith("?")


def _secret_keys() -> list[tuple[str, str]]:
    return sorted(
        (name, key)
        for name, cls in SECTIONS.items()
        for key, flat in cls.flat_names().items()
        if flat in SECRET_FIELDS
    )


def test_every_secret_has_a_section() -> None:
    assert {SECTIONS[name].flat_names()[key] for name, key in _secret_keys()} == SECRET_FIELDS


@pytest.mark.parametrize(("section", "key"), _secret_keys())
def test_a_secret_in_a_section_is_refused_as_in_the_flat_form(section: str, key: str, tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, {section: {key: "hunter2"}}))
    assert problems == [
        f"{tmp_path / 'scaler.yaml'}: {section}.{key}: secrets are not read from the config file; "
        "use env or a file"
    ]


def test_a_bad_grouped_value_is_named_as_written(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, {"kafka": {"topic_partitions": 0, "group_id": "g"}}))
    where = tmp_path / "scaler.yaml"
    assert problems == [
        f"{where}: kafka.topic_partitions: Input should be greater than or equal to 1 (got 0)"
    ]
    # the same value from the environment is named by its flat name there
    problems = _problems(_write(tmp_path, {}), {"SCALER_KAFKA_TOPIC_PARTITIONS": "0"})
    assert problems[0].startswith("environment: kafka_topic_partitions: ")


def test_a_grouped_file_still_runs_the_cross_checks(tmp_path: Path) -> None:
    config = _write(tmp_path, {"lease": {"duration_seconds": 10, "renew_seconds": 5, "margin_seconds": 5}})
    assert "must be less than lease_duration_seconds" in _problems(config)[0]


def test_an_empty_section_changes_nothing(tmp_path: Path) -> None:
    assert _load(_write(tmp_path, {"kafka": None, "http": {}})) == Settings()


def test_sections_keep_secrets_and_url_passwords_masked(tmp_path: Path) -> None:
    env = {
        "SCALER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SCALER_KAFKA_SASL_MECHANISM": "PLAIN",
        "SCALER_KAFKA_SASL_USERNAME": "scaler",
        "SCALER_KAFKA_SASL_PASSWORD": "hunter2",
        "SCALER_PROMETHEUS_URL": "http://reader:pr0m-pw@prom:9090",
    }
    s = _load(_write(tmp_path, {"prometheus": {"timeout_seconds": 5}}), env)
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "hunter2"
    assert s.prometheus.url == "http://reader:pr0m-pw@prom:9090"  # the adapter gets the real URL
    for view in (repr(s.kafka), str(s.kafka), repr(s.prometheus), str(s.prometheus.model_dump())):
        assert "hunter2" not in view
    assert "pr0m-pw" not in repr(s.prometheus)
    assert "reader:***@prom" in repr(s.prometheus)


def test_sections_are_frozen_views_of_the_flat_settings() -> None:
    s = Settings(kafka_group_id="g")
    with pytest.raises(pydantic.ValidationError):
        s.kafka.group_id = "other"  # type: ignore[misc]
    assert s.kafka.group_id == "g"
    owners: dict[str, str] = {}
    for name, cls in SECTIONS.items():
        for key, flat in cls.flat_names().items():
            assert flat not in owners, f"{flat} in {owners.get(flat)} and {name}"
            owners[flat] = name
            # one source of truth: a section field has its flat setting's type
            assert cls.model_fields[key].annotation == Settings.model_fields[flat].annotation, flat
    ungrouped = sorted(set(Settings.model_fields) - owners.keys())
    assert ungrouped == ["actuate", "dry_run", "log_level", "max_skew_seconds", "shutdown_timeout_seconds"]


def test_the_readme_example_of_the_grouped_form_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    after = readme.split("The file also takes the grouped form", 1)[1]
    example = after.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "scaler.yaml"
    secret = tmp_path / "password"
    secret.write_text("s3cret\n", encoding="utf-8")
    text = example.replace("/etc/spillway/kafka-sasl/password", str(secret))
    config.write_text(text, encoding="utf-8")
    s = _load(config)
    assert s.kafka.group_id == "spillway-prod"
    assert s.kafka.bootstrap_servers == ("kafka-0.kafka:9093", "kafka-1.kafka:9093")
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "s3cret"
    assert (s.http.host, s.http.port) == ("0.0.0.0", 8080)
    assert s.policy.files == (Path("/etc/spillway/policies/default.yaml"),)
    assert (s.lease.fencing, s.lease.namespace) == ("auto", "ml")
    assert s.prometheus.url == "http://prometheus-operated.monitoring:9090"
