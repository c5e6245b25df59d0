"""One COCO image over a real network: a total deadline, size limits, and what a failure means.

    data, content_type = fetch_image(url)                # bytes, within IMAGE_DEADLINE_SECONDS in all
    pixels = decode_and_resize(data, 64)                 # uint8 [3, 64, 64]; refuses a giant before decoding

A hotel Wi-Fi or a busy mirror fails in ways a clean server never does, and
each way gets one answer here (:class:`FetchFailed`, with a ``reason`` a
learner can read and a ``permanent`` flag):

* **final** (``permanent=True``): the server says the image is not there
  (HTTP 404 or 410), a 200 ``image/*`` answer that is not a readable image,
  a body over :data:`MAX_IMAGE_BYTES` or an image over
  :data:`MAX_IMAGE_PIXELS`. Trying again gives the same answer.
* **for now** (``permanent=False``): a web page (a quota, login or error
  page) sent in place of the image, an empty body, HTTP 403, 429 or 5xx,
  a timeout, a reset. The next run tries these images again.

Time is bounded: each read waits at most ``timeout`` seconds, and each image
gets :data:`IMAGE_DEADLINE_SECONDS` in all (connect, every read, every try
and the back-off between tries), so a server that trickles one byte a second
cannot hold a worker forever. A ``stop`` event (set on Ctrl-C) ends the
back-off sleeps at once and stops further tries; a read under way may
finish (a healthy server's image is a few milliseconds from done), and the
caller does not wait for one that will not.
"""
from __future__ import annotations

import http.client
import io
import threading
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

RETRIES = 4                      # tries per image after the first, for errors worth retrying at once
BACKOFF_SECONDS = 0.5            # wait 0.5, 1, 2, 4 s between tries
READ_TIMEOUT_SECONDS = 30.0      # the longest one connect or one read may wait
IMAGE_DEADLINE_SECONDS = 60.0    # one image, all tries together (COCO's are ~160 kB)
MAX_IMAGE_BYTES = 20_000_000     # COCO's largest JPEG is under 1 MB
MAX_IMAGE_PIXELS = 25_000_000    # 5000 x 5000; COCO's are at most 640 x 640
CHUNK = 1 << 16
PERMANENT_HTTP = (404, 410)      # the server says the id is not there
RETRY_NOW_HTTP = (408, 429, 500, 502, 503, 504)   # worth another try in a moment


class FetchFailed(Exception):
    """One image could not be had; ``reason`` says why, ``permanent`` whether trying again can help.

    ``network`` marks a failure where the server was not heard from properly
    (refused, reset, timed out): many of them in a row mean it is unreachable.
    """

    def __init__(self, reason: str, permanent: bool = False, network: bool = False, retry_now: bool | None = None):
        super().__init__(reason)
        self.reason, self.permanent, self.network = reason, permanent, network
        self.retry_now = network if retry_now is None else retry_now   # worth another try in a moment


class Stopped(Exception):
    """The ``stop`` event was set (Ctrl-C, or the run gave up): drop this image, quietly."""


class ImageTooLarge(ValueError):
    """An image whose header promises more pixels than :data:`MAX_IMAGE_PIXELS`."""


def is_web_page(content_type: str) -> bool:
    """``text/html; charset=utf-8`` -> True: a page for a person, not an image.

    >>> is_web_page("text/html; charset=utf-8"), is_web_page("image/jpeg")
    (True, False)
    """
    return content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")


def fetch_image(url: str, timeout: float | None = None, deadline_seconds: float | None = None,
                stop: threading.Event | None = None, heard=None) -> tuple[bytes, str]:
    """``(body, content type)`` of ``url``, or :class:`FetchFailed` (see the module docstring).

    Network errors and 408/429/5xx are retried with back-off while the
    deadline allows; a dropped transfer resumes with ``Range``. ``heard()`` is
    called whenever the server sends something (the caller's watchdog for a
    silent server).
    """
    timeout = READ_TIMEOUT_SECONDS if timeout is None else timeout
    deadline = time.monotonic() + (IMAGE_DEADLINE_SECONDS if deadline_seconds is None else deadline_seconds)
    stop = stop or threading.Event()
    heard = heard or (lambda: None)
    received, content_type = bytearray(), ""
    error = FetchFailed("no try was made", network=True)
    for attempt in range(RETRIES + 1):
        if stop.is_set():
            raise Stopped
        try:
            content_type = _one_try(url, received, timeout, deadline, stop, heard) or content_type
            if not received:
                raise FetchFailed("the server sent an empty body (0 bytes)", retry_now=True)
            return bytes(received), content_type
        except FetchFailed as err:
            if not err.retry_now:
                raise               # a 404, a web page, a 403: the same answer a second from now
            error = err
        pause = BACKOFF_SECONDS * 2 ** attempt
        if attempt == RETRIES or time.monotonic() + pause >= deadline:
            break
        if stop.wait(pause):
            raise Stopped
    tries = attempt + 1
    raise FetchFailed(f"{error.reason} (after {tries} {'try' if tries == 1 else 'tries'})", network=error.network)


def _one_try(url: str, received: bytearray, timeout: float, deadline: float, stop, heard) -> str:
    """One request, appending to ``received``; returns the content type or raises :class:`FetchFailed`."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchFailed(f"no complete answer within {IMAGE_DEADLINE_SECONDS:g} s", network=True)
    request = urllib.request.Request(url, headers={"User-Agent": "clip-from-scratch"})
    if received:
        request.add_header("Range", f"bytes={len(received)}-")
    try:
        with urllib.request.urlopen(request, timeout=min(timeout, left)) as response:
            heard()
            content_type = response.headers.get("Content-Type", "")
            if is_web_page(content_type):
                raise FetchFailed(f"the server sent a web page ({content_type.split(';')[0]}) instead of the image: "
                                  f"a quota, login or error page")
            if received and response.status != 206:
                received.clear()              # the server ignored Range: start over
            length = response.headers.get("Content-Length")
            expected = len(received) + int(length) if length is not None else None
            if expected is not None and expected > MAX_IMAGE_BYTES:
                raise FetchFailed(f"too large: {expected:,} bytes (the limit is {MAX_IMAGE_BYTES:,})", permanent=True)
            # read1: whatever one read brings, so the deadline is checked even when bytes trickle in.
            while block := response.read1(CHUNK):
                heard()
                received.extend(block)
                if len(received) > MAX_IMAGE_BYTES:
                    raise FetchFailed(f"too large: over {MAX_IMAGE_BYTES:,} bytes", permanent=True)
                if time.monotonic() > deadline:
                    raise FetchFailed(f"no complete answer within {IMAGE_DEADLINE_SECONDS:g} s "
                                      f"({len(received):,} bytes came)", network=True)
        if expected is not None and len(received) != expected:
            raise FetchFailed(f"got {len(received)} of {expected} bytes", network=True)
        return content_type
    except urllib.error.HTTPError as err:
        heard()
        err.close()
        permanent = err.code in PERMANENT_HTTP
        raise FetchFailed(f"missing on the server (HTTP {err.code})" if permanent else f"HTTP {err.code}",
                          permanent=permanent, retry_now=err.code in RETRY_NOW_HTTP) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise FetchFailed(f"{type(reason).__name__ if isinstance(reason, Exception) else 'error'}: {reason}"
                          .replace("TimeoutError: timed out", "timed out"), network=True) from None


def decode_and_resize(data: bytes, resolution: int) -> np.ndarray:
    """Image bytes -> uint8 ``[3, resolution, resolution]``: RGB, shorter side resized, centre crop.

    The size in the file's header is checked before any pixel is decoded: a
    17 kB PNG can claim 12000 x 12000 pixels (400 MB decoded).

    >>> buffer = io.BytesIO(); Image.new("L", (40, 30), 200).save(buffer, "JPEG")
    >>> pixels = decode_and_resize(buffer.getvalue(), 8)
    >>> pixels.shape, int(pixels[0, 4, 4]), int(pixels[2, 4, 4])
    ((3, 8, 8), 200, 200)
    """
    image = Image.open(io.BytesIO(data))          # reads the header only; the format comes from the bytes
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"too large: {width} x {height} pixels (the limit is {MAX_IMAGE_PIXELS:,})")
    # Let the JPEG decoder shrink by 2, 4 or 8 on the way, keeping at least twice the target size,
    # so the bicubic resize below still has the detail to antialias from. A no-op for other formats.
    image.draft(image.mode, (2 * resolution, 2 * resolution))
    image = image.convert("RGB")                  # L, CMYK, P, RGBA -> RGB; raises on a truncated file
    image = TF.resize(image, resolution, interpolation=InterpolationMode.BICUBIC)   # shorter side
    image = TF.center_crop(image, resolution)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)   # [H, W, 3] -> [3, H, W]


def decode_failure(err: Exception, content_type: str) -> FetchFailed:
    """Why an image that arrived could not be decoded, and whether that is final.

    Only an answer that called itself an image (``image/*``, or bytes with no
    claim) is final; anything else may be a proxy's page in disguise.

    >>> decode_failure(OSError("truncated"), "image/jpeg").permanent
    True
    >>> decode_failure(OSError("cannot identify"), "text/plain").reason
    'not an image (text/plain)'
    """
    if isinstance(err, ImageTooLarge):
        return FetchFailed(str(err), permanent=True)
    kind = content_type.split(";")[0].strip().lower()
    if not kind or kind.startswith("image/") or kind in ("application/octet-stream", "binary/octet-stream"):
        return FetchFailed("undecodable", permanent=True)
    return FetchFailed(f"not an image ({kind})")
