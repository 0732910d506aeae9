"""React in code when a peer goes down: fail over without polling counters.

Run: ``.venv/bin/python examples/alerting_failover.py`` (about 3 seconds, then exits by itself).

Two peers serve etcd's health reply on loopback. A standalone ``Prober`` probes both every
50 ms and sends its results to a :class:`trioprobe.alerting.Health`, which turns them into
``up``/``down`` states (down after 3 failures in a row, up after 2 successes). The application
task follows the transitions and sends its (pretend) traffic to the primary while it is up, to the
backup while it is down. Halfway through, the primary stops, then comes back.
"""

from __future__ import annotations

import trio

from trioprobe.alerting import DOWN, UP, Health, Transition
from trioprobe.probing import ProbeRecord, open_prober, serve_health


async def application(
    health: Health, transitions: trio.MemoryReceiveChannel[Transition], peers: dict[str, str]
) -> None:
    """Use the primary peer while it is up; fail over to the backup while it is not."""
    await health.wait_until("primary", UP)
    current = "primary"
    print(f"using {current} ({peers[current]})")
    async with transitions:
        async for t in transitions:
            print(
                f"  {t.target}: {t.old} -> {t.new} ({t.failures}/{t.total} failed) {t.error or ''}"
            )
            if t.target == "primary" and t.new == DOWN and current == "primary":
                current = "backup"
                print(f"failing over to {current} ({peers[current]})")
            elif t.target == "primary" and t.new == UP and current == "backup":
                current = "primary"
                print(f"back to {current}")


async def main() -> None:
    health = Health()  # the defaults: down after 3 failures, up after 2 successes
    async with trio.open_nursery() as nursery:
        primary_scope = trio.CancelScope()

        async def primary(*, task_status: trio.TaskStatus[str]) -> None:
            with primary_scope:
                await serve_health(task_status=task_status)

        peers = {
            "primary": await nursery.start(primary),
            "backup": await nursery.start(serve_health),
        }
        records_send, records_receive = trio.open_memory_channel[ProbeRecord](100)
        # The Health's owner task for this channel: it feeds every probe in, in order.
        await nursery.start(health.track, "peers", records_receive)
        nursery.start_soon(application, health, health.subscribe(), peers)
        async with records_send, open_prober(records=records_send) as prober:
            for name, url in peers.items():
                prober.add_http(name, 0.05, [url])
            await trio.sleep(1.0)
            print("-- stopping the primary")
            primary_scope.cancel()
            await health.wait_until("primary", DOWN)
            await trio.sleep(0.5)
            print("-- starting the primary again on a new port")
            url = await nursery.start(serve_health)
            prober.remove("primary")
            prober.add_http("primary", 0.05, [url])
            await health.wait_until("primary", UP)
            await trio.sleep(0.5)
        health.close()  # ends the application's transition loop
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
