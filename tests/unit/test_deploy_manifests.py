"""Deployment files, checked offline: kustomize overlays rendered and validated against the Kubernetes
schemas, the properties that keep the platform safe and reachable, the Dockerfiles and the Helm values.

Nothing here builds an image, renders the Helm chart or talks to a cluster (none is available).
"""

import ast
import copy
import importlib.util
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dotenv import dotenv_values

from platform_assets.settings import LOCAL_ENV_FILE, PROJECT_ROOT

K8S = PROJECT_ROOT / "deploy" / "k8s"
DOCKER = PROJECT_ROOT / "deploy" / "docker"
HELM = PROJECT_ROOT / "deploy" / "helm"
INSTANCE_FILE = PROJECT_ROOT / "deploy" / "dagster" / "dagster.yaml"
K8S_VERSION = "1.32.0"  # the kubectl shipped with the machine image; kubernetes-validate has its schemas
OVERLAYS = ("staging", "production")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
PROXY, API = "oauth2-proxy", "prediction-service"

# Pods that the Helm chart and the K8sRunLauncher create (not rendered here): policies may select them.
CHART_PODS = [{"component": "dagster-webserver"}, {"component": "dagster-daemon"}, {"component": "user-deployments"}]


def run_worker_labels() -> dict:
    from dagster_k8s.utils import get_common_labels

    return {**get_common_labels(), "app.kubernetes.io/component": "run_worker"}


@cache
def render(target: str) -> tuple:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing: it renders the kustomize overlays (kubectl kustomize); install kubectl >= 1.27")
    out = subprocess.run([kubectl, "kustomize", str(K8S / target)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"kubectl kustomize {target} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def objects(target: str, kind: str | None = None) -> list[dict]:
    return [o for o in render(target) if kind is None or o["kind"] == kind]


def one(target: str, kind: str, name: str) -> dict:
    found = [o for o in objects(target, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{target}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_templates(target: str) -> list[tuple[str, dict]]:
    return [(o["metadata"]["name"], o["spec"]["template"]) for o in objects(target) if o["kind"] in WORKLOADS]


def containers(template: dict) -> list[dict]:
    return template["spec"].get("initContainers", []) + template["spec"]["containers"]


def standalone_manifests() -> list[tuple[str, dict]]:
    """Every document of the base's resource files (overlay files are patches, not whole objects)."""
    base = K8S / "base"
    files = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    return [(f, doc) for f in files for doc in yaml.safe_load_all((base / f).read_text()) if doc]


def documented_secrets() -> dict[str, set[str]]:
    """The Secrets table of deploy/k8s/README.md: | `name` | `KEY`, `KEY` | used by |."""
    table = {}
    for line in (K8S / "README.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z0-9-]+)` \| ((?:`[^`]+`(?:, )?)+) \|", line)
        if m:
            table[m.group(1)] = set(re.findall(r"`([^`]+)`", m.group(2)))
    assert table, "deploy/k8s/README.md has no Secrets table"
    return table


def matches(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present, op = expr["key"] in labels, expr["operator"]
        if op == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
        if (op == "NotIn" and labels.get(expr["key"]) in expr["values"]) or (op == "Exists" and not present) \
                or (op == "DoesNotExist" and present):
            return False
    return True


def all_pod_labels(target: str) -> list[dict]:
    return [t["metadata"]["labels"] for _, t in pod_templates(target)] + CHART_PODS + [run_worker_labels()]


# -- schema validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_every_rendered_object_passes_the_kubernetes_schema(target):
    rendered = render(target)
    assert len(rendered) > 20
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{target}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_every_standalone_manifest_passes_the_kubernetes_schema():
    for path, doc in standalone_manifests():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"deploy/k8s/base/{path}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_the_validation_bites():
    deployment = copy.deepcopy(one("overlays/production", "Deployment", API))
    del deployment["spec"]["selector"]  # required
    with pytest.raises(kubernetes_validate.ValidationError, match="selector"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    typo = copy.deepcopy(one("overlays/production", "Deployment", API))
    typo["spec"]["replica"] = 3  # strict: unknown fields are errors, not silently dropped
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


# -- the prediction service -----------------------------------------------------------------------


def bentoml_routes() -> set[str]:
    """The paths BentoML's HTTP server really serves besides the service's own APIs."""
    package = Path(importlib.util.find_spec("bentoml").origin).parent  # read, not imported: importing is slow
    path = package / "_internal" / "server" / "base_app.py"
    return set(re.findall(r'join_paths\(path_prefix, "(/[a-z]+)"\)', path.read_text()))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_scraping_use_the_paths_the_service_serves(overlay):
    served = bentoml_routes()
    assert {"/livez", "/readyz", "/metrics"} <= served, served
    # ...and the service documents them as open (serving/service.py and its auth middleware).
    assert "``/livez`` and ``/readyz`` are open" in (PROJECT_ROOT / "serving" / "service.py").read_text()
    template = one(f"overlays/{overlay}", "Deployment", API)["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["httpGet"]["path"] in served
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in served and annotations["prometheus.io/scrape"] == "true"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert annotations["prometheus.io/port"] == str(port)
    # The JWT key comes from a Secret, never a literal.
    env = {e["name"]: e for e in container.get("env", [])}
    key = env.get("SERVING_JWT_PUBLIC_KEY") or env.get("SERVING_JWT_SECRET")
    assert key and "secretKeyRef" in key["valueFrom"], "the service needs its JWT key from a Secret"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_and_disruption_budget_target_the_service(overlay):
    target = f"overlays/{overlay}"
    hpa = one(target, "HorizontalPodAutoscaler", API)
    ref = hpa["spec"]["scaleTargetRef"]
    deployment = one(target, ref["kind"], ref["name"])
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    for pdb in objects(target, "PodDisruptionBudget"):
        assert any(matches(pdb["spec"]["selector"], t["metadata"]["labels"]) for _, t in pod_templates(target))
        if "minAvailable" in pdb["spec"]:  # a budget equal to the floor of replicas would block every drain
            assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], overlay


def test_production_runs_more_than_staging():
    def sizes(overlay):
        hpa = one(f"overlays/{overlay}", "HorizontalPodAutoscaler", API)["spec"]
        return one(f"overlays/{overlay}", "Deployment", API)["spec"]["replicas"], hpa["minReplicas"], hpa["maxReplicas"]

    assert all(p > s for p, s in zip(sizes("production"), sizes("staging"), strict=True))


def test_images_are_pinned_per_environment():
    for _, template in pod_templates("overlays/production"):
        for c in containers(template):
            assert re.search(r"@sha256:[0-9a-f]{64}$", c["image"]), f"production image not pinned by digest: {c['image']}"
    for _, template in pod_templates("overlays/staging"):
        for c in containers(template):
            assert ":" in c["image"].rsplit("/", 1)[-1] and not c["image"].endswith(":latest"), c["image"]


# -- every pod ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_limited_and_unprivileged(overlay):
    for name, template in pod_templates(f"overlays/{overlay}"):
        pod_security = template["spec"].get("securityContext", {})
        for c in containers(template):
            where = f"{name}/{c['name']}"
            limits = c.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= set(limits), f"{where}: no cpu/memory limits"
            security = {**pod_security, **c.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True and security.get("runAsUser", 1) != 0, f"{where}: may run as root"
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_accounts_are_least_privilege(overlay):
    target = f"overlays/{overlay}"
    accounts = {o["metadata"]["name"]: o for o in objects(target, "ServiceAccount")}
    for name, template in pod_templates(target):
        account = template["spec"].get("serviceAccountName")
        assert account in accounts, f"{name}: uses the namespace's default account"
        assert template["spec"].get("automountServiceAccountToken") is False, f"{name}: mounts an API token"
    for role in objects(target, "Role") + objects(target, "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule.get("apiGroups", []), role["metadata"]["name"]
            assert set(rule["resources"]) <= {"jobs", "jobs/status", "pods", "pods/log", "events"}, rule
    assert not objects(target, "ClusterRoleBinding"), "the platform needs no cluster-wide rights"
    binding = one(target, "RoleBinding", "dagster-run-launcher")
    assert [s["name"] for s in binding["subjects"]] == ["dagster"] and "dagster" in accounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_selects_pods(overlay):
    target = f"overlays/{overlay}"
    for svc in objects(target, "Service"):
        selected = [t for _, t in pod_templates(target) if matches({"matchLabels": svc["spec"]["selector"]},
                                                                   t["metadata"]["labels"])]
        assert selected, f"Service {svc['metadata']['name']} selects no pod"
        ports = {p["name"] for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {svc['metadata']['name']}: no container port {port['targetPort']}"


# -- secrets and settings -------------------------------------------------------------------------


def secret_refs(obj) -> set[tuple[str, str | None]]:
    """(secret, key) pairs referenced anywhere in an object (key None: the whole Secret)."""
    refs = set()
    if isinstance(obj, dict):
        if "secretKeyRef" in obj:
            refs.add((obj["secretKeyRef"]["name"], obj["secretKeyRef"]["key"]))
        if "secretRef" in obj:
            refs.add((obj["secretRef"]["name"], None))
        if "secretName" in obj:
            refs.add((obj["secretName"], None))
        for value in obj.values():
            refs |= secret_refs(value)
    elif isinstance(obj, list):
        for value in obj:
            refs |= secret_refs(value)
    return refs


def test_every_secret_referenced_is_documented_and_none_is_committed():
    documented = documented_secrets()
    refs = set()
    for overlay in OVERLAYS:
        assert not objects(f"overlays/{overlay}", "Secret"), "Secrets are created out of band, never committed"
        refs |= secret_refs(list(render(f"overlays/{overlay}")))
    instance = yaml.safe_load(INSTANCE_FILE.read_text())["run_launcher"]["config"]
    refs |= {(name, None) for name in instance["env_secrets"] + [instance["postgres_password_secret"]]}
    values = helm_values()
    refs |= {(s["name"], None) for s in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]}
    refs |= {(s["name"], None) for d in values["dagster-user-deployments"]["deployments"] for s in d["envSecrets"]}
    refs.add((values["global"]["postgresqlSecretName"], "postgresql-password"))
    for name, key in refs:
        assert name in documented, f"Secret {name} is referenced but not in deploy/k8s/README.md"
        assert key is None or key in documented[name], f"Secret {name} has no documented key {key}"
    for path in PROJECT_ROOT.joinpath("deploy").rglob("*.y*ml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), f"{path} commits a Secret"


def test_the_settings_use_the_platforms_variable_names():
    settings = one("overlays/production", "ConfigMap", "platform-settings")["data"]
    local = set(dotenv_values(LOCAL_ENV_FILE))
    # Beyond services.env: client settings the resources read (Kafka auth, libpq, AWS) and MLflow's own.
    extra = {"KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "PGSSLMODE", "AWS_REGION",
             "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_DISABLE_TELEMETRY"}
    assert set(settings) - local - extra == set(), "unknown settings: a typo would be silently ignored"
    assert not [k for k in settings if re.search("PASSWORD|SECRET|TOKEN|KEY", k)], "secrets belong in Secrets"
    assert settings["PLATFORM_ENV"].upper() == "PROD" and settings["LAKE_ROOT"].startswith("s3://")
    assert settings["PROCESSING_ENGINE"] == "spark" and re.match(r"(spark|sc)://", settings["SPARK_MASTER"])
    # The resources need every connection setting in PROD: the ConfigMap and the Secret cover them.
    needed = {k for k in local if re.match(r"(WAREHOUSE|OPS_POSTGRES|MYSQL|REDIS)_|KAFKA_BOOTSTRAP|MLFLOW_TRACKING", k)}
    missing = needed - set(settings) - documented_secrets()["platform-credentials"]
    assert not missing, f"settings missing in the cluster: {missing}"


# -- access paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_has_tls_and_reaches_only_the_proxy_and_the_api(overlay):
    target = f"overlays/{overlay}"
    services = {s["metadata"]["name"]: s for s in objects(target, "Service")}
    for ingress in objects(target, "Ingress"):
        tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
        assert all(t.get("secretName") for t in ingress["spec"]["tls"])
        assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
        for rule in ingress["spec"]["rules"]:
            assert rule["host"] in tls_hosts, f"{rule['host']} is served without TLS"
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in (PROXY, API), f"{rule['host']}{path['path']} bypasses the proxy"
                assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
    assert helm_values()["ingress"]["enabled"] is False, "the Dagster chart must not expose the webserver itself"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_dagster_ui_is_reachable_only_through_the_proxy(overlay):
    target = f"overlays/{overlay}"
    policies = objects(target, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") for p in policies), "no default-deny policy"
    webserver = {"component": "dagster-webserver"}
    admitted = [rule for p in policies if matches(p["spec"]["podSelector"], webserver)
                for rule in p["spec"].get("ingress", [])]
    assert admitted
    for rule in admitted:
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, f"the webserver admits {peer}: only the proxy and in-namespace pods"
            assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] in (PROXY, API)
    args = one(target, "Deployment", PROXY)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(a.startswith("--upstream=http://dagster-dagster-webserver") for a in args)
    assert any(a.startswith("--allowed-group=") for a in args), "role-based access: the proxy must check groups"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_network_policy_selects_existing_pods(overlay):
    target = f"overlays/{overlay}"
    pods = all_pod_labels(target)
    for policy in objects(target, "NetworkPolicy"):
        name = policy["metadata"]["name"]
        assert any(matches(policy["spec"]["podSelector"], labels) for labels in pods), f"{name} selects no pod"
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if set(peer) == {"podSelector"}:  # a peer in this namespace
                    assert any(matches(peer["podSelector"], labels) for labels in pods), f"{name}: peer {peer} is no pod"
    allowed_dns = [p for p in objects(target, "NetworkPolicy") if p["spec"]["podSelector"] == {}
                   and any(port.get("port") == 53 for r in p["spec"].get("egress", []) for port in r.get("ports", []))]
    assert allowed_dns, "default-deny egress without DNS breaks every name lookup"


# -- Dockerfiles ----------------------------------------------------------------------------------


def instructions(path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.MULTILINE)
            if not m.group(1).startswith("#")]


@pytest.mark.parametrize("name", ["user-code", "serving", "dashboard"])
def test_dockerfiles_are_pinned_unprivileged_and_copy_what_exists(name):
    path = DOCKER / f"{name}.Dockerfile"
    steps = instructions(path)
    stages = set()
    ignored = {line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()}
    for op, arg in steps:
        if op == "FROM":
            image, *rest = arg.split()
            assert image in stages or re.search(r":\d+\.\d+\.\d+[\w.-]*$|@sha256:[0-9a-f]{64}$", image), \
                f"{path.name}: base image {image} is not pinned to a patch version or digest"
            if rest and rest[0].upper() == "AS":
                stages.add(rest[1])
        elif op == "COPY":
            words = [w for w in arg.split() if not w.startswith("--chown")]
            source_from = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            sources = [w for w in words if not w.startswith("--")][:-1]
            if source_from is None:
                for src in sources:
                    assert (PROJECT_ROOT / src).exists(), f"{path.name}: COPY {src}: not in the repository"
                    assert src not in ignored, f"{path.name}: COPY {src} is excluded by .dockerignore"
            elif source_from not in stages and "/" not in source_from:  # a named build context
                assert f"--build-context {source_from}=" in path.read_text(), f"{path.name}: {source_from} undocumented"
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{path.name}: runs as root"
    assert any(op == "HEALTHCHECK" for op, _ in steps), f"{path.name}: no HEALTHCHECK"
    assert all(op != "ENV" or not re.search(r"(PASSWORD|SECRET)=", arg) for op, arg in steps), "secret baked in"
    uv = [arg for op, arg in steps if op == "RUN" and arg.startswith("uv ")]
    assert uv and all("--frozen" in a for a in uv), f"{path.name}: install from uv.lock (uv sync --frozen)"


def test_the_images_start_what_exists():
    cmd = {name: json.loads([a for op, a in instructions(DOCKER / f"{name}.Dockerfile") if op == "CMD"][-1])
           for name in ("user-code", "serving", "dashboard")}
    module = cmd["user-code"][cmd["user-code"].index("-m") + 1]
    assert (PROJECT_ROOT / (module.replace(".", "/") + ".py")).exists(), module
    assert module == yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"][
        "module_name"]
    target = next(a for a in cmd["serving"] if ":" in a and "." in a)
    file, attr = target.split(":")
    tree = ast.parse((PROJECT_ROOT / (file.replace(".", "/") + ".py")).read_text())
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    assert attr in assigned, f"{file} defines no {attr}"
    assert target in (PROJECT_ROOT / "serving" / "bentofile.yaml").read_text()
    assert (PROJECT_ROOT / cmd["dashboard"][cmd["dashboard"].index("run") + 1]).exists()
    # The pods expose the ports the images listen on.
    serving_port = cmd["serving"][cmd["serving"].index("--port") + 1]
    ports = one("overlays/production", "Deployment", API)["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert str(ports[0]["containerPort"]) == serving_port


# -- Helm values ----------------------------------------------------------------------------------


@cache
def _values_text() -> str:
    return (HELM / "dagster-values.yaml").read_text()


def helm_values() -> dict:
    return yaml.safe_load(_values_text())


def helm_schema() -> dict:
    return json.loads((HELM / "values.schema.json").read_text())


def test_the_helm_values_follow_our_schema_and_the_schema_bites():
    jsonschema.Draft202012Validator(helm_schema()).validate(helm_values())
    broken = helm_values()
    broken["postgresql"]["enabled"] = True  # the chart would start its own PostgreSQL
    broken["dagsterWebserver"]["replicas"] = 2  # a misspelt key the chart would ignore
    errors = list(jsonschema.Draft202012Validator(helm_schema()).iter_errors(broken))
    assert len(errors) == 2, [e.message for e in errors]


def test_the_helm_values_agree_with_the_instance_and_the_manifests():
    import dagster

    values = helm_values()
    for part in ("dagsterWebserver", "dagsterDaemon"):
        assert values[part]["image"]["tag"] == dagster.__version__, f"{part} must run dagster {dagster.__version__}"
    production = {i["name"]: i for i in yaml.safe_load((K8S / "overlays/production/kustomization.yaml").read_text())[
        "images"]}
    for deployment in values["dagster-user-deployments"]["deployments"]:
        assert deployment["image"]["repository"] == production["ml-platform-user-code"]["newName"]
        assert deployment["port"] == 3030 and "platform_assets.definitions" in deployment["codeServerArgs"]

    instance = yaml.safe_load(INSTANCE_FILE.read_text())
    concurrency = values["concurrency"]
    assert concurrency["pools"] == {"defaultLimit": instance["concurrency"]["pools"]["default_limit"],
                                    "granularity": instance["concurrency"]["pools"]["granularity"]}
    assert concurrency["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert concurrency["runs"]["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert values["postgresql"]["postgresqlParams"] == instance["run_storage"]["config"]["postgres_db"]["params"]
    assert values["global"]["postgresqlSecretName"] == instance["run_launcher"]["config"]["postgres_password_secret"]

    launcher, expected = values["runLauncher"]["config"]["k8sRunLauncher"], instance["run_launcher"]["config"]
    assert [c["name"] for c in launcher["envConfigMaps"]] == expected["env_config_maps"]
    assert [s["name"] for s in launcher["envSecrets"]] == expected["env_secrets"]
    assert launcher["imagePullPolicy"] == expected["image_pull_policy"]
    assert launcher["runK8sConfig"]["containerConfig"]["resources"] == \
        expected["run_k8s_config"]["container_config"]["resources"]
    assert launcher["runK8sConfig"]["containerConfig"]["securityContext"] == \
        expected["run_k8s_config"]["container_config"]["security_context"]
    run_account = launcher["runK8sConfig"]["podSpecConfig"]["serviceAccountName"]
    assert run_account == expected["service_account_name"]

    rendered = objects("overlays/production")
    namespace = {o["metadata"].get("namespace") for o in rendered} - {None}
    assert namespace == {launcher["jobNamespace"]}
    accounts = {o["metadata"]["name"] for o in rendered if o["kind"] == "ServiceAccount"}
    assert {values["serviceAccount"]["name"], run_account} <= accounts
    assert values["serviceAccount"]["create"] is False and values["rbacEnabled"] is False
    settings = one("overlays/production", "ConfigMap", "platform-settings")["metadata"]["name"]
    assert settings in expected["env_config_maps"]


def test_staging_and_production_share_no_store():
    """A staging run must never consume production's topics, overwrite its features or read its sources."""
    staging = one("overlays/staging", "ConfigMap", "platform-settings")["data"]
    production = one("overlays/production", "ConfigMap", "platform-settings")["data"]
    separate = [k for k in production if k.endswith("_HOST")] + [
        "KAFKA_BOOTSTRAP_SERVERS", "LAKE_ROOT", "SOURCE_FILES_ROOT", "MLFLOW_ARTIFACTS_DESTINATION", "DEMO_API_URL"]
    shared = [k for k in separate if staging.get(k) == production.get(k)]
    assert shared == [], f"staging uses production's {shared}"
