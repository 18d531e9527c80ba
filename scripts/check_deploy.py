#!/usr/bin/env python3
"""The checks of scripts/check-deploy.sh that no schema can make.

    check_deploy.py manifests deploy/kubernetes     the files agree with each other
    check_deploy.py istio-config deploy/kubernetes OUT
                                                    writes the ConfigMap's istio.yaml
                                                    to OUT for `ringress check`
    check_deploy.py containerfile Containerfile     the image build, read offline
    check_deploy.py seccomp-exec FILTER-FILE -- CMD...
                                                    runs CMD under the syscall allow
                                                    list of a systemd unit (below)
    check_deploy.py seccomp-exec PROFILE.json -- CMD...
                                                    the same under an OCI seccomp
                                                    profile (a container's)
    check_deploy.py seccomp-profile FILTER-FILE     prints that allow list as an OCI
                                                    seccomp profile
    check_deploy.py seccomp-installer deploy/kubernetes
                                                    the Localhost profile the
                                                    Deployment names is the one the
                                                    installer DaemonSet writes

Each check prints what it verified, one line each, and exits 1 with every problem
found (not just the first).
"""

import ctypes
import errno
import json
import os
import re
import sys
import tomllib
from pathlib import Path

import yaml

problems: list[str] = []


def ok(what: str) -> None:
    print(f"  ok    {what}")


def fail(what: str) -> None:
    print(f"  FAIL  {what}")
    problems.append(what)


def check(condition: bool, what: str) -> bool:
    (ok if condition else fail)(what)
    return condition


def finish() -> None:
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        sys.exit(1)


# --- Kubernetes manifests -----------------------------------------------------------


def load_manifests(directory: Path) -> tuple[dict, dict[str, dict]]:
    """The kustomization and its resources by kind/name."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: dict[str, dict] = {}
    for name in kustomization.get("resources", []):
        path = directory / name
        if not path.is_file():
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return kustomization, objects


def flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def istio_documents(objects: dict[str, dict]) -> list[dict]:
    config = objects.get("ConfigMap/ringress-config", {}).get("data", {})
    docs = []
    for text in config.values():
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def manifests(directory: Path) -> None:
    kustomization, objects = load_manifests(directory)
    listed = kustomization.get("resources", [])
    present = sorted(p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")
    check(sorted(listed) == present, f"kustomization.yaml lists every manifest ({', '.join(present)})")
    namespace = kustomization.get("namespace")
    check(f"Namespace/{namespace}" in objects, f"the Namespace {namespace} is one of them")
    wrong = [k for k, o in objects.items() if o["kind"] != "Namespace" and o["metadata"].get("namespace") != namespace]
    check(not wrong, f"every object names namespace {namespace}" + (f" (not: {', '.join(wrong)})" if wrong else ""))

    deployment = objects.get("Deployment/ringress")
    if not check(deployment is not None, "Deployment ringress exists"):
        finish()
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    check(selects(deployment["spec"]["selector"], labels), "the Deployment's selector matches its pods")
    check("replicas" not in deployment["spec"], "the Deployment leaves the replica count to the autoscaler")
    container = spec["containers"][0]
    args = container.get("args", [])
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}

    sub_paths = [m["mountPath"] for m in mounts.values() if "subPath" in m or "subPathExpr" in m]
    check(not sub_paths, "no volume is mounted with subPath (kubelet never updates those)")

    def mounted_source(path: str) -> tuple[dict, str] | None:
        """The volume holding `path`, and the key within it."""
        for mount_path, mount in mounts.items():
            if path.startswith(mount_path.rstrip("/") + "/"):
                return volumes.get(mount["name"], {}), path[len(mount_path.rstrip("/")) + 1 :]
        return None

    config_path = flag_value(args, "--config")
    source = mounted_source(config_path or "")
    check(
        source is not None
        and "configMap" in source[0]
        and source[1] in objects.get(f"ConfigMap/{source[0]['configMap']['name']}", {}).get("data", {}),
        f"--config {config_path} is a key of a mounted ConfigMap",
    )
    keys_path = flag_value(args, "--session-ticket-keys")
    source = mounted_source(keys_path or "")
    secret = objects.get(f"Secret/{source[0]['secret']['secretName']}", {}) if source and "secret" in source[0] else {}
    check(
        source is not None and source[1] in {**secret.get("data", {}), **secret.get("stringData", {})},
        f"--session-ticket-keys {keys_path} is a key of a mounted Secret of this kustomization",
    )

    secrets_dir = flag_value(args, "--secrets-dir") or ""
    credentials = set()
    for doc in istio_documents(objects):
        if doc.get("kind") == "Gateway":
            for server in doc["spec"].get("servers", []):
                name = server.get("tls", {}).get("credentialName")
                if name:
                    credentials.add(name)
    for name in sorted(credentials):
        mount = mounts.get(f"{secrets_dir}/{name}")
        volume = volumes.get(mount["name"], {}) if mount else {}
        check(
            volume.get("secret", {}).get("secretName") == name,
            f"credentialName {name} has its Secret mounted at {secrets_dir}/{name}",
        )
    for volume in volumes.values():
        mode = volume.get("secret", {}).get("defaultMode")
        if mode is not None:
            check(mode & 0o007 == 0, f"Secret volume {volume['name']} is not world-readable ({mode:04o})")

    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    health = flag_value(args, "--health")
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    probe_port = ports.get(probe.get("port"), probe.get("port"))
    check(
        health is not None and health.rsplit(":", 1)[-1] == str(probe_port) and probe.get("path") == "/healthz/ready",
        f"the readiness probe asks --health {health} for /healthz/ready",
    )
    admin = flag_value(args, "--admin") or "127.0.0.1:15000"
    check(admin.startswith("127.0.0.1:") or admin == "off", f"--admin {admin} stays on the pod's loopback")

    gateway_ports = set()
    for doc in istio_documents(objects):
        if doc.get("kind") == "Gateway":
            gateway_ports |= {s["port"]["number"] for s in doc["spec"].get("servers", [])}
    check(
        gateway_ports <= set(ports.values()),
        f"every Gateway port ({', '.join(map(str, sorted(gateway_ports)))}) is a container port",
    )
    if min(gateway_ports, default=1024) < 1024:
        sysctls = {s["name"]: s["value"] for s in spec.get("securityContext", {}).get("sysctls", [])}
        check(
            sysctls.get("net.ipv4.ip_unprivileged_port_start") == "0",
            "ports below 1024: the pod lets its non-root user bind them (ip_unprivileged_port_start)",
        )

    drain = float(flag_value(args, "--drain-timeout") or 10)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(pre_stop > 0, f"preStop pauses {pre_stop} s before SIGTERM")
    check(grace > pre_stop + drain, f"terminationGracePeriodSeconds {grace} > preStop {pre_stop} + --drain-timeout {drain:g}")
    liveness = container.get("livenessProbe")
    if liveness:
        window = liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3)
        check(window > grace, f"the liveness probe ({window} s to fail) cannot trip during a shutdown ({grace} s)")

    pod_security = spec.get("securityContext", {})
    security = container.get("securityContext", {})
    capabilities = security.get("capabilities", {})
    check(
        security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
        and security.get("runAsUser", pod_security.get("runAsUser")) == 65532,
        "runs as non-root user 65532",
    )
    check(security.get("readOnlyRootFilesystem") is True, "read-only root filesystem")
    check(security.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    check(
        capabilities.get("drop") == ["ALL"] and capabilities.get("add", []) in ([], ["NET_BIND_SERVICE"]),
        "capabilities: drop ALL, add at most NET_BIND_SERVICE",
    )
    check(
        security.get("seccompProfile", pod_security.get("seccompProfile", {})).get("type") in ("RuntimeDefault", "Localhost"),
        "a seccomp profile",
    )
    check(spec.get("automountServiceAccountToken") is False, "no service account token in the pod")

    resources = container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    check(bool(requests) and requests == limits, "resource requests equal limits (Guaranteed QoS)")
    shards = flag_value(args, "--shards")
    check(shards is not None and shards == str(limits.get("cpu")), f"--shards {shards} equals the CPU limit {limits.get('cpu')}")
    spread = spec.get("topologySpreadConstraints", [])
    check(
        any(c["topologyKey"] == "kubernetes.io/hostname" and selects(c["labelSelector"], labels) for c in spread)
        or "podAntiAffinity" in spec.get("affinity", {}),
        "pods spread over nodes",
    )

    service = objects.get("Service/ringress", {}).get("spec", {})
    check(service.get("type") == "LoadBalancer", "Service of type LoadBalancer")
    check(service.get("externalTrafficPolicy") == "Local", "externalTrafficPolicy Local (client addresses kept)")
    check(selects({"matchLabels": service.get("selector", {})}, labels), "the Service selects the pods")
    unknown = [p["targetPort"] for p in service.get("ports", []) if p["targetPort"] not in ports and p["targetPort"] not in ports.values()]
    check(not unknown, "every Service targetPort is a container port" + (f" (not: {unknown})" if unknown else ""))
    service_ports = {ports.get(p["targetPort"], p["targetPort"]) for p in service.get("ports", [])}
    check(gateway_ports | {probe_port} <= service_ports, "the Service exposes every Gateway port and the health port")

    budget = objects.get("PodDisruptionBudget/ringress", {}).get("spec", {})
    check(selects(budget.get("selector", {}), labels), "the PodDisruptionBudget selects the pods")
    autoscaler = objects.get("HorizontalPodAutoscaler/ringress", {}).get("spec", {})
    target = autoscaler.get("scaleTargetRef", {})
    check(target.get("kind") == "Deployment" and target.get("name") == "ringress", "the autoscaler scales Deployment ringress")
    check(
        any(m.get("resource", {}).get("name") == "cpu" for m in autoscaler.get("metrics", [])),
        "the autoscaler follows CPU",
    )
    check(autoscaler.get("minReplicas", 1) >= 2, "at least two replicas")
    finish()


def istio_config(directory: Path, out: Path) -> None:
    """The ConfigMap's Istio manifests, cluster DNS names made local.

    `ringress check` resolves every destination; a `*.svc.cluster.local` name only
    resolves inside a cluster, so it becomes `localhost` here.
    """
    _, objects = load_manifests(directory)
    data = objects["ConfigMap/ringress-config"]["data"]
    text = re.sub(r"[A-Za-z0-9.-]+\.svc\.cluster\.local", "localhost", data["istio.yaml"])
    out.write_text(text)
    names = sorted(
        {s["tls"]["credentialName"] for d in istio_documents(objects) if d.get("kind") == "Gateway"
         for s in d["spec"].get("servers", []) if s.get("tls", {}).get("credentialName")}
    )
    print(" ".join(names))


# --- Containerfile ------------------------------------------------------------------


def containerfile(path: Path) -> None:
    from dockerfile_parse import DockerfileParser

    root = path.parent
    parser = DockerfileParser(fileobj=path.open("rb"))
    stages: list[dict] = []
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"].strip()
        if instruction == "FROM":
            parts = re.split(r"\s+", value)
            name = parts[2] if len(parts) == 3 and parts[1].lower() == "as" else None
            stages.append({"image": parts[0], "name": name, "items": []})
        elif stages:
            stages[-1]["items"].append((instruction, value))
    if not check(len(stages) >= 2, f"multi-stage build ({len(stages)} stages)"):
        finish()
    builder, final = stages[0], stages[-1]

    channel = tomllib.loads((root / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    check(
        re.fullmatch(rf"(docker\.io/(library/)?)?rust:{re.escape(channel)}-bookworm", builder["image"]) is not None,
        f"builder {builder['image']} is Rust {channel} (rust-toolchain.toml) on Debian bookworm",
    )
    workdir = "/"
    env = {}
    builds = []
    for instruction, value in builder["items"]:
        if instruction == "WORKDIR":
            workdir = os.path.join(workdir, value)
        elif instruction == "ENV":
            for key, val in re.findall(r"(\w+)=(\S+)", value):
                env[key] = val
        elif instruction == "RUN" and "cargo build" in value:
            builds.append(value)
    check(
        any("--release" in b and "--locked" in b for b in builds),
        "the builder runs cargo build --release --locked",
    )
    target_dir = os.path.join(workdir, env.get("CARGO_TARGET_DIR", "target"))
    output = os.path.normpath(os.path.join(target_dir, "release", "ringress"))

    final_image = final["image"]
    check(
        final_image.startswith("gcr.io/distroless/") or final_image == "scratch",
        f"the runtime image {final_image} is distroless",
    )
    copies = [v for i, v in final["items"] if i == "COPY" and "--from=" in v]
    copied = {}
    for value in copies:
        parts = value.split()
        source_stage = parts[0].split("=", 1)[1]
        copied[parts[-1]] = (source_stage, parts[1:-1])
    users = [v for i, v in final["items"] if i == "USER"]
    user = users[-1].split(":")[0] if users else ""
    check(user.isdigit() and int(user) != 0, f"the runtime stage runs as non-root USER {users[-1] if users else '(none)'}")
    entrypoints = [v for i, v in final["items"] if i == "ENTRYPOINT"]
    entry = yaml.safe_load(entrypoints[-1]) if entrypoints else None
    check(
        isinstance(entry, list) and os.path.basename(entry[0]) == "ringress",
        f"ENTRYPOINT {entrypoints[-1] if entrypoints else '(none)'} is ringress (exec form)",
    )
    if isinstance(entry, list):
        source = copied.get(entry[0])
        check(
            source is not None and source[0] in (builder["name"], "0") and source[1] == [output],
            f"COPY --from={builder['name']} {output} (the build's output) {entry[0]}",
        )
    exposed = {int(p.split("/")[0]) for i, v in final["items"] if i == "EXPOSE" for p in v.split()}
    deployment = root / "deploy/kubernetes/deployment.yaml"
    if deployment.is_file():
        pod = yaml.safe_load(deployment.read_text())["spec"]["template"]["spec"]
        ports = {p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
        check(exposed == ports, f"EXPOSE {sorted(exposed)} = the Deployment's container ports {sorted(ports)}")
    ignore = root / ".dockerignore"
    ignored = ignore.read_text().split() if ignore.is_file() else []
    check("target" in ignored or "target/" in ignored or "/target" in ignored, ".dockerignore leaves target/ out of the build context")
    finish()


# --- a systemd unit's syscall filter, applied with libseccomp ------------------------

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


OCI_ARCHITECTURES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


def read_allow_list(path: Path) -> tuple[list[str], int, bool]:
    """The calls a filter allows, the errno the others get, and whether writable
    executable memory is refused: from a systemd allow list (one call a line, as
    `systemd-analyze syscall-filter` expands SystemCallFilter=; EPERM and
    MemoryDenyWriteExecute=, as the unit sets them) or from an OCI profile (.json:
    defaultAction SCMP_ACT_ERRNO, rules that allow without argument conditions)."""
    if path.suffix != ".json":
        return [n.strip() for n in path.read_text().split() if n.strip()], errno.EPERM, True
    profile = json.loads(path.read_text())
    if profile.get("defaultAction") != "SCMP_ACT_ERRNO":
        sys.exit(f"{path}: defaultAction {profile.get('defaultAction')!r}, not SCMP_ACT_ERRNO")
    names = []
    for rule in profile.get("syscalls", []):
        if rule.get("action") != "SCMP_ACT_ALLOW" or rule.get("args"):
            sys.exit(f"{path}: only unconditional SCMP_ACT_ALLOW rules are supported here")
        names += rule["names"]
    return names, profile.get("defaultErrnoRet", errno.EPERM), False


def seccomp_exec(filter_file: Path, command: list[str]) -> None:
    """Runs `command` allowed only the system calls `filter_file` lists (see
    read_allow_list), the others failing with its errno, and for a systemd allow list
    refuses writable executable memory as MemoryDenyWriteExecute= does. Not the whole
    sandbox, but the part of it a program can trip over at run time."""
    names, denied_errno, deny_write_execute = read_allow_list(filter_file)
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ScmpArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(0x00050000 | denied_errno)  # SCMP_ACT_ERRNO(errno)
    guarded = {"mmap": 2, "mmap2": 2, "mprotect": 2, "pkey_mprotect": 2} if deny_write_execute else {}
    for name in names:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            continue  # not a call of this architecture
        if name in guarded:
            # Allowed unless it asks for memory both writable and executable (mmap)
            # or makes memory executable later (mprotect).
            mask = PROT_WRITE | PROT_EXEC if name.startswith("mmap") else PROT_EXEC
            values = [0] if mask == PROT_EXEC else [0, PROT_WRITE, PROT_EXEC]
            for value in values:
                cmp = ScmpArgCmp(guarded[name], SCMP_CMP_MASKED_EQ, mask, value)
                if lib.seccomp_rule_add_array(context, SCMP_ACT_ALLOW, number, 1, ctypes.byref(cmp)) < 0:
                    sys.exit(f"seccomp_rule_add {name} failed")
        elif lib.seccomp_rule_add_array(context, SCMP_ACT_ALLOW, number, 0, None) < 0:
            sys.exit(f"seccomp_rule_add {name} failed")
    if lib.seccomp_load(context) < 0:
        sys.exit("seccomp_load failed")
    os.execv(command[0], command)


def seccomp_profile(filter_file: Path) -> None:
    """Prints a systemd allow list as an OCI seccomp profile, the format a kubelet's
    Localhost profile, containerd, CRI-O and Docker read."""
    names, _, _ = read_allow_list(filter_file)
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EPERM,
        "architectures": OCI_ARCHITECTURES,
        "syscalls": [{"names": sorted(set(names)), "action": "SCMP_ACT_ALLOW"}],
    }
    print(json.dumps(profile, indent=2))


def seccomp_installer(directory: Path) -> None:
    """The Deployment's Localhost seccomp profile is a file the installer DaemonSet
    (directory/seccomp/) writes into the kubelet's seccomp directory."""
    _, objects = load_manifests(directory)
    spec = objects["Deployment/ringress"]["spec"]["template"]["spec"]
    profiles = [spec.get("securityContext", {}).get("seccompProfile", {})]
    profiles += [c.get("securityContext", {}).get("seccompProfile", {}) for c in spec["containers"]]
    wanted = {p.get("localhostProfile") for p in profiles if p.get("type") == "Localhost"}
    check(len(wanted) == 1 and len(profiles) == sum(p.get("type") == "Localhost" for p in profiles),
          f"the pod and its container name one Localhost profile ({', '.join(sorted(map(str, wanted)))})")
    installer_dir = directory / "seccomp"
    kustomization, installer = load_manifests(installer_dir)
    generated = kustomization.get("configMapGenerator", [])
    files = {f.split("=")[-1] for g in generated for f in g.get("files", [])}
    name = next(iter(wanted), None)
    check(name in files and (installer_dir / str(name)).is_file(),
          f"deploy/kubernetes/seccomp/{name} exists and the installer's ConfigMap carries it")
    daemonsets = [o for o in installer.values() if o["kind"] == "DaemonSet"]
    if not check(len(daemonsets) == 1, "one installer DaemonSet"):
        finish()
    pod = daemonsets[0]["spec"]["template"]["spec"]
    host_paths = [v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v]
    check(host_paths == ["/var/lib/kubelet/seccomp"], "it writes into the kubelet's seccomp directory, and nowhere else on the host")
    config_volumes = [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
    check(config_volumes == [g["name"] for g in generated], "it mounts the generated ConfigMap")
    scripts = " ".join(" ".join(c.get("command", []) + c.get("args", [])) for c in pod.get("initContainers", []))
    check(str(name) in scripts, f"its init container installs {name}")
    profile = json.loads((installer_dir / str(name)).read_text()) if (installer_dir / str(name)).is_file() else {}
    allowed = {n for r in profile.get("syscalls", []) if r.get("action") == "SCMP_ACT_ALLOW" for n in r["names"]}
    check({"io_uring_setup", "io_uring_enter", "io_uring_register"} <= allowed, f"{name} allows io_uring_setup, io_uring_enter, io_uring_register")
    check(profile.get("defaultAction") == "SCMP_ACT_ERRNO", f"{name} refuses every other call (SCMP_ACT_ERRNO)")
    finish()


def main() -> None:
    match sys.argv[1:]:
        case ["manifests", directory]:
            manifests(Path(directory))
        case ["istio-config", directory, out]:
            istio_config(Path(directory), Path(out))
        case ["containerfile", path]:
            containerfile(Path(path))
        case ["seccomp-exec", filter_file, "--", *command] if command:
            seccomp_exec(Path(filter_file), command)
        case ["seccomp-profile", filter_file]:
            seccomp_profile(Path(filter_file))
        case ["seccomp-installer", directory]:
            seccomp_installer(Path(directory))
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main()
