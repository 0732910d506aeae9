"""A small web app with a login form and a session cookie, for the example check beside it.

    python examples/checks/app.py [--port 8081]

``alice`` logs in with the password in ``$EXAMPLE_APP_PASSWORD`` (default ``wonderland``):
``POST /login`` sets a ``session`` cookie and redirects to ``/account``, which answers
``Welcome, alice`` only with that cookie. It prints its URL on the first line of standard output,
so a test (or you) can start it on a free port. Standard library only: it stands in for any app.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from http import cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

USER = "alice"
PASSWORD = os.environ.get("EXAMPLE_APP_PASSWORD", "wonderland")
SESSIONS: set[str] = set()
FORM = b"""<!doctype html><title>Log in</title>
<form method=post action=/login><input name=user><input name=password type=password>
<button>Log in</button></form>
"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/login":
            self._reply(200, FORM, "text/html")
        elif self.path == "/account":
            jar = cookies.SimpleCookie(self.headers.get("Cookie", ""))
            session = jar.get("session")
            if session is not None and session.value in SESSIONS:
                self._reply(200, f"Welcome, {USER}\n".encode())
            else:
                self._reply(401, b"log in first\n")
        else:
            self._reply(404, b"not found\n")

    def do_POST(self) -> None:
        if self.path != "/login":
            self._reply(404, b"not found\n")
            return
        length = min(int(self.headers.get("Content-Length") or 0), 4096)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        if form.get("user") == [USER] and form.get("password") == [PASSWORD]:
            token = secrets.token_hex(16)
            SESSIONS.add(token)
            self.send_response(303)
            self.send_header("Location", "/account")
            self.send_header("Set-Cookie", f"session={token}; HttpOnly; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._reply(401, b"wrong user or password\n")

    def _reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the check's results are what matter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
