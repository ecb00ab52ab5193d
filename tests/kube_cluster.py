"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager.

The binaries are built and cached by ``.ci/setup-kube`` (upstream v1.20.2 with our pod-deletion-cost
backport in the controller-manager, patch level :data:`KUBE_PATCH_LEVEL`); etcd is Debian's. Every
process listens on 127.0.0.1 on free ports and is stopped by its own PID (SIGTERM, then wait). The
apiserver serves TLS with a certificate of a throwaway CA, authenticates bearer tokens from a token
file (``admin`` in ``system:masters``, ``plain`` with no bindings, and spare identities that tests
bind to Roles), authorizes with RBAC and writes an audit log of every request. There is no scheduler
or kubelet: :meth:`KubeCluster.make_ready` plays both for the pods a test wants Ready.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

KUBE_VERSION = "v1.20.2"
KUBE_PATCH_LEVEL = "dc1"  # .ci/setup-kube's PATCH_LEVEL: the cache directory of the patched build
CACHE_BIN = Path(
    os.environ.get("SPILLWAY_KUBE_CACHE", f"/var/cache/spillway/kube-{KUBE_VERSION}-{KUBE_PATCH_LEVEL}")
) / "bin"
TOKENS = {
    "admin": "admin-token",
    "controllers": "controllers-token",
    "plain": "plain-token",
    "scaler": "scaler-token",
    "chart": "chart-token",
}
"""User name -> bearer token; only ``admin`` and ``controllers`` (the controller-manager) have any rights
until a test binds a Role."""


def binaries() -> dict[str, Path]:
    """Return the paths of etcd, kube-apiserver and kube-controller-manager; raise FileNotFoundError.

    The cache must hold setup-kube's ``PATCHES`` marker (written once the patched build is complete).
    """
    found = {
        "kube-apiserver": CACHE_BIN / "kube-apiserver",
        "kube-controller-manager": CACHE_BIN / "kube-controller-manager",
        "etcd": Path(shutil.which("etcd") or "/usr/bin/etcd"),
    }
    missing = [str(path) for path in found.values() if not os.access(path, os.X_OK)]
    if not (CACHE_BIN / "PATCHES").is_file():
        missing.append(str(CACHE_BIN / "PATCHES"))
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}: run `bash .ci/setup-kube` (or .ci/setup)")
    return found


def until(condition: Callable[[], bool], *, seconds: float, what: str, every: float = 0.1) -> float:
    """Return the seconds it took for ``condition()`` to hold; raise AssertionError naming ``what``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(every)
    return time.monotonic() - started


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)  # fixed arguments


def make_ca(directory: Path, *, name: str) -> tuple[Path, Path]:
    """Create a self-signed CA ``name``.crt/.key in ``directory``; return (cert, key)."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt", directory / f"{name}.key"


def _serving_cert(directory: Path, *, ca: str) -> tuple[Path, Path]:
    """Create server.crt/.key for IP:127.0.0.1 and DNS:localhost, signed by CA ``ca``."""
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=directory,
    )  # fmt: skip
    return directory / "server.crt", directory / "server.key"


AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


@dataclasses.dataclass
class KubeCluster:
    """A running control plane under ``workdir`` (removed by :meth:`stop`)."""

    workdir: Path
    port: int
    processes: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)

    @property
    def url(self) -> str:
        """Return the apiserver's HTTPS URL."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """Return the CA certificate that signed the serving certificate."""
        return self.workdir / "ca.crt"

    @property
    def audit_log(self) -> Path:
        """Return the apiserver's audit log (one JSON event per line)."""
        return self.workdir / "audit.log"

    def token_file(self, user: str) -> Path:
        """Return a file holding ``user``'s bearer token."""
        path = self.workdir / f"{user}.token"
        if not path.exists():
            path.write_text(TOKENS[user] + "\n")
            path.chmod(0o600)
        return path

    def configuration(self, *, token: str, ca_file: Path | None = None) -> client.Configuration:
        """Return a client configuration for ``token`` that verifies the server with ``ca_file``."""
        configuration = client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = str(ca_file or self.ca_file)
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.retries = 0
        return configuration

    def api_client(self, user: str = "admin") -> client.ApiClient:
        """Return an official-client ApiClient authenticated as ``user``."""
        return client.ApiClient(self.configuration(token=TOKENS[user]))

    def kubeconfig(self, user: str, *, path: Path | None = None, server: str | None = None) -> Path:
        """Write a kubeconfig for ``user`` (context ``test``, optionally another ``server``); return it."""
        path = path or self.workdir / f"{user}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": server or self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": TOKENS[user]}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def audit(self, *, namespace: str, user: str, writes_only: bool = True) -> list[dict[str, Any]]:
        """Return the audited requests of ``user`` on objects in ``namespace`` (writes only unless told).

        First makes a marker request and waits until it is logged, so every earlier request is in.
        """
        marker = f"audit-marker-{uuid.uuid4().hex[:8]}"
        with self.api_client() as api, contextlib.suppress(client.ApiException):
            client.CoreV1Api(api).read_namespaced_config_map(marker, namespace)

        def read() -> list[dict[str, Any]]:
            # complete lines only: reading while the apiserver appends can catch an event half-written (seen
            # once as a line starting '"level":...' without its '{', which json.loads refused)
            text = self.audit_log.read_text(encoding="utf-8")
            lines = text[: text.rfind("\n") + 1].splitlines()
            return [json.loads(line) for line in lines if namespace in line]

        until(
            lambda: any((e.get("objectRef") or {}).get("name") == marker for e in read()),
            seconds=10,
            what="the audit log to catch up",
        )
        return [
            e
            for e in read()
            if (e.get("objectRef") or {}).get("namespace") == namespace
            and e["user"]["username"] == user
            and not (writes_only and e["verb"] in ("get", "list", "watch"))
        ]

    def make_ready(self, *, namespace: str, selector: str, count: int, timeout: float = 20.0) -> None:
        """Act as scheduler and kubelet: make ``count`` pods matching ``selector`` Running and Ready.

        Waits until that many pods exist (the controller-manager creates them); raises AssertionError.
        """
        with self.api_client() as api:
            core = client.CoreV1Api(api)

            def pods() -> list[Any]:
                items = core.list_namespaced_pod(namespace, label_selector=selector).items
                return [p for p in items if p.metadata.deletion_timestamp is None]

            until(lambda: len(pods()) >= count, seconds=timeout, what=f"{count} pods of {selector}")
            for pod in sorted(pods(), key=lambda p: p.metadata.name)[:count]:
                _set_ready(core, pod)

    @contextlib.contextmanager
    def kubelet(self, *, namespace: str, selector: str, every: float = 0.5) -> Iterator[None]:
        """While in the block, make every pod matching ``selector`` Ready within ``every`` seconds."""
        stop = threading.Event()

        def run() -> None:
            with self.api_client() as api:
                core = client.CoreV1Api(api)
                while not stop.wait(every):
                    with contextlib.suppress(client.ApiException):
                        for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
                            if pod.status.phase != "Running" and pod.metadata.deletion_timestamp is None:
                                _set_ready(core, pod)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def stop(self) -> None:
        """Stop every process by its PID (SIGTERM, then SIGKILL after 10 s), newest first; remove files."""
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _set_ready(core: client.CoreV1Api, pod: Any) -> None:
    """Patch ``pod``'s status to Running with conditions Ready and ContainersReady True."""
    conditions = [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]
    core.patch_namespaced_pod_status(
        pod.metadata.name, pod.metadata.namespace, {"status": {"phase": "Running", "conditions": conditions}}
    )


def _ready(url: str, *, ca_file: Path, token: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(request, timeout=1, context=context) as answer:  # loopback
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _spawn(args: list[str], *, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)  # fixed binaries


def _exited(cluster: KubeCluster) -> str | None:
    """Return a message naming a process that has exited, with the tail of its log, or None."""
    for process in cluster.processes:
        if process.poll() is not None:
            name = Path(str(process.args[0])).name  # type: ignore[index]
            tail = (cluster.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
            return f"{name} exited with {process.returncode}:\n{tail}"
    return None


def start(*, free_port: Callable[[], int], controller_manager: bool = True) -> KubeCluster:
    """Start etcd, kube-apiserver (and kube-controller-manager); return once the API is ready.

    Raises FileNotFoundError when a binary is missing, RuntimeError when a process exits early.
    """
    paths = binaries()
    workdir = Path(tempfile.mkdtemp(prefix="spillway-kube-"))
    cluster = KubeCluster(workdir=workdir, port=free_port())
    try:
        make_ca(workdir, name="ca")
        _serving_cert(workdir, ca="ca")
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=workdir)
        groups = {"admin": "system:masters", "controllers": "system:masters"}
        (workdir / "tokens.csv").write_text(
            "".join(f'{token},{user},uid-{user},"{groups.get(user, "")}"\n' for user, token in TOKENS.items())
        )
        (workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        client_port, peer_port = free_port(), free_port()
        cluster.processes.append(
            _spawn(
                [
                    str(paths["etcd"]),
                    "--name=test",
                    f"--data-dir={workdir / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{client_port}",
                    f"--advertise-client-urls=http://127.0.0.1:{client_port}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-cluster=test=http://127.0.0.1:{peer_port}",
                ],
                log=workdir / "etcd.log",
            )
        )
        cluster.processes.append(
            _spawn(
                [
                    str(paths["kube-apiserver"]),
                    f"--etcd-servers=http://127.0.0.1:{client_port}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={cluster.port}",
                    "--insecure-port=0",
                    f"--cert-dir={workdir}",
                    f"--tls-cert-file={workdir / 'server.crt'}",
                    f"--tls-private-key-file={workdir / 'server.key'}",
                    f"--client-ca-file={workdir / 'ca.crt'}",
                    f"--token-auth-file={workdir / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    "--anonymous-auth=false",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={workdir / 'sa.key'}",
                    f"--service-account-signing-key-file={workdir / 'sa.key'}",
                    "--service-cluster-ip-range=10.0.0.0/24",
                    "--endpoint-reconciler-type=none",
                    "--disable-admission-plugins=ServiceAccount",  # no kubelet: pods need no SA token
                    f"--audit-policy-file={workdir / 'audit-policy.yaml'}",
                    f"--audit-log-path={cluster.audit_log}",
                    "--profiling=false",
                ],
                log=workdir / "kube-apiserver.log",
            )
        )
        admin = TOKENS["admin"]
        deadline = time.monotonic() + 60
        while not _ready(f"{cluster.url}/api/v1/namespaces/default", ca_file=cluster.ca_file, token=admin):
            if (message := _exited(cluster)) is not None:
                raise RuntimeError(message)
            if time.monotonic() > deadline:
                raise RuntimeError("kube-apiserver not ready within 60 s")
            time.sleep(0.1)
        if controller_manager:
            kubeconfig = cluster.kubeconfig("controllers")
            cluster.processes.append(
                _spawn(
                    [
                        str(paths["kube-controller-manager"]),
                        f"--kubeconfig={kubeconfig}",
                        "--controllers=*,-nodelifecycle",  # no kubelets: no node is ever healthy
                        "--use-service-account-credentials=false",
                        "--leader-elect=false",
                        "--bind-address=127.0.0.1",
                        "--secure-port=0",
                        "--port=0",
                        f"--service-account-private-key-file={workdir / 'sa.key'}",
                        f"--root-ca-file={workdir / 'ca.crt'}",
                    ],
                    log=workdir / "kube-controller-manager.log",
                )
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running(*, free_port: Callable[[], int]) -> Iterator[KubeCluster]:
    """Yield a started cluster; stop it (and remove its files) afterwards."""
    cluster = start(free_port=free_port)
    try:
        yield cluster
    finally:
        cluster.stop()


def create_namespace(cluster: KubeCluster, name: str) -> None:
    """Create namespace ``name`` as admin."""
    with cluster.api_client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})


def create_deployment(cluster: KubeCluster, *, namespace: str, name: str, replicas: int) -> None:
    """Create Deployment ``name`` (label app=name, one container) with ``replicas``, as admin."""
    labels = {"app": name}
    with cluster.api_client() as api:
        client.AppsV1Api(api).create_namespaced_deployment(
            namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "vllm", "image": "vllm"}]},
                    },
                },
            },
        )


def bind_role(cluster: KubeCluster, *, namespace: str, user: str, rules: list[dict[str, Any]]) -> None:
    """Create a Role of ``rules`` in ``namespace`` and bind it to ``user``, as admin."""
    name = f"{user}-role"
    with cluster.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": name},
                "rules": rules,
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            },
        )


def ready_replicas(cluster: KubeCluster, *, namespace: str, name: str) -> int:
    """Return the Deployment's status.readyReplicas (0 when unset)."""
    with cluster.api_client() as api:
        status = client.AppsV1Api(api).read_namespaced_deployment(name, namespace).status
    return int(status.ready_replicas or 0)
