"""The http probe's request options and validators, against real servers on loopback.

A small ASGI app (served by ``trioprobe._asgi.serve_asgi``) records what reached it; an h11
server behind TLS (a trustme certificate issued for a name) checks the Host/SNI override. Each
test is bounded by progress; ``fail_after`` is only a hang guard.
"""

from __future__ import annotations

import gc
import io
import json
import ssl
from collections.abc import MutableMapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trustme
from rich.console import Console

from trioprobe._asgi import answer_lifespan, serve_asgi
from trioprobe.cli import main
from trioprobe.cli._live import LiveStats
from trioprobe.config import ConfigError, load_config, parse_config
from trioprobe.metrics import Map
from trioprobe.probes._http_checks import json_equal, parse_json_path, subset_mismatch
from trioprobe.probes.http_probe import HTTPProbe, Options
from trioprobe.results import ProbeResult
from trioprobe.runner import Runner

from ..probing.test_http_transport import _serve_h11

GUARD = 30
SECRET = "s3cr3t-T0ken-xyz"
DOC = {"status": "ok", "checks": {"db": {"up": True, "lag": 1.5}}, "items": [{"id": 1}], "n": 3}


@attrs.define
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@attrs.define
class App:
    """Routes: ``/json`` (DOC, with X-Request-Id), ``/html``, ``/echo-auth`` (the Authorization
    header back as JSON), ``/redirect/N`` (302 to ``/redirect/N-1``; ``/redirect/0`` is 200)."""

    seen: list[Seen] = attrs.field(factory=list)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        self.seen.append(Seen(scope["method"], path, headers, body))
        extra: list[tuple[bytes, bytes]] = []
        status, content, ctype = 200, json.dumps(DOC).encode(), b"application/json"
        if path == "/json":
            extra.append((b"x-request-id", b"abc-123"))
        elif path == "/html":
            content, ctype = b"<html>ok</html>", b"text/html"
        elif path == "/echo-auth":
            content = json.dumps({"auth": headers.get("authorization", "")}).encode()
        elif path.startswith("/redirect/"):
            left = int(path.rsplit("/", 1)[1])
            if left:
                status, content = 302, b""
                extra.append((b"location", f"/redirect/{left - 1}".encode()))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(content)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


async def _results(probe: HTTPProbe, count: int) -> list[ProbeResult]:
    send, receive = trio.open_memory_channel[ProbeResult](100)
    results: list[ProbeResult] = []
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(probe.run, send)
            async for result in receive:
                results.append(result)
                if len(results) == count:
                    break
            nursery.cancel_scope.cancel()
    return results


# The transport of the test being run: the tests against the ASGI app run on both paths (the
# lean h11 path is the default for http://; "httpx" forces httpx), set by the `app` fixture.
_transport = ["auto"]


async def _probe(url: str, count: int = 1, **options: Any) -> list[ProbeResult]:
    options.setdefault("transport", _transport[0])
    probe = HTTPProbe(Options(**options), lambda: [url], interval=0.05, timeout=10.0)
    return await _results(probe, count)


@pytest.fixture(params=["auto", "httpx"])
async def app(nursery: trio.Nursery, request: pytest.FixtureRequest) -> tuple[App, str]:
    _transport[0] = request.param
    app = App()
    url = await nursery.start(partial(serve_asgi, app))
    return app, url


# -- the request --------------------------------------------------------------------------------


async def test_method_headers_and_body_reach_the_server(app: tuple[App, str]) -> None:
    server, url = app
    [result] = await _probe(
        f"{url}/json", method="POST", headers={"X-Probe": "trioprobe"}, body='{"ping": 1}'
    )
    assert result.success, result.error
    [seen] = server.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/json", b'{"ping": 1}')
    assert seen.headers["x-probe"] == "trioprobe"
    assert "authorization" not in seen.headers


async def test_head_reads_no_body(app: tuple[App, str]) -> None:
    """The reply to HEAD announces a body it does not send: a probe must not wait for it."""
    server, url = app
    results = await _probe(f"{url}/json", count=2, method="HEAD", detail="full")
    assert all(r.success for r in results), [r.error for r in results]
    assert [s.method for s in server.seen] == ["HEAD", "HEAD"]
    assert results[1].extras["connections"] == Map("state", {"reused": 1})


async def test_body_file_is_sent_as_it_is(app: tuple[App, str], tmp_path: Path) -> None:
    server, url = app
    (tmp_path / "body.bin").write_bytes(b"\x00raw\nbytes")
    [result] = await _probe(f"{url}/json", method="PUT", body_file=str(tmp_path / "body.bin"))
    assert result.success, result.error
    assert server.seen[0].body == b"\x00raw\nbytes"


async def test_bearer_token_from_env_arrives_and_is_never_shown(
    app: tuple[App, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = app
    monkeypatch.setenv("PROBE_TOKEN", SECRET)
    options = Options(
        bearer_token_env="PROBE_TOKEN",
        json_paths={"auth": "something else"},
        transport=_transport[0],
    )
    probe = HTTPProbe(options, lambda: [f"{url}/echo-auth"], interval=0.05, timeout=10.0)
    [result] = await _results(probe, 1)
    assert server.seen[0].headers["authorization"] == f"Bearer {SECRET}"
    # The server echoed the token; the validator's error quotes the body, redacted.
    assert not result.success
    assert result.error == 'JSON auth is "Bearer <secret>", expected "something else"'
    assert SECRET not in repr(options)
    assert SECRET not in repr(probe.__dict__)
    live = LiveStats()
    live.observe("api", result)
    console = Console(file=io.StringIO(), width=200)
    console.print(live.table())
    table = console.file.getvalue()  # type: ignore[attr-defined]
    assert "<secret>" in table
    assert SECRET not in table
    assert all(SECRET not in line for line in live.lines() + live.changes())


async def test_basic_auth_from_a_file_arrives(app: tuple[App, str], tmp_path: Path) -> None:
    server, url = app
    (tmp_path / "password").write_text("pa:ss wörd\n")  # the file's line break is not sent
    [result] = await _probe(
        f"{url}/json",
        basic_auth_username="probe",
        basic_auth_password_file=str(tmp_path / "password"),
    )
    assert result.success, result.error
    expected = httpx.BasicAuth("probe", "pa:ss wörd")._auth_header
    assert server.seen[0].headers["authorization"] == expected
    probe = HTTPProbe(
        Options(basic_auth_username="probe", basic_auth_password_file=str(tmp_path / "password")),
        list,
        interval=1.0,
        timeout=1.0,
    )
    shown = repr(probe.__dict__) + probe._parts.scrub(f"echoed {expected} and pa:ss wörd")
    assert "pa:ss wörd" not in shown
    assert expected.split()[1] not in shown


async def test_host_override_is_the_host_header(app: tuple[App, str]) -> None:
    server, url = app
    port = httpx.URL(url).port
    [result] = await _probe(f"{url}/json", host="api.example.com")
    assert result.success, result.error
    assert server.seen[0].headers["host"] == f"api.example.com:{port}"


# -- redirects ----------------------------------------------------------------------------------


async def test_redirects_followed_and_counted(app: tuple[App, str]) -> None:
    server, url = app
    [result] = await _probe(
        f"{url}/redirect/3", follow_redirects=True, host="api.example.com", detail="full"
    )
    assert result.success, result.error
    assert result.extras["redirects"] == 3
    assert result.extras["resp-code"] == Map("code", {"200": 1})
    assert [s.path for s in server.seen] == [f"/redirect/{n}" for n in (3, 2, 1, 0)]
    # A relative redirect stays on the origin: the Host override goes along.
    assert {s.headers["host"].split(":")[0] for s in server.seen} == {"api.example.com"}
    # Phases are summed over the hops; one connection, reused by the three redirects.
    assert result.extras["connections"] == Map("state", {"new": 1, "reused": 3})
    assert result.extras["phase_ttfb"].count == 1  # type: ignore[union-attr]


async def test_too_many_redirects_fail(app: tuple[App, str]) -> None:
    _, url = app
    [result] = await _probe(f"{url}/redirect/5", follow_redirects=True, max_redirects=2)
    assert not result.success
    assert result.error == "too many redirects: more than 2"
    assert result.extras["redirects"] == 2


async def test_redirect_not_followed_counts_against_expected_codes(app: tuple[App, str]) -> None:
    server, url = app
    [failed] = await _probe(f"{url}/redirect/1")
    assert not failed.success
    assert failed.error == "unexpected status 302"
    assert "redirects" not in failed.extras
    assert failed.extras["resp-code"] == Map("code", {"302": 1})
    [ok] = await _probe(f"{url}/redirect/1", expected_codes=(302,))
    assert ok.success
    assert [s.path for s in server.seen] == ["/redirect/1", "/redirect/1"]


# -- validators ---------------------------------------------------------------------------------


async def test_json_and_header_validators_pass(app: tuple[App, str]) -> None:
    _, url = app
    [result] = await _probe(
        f"{url}/json",
        json_paths={"status": "ok", "checks.db.up": True, "$.items[0].id": 1.0, '["n"]': 3},
        json_subset={"checks": {"db": {"up": True}}, "items": [{"id": 1}]},
        header_checks={"Content-Type": "^application/json$", "X-Request-Id": ""},
    )
    assert result.success, result.error
    assert result.extras["validation_failure"] == Map(
        "validator", {"header": 0, "json_path": 0, "json_subset": 0}
    )


@pytest.mark.parametrize(
    ("path", "options", "failed", "error"),
    [
        ("/json", {"json_paths": {"checks.db.up": False}}, "json_path", "JSON checks.db.up is"),
        ("/json", {"json_paths": {"n": True}}, "json_path", "JSON n is 3, expected true"),
        ("/json", {"json_paths": {"items[1].id": 1}}, "json_path", "JSON items[1].id: items[1]"),
        ("/json", {"json_subset": {"checks": {"db": {"lag": 2}}}}, "json_subset", "checks.db.lag"),
        ("/json", {"json_subset": {"other": 1}}, "json_subset", "JSON subset: other: missing"),
        ("/html", {"json_subset": {"status": "ok"}}, "json_subset", "body is not JSON"),
        ("/json", {"header_checks": {"X-Missing": ""}}, "header", "header X-Missing missing"),
        ("/html", {"header_checks": {"Content-Type": "json"}}, "header", '"text/html" does not'),
        ("/html", {"body_regex": "nope"}, "regex", "body did not match /nope/"),
    ],
)
async def test_validators_fail_with_a_clear_error_and_count(
    app: tuple[App, str], path: str, options: dict[str, Any], failed: str, error: str
) -> None:
    _, url = app
    [result] = await _probe(url + path, **options)
    assert not result.success
    assert error in (result.error or "")
    assert result.extras["validation_failure"] == Map("validator", {failed: 1})


async def test_every_failing_validator_counts(app: tuple[App, str]) -> None:
    _, url = app
    [result] = await _probe(
        f"{url}/json",
        body_regex="status",
        json_paths={"status": "down"},
        header_checks={"X-Request-Id": "^zzz"},
    )
    assert result.extras["validation_failure"] == Map(
        "validator", {"regex": 0, "header": 1, "json_path": 1}
    )
    assert result.error == (
        'header X-Request-Id "abc-123" does not match /^zzz/; JSON status is "ok", expected "down"'
    )


def test_json_path_and_comparisons() -> None:
    assert parse_json_path('$.a.b[2]["c.d"].e').steps == ("a", "b", 2, "c.d", "e")
    assert parse_json_path("x").steps == ("x",)
    for bad in ("", "a..b", "a.", "a[x]", "a[0]b", ".a", "$"):
        with pytest.raises(ValueError, match="bad JSON path"):
            parse_json_path(bad)
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal(1, True)
    assert not json_equal("1", 1)
    assert json_equal([1, {"a": None}], [1.0, {"a": None}])
    assert subset_mismatch({"a": [1, 2], "b": 0}, {"a": [1, 2]}) is None
    assert subset_mismatch({"a": [1, 2]}, {"a": [1]}) == "a: expected [1], got [1, 2]"
    assert subset_mismatch([], {"a": 1}) == "the body: expected an object, got []"


# -- https by IP with an SNI override ----------------------------------------------------------
# (The Host header it also sets is checked over plain http above.)


async def test_https_by_ip_with_sni_override(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("backend.example").configure_cert(server_ctx)
    server_names: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: server_names.append(name)  # type: ignore[assignment,func-returns-value]
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, _serve_h11, 0, server_ctx, host="127.0.0.1")
    )
    port = listeners[0].transport_listener.socket.getsockname()[1]
    target = f"https://127.0.0.1:{port}/health"

    def probe(**options: Any) -> HTTPProbe:
        return HTTPProbe(
            Options(**options),
            lambda: [target],
            interval=0.05,
            timeout=10.0,
            client_factory=lambda: httpx.AsyncClient(verify=client_ctx, timeout=None),
        )

    # Without the override the certificate (issued for the name) does not match the IP.
    [plain] = await _results(probe(), 1)
    assert not plain.success
    assert "CERTIFICATE_VERIFY_FAILED" in (plain.error or "")
    [ok] = await _results(probe(host="backend.example"), 1)
    assert ok.success, ok.error
    assert server_names[-1] == "backend.example"
    assert str(ok.gauges["tls_version"]).startswith("TLS 1.")


# -- config and check ---------------------------------------------------------------------------

PROBE = '[[probe]]\nname = "api"\ntype = "http"\ntargets = ["http://127.0.0.1:9/"]\n'


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("methd = 'GET'\n", "probe[0].methd: unknown key; did you mean 'method'?"),
        ("method = 'GE T'\n", "probe[0]: method: 'GE T' is not an HTTP method"),
        ("headers = { 'X Bad' = 'v' }\n", "probe[0]: headers: 'X Bad' is not a valid header name"),
        ("headers = { 'X-A' = \"a\\nb\" }\n", "headers: the value of header 'X-A' has a line"),
        ("headers = { Authorization = 'Bearer x' }\n", "set Authorization with the basic_auth_*"),
        ("headers = { Host = 'x' }\n", "headers: set Host with the host key(s)"),
        (
            "bearer_token_env = 'T'\nbearer_token_file = 't'\n",
            "probe[0]: give either bearer_token_env or bearer_token_file, not both",
        ),
        (
            "basic_auth_username = 'u'\nbasic_auth_password_env = 'P'\n"
            "basic_auth_password_file = 'p'\n",
            "give either basic_auth_password_env or basic_auth_password_file, not both",
        ),
        ("basic_auth_username = 'u'\n", "basic_auth_username needs basic_auth_password_env"),
        (
            "basic_auth_username = 'u'\nbasic_auth_password_env = 'P'\nbearer_token_env = 'T'\n",
            "give either basic auth or a bearer token, not both",
        ),
        ("body = 'x'\nbody_file = 'b'\n", "give either body or body_file, not both"),
        ("json_paths = { 'a..b' = 1 }\n", "probe[0]: bad JSON path 'a..b' at character 3"),
        ("json_paths = { a = 1979-05-27 }\n", "json_paths.a: date values cannot be compared"),
        ("header_checks = { X = '(' }\n", "header_checks: bad regex for 'X'"),
        ("host = 'a.example:443'\n", "host: 'a.example:443' is not a host name"),
        ("max_redirects = -1\n", "probe[0].max_redirects: expected"),
    ],
)
def test_check_names_bad_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, expected: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(PROBE + extra)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.startswith(f"trioprobe: error: {path}: probe[0]")


def test_check_reads_secrets_and_body_files_never_printing_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(PROBE + "bearer_token_file = 'token'\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"probe 'api': bearer_token_file: cannot read {tmp_path / 'token'}: No such file" in err

    path.write_text(PROBE + "basic_auth_username = 'u'\nbasic_auth_password_env = 'NOPE_PW'\n")
    monkeypatch.delenv("NOPE_PW", raising=False)
    assert main(["check", str(path)]) == 2
    assert "basic_auth_password_env: environment variable NOPE_PW is not set" in (
        capsys.readouterr().err
    )

    path.write_text(PROBE + "body_file = 'missing.json'\n")
    assert main(["check", str(path)]) == 2
    assert "body_file: cannot read" in capsys.readouterr().err

    (tmp_path / "token").write_text(f"{SECRET}\nsecond line\n")  # not a header value
    path.write_text(PROBE + "bearer_token_file = 'token'\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bearer_token_file: the token has a line break" in err
    assert SECRET not in err

    (tmp_path / "token").write_text(f"{SECRET}\n")
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "probe 'api' (http)" in out
    assert SECRET not in out
    # The relative file name was resolved against the config's folder.
    config = load_config(path)
    assert config.probes[0][1].bearer_token_file == str(tmp_path / "token")
    assert SECRET not in repr(config)
    assert SECRET not in repr(Runner(config).probes)


def test_runner_names_the_probe_for_an_unreadable_secret() -> None:
    config = parse_config(
        {
            "probe": [
                {
                    "name": "api",
                    "type": "http",
                    "targets": ["http://127.0.0.1:9/"],
                    "bearer_token_file": "/nonexistent/token",
                }
            ]
        }
    )
    with pytest.raises(ConfigError, match="probe 'api': bearer_token_file: cannot read"):
        Runner(config)


def test_example_config_checks(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).parents[2] / "examples" / "http_checks.toml"
    assert main(["check", str(example)]) == 0, capsys.readouterr().err


async def test_redirects_and_validators_leave_no_cyclic_garbage(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """Every hop's response is released like the first (see release_response)."""
    monkeypatch.setenv("PROBE_TOKEN", SECRET)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/a":
            return httpx.Response(302, headers={"location": "/b"})
        return httpx.Response(200, json=DOC, headers={"x-request-id": "1"})

    options = Options(
        follow_redirects=True,
        bearer_token_env="PROBE_TOKEN",
        json_paths={"checks.db.up": True},
        json_subset={"status": "ok"},
        header_checks={"X-Request-Id": ""},
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        probe = HTTPProbe(
            options,
            lambda: ["http://h/a"],
            interval=1.0,
            timeout=1.0,
            client_factory=lambda: client,
        )
        first = await probe.probe_once("http://h/a")
        assert first.success, first.error
        assert first.extras["redirects"] == 1
        gc.collect()
        gc.disable()
        try:
            for _ in range(50):
                assert (await probe.probe_once("http://h/a")).success
            garbage = gc.collect()
        finally:
            gc.enable()
    assert garbage < 50
