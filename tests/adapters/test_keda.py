"""The KEDA external scaler: the pure lookup as a table, and the gRPC server over a real socket with a
client generated from the same .proto (as KEDA's operator calls it)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scaler.adapters import externalscaler_pb2 as pb
from scaler.adapters import externalscaler_pb2_grpc as pb_grpc
from scaler.adapters.keda import Answer, KedaScaler, KedaServer, Refusal, Seen, Tls, metric_name, resolve
from scaler.control.payload import PublishedDecision
from tests.adapters.actuator_fixtures import decision

KNOWN = {"llama-8b": 10.0, "mistral-7b": 10.0}  # model -> decision interval (s)
NOW = 1_000_000.0


def _seen(replicas: int, age: float) -> Seen:
    return Seen(replicas=replicas, at=NOW - age)


@pytest.mark.parametrize(
    ("metadata", "owned", "own", "topic", "expected"),
    [
        # the owner answers from its own decision, whatever the topic says
        ({"model": "llama-8b"}, {"llama-8b"}, {"llama-8b": _seen(3, 1)}, {}, ("llama-8b", 3, "own")),
        ({"model": " llama-8b "}, {"llama-8b"}, {"llama-8b": _seen(0, 1)}, {}, ("llama-8b", 0, "own")),
        (
            {"model": "llama-8b"},
            {"llama-8b"},
            {"llama-8b": _seen(3, 100)},
            {"llama-8b": _seen(5, 1)},
            ("llama-8b", 3, "own"),
        ),
        # any other process answers from the topic while its newest is younger than 3 intervals (30 s)
        ({"model": "mistral-7b"}, {"llama-8b"}, {}, {"mistral-7b": _seen(4, 0)}, ("mistral-7b", 4, "topic")),
        (
            {"model": "mistral-7b"},
            {"llama-8b"},
            {},
            {"mistral-7b": _seen(4, 29.9)},
            ("mistral-7b", 4, "topic"),
        ),
        ({"model": "mistral-7b"}, {"llama-8b"}, {}, {"mistral-7b": _seen(0, -5)}, ("mistral-7b", 0, "topic")),
        ({"model": "mistral-7b"}, {}, {}, {"mistral-7b": _seen(4, 30)}, Refusal("UNAVAILABLE", "30.0 s old")),
        # a model released here: its own decision is not used any more
        ({"model": "llama-8b"}, {}, {"llama-8b": _seen(3, 1)}, {}, Refusal("UNAVAILABLE", "no decision yet")),
        # owned but not decided here yet (just assigned): the previous owner's, while fresh
        ({"model": "llama-8b"}, {"llama-8b"}, {}, {"llama-8b": _seen(2, 5)}, ("llama-8b", 2, "topic")),
        ({"model": "llama-8b"}, {"llama-8b"}, {}, {}, Refusal("UNAVAILABLE", "has not decided it")),
        ({"model": "mistral-7b"}, {"llama-8b"}, {}, {}, Refusal("UNAVAILABLE", "none of its owner's")),
        ({}, {"llama-8b"}, {}, {}, Refusal("INVALID_ARGUMENT", "no 'model'")),
        (
            {"model": "gpt-9"},
            {"llama-8b"},
            {},
            {"gpt-9": _seen(1, 0)},
            Refusal("NOT_FOUND", "no Spillway policy"),
        ),
    ],
)
def test_resolve_answers_the_owners_decision_or_a_fresh_one_from_the_topic(
    metadata: dict[str, str],
    owned: set[str],
    own: dict[str, Seen],
    topic: dict[str, Seen],
    expected: object,
) -> None:
    found = resolve(metadata, intervals=KNOWN, owned=owned, own=own, topic=topic, now=NOW)
    if isinstance(expected, Refusal):
        assert isinstance(found, Refusal)
        assert found.code == expected.code
        assert expected.message in found.message
    else:
        assert isinstance(found, Answer)
        assert (found.model, found.replicas, found.source) == expected


def test_a_topic_answer_says_when_it_turns_stale() -> None:
    found = resolve(
        {"model": "mistral-7b"},
        intervals=KNOWN,
        owned=(),
        own={},
        topic={"mistral-7b": _seen(2, 12)},
        now=NOW,
    )
    assert isinstance(found, Answer)
    assert found.stale_at == NOW - 12 + 30
    longer = resolve(
        {"model": "mistral-7b"},
        intervals=KNOWN,
        owned=(),
        own={},
        topic={"mistral-7b": _seen(2, 35)},
        now=NOW,
        stale_intervals=4,
    )
    assert isinstance(longer, Answer)


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("llama-8b", "spillway-replicas-llama-8b"),
        ("Llama-3.1-8B_Instruct", "spillway-replicas-llama-3-1-8b-instruct"),
        ("meta/llama", "spillway-replicas-meta-llama"),
        ("...", "spillway-replicas-model"),
    ],
)
def test_metric_names_are_valid_kubernetes_metric_names(model: str, name: str) -> None:
    assert metric_name(model) == name



def _ref(model: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name="so", namespace="inference", scalerMetadata={"model": model})


async def _served(
    owned: set[str], intervals: dict[str, float] = KNOWN
) -> AsyncIterator[tuple[KedaScaler, pb_grpc.ExternalScalerStub]]:
    scaler = KedaScaler(intervals=lambda: intervals, owned=lambda: owned)
    server = KedaServer(scaler=scaler, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield scaler, pb_grpc.ExternalScalerStub(channel)
    finally:
        await server.stop()


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    raise AssertionError("the call succeeded")


def test_the_server_answers_metric_spec_metrics_and_activity_from_decisions() -> None:
    async def run() -> None:
        owned = {"llama-8b"}
        async for scaler, stub in _served(owned):
            spec = await stub.GetMetricSpec(_ref("llama-8b"))
            assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in spec.metricSpecs] == [
                ("spillway-replicas-llama-8b", 1, 1.0)
            ]
            request = pb.GetMetricsRequest(
                scaledObjectRef=_ref("llama-8b"), metricName="spillway-replicas-llama-8b"
            )
            code, why = await _code(stub.GetMetrics(request))
            assert code == grpc.StatusCode.UNAVAILABLE
            assert why == "model 'llama-8b' has no decision yet: this process owns it and has not decided it"
            scaler.decided(model="llama-8b", decision=decision(replicas=3, at=0.0), payload={})
            values = (await stub.GetMetrics(request)).metricValues
            assert [(v.metricName, v.metricValue, v.metricValueFloat) for v in values] == [
                ("spillway-replicas-llama-8b", 3, 3.0)
            ]
            assert (await stub.IsActive(_ref("llama-8b"))).result is True
            scaler.decided(model="llama-8b", decision=decision(replicas=0, at=0.0), payload={})
            assert (await stub.IsActive(_ref("llama-8b"))).result is False
            # a model another process owns: answered from the decisions topic once one was read
            code, why = await _code(stub.IsActive(_ref("mistral-7b")))
            assert code == grpc.StatusCode.UNAVAILABLE
            assert "none of its owner's decisions was read" in why
            assert scaler.heard(PublishedDecision(model="mistral-7b", at=time.time(), replicas=4))
            other = pb.GetMetricsRequest(scaledObjectRef=_ref("mistral-7b"))
            assert [v.metricValue for v in (await stub.GetMetrics(other)).metricValues] == [4]
            assert (await stub.IsActive(_ref("mistral-7b"))).result is True
            assert (await _code(stub.GetMetricSpec(_ref("gpt-9"))))[0] == grpc.StatusCode.NOT_FOUND
            empty = pb.ScaledObjectRef(name="so", namespace="inference")
            assert (await _code(stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=empty))))[
                0
            ] == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(run())


def test_the_stream_pushes_every_decision_and_goes_on_from_the_topic_when_the_model_moves_away() -> None:
    async def run() -> None:
        owned = {"llama-8b"}
        async for scaler, stub in _served(owned):
            scaler.decided(model="llama-8b", decision=decision(replicas=2, at=0.0), payload={})
            stream = stub.StreamIsActive(_ref("llama-8b"))
            pushed = [(await stream.read()).result]
            at = time.time()
            for replicas in (0, 0, 4):  # every decision is pushed, a repeated one too
                scaler.decided(model="llama-8b", decision=decision(replicas=replicas, at=at), payload={})
                pushed.append((await asyncio.wait_for(stream.read(), 5)).result)
            assert pushed == [True, False, False, True]
            # the own decision comes back from the topic: kept, not pushed again (it is not newer)
            assert scaler.heard(PublishedDecision(model="llama-8b", at=at, replicas=4))
            # the model moves to another process, whose decision the topic carries
            owned.clear()
            scaler.released(frozenset({"llama-8b"}))
            assert (await asyncio.wait_for(stream.read(), 5)).result is True
            assert scaler.heard(PublishedDecision(model="llama-8b", at=time.time(), replicas=0))
            assert (await asyncio.wait_for(stream.read(), 5)).result is False
            assert scaler.heard(PublishedDecision(model="llama-8b", at=time.time() + 1, replicas=5))
            assert (await asyncio.wait_for(stream.read(), 5)).result is True

    asyncio.run(run())


def test_a_stream_from_the_topic_skips_older_decisions_and_ends_once_stale() -> None:
    async def run() -> tuple[list[bool], float, grpc.StatusCode, str]:
        async for scaler, stub in _served(set(), intervals={"llama-8b": 0.2}):  # stale after 0.6 s
            at = time.time()
            assert scaler.heard(PublishedDecision(model="llama-8b", at=at, replicas=2))
            stream = stub.StreamIsActive(_ref("llama-8b"))
            pushed = [(await asyncio.wait_for(stream.read(), 5)).result]
            assert not scaler.heard(PublishedDecision(model="llama-8b", at=at - 5, replicas=0))  # older
            for k, replicas in enumerate((0, 3), start=1):
                assert scaler.heard(PublishedDecision(model="llama-8b", at=at + 0.01 * k, replicas=replicas))
                pushed.append((await asyncio.wait_for(stream.read(), 5)).result)
            waited = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(stream.read(), 5)
            return pushed, time.monotonic() - waited, ended.value.code(), ended.value.details() or ""
        raise AssertionError("not served")

    pushed, ended_after, code, why = asyncio.run(run())
    assert pushed == [True, False, True]  # the older decision was neither kept nor pushed
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "no fresh decision" in why
    assert ended_after < 2.0  # at about 0.6 s after the newest decision, not never

    asyncio.run(run())


def test_a_taken_port_is_an_oserror_naming_the_address() -> None:
    async def run() -> None:
        first = KedaServer(scaler=KedaScaler(intervals=lambda: KNOWN, owned=set), host="127.0.0.1", port=0)
        await first.start()
        try:
            second = KedaServer(
                scaler=KedaScaler(intervals=lambda: KNOWN, owned=set), host="127.0.0.1", port=first.port
            )
            with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
                await second.start()
        finally:
            await first.stop()

    asyncio.run(run())


def _pki(tmp_path: Path) -> dict[str, Path]:
    """Write a CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(
        name: str, *, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, server: bool = False
    ) -> tuple[x509.Name, ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name, issuer_key = issuer or (subject, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return subject, key, builder.sign(issuer_key, hashes.SHA256())

    ca_name, ca_key, ca = issue("spillway-test-ca", issuer=None)
    files: dict[str, Path] = {}
    for role, server in (("server", True), ("client", False)):
        _, key, cert = issue(f"spillway-{role}", issuer=(ca_name, ca_key), server=server)
        files[f"{role}.crt"] = tmp_path / f"{role}.crt"
        files[f"{role}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}.key"] = tmp_path / f"{role}.key"
        files[f"{role}.key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    files["ca.crt"] = tmp_path / "ca.crt"
    files["ca.crt"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files


def test_mutual_tls_admits_only_clients_with_a_certificate_of_the_ca(tmp_path: Path) -> None:
    pki = _pki(tmp_path)

    async def run() -> tuple[bool, grpc.StatusCode]:
        scaler = KedaScaler(intervals=lambda: KNOWN, owned=lambda: {"llama-8b"})
        scaler.decided(model="llama-8b", decision=decision(replicas=2, at=0.0), payload={})
        tls = Tls(certfile=pki["server.crt"], keyfile=pki["server.key"], client_cafile=pki["ca.crt"])
        server = KedaServer(scaler=scaler, host="127.0.0.1", port=0, tls=tls)
        await server.start()
        ca = pki["ca.crt"].read_bytes()
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=pki["client.key"].read_bytes(),
            certificate_chain=pki["client.crt"].read_bytes(),
        )
        try:
            async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", with_cert) as channel:
                active = (
                    await pb_grpc.ExternalScalerStub(channel).IsActive(_ref("llama-8b"), timeout=5)
                ).result
            anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
            async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", anonymous) as channel:
                code, _ = await _code(
                    pb_grpc.ExternalScalerStub(channel).IsActive(_ref("llama-8b"), timeout=5)
                )
        finally:
            await server.stop()
        return active, code

    active, refused = asyncio.run(run())
    assert active is True
    assert refused == grpc.StatusCode.UNAVAILABLE  # the handshake fails without a client certificate


def test_unreadable_tls_files_are_an_oserror_naming_the_file(tmp_path: Path) -> None:
    async def run() -> None:
        tls = Tls(certfile=tmp_path / "missing.crt", keyfile=tmp_path / "missing.key")
        server = KedaServer(
            scaler=KedaScaler(intervals=lambda: KNOWN, owned=set), host="127.0.0.1", port=0, tls=tls
        )
        with pytest.raises(OSError, match=r"missing\.crt"):
            await server.start()

    asyncio.run(run())


def test_calls_are_counted_by_method_and_status() -> None:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    registry = CollectorRegistry()

    async def run() -> None:
        scaler = KedaScaler(intervals=lambda: KNOWN, owned=lambda: {"llama-8b"}, registry=registry)
        scaler.decided(model="llama-8b", decision=decision(replicas=1, at=0.0), payload={})
        server = KedaServer(scaler=scaler, host="127.0.0.1", port=0)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = pb_grpc.ExternalScalerStub(channel)
                await stub.IsActive(_ref("llama-8b"))
                await _code(stub.IsActive(_ref("mistral-7b")))
                await stub.GetMetricSpec(_ref("mistral-7b"))
        finally:
            await server.stop()

    asyncio.run(run())

    def count(method: str, code: str) -> float | None:
        return registry.get_sample_value("scaler_keda_requests_total", {"method": method, "code": code})

    assert count("IsActive", "OK") == 1
    assert count("IsActive", "UNAVAILABLE") == 1
    assert count("GetMetricSpec", "OK") == 1  # any process answers the spec of a known model


def test_the_committed_generated_code_matches_the_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools (dev extra) regenerates the code")
    repo = Path(__file__).resolve().parents[2]
    proto = "scaler/adapters/externalscaler.proto"
    out = str(tmp_path)
    code = protoc.main(
        ["protoc", f"-I{repo}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", proto]
    )
    assert code == 0
    for name in ("externalscaler_pb2.py", "externalscaler_pb2.pyi", "externalscaler_pb2_grpc.py"):
        generated = (tmp_path / "scaler" / "adapters" / name).read_text()
        assert generated == (repo / "scaler" / "adapters" / name).read_text(), (
            f"{name} is stale: regenerate it with the command at the top of {proto}"
        )
