"""``trioprobe run --workers N``: the shard rule, the worker's config, the host's joined
/metrics, the restart policy, the supervisor with stand-in workers, and the CLI's errors."""

from __future__ import annotations

import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import trio

from trioprobe.cli import main
from trioprobe.config import parse_config
from trioprobe.fleet.host import HostStatus, merge_expositions, own_metrics
from trioprobe.fleet.supervisor import Supervisor, WorkerFailed, restart_delay
from trioprobe.fleet.workers import (
    READY_PREFIX,
    ShardFilter,
    owner_of,
    worker_config,
    worker_members,
)
from trioprobe.targets import Target

PROBE = {"name": "web", "type": "http", "targets": ["http://127.0.0.1:1/"]}


@pytest.mark.parametrize("count", [2, 3, 4])
def test_every_target_has_exactly_one_worker_and_the_shares_balance(count: int) -> None:
    members = worker_members(count)
    keys = [f"http://10.0.{i // 250}.{i % 250}/" for i in range(10_000)]
    shares = Counter(owner_of("web", k, members) for k in keys)
    assert set(shares) == set(range(count))
    for share in shares.values():
        assert abs(share / (10_000 / count) - 1) < 0.15


def test_each_worker_filter_keeps_its_own_targets_and_forgets_gone_ones() -> None:
    targets = tuple(Target(f"http://127.0.0.1:1/{i}") for i in range(300))
    filters = [ShardFilter(i, 3) for i in range(3)]
    kept = [f("web", targets) for f in filters]
    assert sorted(t.address for part in kept for t in part) == sorted(t.address for t in targets)
    members = worker_members(3)
    for i, part in enumerate(kept):
        assert all(owner_of("web", t.address, members) == i for t in part)
    # A much shorter list: the remembered table shrinks with it.
    filters[0]("web", targets[:10])
    assert len(filters[0]._owned["web"]) == 10


def test_a_worker_serves_on_private_ports_and_keeps_its_files_apart(tmp_path: Path) -> None:
    config = parse_config(
        {
            "probe": [PROBE],
            "surfacer": [{"type": "prometheus", "host": "0.0.0.0", "port": 9313}],
            "status": {"host": "0.0.0.0", "port": 9314, "token_env": "TOKEN"},
            "history": {"path": str(tmp_path / "h.sqlite")},
            "alert": [{"name": "a", "webhook": "http://127.0.0.1:1/hook"}],
        }
    )
    first, second = worker_config(config, 0), worker_config(config, 1)
    for w in (first, second):
        options = w.surfacers[0][1]
        assert (options.host, options.port) == ("127.0.0.1", 0)
        assert w.status is not None
        assert (w.status.host, w.status.port) == ("127.0.0.1", 0)
        assert w.status.token_env == "TOKEN"  # the workers check the token themselves
    assert first.history is not None
    assert first.history.path == str(tmp_path / "h.sqlite")
    assert second.history is not None
    assert second.history.path == str(tmp_path / "h.worker-1.sqlite")
    assert first.alerts[0].webhook_queue_dir == ""  # worker 0 keeps the default queue
    assert second.alerts[0].webhook_queue_dir.endswith("alert-a.worker-1")


W0 = b"""# HELP t_up Up.
# TYPE t_up gauge
t_up{worker="0"} 1.0
# HELP t_total Probes.
# TYPE t_total counter
t_total{worker="0"} 5.0
"""
W1 = b"""# HELP t_up Up.
# TYPE t_up gauge
t_up{worker="1"} 0.0
# HELP t_new Only here.
# TYPE t_new gauge
t_new{worker="1"} 2.0
# HELP t_total Probes.
# TYPE t_total counter
t_total{worker="1"} 7.0"""


def test_the_host_body_has_each_family_once_with_every_workers_samples() -> None:
    merged = merge_expositions([W0, W1]).decode()
    assert merged == (
        "# HELP t_up Up.\n# TYPE t_up gauge\n"
        't_up{worker="0"} 1.0\nt_up{worker="1"} 0.0\n'
        "# HELP t_total Probes.\n# TYPE t_total counter\n"
        't_total{worker="0"} 5.0\nt_total{worker="1"} 7.0\n'
        '# HELP t_new Only here.\n# TYPE t_new gauge\nt_new{worker="1"} 2.0\n'
    )
    assert merge_expositions([]) == b""
    assert merge_expositions([W0]) == W0


def test_restarts_back_off_only_when_a_worker_keeps_dying_young() -> None:
    assert restart_delay(0) == 0.0  # ran long enough: at once
    assert [restart_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert restart_delay(50) == 30.0


# A stand-in worker: ready at once; the first run (no marker file yet) exits with status 3,
# later runs wait for SIGTERM or for the parent's end of stdin to close.
FAKE = textwrap.dedent(
    """
    import json, os, signal, sys
    marker = sys.argv[1]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("a line of its own", flush=True)
    print({prefix!r} + json.dumps({{"metrics": [], "status": None, "pid": os.getpid()}}),
          flush=True)
    if not os.path.exists(marker):
        open(marker, "w").close()
        sys.exit(3)
    sys.stdin.read()
    """
)


async def test_the_supervisor_restarts_a_dead_worker_counts_it_and_drains(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(FAKE.format(prefix=READY_PREFIX))
    lines = (tmp_path / "out.txt").open("w")
    supervisor = Supervisor(
        lambda i: [sys.executable, str(script), str(tmp_path / f"m{i}")], 2, output=lines
    )
    with trio.fail_after(60):  # a hang guard: nothing here waits on time
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            for worker in supervisor.workers:
                while worker.restarts < 1 or not worker.ready:
                    await worker.became_ready.wait()
            assert [w.last_exit for w in supervisor.workers] == ["exited with status 3"] * 2
            supervisor.shutdown()
    lines.close()
    assert [w.restarts for w in supervisor.workers] == [1, 1]
    assert all(w.process is not None and w.process.returncode == 0 for w in supervisor.workers)
    assert (tmp_path / "out.txt").read_text().count("a line of its own") == 4
    body = own_metrics(supervisor, "trioprobe_").decode()
    assert 'trioprobe_workers_restarts_total{worker="1"} 1' in body


async def test_a_worker_dying_before_it_is_ready_stops_the_start(tmp_path: Path) -> None:
    supervisor = Supervisor(lambda i: [sys.executable, "-c", "raise SystemExit(2)"], 2)
    with trio.fail_after(60), pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
    assert caught.group_contains(WorkerFailed)


def test_the_host_page_sends_a_targets_own_pages_to_its_owner() -> None:
    supervisor = Supervisor(lambda i: [], 3)
    page = HostStatus(supervisor, None, writes_open=True)  # type: ignore[arg-type]
    members = worker_members(3)
    target = "http://127.0.0.1:1/x y"
    owner = owner_of("web", target, members)
    encoded = "/web/http%3A%2F%2F127.0.0.1%3A1%2Fx%20y"
    assert page._owner("/status/x", "/status" + encoded, "") == owner
    assert page._owner("/badge/x", "/badge" + encoded + "/status.svg", "") == owner
    assert page._owner("/api/v1/targets/x", "/api/v1/targets" + encoded + "/history", "") == owner
    query = "probe=web&target=http%3A%2F%2F127.0.0.1%3A1%2Fx+y"
    assert page._owner("/status", "/status", query) == owner
    assert page._owner("/status", "/status", "state=down") is None
    assert page._owner("/status.json", "/status.json", "") is None


def _config(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[probe]]\nname = "web"\ntype = "http"\ntargets = ["http://127.0.0.1:1/"]\n' + extra
    )
    return str(path)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "argument --workers: expected a whole number of processes from 1 to 64, got '0'"),
        ("two", "argument --workers: expected a whole number of processes from 1 to 64, got 'two'"),
        ("65", "from 1 to 64, got '65'"),
    ],
)
def test_bad_worker_counts_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    assert main(["run", _config(tmp_path), "--workers", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("trioprobe: error: ")
    assert message in err


def test_workers_with_a_fleet_table_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = '[fleet]\netcd = ["http://127.0.0.1:1"]\nname = "f"\n'
    assert main(["run", _config(tmp_path, fleet), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--workers: a [fleet] agent runs as one process" in err
