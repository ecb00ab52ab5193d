"""Daemon settings: precedence (flags > env > file > defaults), validation messages, secrets kept secret."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies as st

from scaler.adapters.alerts import load_token
from scaler.cli import build_parser
from scaler.commands.run import settings_from_args
from scaler.settings import Settings, SettingsError, load_settings, mask_url, unknown_env


def _load(config: Path | None = None, env: dict[str, str] | None = None, **flags: object) -> Settings:
    return load_settings(config_file=config, env=env or {}, flags=flags)


def test_defaults_bind_loopback_and_use_the_documented_topics() -> None:
    s = _load()
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)
    assert (s.kafka_requests_topic, s.kafka_metrics_topic) == ("llm.requests", "llm.metrics")
    assert (s.kafka_decisions_topic, s.kafka_deadletter_topic, s.kafka_state_topic) == (
        "scaler.decisions",
        "scaler.deadletter",
        "scaler.state",
    )
    assert s.dry_run is False


def test_flags_beat_env_which_beats_the_file(tmp_path: Path) -> None:
    config = tmp_path / "scaler.yaml"
    config.write_text(
        "kafka_group_id: from-file\nkafka_client_id: file-client\nhttp_listen: 127.0.0.1:9000\n"
    )
    env = {"SCALER_KAFKA_GROUP_ID": "from-env", "SCALER_HTTP_LISTEN": "127.0.0.1:9100", "OTHER": "x"}
    s = _load(config, env, http_listen="127.0.0.1:9200", kafka_group_id=None)
    assert s.kafka_group_id == "from-env"
    assert s.kafka_client_id == "file-client"
    assert s.http.port == 9200


def test_env_lists_and_booleans_are_parsed() -> None:
    env = {
        "SCALER_KAFKA_BOOTSTRAP_SERVERS": "a:9092, b:9092",
        "SCALER_DRY_RUN": "true",
        "SCALER_POLICY_FILES": "p1.yaml,p2.yaml",
        "SCALER_KAFKA_TOPIC_PARTITIONS": "12",
    }
    s = _load(env=env)
    assert s.kafka_bootstrap_servers == ("a:9092", "b:9092")
    assert s.dry_run is True
    assert s.policy_files == (Path("p1.yaml"), Path("p2.yaml"))
    assert s.kafka_topic_partitions == 12


@pytest.mark.parametrize(
    ("env", "flags", "expected"),
    [
        (
            {"SCALER_HTTP_LISTEN": "8080"},
            {},
            "environment: http_listen: Value error, '8080' is not HOST:PORT",
        ),
        ({}, {"kafka_topic_partitions": 0}, "flags: kafka_topic_partitions: Input should be greater than"),
        ({"SCALER_LOG_LEVEL": "loud"}, {}, "environment: log_level: Input should be 'debug'"),
        ({}, {"kafka_group_idd": "x"}, "flags: kafka_group_idd: Extra inputs are not permitted"),
        (
            {"SCALER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            {},
            "needs kafka_sasl_mechanism and kafka_sasl_username",
        ),
        (  # a renewal could not land before the holder stops acting
            {"SCALER_LEASE_DURATION_SECONDS": "10", "SCALER_LEASE_RENEW_SECONDS": "5"},
            {},
            "lease_renew_seconds + lease_margin_seconds must be less than lease_duration_seconds",
        ),
        ({"SCALER_FENCING_LEASES": "maybe"}, {}, "environment: fencing_leases: Input should be 'auto'"),
        ({"SCALER_LEASE_NAME_PREFIX": "Not_DNS"}, {}, "environment: lease_name_prefix: String should match"),
    ],
)
def test_bad_settings_name_their_source_and_field(
    env: dict[str, str], flags: dict[str, object], expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        _load(env=env, **flags)
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_a_bad_config_file_is_reported_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SettingsError, match=r"nope\.yaml: cannot read"):
        _load(missing)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SettingsError, match=r"list\.yaml: the top level must be a mapping"):
        _load(listing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [\n")
    with pytest.raises(SettingsError, match=r"broken\.yaml: not valid YAML"):
        _load(broken)


def test_the_password_is_refused_from_the_file_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "scaler.yaml"
    config.write_text("kafka_sasl_password: hunter2\n")
    with pytest.raises(SettingsError, match="secrets are not read from the config file") as caught:
        _load(config)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(SettingsError, match="pass secrets in the environment"):
        _load(kafka_sasl_password="hunter2")


def _sasl_env(**extra: str) -> dict[str, str]:
    return {
        "SCALER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SCALER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SCALER_KAFKA_SASL_USERNAME": "scaler",
        **extra,
    }


def test_the_password_from_env_or_file_never_shows_in_repr_or_errors(tmp_path: Path) -> None:
    s = _load(env=_sasl_env(SCALER_KAFKA_SASL_PASSWORD="hunter2"))
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    s = _load(env=_sasl_env(), kafka_sasl_password_file=secret)
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == "s3cret"
    with pytest.raises(SettingsError) as caught:
        _load(env=_sasl_env(SCALER_KAFKA_SASL_PASSWORD="hunter2", SCALER_KAFKA_SESSION_TIMEOUT_MS="5"))
    assert "hunter2" not in str(caught.value)


def test_sasl_without_a_password_is_refused() -> None:
    with pytest.raises(SettingsError, match="SASL needs a password"):
        _load(env=_sasl_env())


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_run_flags_map_onto_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCALER_KAFKA_GROUP_ID", "env-group")
    monkeypatch.setenv("SCALER_LOG_LEVEL", "debug")
    args = _args(
        "--bootstrap-servers",
        "k1:9092,k2:9092",
        "--policy",
        "a.yaml",
        "--policy",
        "b.yaml",
        "--dry-run",
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "warning",
    )
    s = settings_from_args(args)
    assert s.kafka_bootstrap_servers == ("k1:9092", "k2:9092")
    assert s.policy_files == (Path("a.yaml"), Path("b.yaml"))
    assert s.dry_run is True
    assert s.kafka_group_id == "env-group"
    assert s.log_level == "warning"


def test_run_with_bad_settings_exits_2_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCALER_HTTP_LISTEN", "nowhere")
    args = _args("--policy", "a.yaml")
    assert args.func(args) == 2
    assert "error: environment: http_listen:" in capsys.readouterr().err


def test_run_without_policies_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCALER_POLICY_FILES", raising=False)
    args = _args()
    assert args.func(args) == 2
    assert "no policy files" in capsys.readouterr().err


def test_run_with_a_broken_policy_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("models:\n  - name: m\n    bounds: {min_replicas: 5, max_replicas: 1}\n")
    args = _args("--policy", str(policy))
    assert args.func(args) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_run_help_reads_like_kubectl() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["run"].format_help()
    assert text.startswith("usage: scaler run [flags]")
    for part in ("Flags:", "Examples:", "--bootstrap-servers", "--dry-run", "SCALER_KAFKA_GROUP_ID"):
        assert part in text


def test_run_logs_its_settings_as_json_with_the_password_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name, value in _sasl_env(SCALER_KAFKA_SASL_PASSWORD="hunter2").items():
        monkeypatch.setenv(name, value)
    args = _args("--policy", str(tmp_path / "missing.yaml"))
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err
    entry = next(json.loads(line) for line in err.splitlines() if line.startswith("{"))
    assert entry["event"] == "settings"
    assert entry["kafka_sasl_password"] == "**********"
    assert entry["kafka_sasl_username"] == "scaler"
    assert entry["level"] == "info"
    assert "timestamp" in entry


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "::::garbage", "'::::garbage' is not HOST:PORT"),
        ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "a:9092,b:0", "'b:0': port 0 is out of range"),
        ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "::1:9092", "host '::1' is not a host name or IP address"),
        ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "[::g]:9092", "host '[::g]' is not an IPv6 address"),
        ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "bad_-.x:9092", "is not a host name or IP address"),
        ("SCALER_HTTP_LISTEN", "256.1.1.1:8080", "host '256.1.1.1' is not an IPv4 address"),
        ("SCALER_HTTP_LISTEN", "127.0.0.1:123456", "is not HOST:PORT"),
        ("SCALER_KAFKA_CLIENT_ID", "c" * 100_000, "String should have at most 255 characters"),
        ("SCALER_KAFKA_GROUP_ID", "g\x00", "must be printable text"),
        ("SCALER_KAFKA_REQUESTS_TOPIC", "no spaces", "kafka_requests_topic: String should match pattern"),
        ("SCALER_KUBERNETES_HOST", "localhost:6443", "is not an http(s)://HOST[:PORT] URL"),
        ("SCALER_AWS_ENDPOINT_URL", "http://[::1", "is not a URL"),
    ],
)
def test_bad_addresses_names_and_urls_are_one_clear_problem(variable: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        _load(env={variable: value})
    (problem,) = caught.value.problems
    assert problem.startswith(f"environment: {variable.removeprefix('SCALER_').lower()}: ")
    assert expected in problem
    assert len(problem) < 400


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "kafka-0.kafka.svc.cluster.local:9092,10.0.0.7:9092,[::1]:9092"),
        ("SCALER_HTTP_LISTEN", "[::]:0"),
        ("SCALER_HTTP_LISTEN", "localhost:8080"),
        ("SCALER_PROMETHEUS_URL", "https://prometheus.monitoring:9090/prefix"),
        ("SCALER_KUBERNETES_HOST", "https://[::1]:6443"),
    ],
)
def test_good_addresses_and_urls_are_accepted(variable: str, value: str) -> None:
    _load(env={variable: value})


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://scaler:s3cret@prom:9090/api", "http://scaler:***@prom:9090/api"),
        ("http://scaler:pa/ss@w@rd@prom:9090", "http://scaler:***@prom:9090"),  # unescaped / and @
        ("http://:s3cret@prom", "http://:***@prom"),
        ("http://scaler@prom:9090", "http://scaler@prom:9090"),  # a user name alone is no secret
        ("http://prom:9090/a", "http://prom:9090/a"),
        ("not a url", "not a url"),
    ],
)
def test_passwords_in_urls_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_a_password_in_a_url_never_shows_in_repr_the_log_view_or_errors() -> None:
    s = _load(env={"SCALER_PROMETHEUS_URL": "http://scaler:s3cret@prom:9090"})
    assert s.prometheus_url == "http://scaler:s3cret@prom:9090"  # the adapters get the real URL
    assert "s3cret" not in repr(s)
    assert s.loggable()["prometheus_url"] == "http://scaler:***@prom:9090"
    assert "s3cret" not in json.dumps(s.loggable())
    with pytest.raises(SettingsError) as caught:
        _load(env={"SCALER_PROMETHEUS_URL": "ftp://scaler:s3cret@prom:9090"})
    assert "s3cret" not in str(caught.value)
    assert "ftp://scaler:***@prom:9090" in str(caught.value)


def test_misspelt_variables_are_named_with_the_nearest_valid_one() -> None:
    env = {
        "SCALER_KAFKA_BOOTSTRAP_SERVER": "x",
        "SCALER_DRYRUN": "true",
        "SCALER_SOMETHING_ELSE": "y",
        "SCALER_TRACES_DIR": "/traces",  # read by scaler simulate: not a mistake
        "SCALER_KAFKA_GROUP_ID": "g",
        "OTHER": "z",
    }
    assert unknown_env(env) == [
        ("SCALER_DRYRUN", "SCALER_DRY_RUN"),
        ("SCALER_KAFKA_BOOTSTRAP_SERVER", "SCALER_KAFKA_BOOTSTRAP_SERVERS"),
        ("SCALER_SOMETHING_ELSE", None),
    ]


def test_run_warns_once_about_a_misspelt_variable_before_a_settings_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCALER_KAFKA_BOOTSTRAP_SERVER", "127.0.0.1:9092")
    monkeypatch.setenv("SCALER_HTTP_LISTEN", "nowhere")
    args = _args("--policy", "a.yaml")
    assert args.func(args) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: SCALER_KAFKA_BOOTSTRAP_SERVER is not a setting and is ignored; "
        "did you mean SCALER_KAFKA_BOOTSTRAP_SERVERS?"
    )


def test_a_fifo_as_the_config_or_password_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def unblock() -> None:  # a reader stuck in open() gets a writer, so a regression fails, not hangs
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    guard = threading.Timer(3.0, unblock)
    guard.start()
    started = time.monotonic()
    with pytest.raises(SettingsError) as caught:
        _load(fifo)
    assert caught.value.problems == [f"{fifo}: is a FIFO (named pipe), not a config file"]
    with pytest.raises(SettingsError) as caught:
        _load(env=_sasl_env(), kafka_sasl_password_file=fifo)
    assert caught.value.problems == [
        "flags: kafka_sasl_password_file: is a FIFO (named pipe), not a password file"
    ]
    with pytest.raises(ValueError, match="is a FIFO"):
        load_token(Settings(alerts_token_file=fifo).alerts)
    guard.cancel()
    assert time.monotonic() - started < 2  # would hang for ever if any of them opened it


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    variable=st.sampled_from(
        [
            "SCALER_KAFKA_BOOTSTRAP_SERVERS",
            "SCALER_HTTP_LISTEN",
            "SCALER_KAFKA_CLIENT_ID",
            "SCALER_KAFKA_GROUP_ID",
            "SCALER_KAFKA_REQUESTS_TOPIC",
            "SCALER_PROMETHEUS_URL",
            "SCALER_KUBERNETES_HOST",
        ]
    ),
    value=st.text(alphabet=st.sampled_from(":/@[].-_x19%?# ²\x00é"), max_size=40) | st.text(max_size=40),
)
def test_any_text_in_an_address_or_name_setting_is_accepted_or_one_settings_error(
    variable: str, value: str
) -> None:
    problems: list[str] = []
    try:
        _load(env={variable: value})
    except SettingsError as exc:  # anything else (a traceback in scaler run) fails the test
        problems = exc.problems
    assert len(problems) <= 1
    assert all(p.startswith(f"environment: {variable.removeprefix('SCALER_').lower()}: ") for p in problems)
