"""Loopback plumbing the tests share: a free port, and an HTTP server on 127.0.0.1 in a thread.

No test touches the internet: every download in the tests comes from a server
started here, on a port the system picked::

    httpd = start_server(partial(QuietHandler, directory="served"))
    url = server_url(httpd)          # 'http://127.0.0.1:<port>'
    ...
    stop_server(httpd)

As pytest fixtures (tests/conftest.py): ``free_port``, ``loopback_server``
(any handler) and ``http_server`` (a folder's files).
"""
from __future__ import annotations

import http.server
import socket
import threading
from functools import partial


def free_port() -> int:
    """A port nothing listens on right now: a connection to it is refused, a process group can bind it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder's files (``directory=``) without a log line per request."""

    def log_message(self, *args):
        pass


class LoopbackServer(http.server.ThreadingHTTPServer):
    request_queue_size = 128    # the default 5 makes a pool of 16 connections wait on SYN retries
    daemon_threads = True


def start_server(handler) -> LoopbackServer:
    """Serve with ``handler`` (a request handler class, or a partial of one) on 127.0.0.1, from a thread."""
    httpd = LoopbackServer(("127.0.0.1", 0), handler)
    threading.Thread(target=partial(httpd.serve_forever, poll_interval=0.05), daemon=True).start()
    return httpd


def server_url(httpd: LoopbackServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def stop_server(httpd: LoopbackServer) -> None:
    httpd.shutdown()
    httpd.server_close()
