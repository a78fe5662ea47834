# Podman for the project's scripts. Source it and call `ensure_podman`: it
# installs podman and runc from Debian when podman is missing and we are root
# (as in CI), and points CONTAINERS_CONF at deploy/images/containers.conf
# (runc, ulimits a sandbox allows) rather than editing /etc.
#
#   source scripts/lib/podman.sh
#   ensure_podman

PODMAN_LIB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

ensure_podman() {
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$PODMAN_LIB_ROOT/deploy/images/containers.conf}"
  if ! command -v podman >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "podman is not installed; install podman and runc (Debian: apt-get install podman runc)" >&2
      return 1
    fi
    printf '\033[1mpodman:\033[0m installing podman and runc from Debian\n'
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc >/dev/null
  fi
  if ! command -v runc >/dev/null 2>&1; then
    echo "podman is installed but runc is not; install runc (Debian: apt-get install runc)" >&2
    return 1
  fi
}
