"""The KEDA external scaler: the pure lookup as a table, and the gRPC server over a real socket with a
client generated from the same .proto (as KEDA's operator calls it)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
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
from scaler.adapters.keda import KedaScaler, KedaServer, Refusal, Tls, metric_name, resolve
from scaler.core.types import Decision

KNOWN = {"llama-8b", "mistral-7b"}


@pytest.mark.parametrize(
    ("metadata", "owned", "desired", "expected"),
    [
        ({"model": "llama-8b"}, {"llama-8b"}, {"llama-8b": 3}, ("llama-8b", 3)),
        ({"model": " llama-8b "}, {"llama-8b"}, {"llama-8b": 0}, ("llama-8b", 0)),
        ({}, {"llama-8b"}, {}, Refusal("INVALID_ARGUMENT", "")),
        ({"model": "gpt-9"}, {"llama-8b"}, {}, Refusal("NOT_FOUND", "")),
        ({"model": "mistral-7b"}, {"llama-8b"}, {"llama-8b": 3}, Refusal("UNAVAILABLE", "not owner")),
        ({"model": "llama-8b"}, {"llama-8b"}, {}, Refusal("UNAVAILABLE", "no decision yet")),
    ],
)
def test_resolve_answers_only_owned_decided_models(
    metadata: dict[str, str], owned: set[str], desired: dict[str, int], expected: object
) -> None:
    found = resolve(metadata, known=KNOWN, owned=owned, desired=desired)
    if isinstance(expected, Refusal):
        assert isinstance(found, Refusal)
        assert found.code == expected.code
        assert expected.message in found.message
    else:
        assert found == expected


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


def _decision(replicas: int) -> Decision:
    return Decision(
        at=0.0,
        replicas=replicas,
        standby=0,
        serverless_provisioned=0,
        spill_fraction=0.0,
        reason="test",
        bound_by="none",
        quantile=0.9,
        cost_per_hour={},
    )


def _ref(model: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name="so", namespace="inference", scalerMetadata={"model": model})


async def _served(owned: set[str]) -> AsyncIterator[tuple[KedaScaler, pb_grpc.ExternalScalerStub]]:
    scaler = KedaScaler(known=lambda: KNOWN, owned=lambda: owned)
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
            assert (code, why) == (grpc.StatusCode.UNAVAILABLE, "model 'llama-8b' has no decision yet")
            scaler.decided(model="llama-8b", decision=_decision(3), payload={})
            values = (await stub.GetMetrics(request)).metricValues
            assert [(v.metricName, v.metricValue, v.metricValueFloat) for v in values] == [
                ("spillway-replicas-llama-8b", 3, 3.0)
            ]
            assert (await stub.IsActive(_ref("llama-8b"))).result is True
            scaler.decided(model="llama-8b", decision=_decision(0), payload={})
            assert (await stub.IsActive(_ref("llama-8b"))).result is False
            code, why = await _code(stub.IsActive(_ref("mistral-7b")))
            assert code == grpc.StatusCode.UNAVAILABLE
            assert why.startswith("not owner")
            assert (await _code(stub.GetMetricSpec(_ref("gpt-9"))))[0] == grpc.StatusCode.NOT_FOUND
            empty = pb.ScaledObjectRef(name="so", namespace="inference")
            assert (await _code(stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=empty))))[
                0
            ] == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(run())


def test_the_stream_pushes_every_decision_and_ends_when_the_model_moves_away() -> None:
    async def run() -> None:
        owned = {"llama-8b"}
        async for scaler, stub in _served(owned):
            scaler.decided(model="llama-8b", decision=_decision(2), payload={})
            stream = stub.StreamIsActive(_ref("llama-8b"))
            pushed = [(await stream.read()).result]
            for replicas in (0, 0, 4):  # every decision is pushed, a repeated one too
                scaler.decided(model="llama-8b", decision=_decision(replicas), payload={})
                pushed.append((await asyncio.wait_for(stream.read(), 5)).result)
            assert pushed == [True, False, False, True]
            owned.clear()
            scaler.released(frozenset({"llama-8b"}))
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(stream.read(), 5)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not owner" in (ended.value.details() or "")

    asyncio.run(run())


def test_a_taken_port_is_an_oserror_naming_the_address() -> None:
    async def run() -> None:
        first = KedaServer(scaler=KedaScaler(known=lambda: KNOWN, owned=set), host="127.0.0.1", port=0)
        await first.start()
        try:
            second = KedaServer(
                scaler=KedaScaler(known=lambda: KNOWN, owned=set), host="127.0.0.1", port=first.port
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
        scaler = KedaScaler(known=lambda: KNOWN, owned=lambda: {"llama-8b"})
        scaler.decided(model="llama-8b", decision=_decision(2), payload={})
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
            scaler=KedaScaler(known=lambda: KNOWN, owned=set), host="127.0.0.1", port=0, tls=tls
        )
        with pytest.raises(OSError, match=r"missing\.crt"):
            await server.start()

    asyncio.run(run())


def test_calls_are_counted_by_method_and_status() -> None:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    registry = CollectorRegistry()

    async def run() -> None:
        scaler = KedaScaler(known=lambda: KNOWN, owned=lambda: {"llama-8b"}, registry=registry)
        scaler.decided(model="llama-8b", decision=_decision(1), payload={})
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
