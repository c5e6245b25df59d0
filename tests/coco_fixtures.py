"""Tiny COCO trees in COCO's real formats, and a loopback server that serves them like images.cocodataset.org.

No test machine can download COCO, so the tests make a few hundred small
files the way COCO ships them and fetch them over HTTP on 127.0.0.1::

    tree = write_coco_tree(tmp_path / "served", "train2017", num_images=300)   # ~0.3 s
    with coco_server(tree.folder, drop_once={tree.ids[3]}) as server:
        use_server(monkeypatch, server, tree)   # CLIP_COCO_URL, the zip's md5, short back-off
        ds = coco.CocoCaptions("train2017", resolution=16, root=tmp_path / "data", progress=False)
    ds.image_ids == tree.good_ids            # all but tree.corrupt_id and tree.missing_id

or, as pytest fixtures (defined in tests/conftest.py), ``coco_tree`` (a
session-wide 40-image val2017 tree) and ``coco_http`` (``coco_http(folder,
**options) -> server``, stopped after the test). What :func:`write_coco_tree` writes under ``folder``:

* ``annotations/annotations_trainval2017.zip`` holding
  ``annotations/captions_<split>.json`` (COCO's field names: ``images[{id,
  file_name, coco_url, height, width, ...}]``, ``annotations[{id, image_id,
  caption}]``, annotations interleaved across images as in the real file);
* ``<split>/<12-digit id>.jpg``: each image a distinct solid colour
  (``tree.colours[id]``), landscape or portrait, with special cases at fixed
  positions: a grayscale JPEG, a CMYK JPEG, a palette PNG behind a ``.jpg``
  name, a wide image in three vertical bands (blue | red | green: a centre
  crop must come out red), a solid-red one, one truncated JPEG
  (``tree.corrupt_id``) and one listed in the captions but absent from the
  server (``tree.missing_id``, a 404).
"""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from loopback import LoopbackServer, server_url, start_server, stop_server
from PIL import Image

RED = (230, 20, 20)


@dataclass
class CocoTree:
    folder: Path
    split: str
    ids: list[int]                        # every image id in the captions file, ascending
    captions: dict[int, list[str]]        # id -> captions in the file's order
    colours: dict[int, tuple[int, int, int]]   # id -> the RGB colour the cached image must have (centre)
    modes: dict[int, str]                 # id -> "RGB", "L", "CMYK", "P (png)", "bands", "red"
    corrupt_id: int
    missing_id: int
    annotations_md5: str
    good_ids: list[int] = field(default_factory=list)   # ids that must end up in the dataset


def _colour(index: int) -> tuple[int, int, int]:
    """Distinct, well-separated colours (JPEG moves values by a few levels at most on flat areas)."""
    return (40 + (index * 67) % 180, 40 + (index * 29) % 180, 40 + (index * 113) % 180)


def _encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write_coco_tree(folder, split: str = "val2017", num_images: int = 40, first_id: int = 100,
                    captions_per_image=(5, 6, 5, 7, 5)) -> CocoTree:
    """Write a COCO-format tree for ``split`` under ``folder`` (see the module docstring); return what is in it."""
    folder = Path(folder)
    images_dir = folder / split
    images_dir.mkdir(parents=True, exist_ok=True)
    # Ids with gaps, as in COCO; the JSON lists images out of order so the reader must sort them.
    ids = [first_id + 3 * i + (i % 2) for i in range(num_images)]
    special = {2: "L", 3: "CMYK", 4: "P (png)", 5: "bands", 6: "red"}
    corrupt_id, missing_id = ids[7], ids[9]
    colours, modes, captions = {}, {}, {}
    records, annotation_id = [], 1
    for index, image_id in enumerate(ids):
        mode = special.get(index, "RGB")
        size = (48, 36) if index % 2 else (36, 48)          # landscape and portrait
        colour = _colour(index)
        if mode == "L":
            colour = (colour[0],) * 3
            data = _encode(Image.new("L", size, colour[0]))
        elif mode == "CMYK":
            data = _encode(Image.new("RGB", size, colour).convert("CMYK"))
        elif mode == "P (png)":        # a palette PNG behind a .jpg name: decode by content
            data = _encode(Image.new("RGB", size, colour).convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG")
            colour = Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0))
        elif mode == "bands":          # 3:1 wide, blue | red | green: only the middle survives a centre crop
            size, colour = (96, 32), RED
            image = Image.new("RGB", size, (20, 20, 230))
            image.paste(Image.new("RGB", (32, 32), RED), (32, 0))
            image.paste(Image.new("RGB", (32, 32), (20, 230, 20)), (64, 0))
            data = _encode(image)
        elif mode == "red":
            colour = RED
            data = _encode(Image.new("RGB", size, RED))
        else:
            data = _encode(Image.new("RGB", size, colour))
        if image_id == corrupt_id:
            data = data[:len(data) // 2]                     # a truncated JPEG
        if image_id != missing_id:
            (images_dir / f"{image_id:012d}.jpg").write_bytes(data)
        colours[image_id], modes[image_id] = tuple(colour), mode
        count = captions_per_image[index % len(captions_per_image)]
        captions[image_id] = [f"image {image_id} caption {k} ." for k in range(count)]
    # COCO interleaves annotations across images; keep per-image order = caption order.
    for k in range(max(captions_per_image)):
        for image_id in reversed(ids):
            if k < len(captions[image_id]):
                # Real captions carry stray spaces and newlines now and then.
                text = captions[image_id][k] + (" \n" if k == 1 else "")
                records.append({"id": annotation_id, "image_id": image_id, "caption": text})
                annotation_id += 1
    listing = [{"license": 1, "file_name": f"{i:012d}.jpg", "coco_url": f"http://images.cocodataset.org/{split}/{i:012d}.jpg",
                "height": 36, "width": 48, "date_captured": "2013-11-14 17:02:52",
                "flickr_url": "http://farm7.staticflickr.com/x.jpg", "id": i} for i in reversed(ids)]
    document = {"info": {"description": "COCO 2017 Dataset (test fixture)"}, "licenses": [],
                "images": listing, "annotations": records}
    annotations_dir = folder / "annotations"
    annotations_dir.mkdir(parents=True, exist_ok=True)
    zip_path = annotations_dir / "annotations_trainval2017.zip"
    mode = "a" if zip_path.exists() else "w"                # trees for both splits share one zip
    with zipfile.ZipFile(zip_path, mode, zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"annotations/captions_{split}.json", json.dumps(document))
        if mode == "w":
            zf.writestr(f"annotations/instances_{split}.json", json.dumps({"images": [], "annotations": []}))
    md5 = hashlib.md5(zip_path.read_bytes()).hexdigest()
    good = [i for i in ids if i not in (corrupt_id, missing_id)]
    return CocoTree(folder, split, ids, captions, colours, modes, corrupt_id, missing_id, md5, good)


class CocoHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under ``folder`` with ``Range`` support; can drop a connection mid-file once per path.

    Class attributes (set per server): ``folder``, ``drop_once`` (image ids
    whose first transfer stops half-way), ``latency`` (seconds slept before
    each response, to stand in for a real network's round trip), ``requests``
    (a list of ``(path, Range header)``), ``misbehave`` (see :data:`MISBEHAVIOURS`:
    ``{image id: behaviour}``, ``"*"`` for every image; change it while the
    server runs to "fix" the server), ``released`` (set on stop: silent
    answers end).
    """
    folder: Path = Path(".")
    drop_once: set = set()
    latency: float = 0.0
    requests: list = []
    misbehave: dict = {}
    released: threading.Event = threading.Event()
    lock = threading.Lock()

    def do_GET(self):
        with self.lock:
            type(self).requests.append((self.path, self.headers.get("Range")))
        if self.latency:
            time.sleep(self.latency)
        if self.path.endswith(".jpg"):
            image_id = int(Path(self.path).stem)
            behaviour = self.misbehave.get(image_id, self.misbehave.get("*"))
            if behaviour:
                self._misbehave(behaviour)
                return
        path = (self.folder / self.path.lstrip("/")).resolve()
        if self.folder.resolve() not in path.parents or not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        start, header = 0, self.headers.get("Range")
        if header and header.startswith("bytes="):
            start = int(header[len("bytes="):].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        body = body[start:]
        with self.lock:
            drop = any(path.name == f"{i:012d}.jpg" for i in self.drop_once) and start == 0
            if drop:
                type(self).drop_once = {i for i in self.drop_once if path.name != f"{i:012d}.jpg"}
        if drop:   # half the bytes, then the connection closes: the client sees a short read
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _misbehave(self, behaviour: str) -> None:
        if behaviour == "silent":          # accepts, reads the request, never answers
            self.released.wait()
            self.close_connection = True
            return
        if behaviour in ("403", "503", "404"):
            self.send_error(int(behaviour))
            return
        body = {"html": b"<html><body>Daily quota exceeded. Log in to continue.</body></html>",
                "empty": b"", "trickle": b"\xff\xd8" + bytes(4000)}.get(behaviour, b"")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8" if behaviour == "html" else "image/jpeg")
        self.send_header("Content-Length", str(300 * 2**20 if behaviour == "huge" else len(body)))
        self.end_headers()
        if behaviour == "trickle":         # one byte at a time, never long enough apart to time out a read
            for byte in body:
                if self.released.wait(0.05):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        elif behaviour == "huge":          # says 300 MiB; sends a first block, then closes
            self.wfile.write(bytes(1 << 16))
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


#: What ``CocoHandler.misbehave`` can make an image answer do.
MISBEHAVIOURS = {
    "silent": "accept the connection and the request, then say nothing",
    "trickle": "a 200 image/jpeg whose bytes come one at a time, 50 ms apart",
    "html": "a 200 text/html quota page",
    "empty": "a 200 image/jpeg with a 0-byte body",
    "403": "HTTP 403", "503": "HTTP 503", "404": "HTTP 404",
    "huge": "a 200 image/jpeg whose Content-Length says 300 MiB",
}


@dataclass
class CocoServer:
    url: str
    handler: type
    httpd: LoopbackServer

    @property
    def requests(self) -> list:
        return self.handler.requests

    def image_requests(self) -> list:
        return [r for r in self.handler.requests if r[0].endswith(".jpg")]

    def stop(self) -> None:
        self.handler.released.set()
        stop_server(self.httpd)


def start_coco_server(folder, drop_once=(), latency: float = 0.0, misbehave=None) -> CocoServer:
    handler = type("Handler", (CocoHandler,), {"folder": Path(folder), "drop_once": set(drop_once),
                                               "latency": latency, "requests": [], "misbehave": dict(misbehave or {}),
                                               "released": threading.Event()})
    httpd = start_server(handler)
    return CocoServer(server_url(httpd), handler, httpd)


@contextlib.contextmanager
def coco_server(folder, drop_once=(), latency: float = 0.0, misbehave=None):
    """Serve ``folder`` on 127.0.0.1 (a free port) for the ``with`` block; yields a :class:`CocoServer`."""
    server = start_coco_server(folder, drop_once, latency, misbehave)
    try:
        yield server
    finally:
        server.stop()


def use_server(monkeypatch, server: CocoServer, tree: CocoTree) -> None:
    """Point the COCO code at ``server`` and make it accept ``tree``'s annotations zip."""
    from clip_from_scratch.data import coco, coco_fetch
    monkeypatch.setenv(coco.URL_ENV_VAR, server.url)
    monkeypatch.setitem(coco.ANNOTATIONS, "md5", tree.annotations_md5)
    monkeypatch.setattr(coco_fetch, "BACKOFF_SECONDS", 0.01)
