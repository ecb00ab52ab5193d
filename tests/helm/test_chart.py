"""The Helm chart: lint, render, strict schemas, values schema, RBAC, security context, probes, policies."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import CHART, EVERYTHING_ON, KUBE_VERSION, MINIMAL, OVERRIDES, manifests, one, render

from scaler.adapters import kubernetes as kubernetes_adapter
from scaler.adapters import lease, serverless

pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CASES = {"defaults": {}, "minimal": MINIMAL, "everything-on": EVERYTHING_ON}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
REPO = CHART.parents[1]
SETTINGS_FILE = "/etc/spillway/settings/settings.yaml"
# what the pod has that a test does not: its name (the downward API) and the SASL password (a Secret)
POD_ONLY = {"SCALER_KAFKA_CLIENT_ID": "spillway-7d9f-abcde", "SCALER_KAFKA_SASL_PASSWORD": "from-the-secret"}
# the SCALER_* variables the chart set before it rendered a settings file (helm/ at 7ca4a4d)
LEGACY_ENV = json.loads((Path(__file__).parent / "legacy_env.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=list(CASES))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, manifests(CASES[request.param])


def test_chart_lints_without_errors() -> None:
    import helm_python  # noqa: PLC0415

    for values in CASES.values():
        result = helm_python.lint(CHART, values, strict=False, namespace="ml", kube_version=KUBE_VERSION)
        assert result["errors"] == [], result
        assert all(m["severity"] < 2 for m in result["messages"]), result["messages"]  # info only


def test_every_manifest_validates_strictly(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    case, objects = rendered
    assert objects, case
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue  # custom resources: their shape is checked below
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{case}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_default_render_has_the_expected_objects() -> None:
    kinds = sorted(o["kind"] for o in manifests({}))
    assert kinds == sorted(
        [
            "ConfigMap",  # policies
            "ConfigMap",  # settings
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    )


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _configmap(objects: list[dict[str, Any]], role: str) -> dict[str, Any] | None:
    """Return the chart's ConfigMap of ``role`` (policies or settings), None when it renders none."""
    found = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith(f"-{role}")]
    assert len(found) <= 1, found
    return found[0] if found else None


def _policies_data(objects: list[dict[str, Any]]) -> dict[str, str]:
    cm = _configmap(objects, "policies")
    assert cm is not None
    data: dict[str, str] = cm["data"]
    return data


def _settings_text(objects: list[dict[str, Any]]) -> str:
    cm = _configmap(objects, "settings")
    assert cm is not None
    assert list(cm["data"]) == ["settings.yaml"]
    text: str = cm["data"]["settings.yaml"]
    return text


def _settings_file(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the settings file the chart renders by flat setting name, as the daemon's loader reads it."""
    from scaler.settings import flatten_grouped  # noqa: PLC0415

    values, _ = flatten_grouped(yaml.safe_load(_settings_text(objects)))
    return values


def test_the_settings_file_is_grouped_by_section(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    from scaler.settings import SECTIONS  # noqa: PLC0415

    case, objects = rendered
    data = yaml.safe_load(_settings_text(objects))
    in_sections = {flat for cls in SECTIONS.values() for flat in cls.flat_names().values()}
    flat_keys = sorted(k for k in data if k not in SECTIONS)
    assert flat_keys == ["actuate", "dry_run", "log_level"], f"{case}: a grouped setting left flat"
    assert not in_sections & set(data)
    assert data["kafka"]["group_id"] == "spillway-scaler"
    assert data["http"] == {"listen": "0.0.0.0:8080"}
    assert data["lease"]["fencing"] == "auto"


def _daemon_settings(objects: list[dict[str, Any]], tmp_path: Path) -> Any:
    """Return the Settings ``scaler run`` loads in the pod: its --config file, then its env vars."""
    from scaler.settings import load_settings  # noqa: PLC0415

    container = _container(objects)
    assert container["args"] == ["--config", SETTINGS_FILE]
    config = tmp_path / "settings.yaml"
    config.write_text(_settings_text(objects), encoding="utf-8")
    env = {n: v for n, v in _env(container).items() if isinstance(v, str)} | POD_ONLY
    return load_settings(config_file=config, env=env, flags={})


def test_security_context_and_probes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    case, objects = rendered
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True, case
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(objects)
    # the image's entrypoint runs unchanged (it seeds /tmp with the baked numba kernels, then execs
    # `scaler run`), as the image's user (Dockerfile: ARG SPILLWAY_UID=10001)
    assert "command" not in container
    assert container["args"] == ["--config", SETTINGS_FILE]  # arguments of `scaler run`
    assert "ARG SPILLWAY_UID=10001" in (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert pod["securityContext"]["runAsGroup"] == 10001
    assert "NUMBA_CACHE_DIR" not in _env(container)  # the image's /tmp/numba-cache, on the emptyDir
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["limits"]["memory"]
    # read-only root: numba's cache (NUMBA_CACHE_DIR=/tmp/... in the image) needs a writable /tmp
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    tmp = next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"]["name"])
    assert "emptyDir" in tmp
    # the daemon listens on all interfaces in the pod, on the port the probes and Service use
    assert _settings_file(objects)["http_listen"] == f"0.0.0.0:{container['ports'][0]['containerPort']}"
    settings_mount = mounts["/etc/spillway/settings"]
    assert settings_mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == settings_mount["name"])
    assert volume["configMap"]["name"] == "spillway-settings"


def test_policies_are_mounted_as_a_directory_for_hot_reload() -> None:
    objects = manifests({})
    container = _container(objects)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/spillway/policies")
    assert "subPath" not in mount  # a subPath mount never sees the kubelet's ConfigMap updates
    assert mount["readOnly"] is True
    paths = _settings_file(objects)["policy_files"]
    assert paths == [f"/etc/spillway/policies/{key}" for key in sorted(_policies_data(objects))]


def test_rendered_policies_pass_scaler_policy_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scaler.cli import main  # noqa: PLC0415

    values = {
        "policies": {
            "files": {
                f"{p.stem}.yaml": p.read_text(encoding="utf-8")
                for p in sorted((REPO / "policies").glob("*.yaml"))
            }
        }
    }
    for case in ({}, values):
        data = _policies_data(manifests(case))
        files = []
        for key, text in data.items():
            target = tmp_path / key
            target.write_text(text, encoding="utf-8")
            files.append(str(target))
        assert main(["policy", "validate", *files]) == 0, capsys.readouterr()
        assert capsys.readouterr().out.count(": ok") == len(files)


def test_existing_configmap_is_referenced_not_created() -> None:
    objects = manifests(MINIMAL)
    assert _configmap(objects, "policies") is None
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "policies")
    assert volume["configMap"]["name"] == "sre-policies"
    assert _settings_file(objects)["policy_files"] == [
        "/etc/spillway/policies/llama.yaml",
        "/etc/spillway/policies/mistral.yaml",
    ]
    assert pod["serviceAccountName"] == "existing-sa"


def test_secrets_are_only_referenced() -> None:
    objects = manifests(EVERYTHING_ON)
    assert not [o for o in objects if o["kind"] == "Secret"]
    container = _container(objects)
    env = _env(container)
    settings = _settings_file(objects)
    assert settings["kafka_sasl_password_file"] == "/etc/spillway/kafka-sasl/password"
    assert settings["alerts_token_file"] == "/etc/spillway/alerts/token"
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "aws-static", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert "SCALER_KAFKA_SASL_PASSWORD" not in env
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"kafka-sasl", "kafka-tls", "spillway-alerts"}
    sa = one(objects, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/spillway")
    # the defaults reference no Secret at all
    default_pod = one(manifests({}), "Deployment")["spec"]["template"]["spec"]
    assert not [v for v in default_pod["volumes"] if "secret" in v]


def _normalise(rules: Any) -> set[tuple[str, str, str]]:
    """Return {(apiGroup, resource, verb)} of PolicyRule-like mappings or (group, resource, verbs) tuples."""
    found: set[tuple[str, str, str]] = set()
    for rule in rules:
        if isinstance(rule, dict):
            groups, resources, verbs = rule["apiGroups"], rule["resources"], rule["verbs"]
        else:
            group, resource, verbs = rule
            groups, resources = [group], [resource] if isinstance(resource, str) else resource
        found |= {(g, r, v) for g in groups for r in resources for v in verbs}
    return found


def _is_leases(obj: dict[str, Any]) -> bool:
    """Return True for the fencing Leases' Role and RoleBinding (templates/lease-rbac.yaml)."""
    return str(obj["metadata"]["name"]).endswith("-leases")


def _rbac_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the rules of the actuators' Role or ClusterRole (the Leases' Role aside)."""
    (role,) = [o for o in objects if o["kind"] in {"Role", "ClusterRole"} and not _is_leases(o)]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def test_rbac_is_least_privilege(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    case, objects = rendered
    if case == "minimal":
        assert not [
            o for o in objects if o["kind"] in {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
        ]
        return
    assert not [o for o in objects if o["kind"] == "ClusterRoleBinding"]  # bound per namespace only
    for rule in _rbac_rules(objects):
        for field in ("verbs", "resources", "apiGroups"):
            assert "*" not in rule[field], rule
        assert not {"secrets", "pods/exec", "serviceaccounts/token"} & set(rule["resources"]), rule
        assert not {"escalate", "bind", "impersonate", "delete", "deletecollection"} & set(rule["verbs"]), (
            rule
        )


def test_rbac_grants_exactly_what_the_actuators_call() -> None:
    declared = yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text(encoding="utf-8"))
    assert _normalise(_rbac_rules(manifests({}))) == _normalise(declared)
    assert _normalise(kubernetes_adapter.RBAC_RULES) == _normalise(declared), (
        "helm/spillway/files/rbac-rules.yaml must list exactly scaler.adapters.kubernetes.RBAC_RULES"
    )


def test_rbac_targets_restrict_scaling_by_name_in_each_namespace() -> None:
    objects = manifests(EVERYTHING_ON)
    role = one(objects, "ClusterRole")  # two namespaces: one ClusterRole ...
    bindings = [o for o in objects if o["kind"] == "RoleBinding" and not _is_leases(o)]  # ... in each only
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["inference-a", "inference-b"]
    assert all(b["roleRef"]["kind"] == "ClusterRole" for b in bindings)
    assert all(b["subjects"][0]["namespace"] == "ml" for b in bindings)
    named = {r["resources"][0]: r["resourceNames"] for r in role["rules"] if "resourceNames" in r}
    assert named == {
        "deployments": ["llama-8b", "mistral-7b"],
        "deployments/scale": ["llama-8b", "mistral-7b"],
        "statefulsets": ["llama-70b"],
        "statefulsets/scale": ["llama-70b"],
    }
    for rule in role["rules"]:
        if {"deployments", "statefulsets"} & {res.split("/")[0] for res in rule["resources"]}:
            assert "resourceNames" in rule, rule  # nothing unrestricted on workloads once targets are known
    # only deployments listed: statefulsets cannot be scaled at all
    only = copy.deepcopy(EVERYTHING_ON)
    only["rbac"]["targets"] = {"deployments": ["llama-8b"], "statefulsets": []}
    granted = _normalise(_rbac_rules(manifests(only)))
    assert not {t for t in granted if t[1] == "statefulsets/scale"}
    # one namespace, even another than the release's: a Role there, no ClusterRole
    for namespaces, where in (([], "ml"), (["inference"], "inference")):
        objects = manifests({"rbac": {"namespaces": namespaces}})
        assert not [o for o in objects if o["kind"] == "ClusterRole"]
        assert one(objects, "Role")["metadata"]["namespace"] == where
        binding = one(objects, "RoleBinding")
        assert binding["metadata"]["namespace"] == where
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "spillway", "namespace": "ml"}]


def test_custom_resources_have_their_shape() -> None:
    objects = manifests(EVERYTHING_ON)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"


def test_network_policy_admits_only_the_http_port() -> None:
    policy = one(manifests(EVERYTHING_ON), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == EVERYTHING_ON["networkPolicy"]["ingressFrom"]
    default = one(manifests({}), "NetworkPolicy")
    assert default["spec"]["policyTypes"] == ["Ingress"]
    assert default["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 0}, "/replicaCount"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"kafka": {"bootstrapServers": []}}, "/kafka/bootstrapServers"),
        ({"kafka": {"bootstrapServers": ["no-port"]}}, "/kafka/bootstrapServers/0"),
        ({"kafka": {"securityProtocol": "TLS"}}, "/kafka/securityProtocol"),
        ({"rbac": {"verbs": ["*"]}}, "additional properties 'verbs' not allowed"),
        ({"rbac": {"targets": {"deployments": ["Not_A_Name"]}}}, "/rbac/targets/deployments/0"),
        ({"policies": {"files": {"notes.txt": "x"}}}, "invalid propertyName 'notes.txt'"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"logLevel": "trace"}, "/logLevel"),
        ({"actuator": {"attempts": 0}}, "/actuator/attempts"),
        ({"aws": {"endpointUrl": "http://plain.example"}}, "/aws/endpointUrl"),
    ],
)
def test_values_breaking_the_schema_are_refused_clearly(values: dict[str, Any], message: str) -> None:
    from helm_python import HelmError  # noqa: PLC0415

    with pytest.raises(HelmError) as caught:
        render(values)
    text = str(caught.value)
    assert "values don't meet the specifications of the schema" in text
    assert message in text, text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN", "username": "u"}}},
            "needs kafka.sasl.mechanism, kafka.sasl.username and kafka.sasl.existingSecret",
        ),
        ({"kafka": {"tls": {"existingSecret": "t", "certKey": "tls.crt"}}}, "certKey and kafka.tls.keyKey"),
        ({"policies": {"existingConfigMap": "p"}}, "policies.existingConfigMapKeys"),
        ({"policies": {"files": None}}, "policies.files"),
    ],
)
def test_inconsistent_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    from helm_python import HelmError  # noqa: PLC0415

    with pytest.raises(HelmError, match=message.replace(".", r"\.")):
        render(values)


def test_notes_tell_how_to_check_and_wire_alertmanager() -> None:
    notes = render(EVERYTHING_ON)["spillway/templates/NOTES.txt"]
    assert "ADVISORY MODE" in notes
    assert "DECISIONS ONLY (actuate=false)" in render({})["spillway/templates/NOTES.txt"]
    assert "http://spillway.ml.svc:8080/alerts" in notes
    assert "kubectl -n ml rollout status deployment/spillway" in notes


def test_prometheus_rule_carries_the_project_rules() -> None:
    shipped = REPO / "rules" / "spillway.rules.yaml"
    copy_in_chart = CHART / "files" / "spillway.rules.yaml"
    # a symlink: Helm reads only files inside the chart, and follows it when it loads or packages one
    assert copy_in_chart.resolve() == shipped.resolve()
    values = {**EVERYTHING_ON, "prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}
    rule = one(manifests(values), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kps"
    expected = yaml.safe_load(copy_in_chart.read_text(encoding="utf-8"))["groups"]
    assert rule["spec"]["groups"] == expected
    for group in rule["spec"]["groups"]:
        assert group["name"]
        assert group["rules"]
        for item in group["rules"]:
            assert ("alert" in item) != ("record" in item), item
            assert item["expr"], item


def _leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Return the dotted paths of ``values``' leaves (maps of free-form keys count as leaves)."""
    found = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        free_form = key in {"files", "annotations", "labels", "resources"} or not value
        if isinstance(value, dict) and not free_form:
            found.extend(_leaves(value, f"{path}."))
        else:
            found.append(path)
    return found


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    missing = [path for path in _leaves(values) if f"| `{path}` |" not in readme]
    assert missing == []


def test_policy_edits_through_a_configmap_mount_reach_the_hot_reload(tmp_path: Path) -> None:
    """The kubelet swaps a ConfigMap volume's ``..data`` symlink atomically; the daemon must notice."""
    from scaler.app import policy_signature  # noqa: PLC0415
    from scaler.core.policy_file import load_policies  # noqa: PLC0415

    data = _policies_data(manifests({}))
    mount = tmp_path / "policies"
    mount.mkdir()

    def publish(version: str, files: dict[str, str]) -> None:
        stage = mount / f"..{version}"
        stage.mkdir()
        for key, text in files.items():
            (stage / key).write_text(text, encoding="utf-8")
        (mount / "..data_tmp").symlink_to(stage.name)
        (mount / "..data_tmp").replace(mount / "..data")
        for key in files:
            if not (mount / key).is_symlink():
                (mount / key).symlink_to(f"..data/{key}")

    publish("v1", data)
    paths = [mount / key for key in sorted(data)]
    before = policy_signature(paths)
    assert load_policies(paths)["llama-3.1-8b-instruct"].bounds.max_replicas == 8
    publish("v2", {key: text.replace("max_replicas: 8", "max_replicas: 12") for key, text in data.items()})
    assert policy_signature(paths) != before
    assert load_policies(paths)["llama-3.1-8b-instruct"].bounds.max_replicas == 12


def test_the_settings_file_and_pod_environment_are_valid_daemon_settings(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from scaler.settings import ENV_PREFIX, Settings  # noqa: PLC0415

    case, objects = rendered
    assert set(_settings_file(objects)) <= set(Settings.model_fields), f"{case}: no such setting"
    env = _env(_container(objects))
    unknown = [
        n
        for n in env
        if n.startswith(ENV_PREFIX) and n[len(ENV_PREFIX) :].lower() not in Settings.model_fields
    ]
    assert unknown == [], f"{case}: the daemon has no such setting"
    settings = _daemon_settings(objects, tmp_path)
    assert settings.http.host == "0.0.0.0"
    assert settings.kafka_client_id == POD_ONLY["SCALER_KAFKA_CLIENT_ID"]  # the pod's name, not the file's
    assert settings.kafka_bootstrap_servers
    assert all(str(p).startswith("/etc/spillway/policies/") for p in settings.policy_files)
    assert settings.policy_files
    assert settings.kubernetes_in_cluster  # the actuators use the pod's ServiceAccount
    assert settings.actuate is (case == "everything-on")
    if case == "everything-on":
        assert settings.aws_region == "us-east-1"
        assert settings.prometheus_url == "http://prometheus-operated.monitoring:9090"
        assert settings.actuator_min_interval_seconds == 30
        assert settings.max_skew_seconds == 120  # extraEnv still sets any SCALER_* setting over the file


@pytest.mark.parametrize(("case", "values"), [("defaults", {}), ("overrides", OVERRIDES)])
def test_the_settings_file_loads_into_the_settings_the_old_env_vars_made(
    case: str, values: dict[str, Any], tmp_path: Path
) -> None:
    from scaler.settings import load_settings  # noqa: PLC0415

    objects = manifests(values)
    before = load_settings(config_file=None, env=LEGACY_ENV[case] | POD_ONLY, flags={})
    assert _daemon_settings(objects, tmp_path) == before
    # ~33 SCALER_* variables became one file: the pod keeps only its name (and extraEnv's) as env vars
    scaler_env = sorted(n for n in _env(_container(objects)) if n.startswith("SCALER_"))
    assert len(LEGACY_ENV[case]) >= 28
    extra = [e["name"] for e in values.get("extraEnv", [])]
    assert scaler_env == sorted(["SCALER_KAFKA_CLIENT_ID", *extra])


def test_no_secret_is_in_the_settings_configmap(tmp_path: Path) -> None:
    from scaler.settings import SECRET_FIELDS, load_settings  # noqa: PLC0415

    for values in ({}, EVERYTHING_ON, OVERRIDES):
        objects = manifests(values)
        text = _settings_text(objects)
        assert not SECRET_FIELDS & set(_settings_file(objects))
        for secret in ("secretKeyRef", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "from-the-secret"):
            assert secret not in text
        # scaler's loader refuses a secret in a file: the rendered one loads as a file alone
        config = tmp_path / "settings.yaml"
        config.write_text(text, encoding="utf-8")
        plain = {"SCALER_KAFKA_SASL_PASSWORD": "x"} if "sasl" in text else {}
        load_settings(config_file=config, env=plain, flags={})
    # the secrets reach the pod from the Secrets only: files on secret volumes, secretKeyRef env vars
    pod = one(manifests(EVERYTHING_ON), "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["kafka-sasl"] == "/etc/spillway/kafka-sasl"
    assert mounts["alerts-token"] == "/etc/spillway/alerts"


def test_a_settings_change_rolls_the_pods_and_a_policy_edit_does_not() -> None:
    def checksum(values: dict[str, Any]) -> str:
        objects = manifests(values)
        digest: str = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/settings"
        ]
        assert digest == hashlib.sha256(_settings_text(objects).rstrip("\n").encode()).hexdigest()
        return digest

    default = checksum({})
    assert checksum({"logLevel": "debug"}) != default
    assert checksum({"kafka": {"topics": {"decisions": "other.decisions"}}}) != default
    # policies are hot-reloaded from their own ConfigMap: an edit must not restart the daemon
    assert checksum({"policies": {"files": {"default.yaml": "version: 1\nmodels: []\n"}}}) == default
    annotations = one(manifests(EVERYTHING_ON), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["example.com/team"] == "ml-platform"  # podAnnotations kept beside it


def test_readme_iam_policy_lists_exactly_what_the_aws_actuators_call() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    block = readme.split("## AWS permissions", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    document = json.loads(block)
    actions = [a for statement in document["Statement"] for a in statement["Action"]]
    assert all("*" not in a for a in actions)
    assert all(r != "*" for statement in document["Statement"] for r in statement["Resource"])
    assert sorted(actions) == sorted(serverless.IAM_ACTIONS)


# -- KEDA external scaler (keda.*) --

KEDA_ON: dict[str, Any] = {
    "keda": {
        "enabled": True,
        "tls": {"existingSecret": "spillway-keda-tls", "clientCaKey": "ca.crt"},
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}],
    },
    "rbac": {"targets": {"deployments": ["llama-8b"]}},
}


def test_keda_on_validates_strictly_and_serves_grpc_on_the_service() -> None:
    objects = manifests(KEDA_ON)
    for obj in objects:
        if obj["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    ports = {p["name"]: p for p in one(objects, "Service")["spec"]["ports"]}
    assert ports["keda"] == {"name": "keda", "port": 9090, "targetPort": "keda", "protocol": "TCP"}
    container = _container(objects)
    assert {"name": "keda", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    rules = one(objects, "NetworkPolicy")["spec"]["ingress"]
    assert {"ports": [{"port": "keda", "protocol": "TCP"}], "from": KEDA_ON["keda"]["ingressFrom"]} in rules
    assert "keda" not in {p["name"] for p in one(manifests({}), "Service")["spec"]["ports"]}


def test_keda_settings_turn_the_scaler_on_with_mutual_tls(tmp_path: Path) -> None:
    objects = manifests(KEDA_ON)
    settings = _daemon_settings(objects, tmp_path)
    assert settings.keda_listen == "0.0.0.0:9090"
    assert str(settings.keda_tls_certfile) == "/etc/spillway/keda-tls/tls.crt"
    assert str(settings.keda_tls_client_cafile) == "/etc/spillway/keda-tls/client-ca.crt"
    deployment = one(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in deployment["volumes"] if v["name"] == "keda-tls"]
    assert volume["secret"]["secretName"] == "spillway-keda-tls"
    assert [i["path"] for i in volume["secret"]["items"]] == ["tls.crt", "tls.key", "client-ca.crt"]
    assert "keda_listen" not in _settings_file(manifests({}))


def test_when_keda_actuates_no_rule_may_write_workloads() -> None:
    writes = {"update", "patch", "create", "delete"}
    for values in (KEDA_ON, {"keda": {"enabled": True}}):
        for rule in _rbac_rules(manifests(values)):
            workloads = {r for r in rule["resources"] if r.split("/")[0] in {"deployments", "statefulsets"}}
            assert not (workloads and writes & set(rule["verbs"])), rule
    scale = {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["llama-8b"]}
    rules = _rbac_rules(manifests(KEDA_ON))
    assert {**scale, "verbs": ["get"]} in rules  # still read back
    actuating = {"keda": {"enabled": True, "actuates": False}, "rbac": KEDA_ON["rbac"]}
    assert {**scale, "verbs": ["get", "update"]} in _rbac_rules(manifests(actuating))


def test_keda_notes_and_readme_show_a_scaled_object_for_the_service() -> None:
    notes = render(KEDA_ON)["spillway/templates/NOTES.txt"]
    assert "type: external-push" in notes
    assert "scalerAddress: spillway.ml.svc:9090" in notes
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    assert "kind: ScaledObject" in readme
    assert "scalerAddress: spillway.spillway.svc:9090" in readme
    # both examples are ScaledObjects that can be applied as they are, without the HPA's 300 s
    # scale-down window on top of Spillway's own cooldown
    lines = notes.split("apiVersion: keda.sh/v1alpha1", 1)[1].split("\n\n", 1)[0]
    in_notes = yaml.safe_load("apiVersion: keda.sh/v1alpha1" + "\n".join(x[2:] for x in lines.split("\n")))
    in_readme = yaml.safe_load(readme.split("```yaml\napiVersion: keda.sh/v1alpha1", 1)[1].split("```", 1)[0])
    for example in (in_notes, {"apiVersion": "keda.sh/v1alpha1", **in_readme}):
        assert example["kind"] == "ScaledObject"
        behavior = example["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 0
        assert example["spec"]["triggers"][0]["metadata"]["model"] == "llama-8b"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"keda": {"enabled": "yes"}}, "/keda/enabled"),
        ({"keda": {"port": 80}}, "/keda/port"),
        ({"keda": {"tls": {"caCert": "x"}}}, "additional properties 'caCert' not allowed"),
    ],
)
def test_keda_values_breaking_the_schema_are_refused(values: dict[str, Any], message: str) -> None:
    from helm_python import HelmError  # noqa: PLC0415

    with pytest.raises(HelmError) as caught:
        render(values)
    assert message in str(caught.value)


def test_fencing_leases_get_a_role_of_their_own_names_in_the_release_namespace() -> None:
    objects = manifests(EVERYTHING_ON)
    role = next(o for o in objects if o["kind"] == "Role" and _is_leases(o))
    binding = next(o for o in objects if o["kind"] == "RoleBinding" and _is_leases(o))
    assert role["metadata"]["namespace"] == "ml"  # the release namespace, not the targets'
    assert binding["metadata"]["namespace"] == "ml"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "spillway-leases",
    }
    assert _normalise(role["rules"]) == _normalise(lease.RBAC_RULES)
    named = [r for r in role["rules"] if "resourceNames" in r]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [f"spillway-{p}" for p in range(6)],  # kafka.topicPartitions
            "verbs": ["get", "update"],
        }
    ]
    unnamed = [r for r in role["rules"] if "resourceNames" not in r]
    assert [r["verbs"] for r in unnamed] == [["create"]]  # create cannot be restricted by name
    settings = _settings_file(objects)
    assert settings["fencing_leases"] == "auto"
    assert settings["lease_namespace"] == "ml"
    assert settings["lease_name_prefix"] == "spillway"
    # more partitions named on request; none without actuation or with fencing off
    more = copy.deepcopy(EVERYTHING_ON)
    more["fencing"] = {"partitions": 12}
    role = next(o for o in manifests(more) if o["kind"] == "Role" and _is_leases(o))
    assert len(next(r for r in role["rules"] if "resourceNames" in r)["resourceNames"]) == 12
    for values in ({}, {**EVERYTHING_ON, "fencing": {"leases": "off"}}):
        assert not [o for o in manifests(values) if _is_leases(o)]
