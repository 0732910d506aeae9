"""trioprobe's Prober beside the Go reference (xiang90/probing) against a real etcd peer endpoint.

Issue 19's target: after 60 probes at 0.1 s of a real etcd's ``/raft/probing`` on loopback,
trioprobe's SRTT is within 0.3 ms of the Go reference's, measured in the same run.

What it does:

1. builds the Go reference from Debian's ``golang-github-xiang90-probing-dev`` source
   (``/usr/share/gocode``) with Debian's ``golang-go`` into a temporary directory, in GOPATH
   mode (``GO111MODULE=off``, ``GOPATH=/usr/share/gocode``, no ``GOFLAGS``): a small ``main``
   that probes one URL and prints its SRTT. No binary is kept;
2. starts a single-node etcd on loopback (as ``tests/real/services.py`` does);
3. runs the probers at the same time (Go and trioprobe; with ``--with-httpx`` also trioprobe
   with a caller's httpx client, the path it took before) against the peer URL's
   ``/raft/probing``, and prints the SRTTs, their difference and the machine's load average
   (other work on the machine moves both numbers; the difference is what matters).

Run: ``.venv/bin/python benchmarks/prober_vs_go.py [--quick] [--rounds 3] [--probes 60]
[--interval 0.1]``; each round runs both at once, so each difference is from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import trio

GOPATH = "/usr/share/gocode"
REFERENCE = Path(GOPATH) / "src/github.com/xiang90/probing"
TARGET_MS = 0.3

GO_MAIN = """package main

import (
	"encoding/json"
	"os"
	"strconv"
	"time"

	"github.com/xiang90/probing"
)

func main() {
	url := os.Args[1]
	count, _ := strconv.Atoi(os.Args[2])
	interval, _ := time.ParseDuration(os.Args[3])
	p := probing.NewProber(nil)
	if err := p.AddHTTP("etcd", interval, []string{url}); err != nil {
		panic(err)
	}
	s, _ := p.Status("etcd")
	for s.Total() < int64(count) {
		time.Sleep(time.Millisecond)
	}
	errText := ""
	if s.Err() != nil {
		errText = s.Err().Error()
	}
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"srtt_ns": s.SRTT().Nanoseconds(), "total": s.Total(), "loss": s.Loss(), "error": errText,
	})
}
"""


def build_go_reference(workdir: Path) -> Path:
    """Build the reference's driver in ``workdir``; raise SystemExit saying why it cannot."""
    go = shutil.which("go") or "/usr/lib/go/bin/go"
    if not os.path.exists(go):
        raise SystemExit("cannot build the Go reference: no `go` (install Debian's golang-go)")
    if not (REFERENCE / "prober.go").exists():
        raise SystemExit(
            f"cannot build the Go reference: {REFERENCE} missing "
            "(install Debian's golang-github-xiang90-probing-dev)"
        )
    (workdir / "main.go").write_text(GO_MAIN)
    env = {k: v for k, v in os.environ.items() if k != "GOFLAGS"}
    env |= {
        "GOPATH": GOPATH,
        "GO111MODULE": "off",
        "GOCACHE": str(workdir / "gocache"),
        "GOTOOLCHAIN": "local",
    }
    binary = workdir / "probing-ref"
    done = subprocess.run(
        [go, "build", "-o", str(binary), "main.go"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"cannot build the Go reference:\n{done.stderr}")
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_etcd(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A single-node etcd on loopback; returns the process and its peer URL."""
    binary = shutil.which("etcd") or "/usr/bin/etcd"
    if not os.path.exists(binary):
        raise SystemExit("no etcd: install Debian's etcd-server")
    client = f"http://127.0.0.1:{free_port()}"
    peer = f"http://127.0.0.1:{free_port()}"
    argv = [
        binary,
        "--name=n1",
        f"--data-dir={workdir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=n1={peer}",
        "--initial-cluster-state=new",
        "--log-level=warn",
        "--logger=zap",
    ]
    log = open(workdir / "etcd.log", "ab")  # noqa: SIM115 - the child's for its lifetime
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{client}/health", timeout=1.0) as resp:
                if resp.status == 200:
                    return proc, peer
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"etcd did not start; log:\n{(workdir / 'etcd.log').read_text()[-2000:]}")


async def run_trioprobe(
    url: str, probes: int, interval: float, *, httpx_path: bool = False
) -> dict[str, object]:
    """The Prober as users run it (lean h11 path for http://), or with a caller's httpx client
    (the path every peer took before issue 19 item 3), for comparison."""
    import httpx

    from trioprobe.probing import open_prober

    async with (
        httpx.AsyncClient(timeout=None) as client,
        open_prober(client if httpx_path else None) as prober,
    ):
        status = prober.add_http("etcd", interval, [url], timeout=max(interval, 1.0))
        with trio.fail_after(probes * interval * 10 + 30):
            while status.total < probes:  # noqa: ASYNC110 - the status is a live view
                await trio.sleep(0.001)
        return {
            "srtt_ns": round(status.srtt * 1e9),
            "total": status.total,
            "loss": status.loss,
            "error": "" if status.error is None else str(status.error),
        }


async def run_all(
    binary: Path, url: str, probes: int, interval: float, with_httpx: bool
) -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
    """The probers at once, so all see the same machine and the same etcd."""
    go: dict[str, object] = {}
    ours: dict[str, object] = {}
    via_httpx: dict[str, object] = {}

    async def go_side() -> None:
        done = await trio.run_process(
            [str(binary), url, str(probes), f"{interval}s"], capture_stdout=True
        )
        go.update(json.loads(done.stdout))

    async def our_side() -> None:
        ours.update(await run_trioprobe(url, probes, interval))

    async def httpx_side() -> None:
        via_httpx.update(await run_trioprobe(url, probes, interval, httpx_path=True))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(go_side)
        nursery.start_soon(our_side)
        if with_httpx:
            # In this process, so its ~1 ms per request also delays the lean Prober's wake-ups
            # when their ticks coincide: off by default, so the main figure is clean.
            nursery.start_soon(httpx_side)
    return go, ours, via_httpx


def report(go: dict[str, object], ours: dict[str, object], via_httpx: dict[str, object]) -> float:
    """Print one round's SRTTs; return the difference (ms)."""
    go_ms: float = int(go["srtt_ns"]) / 1e6  # type: ignore[call-overload]
    our_ms: float = int(ours["srtt_ns"]) / 1e6  # type: ignore[call-overload]
    diff = our_ms - go_ms
    print(f"  Go xiang90/probing: srtt {go_ms:.3f} ms  (total {go['total']}, loss {go['loss']})")
    print(
        f"  trioprobe Prober:   srtt {our_ms:.3f} ms  (total {ours['total']}, loss {ours['loss']})"
    )
    if via_httpx:
        httpx_ms = int(via_httpx["srtt_ns"]) / 1e6  # type: ignore[call-overload]
        print(f"  same, httpx path:   srtt {httpx_ms:.3f} ms  (a caller's client; the old path)")
    print(f"  difference: {diff:+.3f} ms (goal: within {TARGET_MS} ms)")
    for side, name in ((go, "Go"), (ours, "trioprobe"), (via_httpx, "httpx path")):
        if side.get("loss"):
            print(f"  {name} last error: {side['error']}", file=sys.stderr)
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of both probers side by side (default 3)"
    )
    parser.add_argument("--quick", action="store_true", help="two rounds (about 25 s)")
    parser.add_argument(
        "--with-httpx",
        action="store_true",
        help="also run the Prober with a caller's httpx client (the path before issue 19)",
    )
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    diffs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="prober-vs-go-") as tmp:
        workdir = Path(tmp)
        t0 = time.monotonic()
        binary = build_go_reference(workdir)
        print(f"built the Go reference in {time.monotonic() - t0:.1f} s ({REFERENCE})")
        etcd, peer = start_etcd(workdir)
        url = f"{peer}/raft/probing"
        print(f"peer endpoint: {url}, {args.probes} probes at {args.interval} s, both at once")
        try:
            for n in range(rounds):
                load = os.getloadavg()[0]
                go, ours, via_httpx = trio.run(
                    run_all, binary, url, args.probes, args.interval, args.with_httpx
                )
                print(
                    f"round {n + 1}/{rounds} (load average {load:.2f} -> {os.getloadavg()[0]:.2f}):"
                )
                diffs.append(report(go, ours, via_httpx))
        finally:
            etcd.send_signal(signal.SIGTERM)
            try:
                etcd.wait(timeout=15)
            except subprocess.TimeoutExpired:
                etcd.kill()
                etcd.wait()
    worst = max(diffs, key=abs)
    verdict = "met" if abs(worst) <= TARGET_MS else "NOT met"
    spread = ", ".join(f"{d:+.3f}" for d in diffs)
    print(
        f"trioprobe SRTT - Go SRTT: {spread} ms; worst {worst:+.3f} ms "
        f"(goal: within {TARGET_MS} ms: {verdict})"
    )


if __name__ == "__main__":
    main()
