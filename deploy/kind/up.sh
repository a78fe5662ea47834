#!/usr/bin/env bash
# Aegis on a local Kubernetes cluster, for users who have kind: creates a kind
# cluster (or reuses one of that name), builds the two images here
# (`make images`: a release binary, the UI export, scripts/images.sh with
# podman), loads them into the cluster's nodes, installs the Helm chart
# deploy/helm/aegis, waits until every pod is ready and the `aegis init` Job
# has completed, then port-forwards the monitor and prints the UI's URL and how to
# get the admin token.
#
# Needs: kind, kubectl, helm (3.8+), podman (scripts/images.sh builds with
# it), cargo and npm for `make images`, and a container runtime for kind
# (Docker, or podman with KIND_EXPERIMENTAL_PROVIDER=podman).
#
#   deploy/kind/up.sh [options] [-- extra helm install/upgrade arguments]
#     --name NAME        the kind cluster (default aegis)
#     --namespace NS     the namespace of the release (default trading)
#     --release NAME     the Helm release (default aegis)
#     --port PORT        local port of the monitor's port-forward (default 8100)
#     --skip-build       load the images already built (make images) instead
#     --no-port-forward  install, wait, print how to reach the UI, and exit
#                        (what CI does); otherwise the port-forward runs in
#                        the foreground until Ctrl-C
#
# A second run upgrades the release in place (`helm upgrade --install`);
# `kind delete cluster --name aegis` removes everything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

CLUSTER=aegis
NAMESPACE=trading
RELEASE=aegis
PORT=8100
BUILD=1
FORWARD=1
HELM_EXTRA=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --name) CLUSTER="${2:?--name needs a cluster name}"; shift 2 ;;
    --namespace) NAMESPACE="${2:?--namespace needs a namespace}"; shift 2 ;;
    --release) RELEASE="${2:?--release needs a release name}"; shift 2 ;;
    --port) PORT="${2:?--port needs a port}"; shift 2 ;;
    --skip-build) BUILD=0; shift ;;
    --no-port-forward) FORWARD=0; shift ;;
    --) shift; HELM_EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "kind/up.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\n\033[1mkind/up.sh:\033[0m %s\n' "$*"; }
die() { printf 'kind/up.sh: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------ prerequisites
missing=()
for tool in kind kubectl helm podman; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "$BUILD" -eq 1 ]; then
  for tool in cargo npm make; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  die "missing: ${missing[*]}. Install them first:
  kind     https://kind.sigs.k8s.io/docs/user/quick-start/#installation
  kubectl  https://kubernetes.io/docs/tasks/tools/
  helm     https://helm.sh/docs/intro/install/
  podman   apt-get install podman runc (builds the images; scripts/images.sh)
  cargo, npm, make: the toolchain of make images (README, prerequisites)"
fi
helm_major="$(helm version --template '{{.Version}}' 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p')"
[ "${helm_major:-0}" -ge 3 ] || die "helm 3.8 or newer is required (found: $(helm version --short 2>&1 | head -n1))"

# ------------------------------------------------------------ images
VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/helm/aegis/Chart.yaml)"
NATS_TAG="$(sed -n '/^nats:/,/^[a-z]/s/^ *tag: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/helm/aegis/values.yaml | head -n1)"
[ -n "$VERSION" ] && [ -n "$NATS_TAG" ] || die "cannot read the image versions from the chart"
# podman names locally built images localhost/<name>; the chart is pointed
# at exactly those names, so the nodes use the loaded images and never pull.
AEGIS_IMAGE="localhost/aegis:$VERSION"
NATS_IMAGE="localhost/aegis-nats:$NATS_TAG"
if [ "$BUILD" -eq 1 ]; then
  say "building the images (make images)"
  make images
fi
# shellcheck source=scripts/lib/podman.sh
source scripts/lib/podman.sh
ensure_podman
for img in "$AEGIS_IMAGE" "$NATS_IMAGE"; do
  podman image exists "$img" || die "image $img is missing; run make images (or drop --skip-build)"
done

# ------------------------------------------------------------ cluster
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "kind cluster $CLUSTER exists; reusing it"
else
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 120s
fi
CONTEXT="kind-$CLUSTER"
kubectl --context "$CONTEXT" cluster-info >/dev/null || die "kubectl cannot reach the cluster $CONTEXT"

say "loading $AEGIS_IMAGE and $NATS_IMAGE into the nodes"
archive="$(mktemp -d)"
trap 'rm -rf "$archive"' EXIT
# An image archive works with every kind provider (Docker or podman): the
# images never need a registry or the provider's own image store.
podman save --format docker-archive -o "$archive/aegis.tar" "$AEGIS_IMAGE"
podman save --format docker-archive -o "$archive/nats.tar" "$NATS_IMAGE"
kind load image-archive --name "$CLUSTER" "$archive/aegis.tar"
kind load image-archive --name "$CLUSTER" "$archive/nats.tar"

# ------------------------------------------------------------ install
say "helm upgrade --install $RELEASE (namespace $NAMESPACE)"
# --wait --wait-for-jobs: the release's pods ready (NATS cluster formed,
# services registered, monitor ready) and the Job `aegis init`, which runs
# alongside them and creates the buckets they wait for, completed. One
# node: NATS anti-affinity must be `soft` (the chart's default is `hard`).
helm upgrade --install "$RELEASE" deploy/helm/aegis \
  --kube-context "$CONTEXT" --namespace "$NAMESPACE" --create-namespace \
  --set image.repository=localhost/aegis --set image.tag="$VERSION" \
  --set nats.image.repository=localhost/aegis-nats --set nats.image.tag="$NATS_TAG" \
  --set nats.antiAffinity=soft \
  --wait --wait-for-jobs --timeout 10m "${HELM_EXTRA[@]}" \
  || {
    kubectl --context "$CONTEXT" -n "$NAMESPACE" get pods,jobs -o wide >&2 || true
    die "helm install failed; the pods and jobs above, and: kubectl --context $CONTEXT -n $NAMESPACE describe pods; kubectl --context $CONTEXT -n $NAMESPACE logs -l app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=init --tail=-1"
  }

say "waiting for every pod of the release to be ready"
kubectl --context "$CONTEXT" -n "$NAMESPACE" wait pod \
  -l "app.kubernetes.io/instance=$RELEASE" --field-selector=status.phase!=Succeeded \
  --for=condition=Ready --timeout=300s
kubectl --context "$CONTEXT" -n "$NAMESPACE" get pods -l "app.kubernetes.io/instance=$RELEASE"

FULLNAME="$RELEASE"
[[ "$RELEASE" == *aegis* ]] || FULLNAME="$RELEASE-aegis"
TOKEN_CMD="kubectl --context $CONTEXT -n $NAMESPACE get secret $FULLNAME-monitor -o jsonpath='{.data.admin-token}' | base64 -d; echo"
URL="http://127.0.0.1:$PORT/"

if [ "$FORWARD" -eq 0 ]; then
  say "installed. Reach the UI with:"
  echo "  kubectl --context $CONTEXT -n $NAMESPACE port-forward svc/$FULLNAME-monitor $PORT:80"
  echo "  then open $URL and sign in with the admin token:"
  echo "  $TOKEN_CMD"
  exit 0
fi

say "the monitor UI: $URL"
echo "  sign in with the admin token:  $TOKEN_CMD"
echo "  (Ctrl-C stops the port-forward; the cluster keeps running)"
exec kubectl --context "$CONTEXT" -n "$NAMESPACE" port-forward "svc/$FULLNAME-monitor" "$PORT:80"
