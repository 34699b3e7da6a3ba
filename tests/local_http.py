"""A local HTTP server for injecting faults: each POST is answered by a test's function."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Mapping


class LocalHttpServer:
    """Listens on a free local port; `answer(path, headers, body)` gives each POST's (status, body), or
    (status, body, extra headers), sent as JSON. `url` is its address; `close()` stops it. With `keep_alive`, a
    connection serves request after request (HTTP/1.1), as a provider's does; `connections` counts those accepted.
    An extra Content-Length larger than the body announces more than is sent: the connection closes after the body
    (an answer cut short)."""

    def __init__(self, answer: Callable[[str, Mapping[str, str], bytes], tuple], *, keep_alive: bool = False):
        outer = self
        self.connections = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def setup(self):
                super().setup()
                outer.connections += 1

            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload, *extra = answer(self.path, self.headers, body)
                headers = {"Content-Type": "application/json", "Content-Length": str(len(payload)),
                           **(extra[0] if extra else {})}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
                if int(headers["Content-Length"]) > len(payload):
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client that gave up (a timeout under test) makes the answer's write fail: expected, not news.
        self.server.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
