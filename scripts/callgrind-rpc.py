#!/usr/bin/env python3
"""Where the SDK's extra work per call goes, in instructions, not time.

`aegis bench rpc` measures time, which this shared machine makes noisy, and
`perf record` spreads its samples over kernel and libc symbols differently
from one run to the next. Instructions counted by valgrind's callgrind do
not move with the machine's load. This script runs the throughput phase of
`aegis bench rpc --only raw` and `--only sdk` under callgrind, each twice
(with 4 and 8 rounds), and takes the difference of the two runs, so the
start, the latency phase and the teardown cancel out. It divides by the
calls made in the extra rounds (one inbox token per request:
`async_nats::Client::new_inbox`), and prints the instructions per call of
the whole `aegis` process (caller and responder; nats-server runs
untraced) and the functions that account for the difference.

Needs valgrind (callgrind_annotate) and a release build:

    cargo build --release -p aegis
    python3 scripts/callgrind-rpc.py [--binary target/release/aegis] [--top 30]

Under valgrind the process runs some 50 times slower on one CPU at a time,
so calls batch differently than at full speed: read the numbers as where
the instructions go, not as the throughput ratio.
"""

import argparse
import os
import pathlib
import re
import subprocess
import tempfile

ROUNDS = (4, 8)
COST = re.compile(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$")


def run(binary: str, side: str, rounds: int, out: pathlib.Path) -> None:
    """Runs one side's throughput phase under callgrind, writing `out`."""
    subprocess.run(
        [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            binary, "bench", "rpc", "--only", side, "--calls", "100",
            "--batch", "100", "--warmup", "50", "--rounds", str(rounds),
            "--round-secs", "0.5",
        ],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def annotate(out: pathlib.Path, *args: str) -> str:
    return subprocess.run(
        ["callgrind_annotate", *args, str(out)],
        check=True, capture_output=True, text=True,
    ).stdout


def self_costs(out: pathlib.Path) -> dict[str, int]:
    """Each function's own instructions (not its callees')."""
    costs: dict[str, int] = {}
    for line in annotate(out, "--auto=no", "--threshold=100").splitlines():
        m = COST.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r" \[.*\]$", "", m.group(2))
        # "file:function": keep the function (files hold inlined code).
        name = name.split(":", 1)[1] if ":" in name and not name.startswith("???") else name
        costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def requests(out: pathlib.Path) -> int:
    """How many requests the run sent: the calls to `Client::new_inbox`."""
    tree = annotate(out, "--auto=no", "--tree=caller", "--threshold=100")
    counts = re.findall(r"< .*async_nats::client::Client::new_inbox \(([\d,]+)x\)", tree)
    if counts:
        return int(counts[0].replace(",", ""))
    raise SystemExit(f"no call of new_inbox in {out}: did the run make requests?")


def per_call(binary: str, side: str, work: pathlib.Path) -> dict[str, float]:
    outs = []
    for rounds in ROUNDS:
        out = work / f"callgrind.{side}.{rounds}"
        print(f"  {side}, {rounds} rounds…", flush=True)
        run(binary, side, rounds, out)
        outs.append(out)
    calls = requests(outs[1]) - requests(outs[0])
    before, after = self_costs(outs[0]), self_costs(outs[1])
    print(f"  {side}: {calls} more calls in the longer run")
    return {k: (after.get(k, 0) - before.get(k, 0)) / calls for k in before.keys() | after.keys()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default="target/release/aegis")
    parser.add_argument("--top", type=int, default=30, help="functions to list")
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        raise SystemExit(f"{args.binary} is not there: run `cargo build --release -p aegis`")
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        raw = per_call(args.binary, "raw", work)
        sdk = per_call(args.binary, "sdk", work)
    total_raw, total_sdk = sum(raw.values()), sum(sdk.values())
    print(f"\ninstructions per call, whole aegis process: raw {total_raw:,.0f}, "
          f"sdk {total_sdk:,.0f} ({total_sdk / total_raw:.3f}x, {total_sdk - total_raw:+,.0f})")
    rows = sorted(((sdk.get(k, 0) - raw.get(k, 0), raw.get(k, 0), sdk.get(k, 0), k)
                   for k in raw.keys() | sdk.keys()), reverse=True)
    print(f"\n{'sdk-raw':>8} {'raw':>8} {'sdk':>8}  function (own instructions per call)")
    for diff, r, s, name in rows[: args.top]:
        print(f"{diff:8.0f} {r:8.0f} {s:8.0f}  {name[:110]}")


if __name__ == "__main__":
    main()
