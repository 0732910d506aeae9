"""Embed a probe and its stats keeper in a Trio application.

Probes a health endpoint this program serves itself (so it runs anywhere), folds the results in a
stats keeper, and prints each export in cloudprober's one-line form. Stops after 5 seconds.

    .venv/bin/python examples/embed_http_probe.py
"""

from __future__ import annotations

from functools import partial

import trio

import trioprobe
from trioprobe.probes.http_probe import HTTPProbe, Options
from trioprobe.probing import serve_health


async def main() -> None:
    async with trio.open_nursery() as nursery:
        health_url = await nursery.start(partial(serve_health, path="/health"))
        targets = [health_url, health_url.replace("/health", "/missing")]

        results_send, results_receive = trio.open_memory_channel[trioprobe.ProbeResult](256)
        export_send, export_receive = trio.open_memory_channel[trioprobe.EventMetrics](256)
        probe = HTTPProbe(Options(), lambda: targets, interval=0.25, timeout=0.2)

        async with trio.open_nursery() as flow:
            probe_scope = trio.CancelScope()

            # The probe owns its end of the results channel: when it stops, the keeper sees the
            # channel end, makes a final export and closes the export channel, ending the loop.
            async def run_probe() -> None:
                with probe_scope:
                    async with results_send:
                        await probe.run(results_send)

            flow.start_soon(run_probe)
            keeper = trioprobe.StatsKeeper(
                probe_type="http", probe_name="example", targets=lambda: targets, interval=1.0
            )
            flow.start_soon(keeper.run, results_receive, export_send)

            async def stop_probe_later() -> None:
                await trio.sleep(5)
                probe_scope.cancel()

            flow.start_soon(stop_probe_later)
            async for metrics in export_receive:
                print(metrics)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    try:
        trio.run(main)
    except* KeyboardInterrupt:  # Ctrl-C before the 5 s are up: every task is already cancelled
        pass
