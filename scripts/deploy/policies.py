"""Policy checks on a rendered Helm release of the aegis chart.

Each check takes the release's manifests (parsed YAML documents) and the
values they were rendered with, and returns a `Result`: what it checked, in
words, and the problems it found, each naming the manifest and the field.
A check that can never fail is a defect: check.py proves that each one
refuses a deliberately bad render (the value sets under
deploy/helm/test-values/bad/ and the mutations in check.py).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable

Manifest = dict[str, Any]

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
# The SDK's graceful stop (stop taking work, finish in-flight work,
# deregister, drain) is bounded by this timeout.
SDK_SHUTDOWN_TIMEOUT_S = 10


@dataclass
class Result:
    """The outcome of one check on one render."""

    check: str
    checked: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def name_of(m: Manifest) -> str:
    return f"{m.get('kind')}/{m.get('metadata', {}).get('name')}"


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") in WORKLOAD_KINDS]


def pod_spec(m: Manifest) -> dict[str, Any]:
    return m.get("spec", {}).get("template", {}).get("spec", {})


def containers(m: Manifest) -> list[tuple[str, dict[str, Any]]]:
    """(field path, container) of every container and init container."""
    spec = pod_spec(m)
    out = []
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            out.append((f"spec.template.spec.{key}[{i}] ({c.get('name')})", c))
    return out


def final_env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's env by name; the last entry of a name wins, as in Kubernetes."""
    return {e["name"]: e for e in c.get("env") or []}


def secret_source(env: dict[str, dict[str, Any]], name: str) -> tuple[str, dict[str, Any] | None]:
    """The variable whose Secret key `name` takes its value from, and that
    secretKeyRef: `name` itself, or the variable Y of a literal `"$(Y)"`
    (a password quoted for nats-server, which reads a bare all-digit value
    as a number)."""
    e = env.get(name) or {}
    m = re.fullmatch(r'"\$\(([A-Za-z_][A-Za-z0-9_]*)\)"', str(e.get("value", "")))
    if m:
        name, e = m.group(1), env.get(m.group(1)) or {}
    return name, e.get("valueFrom", {}).get("secretKeyRef")


def is_aegis_service(c: dict[str, Any]) -> bool:
    args = c.get("args") or []
    return len(args) >= 2 and args[0] == "service"


# --- the checks --------------------------------------------------------------


def check_resources(ms: list[Manifest], _: dict) -> Result:
    r = Result("resources", "every container requests cpu and memory and limits memory")
    for m in workloads(ms):
        for path, c in containers(m):
            res = c.get("resources") or {}
            for section, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
                if not (res.get(section) or {}).get(key):
                    r.problems.append(f"{name_of(m)}: {path}.resources.{section}.{key} is not set")
    return r


def check_probes(ms: list[Manifest], _: dict) -> Result:
    r = Result("probes", "every long-running container has a liveness and a readiness probe")
    for m in workloads(ms):
        if m["kind"] == "Job":
            continue
        for path, c in containers(m):
            if "initContainers" in path:
                continue
            for probe in ("livenessProbe", "readinessProbe"):
                if not c.get(probe):
                    r.problems.append(f"{name_of(m)}: {path}.{probe} is not set")
    return r


def check_non_root(ms: list[Manifest], _: dict) -> Result:
    r = Result(
        "non-root",
        "every container runs as non-root (runAsNonRoot, no uid 0), with privilege "
        "escalation off, ALL capabilities dropped and seccomp RuntimeDefault",
    )
    for m in workloads(ms):
        pod_sc = pod_spec(m).get("securityContext") or {}
        for path, c in containers(m):
            sc = c.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if non_root is not True:
                r.problems.append(f"{name_of(m)}: {path}.securityContext.runAsNonRoot is not true")
            if uid == 0:
                r.problems.append(f"{name_of(m)}: {path}.securityContext.runAsUser is 0 (root)")
            if sc.get("allowPrivilegeEscalation") is not False:
                r.problems.append(
                    f"{name_of(m)}: {path}.securityContext.allowPrivilegeEscalation is not false"
                )
            dropped = [x.upper() for x in (sc.get("capabilities") or {}).get("drop") or []]
            if "ALL" not in dropped:
                r.problems.append(f"{name_of(m)}: {path}.securityContext.capabilities.drop lacks ALL")
            if (sc.get("capabilities") or {}).get("add"):
                r.problems.append(f"{name_of(m)}: {path}.securityContext.capabilities.add is not empty")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                r.problems.append(
                    f"{name_of(m)}: {path}.securityContext.seccompProfile.type is {seccomp!r}, "
                    "not RuntimeDefault"
                )
    return r


def check_read_only_fs(ms: list[Manifest], _: dict) -> Result:
    r = Result("read-only-fs", "every container has a read-only root filesystem")
    for m in workloads(ms):
        for path, c in containers(m):
            if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
                r.problems.append(
                    f"{name_of(m)}: {path}.securityContext.readOnlyRootFilesystem is not true"
                )
    return r


def check_image_tags(ms: list[Manifest], _: dict) -> Result:
    r = Result("image-tags", "every image names a tag or digest, and no tag is `latest`")
    for m in workloads(ms):
        for path, c in containers(m):
            image = c.get("image") or ""
            if "@sha256:" in image:
                continue
            last = image.rsplit("/", 1)[-1]
            tag = last.split(":", 1)[1] if ":" in last else ""
            if not tag:
                r.problems.append(f"{name_of(m)}: {path}.image {image!r} has no tag (means latest)")
            elif tag == "latest":
                r.problems.append(f"{name_of(m)}: {path}.image {image!r} uses the tag latest")
    return r


def check_instance_ids(ms: list[Manifest], _: dict) -> Result:
    r = Result(
        "instance-ids",
        "every `aegis service` pod gets a unique AEGIS_INSTANCE_ID (its pod name, "
        "or a literal only in a single-replica workload, used once)",
    )
    literals: dict[str, str] = {}
    for m in workloads(ms):
        replicas = m.get("spec", {}).get("replicas", 1)
        for path, c in containers(m):
            if not is_aegis_service(c):
                continue
            env = final_env(c).get("AEGIS_INSTANCE_ID")
            where = f"{name_of(m)}: {path}.env[AEGIS_INSTANCE_ID]"
            if env is None:
                r.problems.append(f"{where} is not set")
                continue
            ref = (env.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
            if ref == "metadata.name":
                continue
            if "value" in env:
                if replicas != 1:
                    r.problems.append(
                        f"{where} is the literal {env['value']!r} shared by {replicas} replicas"
                    )
                if env["value"] in literals:
                    r.problems.append(
                        f"{where} {env['value']!r} is also used by {literals[env['value']]}"
                    )
                literals[env["value"]] = name_of(m)
            else:
                r.problems.append(f"{where} comes from {ref or 'elsewhere'}, not the pod name")
    return r


def nats_conf(ms: list[Manifest], sts: Manifest) -> tuple[str | None, str]:
    """The config text of a NATS StatefulSet (from its mounted ConfigMap)."""
    for v in pod_spec(sts).get("volumes") or []:
        cm = (v.get("configMap") or {}).get("name")
        if not cm:
            continue
        for m in ms:
            if m.get("kind") == "ConfigMap" and m["metadata"]["name"] == cm:
                for key, text in (m.get("data") or {}).items():
                    if key.endswith(".conf"):
                        return text, f"ConfigMap/{cm} data.{key}"
    return None, ""


def pod_env_values(c: dict[str, Any]) -> dict[str, str]:
    """The literal env values of a container with `$(NAME)` references to
    earlier literal values expanded, as the kubelet does."""
    out: dict[str, str] = {}
    for e in c.get("env") or []:
        if "value" in e:
            out[e["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: out.get(m.group(1), m.group(0)), str(e["value"])
            )
    return out


def check_nats_routes(ms: list[Manifest], values: dict) -> Result:
    r = Result(
        "nats-routes",
        "each NATS node's cluster routes list every peer of its StatefulSet by its "
        "headless-Service name and authenticate (the cluster's authorization password is "
        "a $VARIABLE from a Secret, and every route URL carries that user and password), "
        "and the clients' AEGIS_NATS_URL lists every node",
    )
    namespace = values.get("_namespace", "default")
    if not any(m.get("kind") == "StatefulSet" for m in ms):
        r.checked += " (no NATS StatefulSet in this render: external NATS)"
    for sts in (m for m in ms if m.get("kind") == "StatefulSet"):
        name = sts["metadata"]["name"]
        replicas = sts["spec"].get("replicas", 1)
        headless = sts["spec"].get("serviceName")
        services = {m["metadata"]["name"]: m for m in ms if m.get("kind") == "Service"}
        if headless not in services or services[headless]["spec"].get("clusterIP") != "None":
            r.problems.append(f"{name_of(sts)}: spec.serviceName {headless!r} is not a headless Service of the render")
        conf, where = nats_conf(ms, sts)
        if conf is None:
            r.problems.append(f"{name_of(sts)}: spec.template.spec.volumes mounts no ConfigMap with a .conf")
            continue
        peers = [f"{name}-{i}.{headless}.{namespace}.svc" for i in range(replicas)]
        block = re.search(r"routes\s*:\s*\[(.*?)\]", conf, re.S)
        container = (pod_spec(sts).get("containers") or [{}])[0]
        env = final_env(container)
        literal = pod_env_values(container)
        # Each route: a URL, or a $VARIABLE the pod's environment defines
        # (raw: before the kubelet expands its $(...) references).
        urls: list[tuple[str, str]] = []
        for token in re.findall(r"[^\s,]+", block.group(1)) if block else []:
            if token.startswith("$"):
                if token[1:] not in literal:
                    r.problems.append(f"{where}: route {token} is not a literal env value of {name_of(sts)}")
                    continue
                urls.append((str(env[token[1:]]["value"]), literal[token[1:]]))
            else:
                urls.append((token, token))
        routes = [u.split("://", 1)[-1].rsplit("@", 1)[-1] for _, u in urls]
        hosts = sorted(h.rsplit(":", 1)[0] for h in routes)
        if block:
            auth = re.search(
                r"cluster\s*\{.*?authorization\s*\{\s*user\s*:\s*(\S+)\s+password\s*:\s*(\S+)\s*\}",
                conf, re.S,
            )
            if not auth:
                r.problems.append(f"{where}: the cluster block has no authorization (anyone reaching port 6222 joins)")
            else:
                user, pw = auth.group(1).strip('"'), auth.group(2)
                var, ref = secret_source(env, pw[1:]) if pw.startswith("$") else (pw, None)
                if not ref:
                    r.problems.append(f"{where}: the cluster authorization's password {pw} is not taken from a Secret")
                # Each route logs in as that user with that very Secret key.
                login = f"://{user}:$({var})@"
                for raw, url in urls:
                    if login not in raw:
                        r.problems.append(
                            f"{where}: route {url.rsplit('@', 1)[-1]} does not log in as {user!r} with $({var})"
                        )
        if replicas > 1:
            if hosts != sorted(peers):
                missing = sorted(set(peers) - set(hosts))
                extra = sorted(set(hosts) - set(peers))
                r.problems.append(
                    f"{where}: cluster.routes for {replicas} replicas: missing {missing}, unexpected {extra}"
                )
            if not all(h.endswith(":6222") for h in routes):
                r.problems.append(f"{where}: cluster.routes do not all use the cluster port 6222")
        elif block:
            r.problems.append(f"{where}: a single node has cluster.routes")
        for m in workloads(ms):
            for path, c in containers(m):
                url = (final_env(c).get("AEGIS_NATS_URL") or {}).get("value")
                if url is None:
                    continue
                got = sorted(u.split("://", 1)[-1].rsplit(":", 1)[0] for u in url.split(","))
                if got != sorted(peers):
                    r.problems.append(
                        f"{name_of(m)}: {path}.env[AEGIS_NATS_URL] lists {got}, not the {replicas} nodes"
                    )
    return r


# One user entry of the rendered accounts block (files/nats-users.yaml).
_USER_RE = re.compile(
    r'\{\s*user:\s*"(?P<user>[^"]+)",\s*password:\s*(?P<password>[^,}\s]+)'
    r'(?P<rest>,\s*permissions:\s*\{(?P<perm>.*?)\n\s*\}\s*\})?',
    re.S,
)


def nats_users(conf: str) -> dict[str, dict[str, Any]]:
    """The users of a rendered server config: password text, publish and
    subscribe allow lists (None when the user has no permissions block)."""
    users = {}
    for m in _USER_RE.finditer(conf):
        perm = m.group("perm")
        lists = {}
        if perm is not None:
            for kind in ("publish", "subscribe"):
                block = re.search(kind + r"\s*:\s*\{\s*allow\s*:\s*\[(.*?)\]", perm, re.S)
                lists[kind] = re.findall(r'"([^"]*)"', block.group(1)) if block else None
        users[m.group("user")] = {
            "password": m.group("password"),
            "publish": lists.get("publish"),
            "subscribe": lists.get("subscribe"),
        }
    return users


# The only `$SYS` requests the system user may send (crates/aegis/src/
# permissions.rs, `system_grants`): `nats server list`, the statistics and
# the connection lists that crash detection reads. Any other request
# (`$SYS.REQ.SERVER.{id}.KICK`, `.LDM`, `.RELOAD`, ...) changes a server or
# reads more than Aegis needs.
_SYSTEM_REQUESTS = {
    "$SYS.REQ.SERVER.PING",
    "$SYS.REQ.SERVER.PING.STATSZ",
    "$SYS.REQ.SERVER.PING.CONNZ",
}


def _system_user_problems(u: dict[str, Any]) -> list[str]:
    """Why the system user `sys` may do more than Aegis does with it."""
    if u["publish"] is None or u["subscribe"] is None:
        return ["user 'sys' has no publish/subscribe permissions (every $SYS request, "
                "e.g. kicking a connection or lame duck mode)"]
    return [f"user 'sys' may publish {s!r}, not one of {sorted(_SYSTEM_REQUESTS)}"
            for s in u["publish"] if s not in _SYSTEM_REQUESTS]


def check_nats_users(ms: list[Manifest], _: dict) -> Result:
    r = Result(
        "nats-users",
        "the NATS config holds no password (each a $VARIABLE the NATS pods take from the "
        "credentials Secret), every application user has publish and subscribe "
        "permissions including its own reply inboxes, the system user publishes only "
        "the read-only server requests Aegis sends; every aegis container connects as "
        "one of them with that user's Secret key and inbox prefix",
    )
    stses = [m for m in ms if m.get("kind") == "StatefulSet"]
    if not stses:
        r.checked += " (external NATS: only that each container names a user, key and inbox prefix)"
    users: dict[str, dict[str, Any]] = {}
    # user -> (Secret, key) its password comes from, via the NATS pods' env.
    source: dict[str, tuple[str, str]] = {}
    for sts in stses:
        conf, where = nats_conf(ms, sts)
        if conf is None:
            continue
        users = nats_users(conf)
        if not users:
            r.problems.append(f"{where}: no users")
        env = final_env(pod_spec(sts)["containers"][0])
        for name, u in users.items():
            pw = u["password"]
            if not pw.startswith("$"):
                r.problems.append(f"{where}: user {name!r} has a literal password in the ConfigMap")
                continue
            _, ref = secret_source(env, pw[1:])
            if not ref:
                r.problems.append(f"{name_of(sts)}: {pw[1:]} (user {name!r}'s password) is not taken from a Secret")
            else:
                source[name] = (ref.get("name"), ref.get("key"))
            if name == "sys":
                r.problems.extend(f"{where}: {p}" for p in _system_user_problems(u))
                continue
            if u["publish"] is None or u["subscribe"] is None:
                r.problems.append(f"{where}: user {name!r} has no publish/subscribe permissions (the whole account)")
            elif f"_INBOX_{name}.>" not in u["subscribe"]:
                r.problems.append(f"{where}: user {name!r} may not subscribe to its own inboxes _INBOX_{name}.>")
    for m in workloads(ms):
        for path, c in containers(m):
            env = final_env(c)
            if "AEGIS_NATS_URL" not in env:
                continue
            where = f"{name_of(m)}: {path}"
            user = (env.get("AEGIS_NATS_USER") or {}).get("value")
            if not user:
                r.problems.append(f"{where}.env[AEGIS_NATS_USER] is not set")
                continue
            prefix = (env.get("AEGIS_NATS_INBOX_PREFIX") or {}).get("value")
            if prefix != f"_INBOX_{user}":
                r.problems.append(f"{where}.env[AEGIS_NATS_INBOX_PREFIX] is {prefix!r}, not _INBOX_{user}")
            ref = (env.get("AEGIS_NATS_PASSWORD") or {}).get("valueFrom", {}).get("secretKeyRef")
            if not ref:
                r.problems.append(f"{where}.env[AEGIS_NATS_PASSWORD] is not taken from a Secret")
                continue
            if stses and user not in users:
                r.problems.append(f"{where}: user {user!r} is not a user of the NATS config")
            elif user in source and source[user] != (ref.get("name"), ref.get("key")):
                r.problems.append(
                    f"{where}.env[AEGIS_NATS_PASSWORD] is {ref.get('name')}/{ref.get('key')}, "
                    f"but NATS checks {user!r} against {source[user][0]}/{source[user][1]}"
                )
    return r


def _declared_external(values: dict) -> set[str]:
    """Names the values declare as created outside the chart."""
    names = set(values.get("externalSecrets") or [])
    names.update(values.get("imagePullSecrets") or [])
    for section in (values.get("nats", {}).get("auth", {}), values.get("monitor", {}).get("auth", {})):
        if section.get("existingSecret"):
            names.add(section["existingSecret"])
    tls = values.get("nats", {}).get("tls", {})
    if tls.get("enabled") and tls.get("secretName"):
        names.add(tls["secretName"])
    for t in values.get("monitor", {}).get("ingress", {}).get("tls") or []:
        if t.get("secretName"):
            names.add(t["secretName"])
    return names


def check_references(ms: list[Manifest], values: dict) -> Result:
    r = Result(
        "references",
        "every Secret and ConfigMap a pod or ingress uses is rendered (with the key "
        "asked for) or declared external (existingSecret, tls secretName, externalSecrets)",
    )
    rendered: dict[tuple[str, str], set[str]] = {}
    for m in ms:
        if m.get("kind") in ("Secret", "ConfigMap"):
            keys = set((m.get("data") or {}).keys()) | set((m.get("stringData") or {}).keys())
            rendered[(m["kind"], m["metadata"]["name"])] = keys
    external = _declared_external(values)

    def need(kind: str, name: str | None, key: str | None, where: str) -> None:
        if not name:
            r.problems.append(f"{where}: names no {kind}")
        elif (kind, name) in rendered:
            if key is not None and key not in rendered[(kind, name)]:
                r.problems.append(f"{where}: {kind}/{name} has no key {key!r}")
        elif name not in external:
            r.problems.append(f"{where}: {kind}/{name} is neither rendered nor declared external")

    for m in workloads(ms):
        spec = pod_spec(m)
        for i, v in enumerate(spec.get("volumes") or []):
            where = f"{name_of(m)}: spec.template.spec.volumes[{i}] ({v.get('name')})"
            if "secret" in v:
                need("Secret", v["secret"].get("secretName"), None, where)
            if "configMap" in v:
                need("ConfigMap", v["configMap"].get("name"), None, where)
        for i, s in enumerate(spec.get("imagePullSecrets") or []):
            need("Secret", s.get("name"), None, f"{name_of(m)}: spec.template.spec.imagePullSecrets[{i}]")
        for path, c in containers(m):
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                where = f"{name_of(m)}: {path}.env[{e.get('name')}]"
                if "secretKeyRef" in vf:
                    need("Secret", vf["secretKeyRef"].get("name"), vf["secretKeyRef"].get("key"), where)
                if "configMapKeyRef" in vf:
                    need("ConfigMap", vf["configMapKeyRef"].get("name"), vf["configMapKeyRef"].get("key"), where)
            for j, ef in enumerate(c.get("envFrom") or []):
                where = f"{name_of(m)}: {path}.envFrom[{j}]"
                if "secretRef" in ef:
                    need("Secret", ef["secretRef"].get("name"), None, where)
                if "configMapRef" in ef:
                    need("ConfigMap", ef["configMapRef"].get("name"), None, where)
    for m in (m for m in ms if m.get("kind") == "Ingress"):
        for i, t in enumerate(m["spec"].get("tls") or []):
            need("Secret", t.get("secretName"), None, f"{name_of(m)}: spec.tls[{i}].secretName")
    return r


def check_graceful_stop(ms: list[Manifest], values: dict) -> Result:
    r = Result(
        "graceful-stop",
        f"services' terminationGracePeriodSeconds exceed the SDK's {SDK_SHUTDOWN_TIMEOUT_S} s "
        "shutdown; NATS nodes have a lame-duck preStop and a grace period beyond it",
    )
    ld = values.get("nats", {}).get("lameDuck", {})
    lame_duck_s = _seconds(ld.get("gracePeriod", "0s")) + _seconds(ld.get("duration", "0s"))
    for m in workloads(ms):
        if m["kind"] == "Job":
            continue
        spec = pod_spec(m)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        where = f"{name_of(m)}: spec.template.spec.terminationGracePeriodSeconds"
        component = m["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if component == "nats":
            pre = ((spec.get("containers") or [{}])[0].get("lifecycle") or {}).get("preStop") or {}
            if "ldm=" not in " ".join((pre.get("exec") or {}).get("command") or []):
                r.problems.append(f"{name_of(m)}: containers[0].lifecycle.preStop does not signal lame-duck mode")
            if grace <= lame_duck_s:
                r.problems.append(f"{where} {grace} s does not exceed the lame-duck {lame_duck_s} s")
        elif any(is_aegis_service(c) or (c.get("args") or [""])[0] == "api" for _, c in containers(m)):
            if grace <= SDK_SHUTDOWN_TIMEOUT_S:
                r.problems.append(
                    f"{where} {grace} s does not exceed the SDK's {SDK_SHUTDOWN_TIMEOUT_S} s shutdown"
                )
    return r


def check_disruption_budgets(ms: list[Manifest], _: dict) -> Result:
    r = Result("disruption-budgets", "every Deployment and StatefulSet is covered by a PodDisruptionBudget")
    pdbs = [m for m in ms if m.get("kind") == "PodDisruptionBudget"]
    for m in (m for m in ms if m.get("kind") in ("Deployment", "StatefulSet")):
        labels = m["spec"]["template"]["metadata"].get("labels") or {}
        covered = any(
            all(labels.get(k) == v for k, v in (p["spec"].get("selector", {}).get("matchLabels") or {}).items())
            for p in pdbs
        )
        if not covered:
            r.problems.append(f"{name_of(m)}: no PodDisruptionBudget selects spec.template.metadata.labels")
    return r


# `aegis init`'s exit status for a bucket or stream that does not match
# (crates/aegis/src/init.rs, MISMATCH_EXIT).
INIT_MISMATCH_EXIT = 3


def check_init_job(ms: list[Manifest], _: dict) -> Result:
    r = Result(
        "init-job",
        "`aegis init` runs as a plain Job (no Helm hook: a post-install hook waits for "
        "the pods, which wait for the buckets it creates) named per release revision, "
        "failed at once, not retried, on a mismatch (exit status 3)",
    )
    jobs = [
        m for m in ms
        if m.get("kind") == "Job" and any((c.get("args") or [""])[0] == "init" for _, c in containers(m))
    ]
    if not jobs:
        r.problems.append("no Job runs `aegis init`")
    for m in jobs:
        hook = (m["metadata"].get("annotations") or {}).get("helm.sh/hook")
        if hook:
            r.problems.append(f"{name_of(m)}: metadata.annotations[helm.sh/hook] is {hook!r}")
        # A mismatch (`aegis init` exit status 3, init.rs MISMATCH_EXIT)
        # needs an operator's fix: the Job fails at once instead of retrying.
        rules = ((m["spec"].get("podFailurePolicy") or {}).get("rules")) or []
        if not any(
            rule.get("action") == "FailJob"
            and (rule.get("onExitCodes") or {}).get("operator") == "In"
            and INIT_MISMATCH_EXIT in ((rule.get("onExitCodes") or {}).get("values") or [])
            for rule in rules
        ):
            r.problems.append(
                f"{name_of(m)}: spec.podFailurePolicy does not fail the Job on exit status "
                f"{INIT_MISMATCH_EXIT} (a mismatch would be retried backoffLimit times)"
            )
        if not re.search(r"-init-\d+$", m["metadata"]["name"]):
            r.problems.append(
                f"{name_of(m)}: metadata.name has no release revision (a Job's template cannot change on upgrade)"
            )
    return r


# Labels that change with every chart or app version: in a pod template they
# would restart every pod of the workload on a mere chart bump.
_VOLATILE_LABELS = ("helm.sh/chart", "app.kubernetes.io/version")


def check_stable_pod_templates(ms: list[Manifest], _: dict) -> Result:
    r = Result(
        "stable-pod-templates",
        "no pod template carries a label that changes with the chart version "
        f"({', '.join(_VOLATILE_LABELS)}), so a chart bump alone restarts nothing",
    )
    for m in workloads(ms):
        labels = m["spec"]["template"].get("metadata", {}).get("labels") or {}
        for key in _VOLATILE_LABELS:
            if key in labels:
                r.problems.append(f"{name_of(m)}: spec.template.metadata.labels[{key}] is set")
    return r


def check_nats_spread(ms: list[Manifest], _: dict) -> Result:
    r = Result(
        "nats-spread",
        "a multi-node NATS StatefulSet requires its pods on distinct Kubernetes nodes "
        "(required anti-affinity on kubernetes.io/hostname), so one node's loss keeps the quorum",
    )
    for sts in (m for m in ms if m.get("kind") == "StatefulSet"):
        if sts["spec"].get("replicas", 1) <= 1:
            continue
        own = sts["spec"]["template"]["metadata"].get("labels") or {}
        terms = (
            (pod_spec(sts).get("affinity") or {}).get("podAntiAffinity") or {}
        ).get("requiredDuringSchedulingIgnoredDuringExecution") or []
        if not any(
            t.get("topologyKey") == "kubernetes.io/hostname"
            and (t.get("labelSelector") or {}).get("matchLabels")
            and all(own.get(k) == v for k, v in t["labelSelector"]["matchLabels"].items())
            for t in terms
        ):
            r.problems.append(
                f"{name_of(sts)}: spec.template.spec.affinity.podAntiAffinity has no required "
                "kubernetes.io/hostname term selecting its own pods"
            )
    return r


def _selects(selector: dict[str, Any] | None, labels: dict[str, Any]) -> bool:
    """Whether a Service selector or matchLabels picks pods with `labels`."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_nats_monitoring(ms: list[Manifest], _: dict) -> Result:
    r = Result(
        "nats-monitoring",
        "the NATS HTTP monitoring port (unauthenticated: /connz, /subsz, /jsz, /accountz name "
        "every connection, subscription and stream) is no port of any Service, and no "
        "NetworkPolicy admits a pod to it: only the kubelet's probes need it",
    )
    if not any(m.get("kind") == "StatefulSet" for m in ms):
        r.checked += " (no NATS StatefulSet in this render: external NATS)"
    for sts in (m for m in ms if m.get("kind") == "StatefulSet"):
        conf, where = nats_conf(ms, sts)
        http = re.search(r"^\s*http(?:_port)?\s*[:=]\s*\S*?(\d+)\s*$", conf or "", re.M)
        if not http:
            r.problems.append(f"{name_of(sts)}: {where or 'its config'} has no `http:` monitoring port")
            continue
        port = int(http.group(1))
        # The port by number and by each name a container gives it.
        names: set[Any] = {port}
        for _, c in containers(sts):
            names |= {p["name"] for p in c.get("ports") or [] if p.get("containerPort") == port and p.get("name")}
        labels = sts["spec"]["template"]["metadata"].get("labels") or {}
        for svc in (m for m in ms if m.get("kind") == "Service"):
            if not _selects(svc["spec"].get("selector"), labels):
                continue
            for i, sp in enumerate(svc["spec"].get("ports") or []):
                if sp.get("targetPort", sp.get("port")) in names or sp.get("port") == port:
                    r.problems.append(
                        f"{name_of(svc)}: spec.ports[{i}] ({sp.get('name')}) exposes the NATS monitoring port {port}"
                    )
        for pol in (m for m in ms if m.get("kind") == "NetworkPolicy"):
            if not _selects((pol["spec"].get("podSelector") or {}).get("matchLabels"), labels):
                continue
            for i, rule in enumerate(pol["spec"].get("ingress") or []):
                ports = rule.get("ports")
                if not ports:
                    r.problems.append(f"{name_of(pol)}: spec.ingress[{i}] admits every port, {port} included")
                elif any(p.get("port") in names for p in ports):
                    r.problems.append(f"{name_of(pol)}: spec.ingress[{i}] admits the NATS monitoring port {port}")
    return r


def check_trusted_proxies(ms: list[Manifest], values: dict) -> Result:
    r = Result(
        "trusted-proxies",
        "the monitor's AEGIS_TRUSTED_PROXIES lists monitor.trustedProxies, each an IP address "
        "or a CIDR range other than /0 (what the monitor parses), and is absent when none is given",
    )
    want = [str(p) for p in ((values.get("monitor") or {}).get("trustedProxies") or [])]
    monitors = [m for m in ms if m.get("kind") == "Deployment" and m["metadata"]["name"].endswith("-monitor")]
    if not monitors:
        r.problems.append("no monitor Deployment")
    for m in monitors:
        for path, c in containers(m):
            e = final_env(c).get("AEGIS_TRUSTED_PROXIES")
            got = [p.strip() for p in str(e.get("value", "")).split(",") if p.strip()] if e else []
            for p in got:
                try:
                    # Host bits may be set, as the monitor takes them.
                    net = ipaddress.ip_network(p, strict=False)
                except ValueError:
                    r.problems.append(
                        f"{name_of(m)}: {path}.env[AEGIS_TRUSTED_PROXIES] {p!r} is neither an IP "
                        "address nor a CIDR range")
                    continue
                if net.prefixlen == 0:
                    r.problems.append(
                        f"{name_of(m)}: {path}.env[AEGIS_TRUSTED_PROXIES] {p!r} trusts every peer "
                        "(any client could name its own address)")
            if got != want:
                r.problems.append(f"{name_of(m)}: {path}.env[AEGIS_TRUSTED_PROXIES] is {got}, not {want}")
    return r


# The streams `aegis init` creates, by their values key and their section
# in the SDK's config file (`[streams.<name>]`, aegis-sdk config.rs
# StreamsConfig), and each limit's value key and field.
_STREAMS = {"events": "events", "commands": "commands", "deadLetter": "dead_letter",
            "metrics": "metrics", "log": "log"}
_LIMITS = {"maxAge": "max_age", "maxBytes": "max_bytes", "maxMessages": "max_messages"}


def check_stream_limits(ms: list[Manifest], values: dict) -> Result:
    r = Result(
        "stream-limits",
        "the `aegis init` Job reads a config file (AEGIS_CONFIG, mounted from a ConfigMap of "
        "the render) whose [streams.*] limits are those the values' streams.* set, and only "
        "those (a limit left out keeps what the stream has)",
    )
    want = values.get("streams") or {}
    jobs = [m for m in ms if m.get("kind") == "Job"]
    for m in jobs:
        for path, c in containers(m):
            e = final_env(c).get("AEGIS_CONFIG")
            if not e or "value" not in e:
                r.problems.append(f"{name_of(m)}: {path}.env has no AEGIS_CONFIG: the stream limits are not passed")
                continue
            file = str(e["value"])
            text = None
            for mount in c.get("volumeMounts") or []:
                if not file.startswith(mount["mountPath"].rstrip("/") + "/"):
                    continue
                vol = next((v for v in pod_spec(m).get("volumes") or [] if v["name"] == mount["name"]), {})
                cm = (vol.get("configMap") or {}).get("name")
                data = next((x.get("data") or {} for x in ms
                             if x.get("kind") == "ConfigMap" and x["metadata"]["name"] == cm), {})
                text = data.get(file.rsplit("/", 1)[-1])
            if text is None:
                r.problems.append(f"{name_of(m)}: {file} (AEGIS_CONFIG) is no file of a mounted ConfigMap")
                continue
            try:
                got = tomllib.loads(text).get("streams") or {}
            except tomllib.TOMLDecodeError as err:
                r.problems.append(f"{name_of(m)}: {file} is not TOML: {err}")
                continue
            for key, section in _STREAMS.items():
                for limit, field_name in _LIMITS.items():
                    expected = (want.get(key) or {}).get(limit)
                    actual = (got.get(section) or {}).get(field_name)
                    if (expected is None) != (actual is None) or str(actual) != str(expected):
                        r.problems.append(
                            f"{name_of(m)}: {file} [streams.{section}] {field_name} is {actual!r}, "
                            f"not streams.{key}.{limit} {expected!r}"
                        )
    return r


def _seconds(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(text).strip())
    if not m:
        return 0
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n // 1000, "s": n, "m": n * 60, "h": n * 3600}[unit]


CHECKS: list[Callable[[list[Manifest], dict], Result]] = [
    check_resources,
    check_probes,
    check_non_root,
    check_read_only_fs,
    check_image_tags,
    check_instance_ids,
    check_nats_routes,
    check_nats_users,
    check_references,
    check_graceful_stop,
    check_disruption_budgets,
    check_init_job,
    check_stable_pod_templates,
    check_nats_spread,
    check_nats_monitoring,
    check_trusted_proxies,
    check_stream_limits,
]


def run_all(manifests: list[Manifest], values: dict) -> list[Result]:
    return [check(manifests, values) for check in CHECKS]
