"""Renders, lints, validates and policy-checks the aegis Helm chart, offline.

Run by scripts/deploy-check.sh inside its virtualenv (helm-python-sdk embeds
Helm's Go engine; kubernetes-validate carries the Kubernetes JSON schemas).

For every value set in deploy/helm/test-values/*.yaml:
  1. the chart's values.schema.json accepts it, and `helm lint --strict` is clean;
  2. Helm renders it (hooks included, though the chart has none);
  3. every manifest validates strictly (unknown fields refused) against the
     schemas of each Kubernetes version in KUBE_VERSIONS;
  4. the policy checks of policies.py pass;
  5. the rendered nats-server.conf parses with the pinned nats-server (`-t`)
     in the environment the StatefulSet gives it.
Then the negative tests: each value set in deploy/helm/test-values/bad/ names
the check that must refuse it (`# expect: <check>`, or `chart` when
the chart itself must refuse to render it), and each mutation below
breaks one thing in the default render; every policy check must be shown to
fail at least once, or the run fails.

Exit status 0 when everything holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate.utils as kv
import yaml

import policies

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "aegis"
VALUES_DIR = ROOT / "deploy" / "helm" / "test-values"
KUBE_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
RELEASE = "aegis"
NAMESPACE = "trading"

failures: list[str] = []


def say(status: str, subject: str, text: str) -> None:
    print(f"  {status:<4} {subject}: {text}", flush=True)


def fail(subject: str, text: str) -> None:
    failures.append(f"{subject}: {text}")
    say("FAIL", subject, text)


def load_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: a value set must be a YAML mapping")
    return data


def expectation(path: Path) -> str | None:
    m = re.search(r"^#\s*expect:\s*([a-z-]+)\s*$", path.read_text(), re.M)
    return m.group(1) if m else None


def render(chart: helm.Chart, values: dict[str, Any]) -> tuple[list[dict], dict[str, Any]]:
    """The manifests of an install with `values`, and the merged values."""
    files = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests = []
    for name, text in sorted(files.items()):
        if not name.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["_source"] = name
                manifests.append(doc)
    merged = chart.merge_values(values)
    merged["_namespace"] = NAMESPACE
    return manifests, merged


def lint(set_name: str, values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version="v1.29.0")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += [{"path": "", "error": e} for e in report.get("errors") or []]
    if problems:
        for p in problems:
            fail(f"{set_name}: helm lint", f"{p.get('path')}: {p.get('error')}")
    else:
        say("ok", f"{set_name}: helm lint --strict", f"{report.get('total_charts_linted')} chart, no warning or error")


def validate(set_name: str, manifests: list[dict]) -> None:
    for version in KUBE_VERSIONS:
        bad = 0
        for m in manifests:
            doc = {k: v for k, v in m.items() if k != "_source"}
            subject = f"{set_name}: kubernetes {version[:-2]} strict"
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail(subject, f"{m['_source']} {policies.name_of(m)}: {path}: {e.message}")
                bad += 1
            except kv.SchemaNotFoundError:
                fail(subject, f"{m['_source']} {policies.name_of(m)}: no schema for {m.get('apiVersion')} {m.get('kind')}")
                bad += 1
        if not bad:
            say("ok", f"{set_name}: kubernetes {version[:-2]} strict", f"{len(manifests)} manifests valid")


def policy(set_name: str, manifests: list[dict], merged: dict) -> list[policies.Result]:
    results = policies.run_all(manifests, merged)
    for r in results:
        if r.ok:
            say("ok", f"{set_name}: {r.check}", r.checked)
        else:
            for p in r.problems:
                fail(f"{set_name}: {r.check}", p)
    return results


def _pod_env(sts: dict) -> dict[str, str]:
    """The NATS container's environment as the pod would see it: literal
    values, the pod name for fieldRefs, a stand-in for each Secret key: all
    digits, the hardest password for nats-server's config (a bare `$VAR`
    whose value is a number is read as one, and refused as a password)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for e in sts["spec"]["template"]["spec"]["containers"][0].get("env") or []:
        vf = e.get("valueFrom") or {}
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "fieldRef" in vf:
            env[e["name"]] = f"{sts['metadata']['name']}-0"
        else:
            env[e["name"]] = str(100000 + len(env))
        # The kubelet expands $(NAME) references to earlier variables.
        env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                lambda m: env.get(m.group(1), m.group(0)), env[e["name"]])
    return env


def _test_certificates(tmp: Path) -> bool:
    """A throwaway CA and server certificate (openssl), or False without openssl."""
    if not shutil.which("openssl"):
        return False
    run = lambda *a: subprocess.run(["openssl", *a], cwd=tmp, capture_output=True, check=True)  # noqa: E731
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=deploy-check CA")
    run("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=nats")
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "tls.crt", "-days", "1")
    return True


def nats_config_problems(manifests: list[dict], nats_server: str) -> tuple[list[str], list[str]]:
    """Parses each rendered nats-server.conf with the real server (`-t`), in
    the environment its StatefulSet gives it: a `$VARIABLE` of the config that
    the pod does not define, a bad account block or route fails here. With
    TLS on, the certificate paths point to a throwaway certificate.
    Returns (what was checked, problems)."""
    checked, problems = [], []
    for sts in (m for m in manifests if m.get("kind") == "StatefulSet"):
        text, where = policies.nats_conf(manifests, sts)
        if text is None:
            problems.append(f"{policies.name_of(sts)}: mounts no NATS config")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            note = ""
            if "/etc/nats-tls/" in text:
                if not _test_certificates(Path(tmp)):
                    checked.append(f"{where}: not parsed, TLS on and no openssl to make a test certificate")
                    continue
                text = text.replace("/etc/nats-tls/", f"{tmp}/")
                note = ", TLS with a throwaway certificate"
            conf = Path(tmp) / "nats-server.conf"
            conf.write_text(text)
            p = subprocess.run([nats_server, "-t", "-c", str(conf)], env=_pod_env(sts),
                               capture_output=True, text=True, timeout=30)
            if p.returncode != 0:
                problems.append(f"{where} in {policies.name_of(sts)}'s environment: "
                                f"{' '.join((p.stderr or p.stdout).split())}")
            else:
                checked.append(f"{where} parses in {policies.name_of(sts)}'s environment{note}")
    return checked, problems


def nats_config(set_name: str, manifests: list[dict], nats_server: str | None) -> None:
    subject = f"{set_name}: nats-server -t"
    if not any(m.get("kind") == "StatefulSet" for m in manifests):
        say("ok", subject, "no NATS StatefulSet in this render (external NATS)")
        return
    if not nats_server:
        fail(subject, "no nats-server found (run scripts/bootstrap.sh)")
        return
    checked, problems = nats_config_problems(manifests, nats_server)
    for c in checked:
        say("ok", subject, c)
    for p in problems:
        fail(subject, p)


# --- negative tests ------------------------------------------------------------


def _find(ms: list[dict], kind: str, suffix: str) -> dict:
    for m in ms:
        if m.get("kind") == kind and m["metadata"]["name"].endswith(suffix):
            return m
    raise SystemExit(f"mutation: no {kind} *{suffix} in the default render")


def _container(ms: list[dict], kind: str, suffix: str) -> dict:
    return _find(ms, kind, suffix)["spec"]["template"]["spec"]["containers"][0]


def _drop_route(ms: list[dict]) -> None:
    cm = _find(ms, "ConfigMap", "-nats-config")
    text = cm["data"]["nats-server.conf"]
    cm["data"]["nats-server.conf"] = re.sub(r"\n\s*\$ROUTE_URL_2\b[^\n]*", "", text, count=1)


def _literal_route_password(ms: list[dict]) -> None:
    for e in _container(ms, "StatefulSet", "-nats")["env"]:
        if e["name"] == "ROUTE_URL_1":
            e["value"] = e["value"].replace("$(SECRET_ROUTE_PASSWORD)", "s3cret")


def _open_routes(ms: list[dict]) -> None:
    cm = _find(ms, "ConfigMap", "-nats-config")
    cm["data"]["nats-server.conf"] = re.sub(
        r"\n\s*authorization\s*\{[^}]*\}", "", cm["data"]["nats-server.conf"], count=1)


def _drop_secret(ms: list[dict]) -> None:
    ms.remove(_find(ms, "Secret", "-nats-credentials"))


def _short_grace(ms: list[dict]) -> None:
    _find(ms, "Deployment", "-order")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5


def _drop_pdb(ms: list[dict]) -> None:
    ms.remove(_find(ms, "PodDisruptionBudget", "-risk"))


def _drop_probe(ms: list[dict]) -> None:
    del _container(ms, "Deployment", "-pricing")["readinessProbe"]


def _writable_fs(ms: list[dict]) -> None:
    _container(ms, "StatefulSet", "-nats")["securityContext"]["readOnlyRootFilesystem"] = False


def _drop_password_env(ms: list[dict]) -> None:
    env = _container(ms, "StatefulSet", "-nats")["env"]
    env[:] = [e for e in env if e["name"] != "PASSWORD_MONITOR"]


def _open_user(ms: list[dict]) -> None:
    cm = _find(ms, "ConfigMap", "-nats-config")
    text = cm["data"]["nats-server.conf"]
    cm["data"]["nats-server.conf"] = re.sub(
        r'(user: "svc-risk-service", password: \$\w+), permissions: \{.*?\n\s*\}\s*\}', r"\1 }",
        text, count=1, flags=re.S)


def _open_system_user(ms: list[dict]) -> None:
    cm = _find(ms, "ConfigMap", "-nats-config")
    text = cm["data"]["nats-server.conf"]
    cm["data"]["nats-server.conf"] = re.sub(
        r'(user: "sys", password: \$\w+), permissions: \{.*?\n\s*\}\s*\}', r"\1 }",
        text, count=1, flags=re.S)


def _kicking_system_user(ms: list[dict]) -> None:
    cm = _find(ms, "ConfigMap", "-nats-config")
    cm["data"]["nats-server.conf"] = cm["data"]["nats-server.conf"].replace(
        '"$SYS.REQ.SERVER.PING.CONNZ"', '"$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.SERVER.*.KICK"', 1)


def _wrong_inbox(ms: list[dict]) -> None:
    for e in _container(ms, "Deployment", "-order")["env"]:
        if e["name"] == "AEGIS_NATS_INBOX_PREFIX":
            e["value"] = "_INBOX_operator"


def _literal_password(ms: list[dict]) -> None:
    cm = _find(ms, "ConfigMap", "-nats-config")
    cm["data"]["nats-server.conf"] = cm["data"]["nats-server.conf"].replace(
        "password: $PASSWORD_MONITOR", 'password: "s3cret"')


def _init_hook(ms: list[dict]) -> None:
    job = next(m for m in ms if m.get("kind") == "Job")
    job["metadata"].setdefault("annotations", {})["helm.sh/hook"] = "post-install,post-upgrade"


def _retried_mismatch(ms: list[dict]) -> None:
    job = next(m for m in ms if m.get("kind") == "Job")
    job["spec"].pop("podFailurePolicy", None)


def _unlimited_init(ms: list[dict]) -> None:
    init = next(m for m in ms if m.get("kind") == "Job")["spec"]["template"]["spec"]["containers"][0]
    init["env"] = [e for e in init["env"] if e["name"] != "AEGIS_CONFIG"]


def _padded_limit(ms: list[dict]) -> None:
    """A default limit written into init's file although the values set none
    (as charts before 0.3.1 did): it would hold a limit raised by hand."""
    cm = next(m for m in ms if m.get("kind") == "ConfigMap" and m["metadata"]["name"].endswith("-init-config"))
    cm["data"]["aegis.toml"] += "\n[streams.dead_letter]\nmax_bytes = 33554432\n"


def _chart_label(ms: list[dict]) -> None:
    _find(ms, "StatefulSet", "-nats")["spec"]["template"]["metadata"]["labels"]["helm.sh/chart"] = "aegis-0.1.0"


def _soft_spread(ms: list[dict]) -> None:
    aff = _find(ms, "StatefulSet", "-nats")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    terms = aff.pop("requiredDuringSchedulingIgnoredDuringExecution")
    aff["preferredDuringSchedulingIgnoredDuringExecution"] = [{"weight": 100, "podAffinityTerm": t} for t in terms]


def _proxy_everyone(ms: list[dict]) -> None:
    _container(ms, "Deployment", "-monitor").setdefault("env", []).append(
        {"name": "AEGIS_TRUSTED_PROXIES", "value": "10.0.0.0/8,0.0.0.0/0"})


def _nats_monitor_service_port(ms: list[dict]) -> None:
    _find(ms, "Service", "-nats-headless")["spec"]["ports"].append(
        {"name": "monitor", "port": 8222, "targetPort": "monitor"})


def _nats_monitor_admitted(ms: list[dict]) -> None:
    _find(ms, "NetworkPolicy", "-nats")["spec"]["ingress"].append(
        {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8222}]})


# Each mutation of the default render, and the check that must refuse it.
MUTATIONS: list[tuple[str, str, Callable[[list[dict]], None]]] = [
    ("a NATS route left out", "nats-routes", _drop_route),
    ("NATS routes without authorization", "nats-routes", _open_routes),
    ("a NATS route with a literal password", "nats-routes", _literal_route_password),
    ("the credentials Secret not rendered", "references", _drop_secret),
    ("order's grace period below the SDK's drain", "graceful-stop", _short_grace),
    ("risk without its PodDisruptionBudget", "disruption-budgets", _drop_pdb),
    ("pricing without a readiness probe", "probes", _drop_probe),
    ("NATS with a writable root filesystem", "read-only-fs", _writable_fs),
    ("a NATS password variable the pod does not define", "nats-server -t", _drop_password_env),
    ("svc-risk-service without its permissions block", "nats-users", _open_user),
    ("the system user sys without its permissions block", "nats-users", _open_system_user),
    ("the system user sys allowed to kick connections", "nats-users", _kicking_system_user),
    ("order with the operator's inbox prefix", "nats-users", _wrong_inbox),
    ("a literal password in the NATS ConfigMap", "nats-users", _literal_password),
    ("aegis init as a post-install hook", "init-job", _init_hook),
    ("aegis init's mismatch retried", "init-job", _retried_mismatch),
    ("aegis init without the stream limits", "stream-limits", _unlimited_init),
    ("a default stream limit the values do not set, written for init", "stream-limits", _padded_limit),
    ("the chart version in the NATS pod template", "stable-pod-templates", _chart_label),
    ("NATS anti-affinity only preferred", "nats-spread", _soft_spread),
    ("every peer as the monitor's trusted proxy", "trusted-proxies", _proxy_everyone),
    ("the NATS monitoring port on the headless Service", "nats-monitoring", _nats_monitor_service_port),
    ("every pod admitted to the NATS monitoring port", "nats-monitoring", _nats_monitor_admitted),
]


def refusals(manifests: list[dict], merged: dict, nats_server: str | None) -> dict[str, list[str]]:
    """The checks that refuse a render, with their problems."""
    out = {r.check: r.problems for r in policies.run_all(manifests, merged) if not r.ok}
    if nats_server:
        _, problems = nats_config_problems(manifests, nats_server)
        if problems:
            out["nats-server -t"] = problems
    return out


def negative(chart: helm.Chart, default: tuple[list[dict], dict], nats_server: str | None) -> None:
    print("\n== negative tests: each must be refused by the named check", flush=True)
    shown: set[str] = set()
    for path in sorted((VALUES_DIR / "bad").glob("*.yaml")):
        expect = expectation(path)
        subject = f"bad/{path.name}"
        if not expect:
            fail(subject, "names no `# expect: <check>` line")
            continue
        values = load_values(path)
        try:
            chart.validate_schema(chart.merge_values(values))
            manifests, merged = render(chart, values)
        except helm.HelmError as e:
            if expect == "chart":
                say("ok", subject, f"refused by the chart: {' '.join(str(e).split())[:240]}")
            else:
                fail(subject, f"expected {expect} to refuse it, but the chart refused it first: {e}")
            continue
        refused = refusals(manifests, merged, nats_server)
        if expect in refused:
            say("ok", subject, f"refused by {expect}: {refused[expect][0]}")
            shown.add(expect)
        else:
            fail(subject, f"{expect} did not refuse it (refused by: {sorted(refused) or 'nothing'})")
    for what, expect, mutate in MUTATIONS:
        manifests = copy.deepcopy(default[0])
        mutate(manifests)
        refused = refusals(manifests, default[1], nats_server)
        subject = f"mutation: {what}"
        if expect in refused:
            say("ok", subject, f"refused by {expect}: {refused[expect][0]}")
            shown.add(expect)
        else:
            fail(subject, f"{expect} did not refuse it (refused by: {sorted(refused) or 'nothing'})")
    names = [c.__name__.removeprefix("check_").replace("_", "-") for c in policies.CHECKS]
    names.append("nats-server -t")
    never = [c for c in names if c not in shown]
    if never:
        fail("negative tests", f"checks never shown to fail: {never}")
    else:
        say("ok", "negative tests", f"each of the {len(names)} checks refused a bad render")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats-server", help="nats-server binary for the config check")
    args = parser.parse_args()
    started = time.monotonic()
    helm.disable_logging()
    chart = helm.Chart.load(str(CHART))
    print(f"chart {chart.name} {chart.version} (appVersion {chart.metadata.get('appVersion')}); "
          f"Helm SDK {helm.helm_sdk_version()}; kubernetes-validate schemas {', '.join(v[:-2] for v in KUBE_VERSIONS)}")
    default = None
    sets = sorted(VALUES_DIR.glob("*.yaml"))
    if not sets:
        fail("value sets", f"none in {VALUES_DIR}")
    for path in sets:
        set_name = path.stem
        t0 = time.monotonic()
        print(f"\n== value set {path.relative_to(ROOT)}", flush=True)
        values = load_values(path)
        try:
            chart.validate_schema(chart.merge_values(values))
            say("ok", f"{set_name}: values.schema.json", "accepts the value set")
            lint(set_name, values)
            manifests, merged = render(chart, values)
        except helm.HelmError as e:
            fail(set_name, f"not rendered: {e}")
            continue
        kinds = sorted({m["kind"] for m in manifests})
        say("ok", f"{set_name}: helm render", f"{len(manifests)} manifests ({', '.join(kinds)})")
        validate(set_name, manifests)
        policy(set_name, manifests, merged)
        nats_config(set_name, manifests, args.nats_server)
        print(f"   ({set_name}: {time.monotonic() - t0:.1f} s)")
        if set_name == "default":
            default = (manifests, merged)
    if default is None:
        fail("negative tests", "no default.yaml value set to mutate")
    else:
        negative(chart, default, args.nats_server)
    chart.close()
    print(f"\n{len(failures)} failed checks in {time.monotonic() - started:.1f} s")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
