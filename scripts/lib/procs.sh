# Background processes for the project's scripts, stopped in dependency
# order. Source it, start each process with `start_bg NAME CMD...` in the
# order they depend on each other (the server first, its clients after),
# and `trap stop_all EXIT`. `stop_all` stops them in reverse order (clients
# before the server they need for a clean stop), SIGTERM first and SIGKILL
# after STOP_TIMEOUT seconds (default 20), then checks that none is left and
# fails loudly if one is.
#
#   source scripts/lib/procs.sh
#   start_bg nats "$NATS_BIN" -js -p "$PORT" ...
#   start_bg monitor target/release/examples/serve
#   trap stop_all EXIT

PROC_NAMES=()
PROC_PIDS=()

# start_bg NAME CMD... — runs CMD in the background (its output goes where
# the caller redirects the function call) and remembers it under NAME.
start_bg() {
  local name="$1"; shift
  "$@" &
  PROC_NAMES+=("$name")
  PROC_PIDS+=("$!")
}

# Whether pid $1 is a live process (a zombie counts as gone).
# Builtins only (no grep, no fork): under load a fork can fail, and a
# failed `grep` read as "not a zombie" once made a process that had exited
# look alive.
proc_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  read -r stat <"/proc/$1/stat" 2>/dev/null || return 1
  [[ "$stat" != *") Z "* ]]
}

# stop_all — stops every process started with start_bg, newest first; each
# gets SIGTERM and up to STOP_TIMEOUT seconds before SIGKILL. Returns non-zero
# (and says which) when a process had to be killed or is still there.
stop_all() {
  local status=$? timeout="${STOP_TIMEOUT:-20}" i pid name waited left=0
  for ((i = ${#PROC_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${PROC_PIDS[$i]}"; name="${PROC_NAMES[$i]}"
    proc_alive "$pid" || continue
    kill -TERM "$pid" 2>/dev/null || true
    # A deadline in real time, not a count of sleeps: under load a `sleep`
    # can fail at once (seen in CI: "ignored SIGTERM for 20 s" after a few
    # milliseconds), and the process must still get its full time.
    waited=$((SECONDS + timeout))
    while proc_alive "$pid" && [ "$SECONDS" -lt "$waited" ]; do
      sleep 0.1 || true
    done
    if proc_alive "$pid"; then
      echo "stop_all: $name (pid $pid) ignored SIGTERM for ${timeout} s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      left=1
    fi
    wait "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < ${#PROC_PIDS[@]}; i++)); do
    if proc_alive "${PROC_PIDS[$i]}"; then
      echo "stop_all: ${PROC_NAMES[$i]} (pid ${PROC_PIDS[$i]}) is still running" >&2
      left=1
    fi
  done
  PROC_NAMES=(); PROC_PIDS=()
  [ "$left" -eq 0 ] || return 1
  return "$status"
}
