#!/usr/bin/env python3
"""What standard NATS tooling sees of `aegis up`, without the `nats` CLI.

The official `nats` CLI is a Go program and none of the package registries
reachable here (PyPI, npm, Debian apt) carries it, so this script sends the
same requests the CLI sends and prints the replies: `$SRV.PING/INFO/STATS`
(what `nats micro ls/info/stats` read), a plain request to a shared RPC
subject (`nats req`), the registry bucket (`nats kv ls/get`) and the system
account's `$SYS.REQ.SERVER.PING` (`nats server list`). docs/nats-tooling.md
records its output.

Needs nats-py (`pip install nats-py`); not used by the tests or CI.

    python3 scripts/nats-tooling.py [--state-dir .aegis] [--url nats://127.0.0.1:4222]
"""

import argparse
import asyncio
import json
import pathlib

import nats


def read_env(path: pathlib.Path) -> dict:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    return env


async def gather(nc, subject: str, wait: float = 0.5) -> list:
    """Every reply to one request within `wait` seconds (as the CLI does)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    replies = []
    try:
        while True:
            msg = await sub.next_msg(timeout=wait)
            replies.append(msg)
    except nats.errors.TimeoutError:
        pass
    await sub.unsubscribe()
    return replies


def show(title: str, value) -> None:
    print(f"\n### {title}\n")
    print(value if isinstance(value, str) else json.dumps(value, indent=2))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", default=".aegis")
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    env = read_env(pathlib.Path(args.state_dir) / "credentials")

    nc = await nats.connect(
        args.url,
        user=env["AEGIS_NATS_USER"],
        password=env["AEGIS_NATS_PASSWORD"],
        inbox_prefix=env["AEGIS_NATS_INBOX_PREFIX"].encode(),
    )

    # nats micro ls
    pings = [json.loads(m.data) for m in await gather(nc, "$SRV.PING")]
    rows = sorted(
        (p["name"], p["id"], p["version"], p["metadata"].get("role", "-"))
        for p in pings
    )
    show(
        "micro ls: $SRV.PING, one row per reply",
        "\n".join(f"{n:<16} {i:<34} {v:<8} {r}" for n, i, v, r in rows),
    )

    # nats micro info order-service <id>: one instance's INFO, schemas cut short
    infos = [json.loads(m.data) for m in await gather(nc, "$SRV.INFO.order-service")]
    infos.sort(key=lambda i: i["id"])
    for info in infos[:1]:
        for e in info["endpoints"]:
            for key in ("request_schema", "response_schema"):
                if key in e["metadata"]:
                    e["metadata"][key] = e["metadata"][key][:60] + "…"
        show(f"micro info order-service {info['id']}: $SRV.INFO", info)
    show(
        "roles and endpoint order of every order-service instance",
        "\n".join(
            f"{i['id']:<34} {i['metadata'].get('role'):<8} leader={i['metadata'].get('leader')} "
            f"epoch={i['metadata'].get('epoch', '-')} endpoints={[e['name'] for e in i['endpoints']]}"
            for i in infos
        ),
    )

    # nats req rpc.order-service.create_order, 30 times (the check:
    # before, standbys in the queue group refused most of them)
    answers = {}
    for n in range(30):
        body = json.dumps({"symbol": "AAPL", "side": "BUY", "quantity": 1,
                           "client_order_id": f"tooling-{n}"}).encode()
        msg = await nc.request("rpc.order-service.create_order", body, timeout=2)
        error = (msg.headers or {}).get("Nats-Service-Error-Code")
        who = (msg.headers or {}).get("Aegis-Instance")
        key = f"error {error}" if error else f"ok from {who}"
        answers[key] = answers.get(key, 0) + 1
    show("30 x req rpc.order-service.create_order", answers)

    # nats micro stats order-service
    stats = [json.loads(m.data) for m in await gather(nc, "$SRV.STATS.order-service")]
    lines = []
    for s in sorted(stats, key=lambda s: s["id"]):
        for e in s["endpoints"]:
            lines.append(
                f"{s['id']:<34} {e['name']:<14} requests={e['num_requests']:<5} "
                f"errors={e['num_errors']:<3} refused={e['data']['not_active_refusals']}"
            )
    show("micro stats order-service: $SRV.STATS", "\n".join(lines))

    # nats req rpc.order-service.list_orders '{}' (leader only), and a pricing
    # call unasked and asking who served it (nats req -H Aegis-Want-Instance:1)
    for subject, body, ask in (
        ("rpc.order-service.list_orders", b"{}", None),
        ("rpc.pricing-service.get_price", b'{"symbol": "AAPL"}', None),
        ("rpc.pricing-service.get_price", b'{"symbol": "AAPL"}', {"Aegis-Want-Instance": "1"}),
    ):
        msg = await nc.request(subject, body, timeout=2, headers=ask)
        headers = {k: v for k, v in (msg.headers or {}).items()}
        flags = "".join(f" -H {k}:{v}" for k, v in (ask or {}).items())
        show(f"req {subject} {body.decode()}{flags}", {"headers": headers, "body": json.loads(msg.data)})

    # nats kv ls service_registry / nats kv get
    js = nc.jetstream()
    kv = await js.key_value("service_registry")
    keys = sorted(await kv.keys())
    show("kv ls service_registry", "\n".join(keys))
    entry = await kv.get(keys[0])
    show(f"kv get service_registry {keys[0]}", json.loads(entry.value))
    await nc.close()

    # nats server list (system account)
    sys = await nats.connect(
        args.url,
        user=env["AEGIS_NATS_SYSTEM_USER"],
        password=env["AEGIS_NATS_SYSTEM_PASSWORD"],
    )
    servers = [json.loads(m.data) for m in await gather(sys, "$SYS.REQ.SERVER.PING")]
    show(
        "server list: $SYS.REQ.SERVER.PING as the system user",
        "\n".join(
            f"{s['server']['name']:<10} version={s['server']['ver']} "
            f"cluster={s['server'].get('cluster', '-')} conns={s['statsz']['connections']}"
            for s in sorted(servers, key=lambda s: s["server"]["name"])
        ),
    )
    await sys.close()


asyncio.run(main())
