"""The download helper against a real HTTP server on the loopback interface."""
import hashlib
import http.server
import threading
from functools import partial

import pytest

from clip_from_scratch.download import ChecksumError, DownloadError, download, file_digest

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB of known bytes
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD, honours `Range: bytes=N-`, and can cut a response short."""

    cut_after = None     # send only this many bytes, then close (a dropped connection)
    honour_range = True
    requests = []

    def do_GET(self):
        type(self).requests.append(self.headers.get("Range"))
        start = 0
        header = self.headers.get("Range")
        if header and self.honour_range:
            start = int(header.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None:
            body = body[:self.cut_after]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (RangeHandler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=partial(httpd.serve_forever, poll_interval=0.05), daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/file.bin"
    httpd.shutdown()
    httpd.server_close()


def test_download_writes_the_verified_file(server, tmp_path):
    _, url = server
    path = download(url, tmp_path / "file.bin", sha256=SHA256, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "file.bin.part").exists()


def test_md5_is_accepted_too(server, tmp_path):
    _, url = server
    assert download(url, tmp_path / "f", md5=MD5, progress=False).read_bytes() == PAYLOAD


def test_a_verified_copy_is_not_fetched_again(server, tmp_path):
    handler, url = server
    download(url, tmp_path / "file.bin", sha256=SHA256, progress=False)
    download(url, tmp_path / "file.bin", sha256=SHA256, progress=False)
    assert len(handler.requests) == 1


def test_checksum_mismatch_leaves_no_file_that_looks_complete(server, tmp_path):
    _, url = server
    with pytest.raises(ChecksumError, match="sha256"):
        download(url, tmp_path / "file.bin", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_dropped_connection_keeps_the_part_and_resumes(server, tmp_path):
    handler, url = server
    handler.cut_after = 300_000
    with pytest.raises(DownloadError, match="again to resume"):
        download(url, tmp_path / "file.bin", sha256=SHA256, progress=False)
    assert not (tmp_path / "file.bin").exists()
    assert (tmp_path / "file.bin.part").stat().st_size == 300_000

    handler.cut_after = None
    path = download(url, tmp_path / "file.bin", sha256=SHA256, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert handler.requests[-1] == "bytes=300000-"


def test_server_that_ignores_range_restarts_from_zero(server, tmp_path):
    handler, url = server
    handler.honour_range = False
    (tmp_path / "file.bin.part").write_bytes(b"garbage that is not the start")
    assert download(url, tmp_path / "file.bin", sha256=SHA256, progress=False).read_bytes() == PAYLOAD


def test_a_damaged_cached_copy_is_replaced(server, tmp_path):
    _, url = server
    (tmp_path / "file.bin").write_bytes(b"truncated")
    assert download(url, tmp_path / "file.bin", sha256=SHA256, progress=False).read_bytes() == PAYLOAD


def test_no_internet_says_where_to_put_the_file(tmp_path):
    # A port nobody listens on: the connection is refused at once.
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = tmp_path / "weights" / "ViT-B-32.pt"
    with pytest.raises(DownloadError) as info:
        download(f"http://127.0.0.1:{port}/ViT-B-32.pt", target, progress=False, timeout=5)
    message = str(info.value)
    assert str(target.resolve()) in message
    assert "no internet" in message
    assert not target.exists()


def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(PAYLOAD)
    assert file_digest(path) == SHA256
    assert file_digest(path, "md5") == MD5
