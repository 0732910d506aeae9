"""Probe etcd-style health endpoints from a Trio program, the way etcd watches its peers.

Run: ``.venv/bin/python examples/probing_peers.py`` (about 3 seconds, then exits by itself).

Two "peers" serve the health reply on loopback; a Prober measures each one's smoothed RTT and
clock difference every 100 ms. Halfway through, one peer goes away: its probes fail, health
turns false, while SRTT and clock difference keep their last values (as in etcd). A third id
lists both addresses: it sticks to the first until that fails, then moves on.
"""

from __future__ import annotations

import logging

import trio

from trioprobe.probing import monitor, open_prober, rtt_histogram, serve_health


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    async with trio.open_nursery() as nursery:
        stable_scope, flaky_scope = trio.CancelScope(), trio.CancelScope()

        async def peer(scope: trio.CancelScope, *, task_status: trio.TaskStatus[str]) -> None:
            with scope:
                await serve_health(task_status=task_status)

        stable_url = await nursery.start(peer, stable_scope)
        flaky_url = await nursery.start(peer, flaky_scope)
        print(f"peers: {stable_url} and {flaky_url}")

        histogram = rtt_histogram()
        async with open_prober() as prober:
            stable = prober.add_http("stable", 0.1, [stable_url])
            flaky = prober.add_http("flaky", 0.1, [flaky_url])
            both = prober.add_http("either", 0.1, [flaky_url, stable_url])
            # etcd's monitor checks 5 s after adding, then every 30 s (5 s while unhealthy);
            # shortened here so the example shows a warning.
            nursery.start_soon(
                lambda: monitor(flaky, histogram=histogram, first_check=2.0, unhealthy_interval=0.5)
            )

            for second in range(1, 4):
                await trio.sleep(1.0)
                for status in (stable, flaky, both):
                    print(
                        f"t={second}s {status.probe_id:>6}: total={status.total:3d} "
                        f"loss={status.loss:3d} health={status.health!s:5} "
                        f"srtt={status.srtt * 1e3:6.3f} ms "
                        f"clock_diff={status.clock_diff * 1e3:+7.3f} ms"
                    )
                if second == 1:
                    print("-- the flaky peer goes away --")
                    flaky_scope.cancel()
        # Leaving the prober stops every probe; the monitor returns on its own.
        print(f"SRTT samples recorded by the monitor: {histogram.count}")
        stable_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
