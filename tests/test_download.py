"""The download helper against a real HTTP server on the loopback interface."""
import hashlib
import http.server
import threading
import time

import pytest

from clip_from_scratch import download as download_module
from clip_from_scratch import files
from clip_from_scratch.download import ChecksumError, DownloadError, download, file_digest

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB of known bytes
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``payload``, honours ``Range: bytes=N-`` and ``If-Range``, and can misbehave."""

    payload = PAYLOAD
    cut_after = None     # send only this many bytes, then close (a dropped connection)
    honour_range = True
    range_from_zero = False  # answer a Range with 206 but send the whole file (a broken proxy)
    etag = None          # a strong ETag like '"v1"'; If-Range is honoured against it
    content_type = "application/octet-stream"
    chunked = False      # Transfer-Encoding: chunked, with no Content-Length
    delay = 0.0          # seconds between 64 KiB blocks (to make two downloads overlap)
    requests = []

    def do_GET(self):
        type(self).requests.append(self.headers.get("Range"))
        payload, start = self.payload, 0
        header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if header and self.honour_range and (if_range is None or if_range == self.etag):
            start = int(header.split("=")[1].rstrip("-"))
            if start >= len(payload):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(payload)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.range_from_zero:
                start = 0
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        body = payload[start:]
        if self.etag:
            self.send_header("ETag", self.etag)
        self.send_header("Content-Type", self.content_type)
        if self.cut_after is not None:
            body_sent = body[:self.cut_after]
        else:
            body_sent = body
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(f"{len(body):x}\r\n".encode() + body_sent)
            if self.cut_after is None:
                self.wfile.write(b"\r\n0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body_sent), 1 << 16):
            self.wfile.write(body_sent[i:i + (1 << 16)])
            time.sleep(self.delay)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(loopback_server):
    handler = type("Handler", (RangeHandler,), {"requests": []})
    handler.base = loopback_server(handler)
    return handler, f"{handler.base}/file.bin"


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


def test_a_damaged_cached_copy_is_replaced_and_kept_aside(server, tmp_path):
    _, url = server
    (tmp_path / "file.bin").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match=r"file.bin.bad-[0-9a-f]{8}"):
        path = download(url, tmp_path / "file.bin", sha256=SHA256, progress=False)
    assert path.read_bytes() == PAYLOAD
    [aside] = tmp_path.glob("file.bin.bad-*")
    assert aside.read_bytes() == b"truncated"


def test_no_internet_says_where_to_put_the_file(tmp_path, free_port):
    port = free_port   # nobody listens there: the connection is refused at once
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


# --- a file the user put there is never lost -------------------------------------------------

def test_a_users_file_that_fails_its_checksum_survives_when_offline(tmp_path, free_port):
    # An instructor copied the CIFAR archive in by hand, but it is another version.
    target = tmp_path / "cifar.tar.gz"
    target.write_bytes(b"the instructor's copy")
    with pytest.raises(DownloadError) as info:
        download(f"http://127.0.0.1:{free_port}/cifar.tar.gz", target, sha256=SHA256,
                 progress=False, timeout=5)
    [aside] = tmp_path.glob("cifar.tar.gz.bad-*")
    assert aside.read_bytes() == b"the instructor's copy"
    assert aside.name in str(info.value) and "did not match" in str(info.value)
    assert not target.exists()  # the final name only ever holds a verified file


def test_target_that_is_a_folder_is_a_download_error(server, tmp_path):
    _, url = server
    (tmp_path / "file.bin").mkdir()
    with pytest.raises(DownloadError, match="is a folder"):
        download(url, tmp_path / "file.bin", sha256=SHA256, progress=False)


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc/file.bin", "http://127.0.0.1:1/a file.bin",
                                 "http://exa mple.com/file.bin"])
def test_invalid_url_is_a_download_error(url, tmp_path):
    with pytest.raises(DownloadError, match="Could not download"):
        download(url, tmp_path / "file.bin", progress=False, timeout=5)


def test_chunked_body_cut_short_is_a_download_error(server, tmp_path):
    handler, url = server
    handler.chunked, handler.cut_after = True, 1000  # http.client raises IncompleteRead
    with pytest.raises(DownloadError, match="closed early|again"):
        download(url, tmp_path / "file.bin", sha256=SHA256, progress=False)
    assert not (tmp_path / "file.bin").exists()


def test_truncated_body_without_checksum_is_rejected(server, tmp_path):
    handler, url = server
    handler.cut_after = 1000
    with pytest.raises(DownloadError, match="1000 of 1048576 bytes"):
        download(url, tmp_path / "file.bin", progress=False)
    assert not (tmp_path / "file.bin").exists()


# --- resuming only what can be resumed -------------------------------------------------------

def test_resume_checks_the_server_sent_the_bytes_asked_for(server, tmp_path):
    handler, url = server
    handler.range_from_zero = True  # says 206, but Content-Range starts at 0, not at 300,000
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:300_000])
    assert download(url, tmp_path / "file.bin", sha256=SHA256, progress=False).read_bytes() == PAYLOAD
    assert handler.requests[0] == "bytes=300000-" and handler.requests[-1] is None


def test_a_stale_part_is_not_spliced_onto_a_file_without_checksum(server, tmp_path):
    handler, url = server
    # Left over from another file (or another version of this one): nothing says it matches.
    (tmp_path / "file.bin.part").write_bytes(b"x" * 5000)
    assert download(url, tmp_path / "file.bin", progress=False).read_bytes() == PAYLOAD
    assert handler.requests == [None]


def test_without_checksum_a_part_resumes_only_while_the_etag_matches(server, tmp_path):
    handler, url = server
    handler.etag, handler.cut_after = '"v1"', 300_000
    with pytest.raises(DownloadError):
        download(url, tmp_path / "file.bin", progress=False)
    handler.cut_after = None
    assert download(url, tmp_path / "file.bin", progress=False).read_bytes() == PAYLOAD
    assert handler.requests[-1] == "bytes=300000-"  # resumed: same ETag

    (tmp_path / "file.bin").unlink()
    handler.cut_after = 300_000
    with pytest.raises(DownloadError):
        download(url, tmp_path / "file.bin", progress=False)
    handler.cut_after, handler.etag = None, '"v2"'
    handler.payload = PAYLOAD[::-1]  # the file changed on the server meanwhile
    assert download(url, tmp_path / "file.bin", progress=False).read_bytes() == PAYLOAD[::-1]


def test_a_stale_part_with_checksum_is_fetched_again_from_the_start(server, tmp_path):
    handler, url = server
    (tmp_path / "file.bin.part").write_bytes(b"x" * 5000)  # resumable, but the wrong bytes
    assert download(url, tmp_path / "file.bin", sha256=SHA256, progress=False).read_bytes() == PAYLOAD
    assert handler.requests == ["bytes=5000-", None]


def test_part_as_long_as_the_file_but_from_another_file_is_not_accepted(server, tmp_path):
    handler, url = server
    handler.etag = '"v1"'
    (tmp_path / "file.bin.part").write_bytes(b"y" * len(PAYLOAD))  # the server answers 416
    assert download(url, tmp_path / "file.bin", progress=False).read_bytes() == PAYLOAD


# --- error pages ------------------------------------------------------------------------------

def test_html_page_instead_of_a_file_is_rejected_without_checksum(server, tmp_path):
    handler, url = server
    handler.content_type, handler.payload = "text/html; charset=utf-8", b"<html>Quota exceeded</html>"
    with pytest.raises(DownloadError, match="web page"):
        download(url, tmp_path / "file.bin", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_html_page_with_checksum_fails_the_checksum_and_says_html(server, tmp_path):
    handler, url = server
    handler.content_type, handler.payload = "text/html", b"<html>Not found</html>"
    with pytest.raises(ChecksumError, match="text/html"):
        download(url, tmp_path / "file.bin", sha256=SHA256, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_html_file_may_be_html(server, tmp_path):
    handler, _ = server
    handler.content_type, handler.payload = "text/html", b"<html>the page</html>"
    path = download(f"{handler.base}/page.html", tmp_path / "page.html", progress=False)
    assert path.read_bytes() == b"<html>the page</html>"


# --- files survive crashes and neighbours ------------------------------------------------------

def test_two_downloads_of_one_file_at_once_do_not_mix_their_bytes(server, tmp_path):
    handler, url = server
    handler.delay = 0.02  # ~0.3 s per download, so the two overlap
    results, errors = [], []

    def fetch():
        try:
            results.append(download(url, tmp_path / "file.bin", sha256=SHA256, progress=False))
        except Exception as err:  # reported below
            errors.append(err)

    # flock locks belong to open files, so two threads conflict just as two processes do.
    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert handler.requests == [None]  # the second waited, then found the file complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_two_processes_share_one_download(server, tmp_path):
    import subprocess
    import sys
    handler, url = server
    handler.delay = 0.02
    code = ("import sys; from clip_from_scratch.download import download; "
            "download(sys.argv[1], sys.argv[2], sha256=sys.argv[3], progress=False)")
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(tmp_path / "file.bin"), SHA256])
             for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert len(handler.requests) == 1


def test_file_is_flushed_to_disk_before_it_gets_its_name(server, tmp_path, monkeypatch):
    _, url = server
    calls = []
    real_fsync, real_replace = files.os.fsync, files.os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(files.os, "replace", lambda a, b: calls.append("replace") or real_replace(a, b))
    download(url, tmp_path / "file.bin", sha256=SHA256, progress=False)
    assert calls[:2] == ["fsync", "replace"]


def test_docstring_examples_run():
    import doctest
    for module in (download_module, files):
        result = doctest.testmod(module)
        assert result.attempted >= 3 and result.failed == 0, module.__name__
