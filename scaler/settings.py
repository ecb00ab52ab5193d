"""Daemon settings: typed and validated once, from defaults < YAML file < ``SCALER_*`` env vars < flags.

Every setting has one flat name used everywhere: ``kafka_group_id`` is ``kafka_group_id:`` in the
file, ``SCALER_KAFKA_GROUP_ID`` in the environment and ``--group-id`` on the command line.
The file also takes the grouped form, one mapping per section (``kafka: {group_id: x}``); each
section key stands for one flat name (:data:`SECTIONS`). The validated flat :class:`Settings` is the
one source of truth: its sections (``settings.kafka``, ``settings.prometheus``...) are frozen views
of it, and each adapter is given only the section it needs.
The SASL password is accepted only from ``SCALER_KAFKA_SASL_PASSWORD`` or a file
(``kafka_sasl_password_file``), never from the config file or a flag, and never appears in a repr
or a log line. A password inside a URL-valued setting (``http://user:secret@host``) is masked in
the repr, in :meth:`Settings.loggable` and in error messages.

Addresses are checked here, so that a bad one stops ``scaler run`` with exit code 2 and a line naming
the setting instead of failing deep inside a client: HOST:PORT with a host name, an IPv4 address or
a bracketed IPv6 address, and a port of 1-65535 (0 allowed for the listen address).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from scaler.files import read_regular_file

ENV_PREFIX = "SCALER_"
SECRET_FIELDS = frozenset(
    {"kafka_sasl_password", "alerts_token", "prometheus_bearer_token", "prometheus_password"}
)
LIST_FIELDS = frozenset({"kafka_bootstrap_servers", "policy_files", "prometheus_headers"})
URL_FIELDS = frozenset({"prometheus_url", "kubernetes_host", "aws_endpoint_url"})
OTHER_ENV = frozenset({"SCALER_TRACES_DIR"})  # read by other commands, not settings
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_TOPIC = r"^[A-Za-z0-9._-]{1,249}$"  # what Kafka accepts as a topic name
_MASK = "***"
MAX_CONFIG_BYTES = 1024 * 1024
MAX_SECRET_FILE_BYTES = 64 * 1024


def check_host(host: str) -> str:
    """Return ``host`` (a host name, IPv4 or bracketed IPv6 address); raise ValueError saying why not."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"host {_short(host)} is not an IPv6 address") from None
        return host
    labels = host.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"host {_short(host)} is not an IPv4 address") from None
        return host
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(
            f"host {_short(host)} is not a host name or IP address (IPv6 goes in brackets: [::1]:9092)"
        )
    return host


def check_address(value: str, *, example: str, allow_port_zero: bool = False) -> str:
    """Return ``value`` if it is HOST:PORT; raise ValueError naming what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or len(port) > 5:
        raise ValueError(f"{_short(value)} is not HOST:PORT (e.g. {example})")
    if not (0 if allow_port_zero else 1) <= int(port) <= 65535:
        raise ValueError(f"{_short(value)}: port {port} is out of range")
    check_host(host)
    return value


def mask_url(url: str) -> str:
    """Return ``url`` with the password of its user info replaced by ``***`` (unchanged without one).

    Errs on the side of masking: everything between the user name and the last ``@`` is hidden, so
    a password with an unescaped ``/`` or ``@`` is hidden too.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:{_MASK}@{host}"


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SettingsError(Exception):
    """Settings could not be loaded; ``problems`` lists each as ``source: field: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class Section(BaseModel):
    """A frozen view of one group of settings, built from the validated flat :class:`Settings`.

    Field ``key`` of section ``name`` is flat setting ``name_key`` unless :attr:`RENAMED` says
    otherwise. Sections do not validate: their values were validated as flat settings.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    NAME: ClassVar[str]
    RENAMED: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def flat_names(cls) -> dict[str, str]:
        """Return {section key: flat setting name} for every field of the section."""
        return {key: cls.RENAMED.get(key, f"{cls.NAME}_{key}") for key in cls.model_fields}

    def __repr_args__(self) -> Any:
        """Yield the fields for repr() with passwords inside URLs masked (secrets mask themselves)."""
        names = self.flat_names()
        for key, value in super().__repr_args__():
            masked = key is not None and names.get(key) in URL_FIELDS and isinstance(value, str)
            yield key, mask_url(value) if masked else value


class KafkaSettings(Section):
    """The ``kafka_*`` settings: brokers, topics, consumer group, TLS and SASL."""

    NAME = "kafka"
    bootstrap_servers: tuple[str, ...]
    group_id: str
    client_id: str
    requests_topic: str
    metrics_topic: str
    decisions_topic: str
    deadletter_topic: str
    state_topic: str
    create_topics: bool
    topic_partitions: int
    session_timeout_ms: int
    heartbeat_interval_ms: int
    fetch_max_wait_ms: int
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None
    sasl_username: str | None
    sasl_password: SecretStr | None
    sasl_password_file: Path | None
    ssl_cafile: Path | None
    ssl_certfile: Path | None
    ssl_keyfile: Path | None


class PolicySettings(Section):
    """The ``policy_*`` settings: the policy files and how often they are polled for edits."""

    NAME = "policy"
    files: tuple[Path, ...]
    poll_seconds: float


class HttpSettings(Section):
    """The ``http_*`` settings: the address of /healthz, /readyz, /metrics and /alerts."""

    NAME = "http"
    listen: str

    @property
    def host(self) -> str:
        """Return the listen host (brackets of an IPv6 address removed)."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """Return the listen port."""
        return int(self.listen.rpartition(":")[2])


class CheckpointSettings(Section):
    """The ``checkpoint_*`` settings: how often and where per-model checkpoints are saved."""

    NAME = "checkpoint"
    interval_seconds: float
    dir: Path | None
    save_timeout_seconds: float


class BurstSettings(Section):
    """The ``burst_*`` settings: the window and cadence of the burst detector."""

    NAME = "burst"
    window_seconds: int
    check_seconds: float


class AlertsSettings(Section):
    """The ``alerts_*`` settings of the Alertmanager webhook."""

    NAME = "alerts"
    token: SecretStr | None
    token_file: Path | None
    max_override_seconds: float
    default_boost_replicas: int
    max_body_bytes: int
    max_overrides: int
    max_overrides_per_model: int


class PrometheusSettings(Section):
    """The ``prometheus_*`` settings: history at start-up, the fallback signal and the connection."""

    NAME = "prometheus"
    url: str | None
    timeout_seconds: float
    requests_selector: str
    prompt_tokens_selector: str
    output_tokens_selector: str
    fallback_poll_seconds: float
    request_rate_query: str
    running_query: str
    waiting_query: str
    ready_replicas_query: str
    headers: tuple[str, ...]
    bearer_token: SecretStr | None
    bearer_token_file: Path | None
    username: str | None
    password: SecretStr | None
    ca_file: Path | None
    tls_verify: bool
    certfile: Path | None
    keyfile: Path | None
    retries: int


class KubernetesSettings(Section):
    """The ``kubernetes_*`` settings: one source of the API server connection."""

    NAME = "kubernetes"
    host: str | None
    token_file: Path | None
    ca_file: Path | None
    kubeconfig: Path | None
    context: str | None
    in_cluster: bool


class AwsSettings(Section):
    """The ``aws_*`` settings of the serverless actuators."""

    NAME = "aws"
    endpoint_url: str | None
    region: str | None


class ActuatorSettings(Section):
    """The ``actuator_*`` settings: timeouts, retries and pacing of every actuator."""

    NAME = "actuator"
    timeout_seconds: float
    attempts: int
    min_interval_seconds: float
    failure_threshold: int


class LeaseSettings(Section):
    """The fencing Leases: ``fencing_leases`` (as ``fencing``) and the ``lease_*`` settings."""

    NAME = "lease"
    RENAMED: ClassVar[Mapping[str, str]] = {"fencing": "fencing_leases"}
    fencing: Literal["auto", "on", "off"]
    namespace: str | None
    name_prefix: str
    duration_seconds: float
    renew_seconds: float
    margin_seconds: float


class KedaSettings(Section):
    """The ``keda_*`` settings of the KEDA external scaler."""

    NAME = "keda"
    listen: str | None
    tls_certfile: Path | None
    tls_keyfile: Path | None
    tls_client_cafile: Path | None


SECTIONS: dict[str, type[Section]] = {
    cls.NAME: cls
    for cls in (
        KafkaSettings,
        PolicySettings,
        HttpSettings,
        CheckpointSettings,
        BurstSettings,
        AlertsSettings,
        PrometheusSettings,
        KubernetesSettings,
        AwsSettings,
        ActuatorSettings,
        LeaseSettings,
        KedaSettings,
    )
}
_S = TypeVar("_S", bound=Section)


class Settings(BaseModel):
    """Everything ``scaler run`` needs, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka_bootstrap_servers: tuple[str, ...] = Field(default=("127.0.0.1:9092",), min_length=1)
    kafka_group_id: str = Field(default="spillway-scaler", min_length=1, max_length=255)
    kafka_client_id: str = Field(default="spillway-scaler", min_length=1, max_length=255)
    kafka_requests_topic: str = Field(default="llm.requests", pattern=_TOPIC)
    kafka_metrics_topic: str = Field(default="llm.metrics", pattern=_TOPIC)
    kafka_decisions_topic: str = Field(default="scaler.decisions", pattern=_TOPIC)
    kafka_deadletter_topic: str = Field(default="scaler.deadletter", pattern=_TOPIC)
    kafka_state_topic: str = Field(default="scaler.state", pattern=_TOPIC)
    kafka_create_topics: bool = True
    kafka_topic_partitions: int = Field(default=6, ge=1, le=10_000)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100, le=100_000)
    # how long the broker may hold a fetch for new records: bounds the delay from produce to decision
    kafka_fetch_max_wait_ms: int = Field(default=100, ge=1, le=10_000)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = Field(default=None, max_length=255)
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    policy_files: tuple[Path, ...] = ()
    policy_poll_seconds: float = Field(default=2.0, gt=0, le=3600)
    http_listen: str = "127.0.0.1:8080"
    dry_run: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_skew_seconds: float = Field(default=300.0, gt=0, le=86_400)
    checkpoint_interval_seconds: float = Field(default=30.0, gt=0, le=86_400)
    # local spool of checkpoints (scaler.adapters.checkpoint_spool): the final one survives a broker outage
    checkpoint_dir: Path | None = None
    checkpoint_save_timeout_seconds: float = Field(default=3.0, gt=0, le=300)  # per save to the state topic
    burst_window_seconds: int = Field(default=2, ge=1, le=60)
    burst_check_seconds: float = Field(default=0.25, gt=0, le=60)
    shutdown_timeout_seconds: float = Field(default=8.0, gt=0, le=300)
    # -- Alertmanager webhook (POST /alerts; scaler.adapters.alerts) --
    alerts_token: SecretStr | None = None  # bearer token; env SCALER_ALERTS_TOKEN or alerts_token_file
    alerts_token_file: Path | None = None
    alerts_max_override_seconds: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    alerts_default_boost_replicas: int = Field(default=2, ge=0, le=10_000)
    alerts_max_body_bytes: int = Field(default=262_144, ge=1024, le=16 * 1024 * 1024)
    alerts_max_overrides: int = Field(default=64, ge=1, le=10_000)  # in force at once; more are refused
    alerts_max_overrides_per_model: int = Field(default=16, ge=1, le=10_000)  # per model label ('*' too)
    # -- end Alertmanager webhook --
    # -- Prometheus history at start-up (scaler.adapters.prometheus); no URL = no seeding --
    prometheus_url: str | None = None
    prometheus_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    prometheus_requests_selector: str = 'vllm:request_success_total{model_name="{model}"}'
    prometheus_prompt_tokens_selector: str = 'vllm:prompt_tokens_total{model_name="{model}"}'
    prometheus_output_tokens_selector: str = 'vllm:generation_tokens_total{model_name="{model}"}'
    prometheus_fallback_poll_seconds: float = Field(default=5.0, gt=0, le=3600)  # while a model is silent
    prometheus_request_rate_query: str = 'sum(rate(vllm:request_success_total{model_name="{model}"}[1m]))'
    prometheus_running_query: str = 'sum(vllm:num_requests_running{model_name="{model}"})'
    prometheus_waiting_query: str = 'sum(vllm:num_requests_waiting{model_name="{model}"})'
    prometheus_ready_replicas_query: str = 'count(vllm:num_requests_running{model_name="{model}"})'
    prometheus_headers: tuple[str, ...] = ()  # extra request headers, each "Name: value" (e.g. X-Scope-OrgID)
    prometheus_bearer_token: SecretStr | None = None  # env SCALER_PROMETHEUS_BEARER_TOKEN or the file below
    prometheus_bearer_token_file: Path | None = None
    prometheus_username: str | None = None  # basic auth; the password from SCALER_PROMETHEUS_PASSWORD only
    prometheus_password: SecretStr | None = None
    prometheus_ca_file: Path | None = None  # CA bundle of Prometheus' TLS certificate (default: the system's)
    prometheus_tls_verify: bool = True  # False: do not verify Prometheus' certificate (tests only)
    prometheus_certfile: Path | None = None  # client certificate for mutual TLS
    prometheus_keyfile: Path | None = None
    prometheus_retries: int = Field(default=0, ge=0, le=10)  # per request, with backoff
    # -- end Prometheus --
    # -- Actuators (scaler.adapters.actuator/kubernetes/aws): off unless actuate; dry_run then only logs --
    actuate: bool = False  # change the resources named in policies' targets (False: publish decisions only)
    # one source: host (+ token file, CA file), or kubeconfig (+ context), or in-cluster
    kubernetes_host: str | None = None  # explicit API server URL; else in-cluster/kubeconfig
    kubernetes_token_file: Path | None = None  # bearer token for kubernetes_host (re-read when it changes)
    kubernetes_ca_file: Path | None = None  # CA bundle that verifies kubernetes_host
    kubernetes_kubeconfig: Path | None = None  # kubeconfig file (default ~/.kube/config)
    kubernetes_context: str | None = None  # kubeconfig context (default: its current-context)
    kubernetes_in_cluster: bool = False  # use the pod's service account
    aws_endpoint_url: str | None = None  # e.g. a VPC endpoint or a local moto server
    aws_region: str | None = None  # default region (a target's own region wins); else the AWS chain's
    actuator_timeout_seconds: float = Field(default=10.0, gt=0, le=300)  # per API attempt
    actuator_attempts: int = Field(default=4, ge=1, le=20)  # per change or read, with jittered backoff
    actuator_min_interval_seconds: float = Field(default=0.0, ge=0, le=86_400)  # per target, between changes
    actuator_failure_threshold: int = Field(default=3, ge=1, le=1000)  # failures in a row: unavailable
    # -- end Actuators --
    # -- Fencing (scaler.adapters.fence, scaler.adapters.lease): a Lease per request-topic partition --
    # auto: on when actuating with a Kubernetes client; on: required (needs a Kubernetes source); off
    fencing_leases: Literal["auto", "on", "off"] = "auto"
    lease_namespace: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    lease_name_prefix: str = Field(default="spillway-scaler", pattern=r"^[a-z0-9]([-a-z0-9]{0,46}[a-z0-9])?$")
    lease_duration_seconds: float = Field(default=15.0, ge=1, le=600)  # others may take it after this
    lease_renew_seconds: float = Field(default=5.0, gt=0, le=300)  # the holder renews this often
    lease_margin_seconds: float = Field(default=5.0, ge=0, le=300)  # stop acting this long before expiry
    # -- end Fencing --
    # -- KEDA external scaler (scaler.adapters.keda): gRPC on keda_listen; no address = off --
    keda_listen: str | None = None  # HOST:PORT, e.g. 0.0.0.0:9090 in a pod
    keda_tls_certfile: Path | None = None  # server certificate (KEDA's caCert must trust its CA)
    keda_tls_keyfile: Path | None = None
    keda_tls_client_cafile: Path | None = None  # require client certificates (KEDA's tlsClientCert) from it
    # -- end KEDA --

    @field_validator("http_listen", "keda_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_address(value, example="127.0.0.1:8080", allow_port_zero=True)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for server in value:
            check_address(server, example="broker-1:9092")
        return value

    @field_validator("kafka_group_id", "kafka_client_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable text (no control characters)")
        return value

    @field_validator(*sorted(URL_FIELDS))
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urllib.parse.urlsplit(value)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{mask_url(value)[:80]!r} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{mask_url(value)[:80]!r} is not an http(s)://HOST[:PORT] URL")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        check_host(host)
        if port == 0:
            raise ValueError(f"{mask_url(value)[:80]!r}: port 0 is not a port to connect to")
        return value

    @model_validator(mode="after")
    def _security(self) -> Self:
        sasl = self.kafka_security_protocol.startswith("SASL")
        if sasl and (self.kafka_sasl_mechanism is None or self.kafka_sasl_username is None):
            raise ValueError(
                f"{self.kafka_security_protocol} needs kafka_sasl_mechanism and kafka_sasl_username"
            )
        if sasl and self.kafka_sasl_password is None:
            raise ValueError(
                "SASL needs a password: set SCALER_KAFKA_SASL_PASSWORD or kafka_sasl_password_file"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together")
        self._kubernetes_source()
        if (self.prometheus_certfile is None) != (self.prometheus_keyfile is None):
            raise ValueError("prometheus_certfile and prometheus_keyfile go together")
        if self.prometheus_password is not None and self.prometheus_username is None:
            raise ValueError("prometheus_password needs prometheus_username")
        if (self.keda_tls_certfile is None) != (self.keda_tls_keyfile is None):
            raise ValueError("keda_tls_certfile and keda_tls_keyfile go together")
        if self.keda_tls_client_cafile is not None and self.keda_tls_certfile is None:
            raise ValueError("keda_tls_client_cafile needs keda_tls_certfile and keda_tls_keyfile (TLS)")
        if self.lease_renew_seconds + self.lease_margin_seconds >= self.lease_duration_seconds:
            raise ValueError(
                "lease_renew_seconds + lease_margin_seconds must be less than lease_duration_seconds "
                f"(got {self.lease_renew_seconds:g} + {self.lease_margin_seconds:g} >= "
                f"{self.lease_duration_seconds:g}): a renewal must land before the margin starts"
            )
        if self.kafka_heartbeat_interval_ms * 3 > self.kafka_session_timeout_ms:
            raise ValueError(
                "kafka_heartbeat_interval_ms must be at most a third of kafka_session_timeout_ms"
            )
        return self

    def __repr_args__(self) -> Any:
        """Yield the fields for repr() with passwords inside URLs masked (secrets mask themselves)."""
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name in URL_FIELDS and isinstance(value, str) else value

    def loggable(self) -> dict[str, Any]:
        """Return the settings as JSON-ready values for a log line: secrets and URL passwords masked."""
        values = self.model_dump(mode="json")  # SecretStr fields dump as "**********"
        for name in URL_FIELDS:
            if isinstance(values.get(name), str):
                values[name] = mask_url(values[name])
        return values

    def _kubernetes_source(self) -> None:
        """Raise ValueError unless at most one Kubernetes connection source is configured, consistently."""
        sources = [
            name
            for name, given in (
                ("kubernetes_host", self.kubernetes_host is not None),
                (
                    "kubernetes_kubeconfig/kubernetes_context",
                    self.kubernetes_kubeconfig is not None or self.kubernetes_context is not None,
                ),
                ("kubernetes_in_cluster", self.kubernetes_in_cluster),
            )
            if given
        ]
        if len(sources) > 1:
            raise ValueError(
                f"kubernetes: {' and '.join(sources)} conflict: use one of kubernetes_host (with "
                "kubernetes_token_file, kubernetes_ca_file), kubernetes_kubeconfig (with kubernetes_context) "
                "or kubernetes_in_cluster"
            )
        if self.kubernetes_host is None and (
            self.kubernetes_token_file is not None or self.kubernetes_ca_file is not None
        ):
            raise ValueError("kubernetes: kubernetes_token_file and kubernetes_ca_file need kubernetes_host")
        if self.kubernetes_token_file is not None and not (self.kubernetes_host or "").startswith("https://"):
            raise ValueError("kubernetes: kubernetes_token_file needs an https:// kubernetes_host")

    def section(self, cls: type[_S]) -> _S:
        """Return section ``cls`` holding this object's values of its flat settings."""
        values = {key: getattr(self, flat) for key, flat in cls.flat_names().items()}
        return cast("_S", cls.model_construct(**values))

    @property
    def kafka(self) -> KafkaSettings:
        """Return the ``kafka_*`` settings."""
        return self.section(KafkaSettings)

    @property
    def policy(self) -> PolicySettings:
        """Return the ``policy_*`` settings."""
        return self.section(PolicySettings)

    @property
    def http(self) -> HttpSettings:
        """Return the ``http_*`` settings."""
        return self.section(HttpSettings)

    @property
    def checkpoint(self) -> CheckpointSettings:
        """Return the ``checkpoint_*`` settings."""
        return self.section(CheckpointSettings)

    @property
    def burst(self) -> BurstSettings:
        """Return the ``burst_*`` settings."""
        return self.section(BurstSettings)

    @property
    def alerts(self) -> AlertsSettings:
        """Return the ``alerts_*`` settings."""
        return self.section(AlertsSettings)

    @property
    def prometheus(self) -> PrometheusSettings:
        """Return the ``prometheus_*`` settings."""
        return self.section(PrometheusSettings)

    @property
    def kubernetes(self) -> KubernetesSettings:
        """Return the ``kubernetes_*`` settings."""
        return self.section(KubernetesSettings)

    @property
    def aws(self) -> AwsSettings:
        """Return the ``aws_*`` settings."""
        return self.section(AwsSettings)

    @property
    def actuator(self) -> ActuatorSettings:
        """Return the ``actuator_*`` settings."""
        return self.section(ActuatorSettings)

    @property
    def lease(self) -> LeaseSettings:
        """Return ``fencing_leases`` and the ``lease_*`` settings."""
        return self.section(LeaseSettings)

    @property
    def keda(self) -> KedaSettings:
        """Return the ``keda_*`` settings."""
        return self.section(KedaSettings)


@dataclasses.dataclass(frozen=True)
class _Layer:
    source: str
    values: dict[str, Any]
    spelled: dict[str, str] = dataclasses.field(default_factory=dict)  # flat name -> as written


def _nearest(word: str, choices: list[str]) -> str:
    """Return "; did you mean X?" for the choice closest to ``word`` ("" when none is close)."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def flatten_grouped(
    data: Mapping[str, Any], *, source: str = "settings"
) -> tuple[dict[str, Any], dict[str, str]]:
    """Return (values by flat name, {flat name: as written}) of a settings mapping, flat or grouped.

    A section (``kafka: {group_id: x}``) maps each key to its flat name (``kafka_group_id``); other
    keys pass through. Raises SettingsError naming the key of a section that is not a mapping, a key
    not in its section, a secret, or a setting given both flat and in its section.
    """
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    problems: list[str] = []
    secrets = sorted(SECRET_FIELDS & data.keys())
    if secrets:
        raise SettingsError(
            [f"{source}: {secrets[0]}: secrets are not read from the config file; use env or a file"]
        )
    for key, value in data.items():
        section = SECTIONS.get(key)
        if section is None:
            values[key] = value
            spelled[key] = str(key)
            continue
        if value is None:
            continue
        names = section.flat_names()
        if not isinstance(value, dict):
            problems.append(
                f"{source}: {key}: a section is a mapping of setting: value "
                f"(e.g. {key}: {{{next(iter(names))}: ...}}), got {type(value).__name__}"
            )
            continue
        for sub, given in value.items():
            where = f"{key}.{sub}"
            flat = names.get(sub)
            if flat is None:
                bare = str(sub).removeprefix(f"{key}_")
                hint = f"; did you mean {bare}?" if bare in names else _nearest(str(sub), list(names))
                problems.append(f"{source}: {where}: not in the {key} section{hint}")
            elif flat in SECRET_FIELDS:
                problems.append(
                    f"{source}: {where}: secrets are not read from the config file; use env or a file"
                )
            elif flat in data:
                problems.append(f"{source}: {where}: also given as {flat}; give each setting once")
            else:
                values[flat] = given
                spelled[flat] = where
    if problems:
        raise SettingsError(problems)
    return values, spelled


def _read_small(path: Path, *, what: str, max_bytes: int) -> str:
    """Return the text of regular file ``path`` without blocking on a FIFO; raise ValueError or OSError."""
    return read_regular_file(path, max_bytes=max_bytes, what=what).decode("utf-8")


def _from_file(path: Path) -> _Layer:
    try:
        data = yaml.safe_load(_read_small(path, what="config file", max_bytes=MAX_CONFIG_BYTES))
    except OSError as exc:
        raise SettingsError([f"{path}: cannot read: {exc.strerror}"]) from None
    except ValueError as exc:  # not a regular file, too large, not UTF-8
        raise SettingsError([f"{path}: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise SettingsError([f"{path}: not valid YAML: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError([f"{path}: the top level must be a mapping of setting: value"])
    values, spelled = flatten_grouped(data, source=str(path))
    return _Layer(str(path), values, spelled)


def _from_env(env: Mapping[str, str]) -> _Layer:
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        values[name] = [v.strip() for v in raw.split(",") if v.strip()] if name in LIST_FIELDS else raw
    return _Layer("environment", values)


def unknown_env(env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Return (variable, nearest valid variable or None) for each ``SCALER_*`` variable that sets nothing."""
    valid = [ENV_PREFIX + name.upper() for name in Settings.model_fields]
    known = set(valid) | OTHER_ENV
    found = []
    for variable in sorted(env):
        if variable.startswith(ENV_PREFIX) and variable not in known:
            close = difflib.get_close_matches(variable, valid, n=1, cutoff=0.75)
            found.append((variable, close[0] if close else None))
    return found


def load_settings(*, config_file: Path | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> Settings:
    """Return settings merged from defaults, ``config_file``, ``env`` and ``flags`` (None flags are unset).

    Raises SettingsError naming the source and field of each problem.
    """
    layers = [_from_file(config_file)] if config_file is not None else []
    layers.append(_from_env(env))
    flag_values = {k: v for k, v in flags.items() if v is not None}
    if SECRET_FIELDS & flag_values.keys():
        raise SettingsError(["flags: kafka_sasl_password: pass secrets in the environment or a file"])
    layers.append(_Layer("flags", flag_values))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for layer in layers:
        for key, value in layer.values.items():
            merged[key] = value
            origin[key] = layer.source
            spelled[key] = layer.spelled.get(key, key)
    password_file = merged.get("kafka_sasl_password_file")
    if password_file is not None and "kafka_sasl_password" not in merged:
        where = origin["kafka_sasl_password_file"]
        try:
            text = _read_small(Path(password_file), what="password file", max_bytes=MAX_SECRET_FILE_BYTES)
        except OSError as exc:
            raise SettingsError([f"{where}: kafka_sasl_password_file: cannot read: {exc.strerror}"]) from None
        except ValueError as exc:
            raise SettingsError([f"{where}: kafka_sasl_password_file: {exc}"]) from None
        merged["kafka_sasl_password"] = text.strip()
    try:
        # env values are strings: validate in lax mode so "true"/"6" convert
        return Settings.model_validate(merged)
    except ValidationError as exc:
        problems = []
        valid = [*Settings.model_fields, *SECTIONS]
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            name = str(err["loc"][0]) if err["loc"] else ""
            source = origin.get(name, "defaults") if err["loc"] else "settings"
            written = ".".join([spelled.get(name, name), *(str(p) for p in err["loc"][1:])]) or "settings"
            given = err.get("input")
            if field in URL_FIELDS and isinstance(given, str):
                given = mask_url(given)
            shown = "" if field in SECRET_FIELDS else f" (got {_short(given)})"
            hint = _nearest(name, valid) if err["type"] == "extra_forbidden" else ""
            problems.append(f"{source}: {written}: {err['msg']}{shown if err['loc'] else ''}{hint}")
        raise SettingsError(problems) from None
