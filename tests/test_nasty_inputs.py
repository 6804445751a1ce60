"""Hostile requests on the wire, against one live server: oversized and compressed bodies,
broken encodings, deep nesting, feedback and routing abuse.

Each gets a precise 4xx ``{"error": ...}`` naming the problem and is counted in
vigil_request_errors_total; afterwards the server is still ready and its memory did not balloon.
The last test of the module checks that (pytest runs a module's tests in file order).
"""

from __future__ import annotations

import gzip
import http.client
import json
import shutil
import socket
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.iolog.reader import read_rejected
from service.settings import Settings
from tests.conftest import MODEL
from tests.servers import VigilServer, start_vigil

MAX_BODY = 8 * 1024 * 1024  # VIGIL_MAX_BODY_BYTES default
V1 = f"/v1/models/{MODEL}/predict"
V2 = f"/v2/models/{MODEL}/infer"
FEEDBACK = "/v1/feedback"
JSON = {"content-type": "application/json"}
RSS_GROWTH_LIMIT = 150 * 1024 * 1024
Row = dict[str, float]


@dataclass
class Live:
    server: VigilServer
    home: Path
    client: httpx.Client
    row: Row
    rss_before: int
    errors_before: float
    rejected: list[str] = field(default_factory=list)

    def post(self, path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        r = self.client.post(path, content=content, headers=headers)
        if r.status_code >= 400 and path != "/nowhere":
            self.rejected.append(path)
        return r


def _errors_total(text: str) -> float:
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "vigil_request_errors"
        for s in fam.samples
        if s.name == "vigil_request_errors_total"
    )


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
    _demo_store_template: Path,
    demo: tuple[object, object, list[str]],
) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("nasty")
    shutil.copytree(_demo_store_template, home / "models")
    server = start_vigil(home)
    frame = demo[0]
    row: Row = frame.iloc[0].to_dict()  # type: ignore[attr-defined]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        # Warm up first: the baseline RSS includes what any serving process holds.
        for _ in range(50):
            assert client.post(V1, json={"instances": [row] * 20}).status_code == 200
        rss = psutil.Process(server.proc.pid).memory_info().rss
        errors = _errors_total(client.get("/metrics").text)
        yield Live(server, home, client, row, rss, errors)
    server.stop()


def _check(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    for word in words:
        assert word in body["error"], f"{word!r} not in {body['error']!r}"


# -- body size -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [V1, V2, FEEDBACK])
def test_10mb_body_with_content_length_is_413(live: Live, path: str) -> None:
    body = b'{"instances": [' + b" " * (10 * 1024 * 1024) + b"]}"
    _check(live.post(path, body, JSON), 413, "exceed the limit of 8388608")


@pytest.mark.parametrize("path", [V1, V2])
def test_10mb_chunked_body_is_cut_at_the_limit(live: Live, path: str) -> None:
    """No Content-Length: the server stops reading once the limit is passed."""

    def chunks() -> Iterator[bytes]:
        yield b'{"instances": ['
        for _ in range(10 * 16):
            yield b" " * 65536
        yield b"]}"

    r = live.client.post(path, content=chunks(), headers=JSON)
    live.rejected.append(path)
    _check(r, 413, "more than 8388608 bytes")


def test_million_row_v1_batch_is_413(live: Live) -> None:
    """1e6 rows (~0.8 GB) streamed: refused once 8 MiB have arrived, never parsed."""
    row = orjson.dumps(live.row)

    def rows() -> Iterator[bytes]:
        yield b'{"instances": [' + row
        for _ in range(1_000_000 // 1000):
            yield b"," + b",".join([row] * 1000)
        yield b"]}"

    r = live.client.post(V1, content=rows(), headers=JSON)
    live.rejected.append(V1)
    _check(r, 413, "more than 8388608 bytes")


@pytest.mark.parametrize("path", [V1, V2, FEEDBACK])
def test_declared_length_over_the_limit_is_refused_before_reading(live: Live, path: str) -> None:
    # http.client, unlike httpx, lets a client lie about the length it will send.
    url = urlsplit(live.server.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "800000000")
        conn.endheaders(b"{}")
        resp = conn.getresponse()
        status, body = resp.status, orjson.loads(resp.read())
    finally:
        conn.close()
    live.rejected.append(path)
    assert status == 413, body
    assert "800000000 bytes exceed the limit" in body["error"]


def _body_14mb(chunked: bool) -> bytes | Iterator[bytes]:
    body = b'{"instances": [' + b" " * (14 * 1024 * 1024) + b"]}"
    if not chunked:
        return body
    return (body[i : i + 65536] for i in range(0, len(body), 65536))


def _urllib_post(url: str, body: bytes | Iterator[bytes]) -> tuple[int, dict[str, str]]:
    """urllib sends the whole body before it reads the answer (chunked when it is an iterator)."""
    request = urllib.request.Request(url, data=body, headers=JSON, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def _httpx_post(url: str, body: bytes | Iterator[bytes]) -> tuple[int, dict[str, str]]:
    r = httpx.post(url, content=body, headers=JSON, timeout=60)
    return r.status_code, r.json()


@pytest.mark.parametrize("post", [_urllib_post, _httpx_post], ids=["urllib", "httpx"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", [V1, V2, FEEDBACK])
def test_a_14mb_body_gets_its_413_not_a_connection_reset(
    live: Live, path: str, chunked: bool, post: Callable[..., tuple[int, dict[str, str]]]
) -> None:
    """The rest of a too-large body is read and dropped (VIGIL_BODY_DRAIN_BYTES), so clients
    that only read once they have sent everything receive the answer."""
    status, body = post(live.server.url + path, _body_14mb(chunked))
    live.rejected.append(path)
    assert status == 413, body
    assert set(body) == {"error"} and "8388608" in body["error"], body


def test_after_a_refused_body_the_connection_serves_the_next_request(live: Live) -> None:
    url = urlsplit(live.server.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=60)
    try:
        conn.request("POST", V1, body=_body_14mb(chunked=False), headers=JSON)
        refused = conn.getresponse()
        assert refused.status == 413, refused.read()
        refused.read()
        sock = conn.sock
        conn.request("POST", V1, body=orjson.dumps({"instances": [live.row]}), headers=JSON)
        assert conn.getresponse().status == 200
        assert conn.sock is sock, "the server closed the connection after the 413"
    finally:
        conn.close()
    live.rejected.append(V1)


def test_million_row_v2_batch_compressed_is_413_not_inflated(live: Live) -> None:
    """1e6 x 30 zeros gzip to ~60 KB; inflating stops at the limit, not at 60 MB."""
    n = 1_000_000
    head = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [%d, 30], "data": [' % n
    raw = head + b"0," * (n * 30 - 1) + b"0]}]}"
    body = gzip.compress(raw, compresslevel=9)
    del raw
    assert len(body) < 1024 * 1024
    r = live.post(V2, body, {**JSON, "content-encoding": "gzip"})
    _check(r, 413, "once decompressed")


def test_rows_over_max_rows_within_the_body_limit_is_422(live: Live) -> None:
    body = orjson.dumps({"instances": [live.row] * 10_001})
    assert len(body) < MAX_BODY
    _check(live.post(V1, body, JSON), 422, "10001 rows exceed the limit of 10000")


# -- encodings -------------------------------------------------------------------------------


def test_gzip_body_with_header_is_served(live: Live) -> None:
    body = gzip.compress(orjson.dumps({"instances": [live.row]}))
    r = live.client.post(V1, content=body, headers={**JSON, "content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] in ("malignant", "benign")


@pytest.mark.parametrize(
    ("body", "encoding", "status", "words"),
    [
        (b'{"instances": []}', "gzip", 400, ("Content-Encoding says gzip", "not gzip")),
        (b"\x1f\x8b\x08\x00garbage", "gzip", 400, ("gzip",)),
        (gzip.compress(b'{"instances": []}')[:-12], "gzip", 400, ("truncated gzip",)),
        (zlib.compress(b'{"instances": []}'), "deflate", 415, ("Content-Encoding", "gzip")),
        (b'{"instances": []}', "br", 415, ("'br'",)),
        (b'{"instances": []}', "gzip, gzip", 415, ("Content-Encoding",)),
        (gzip.compress(b'{"instances": []}'), "", 400, ("malformed JSON",)),
        (gzip.compress(b'{"instances": []}'), "identity", 400, ("malformed JSON",)),
    ],
    ids=[
        "gzip-header-plain-body",
        "gzip-magic-then-garbage",
        "gzip-truncated",
        "deflate",
        "brotli",
        "double-gzip",
        "gzip-body-no-header",
        "gzip-body-identity",
    ],
)
@pytest.mark.parametrize("path", [V1, V2])
def test_wrong_encoding_is_a_precise_4xx(
    live: Live, path: str, body: bytes, encoding: str, status: int, words: tuple[str, ...]
) -> None:
    headers = {**JSON, "content-encoding": encoding} if encoding else JSON
    _check(live.post(path, body, headers), status, *words)


@pytest.mark.parametrize(
    ("content_type", "status", "word"),
    [
        ("text/plain", 415, "Content-Type"),
        ("application/xml", 415, "'application/xml'"),
        ("multipart/form-data; boundary=b", 415, "Content-Type"),
        ("application/x-www-form-urlencoded", 415, "Content-Type"),
        ("application/json", 400, "empty"),
    ],
)
@pytest.mark.parametrize("path", [V1, V2, FEEDBACK])
def test_content_type_and_empty_body(
    live: Live, path: str, content_type: str, status: int, word: str
) -> None:
    _check(live.post(path, b"", {"content-type": content_type}), status, word)


@pytest.mark.parametrize("path", [V1, V2, FEEDBACK])
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, ("malformed JSON",)),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, ("malformed JSON",)),
        (b"\xef\xbb\xbf{}", ("malformed JSON",)),  # a BOM is not JSON
        (b"\x00" * 1000, ("malformed JSON",)),
    ],
    ids=["deep-arrays", "deep-objects", "bom", "nul-bytes"],
)
def test_hostile_json_is_400(live: Live, path: str, body: bytes, words: tuple[str, ...]) -> None:
    _check(live.post(path, body, JSON), 400, *words)


# -- feedback ----------------------------------------------------------------------------------


def _fb(**changes: object) -> list[dict[str, object]]:
    item: dict[str, object] = {"request_id": "r-1", "row": 0, "label": "benign"}
    item.update(changes)
    return [{k: v for k, v in item.items() if v is not ...}]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"request_id": "r", "label": "benign"}, 422, ("array",)),
        ([], 422, ("empty",)),
        ([None], 422, ("[0]", "object")),
        (_fb(request_id=...), 422, ("request_id", "missing")),
        (_fb(request_id=""), 422, ("request_id",)),
        (_fb(request_id="x" * 10_000), 422, ("request_id", "128")),
        (_fb(request_id=7), 422, ("request_id",)),
        (_fb(row=-1), 422, ("row",)),
        (_fb(row=1.5), 422, ("row",)),
        (_fb(row=True), 422, ("row",)),
        (_fb(row=10**30), 422, ("row",)),
        (_fb(label=None), 422, ("label",)),
        (_fb(label=1), 422, ("label",)),
        (_fb(label="maybe"), 422, ("label", "'maybe'", "malignant")),
        (_fb(label="bénign\x00"), 422, ("label",)),
        (_fb(extra=1), 422, ("unknown field", "'extra'")),
        (_fb(model=3), 422, ("model",)),
        (_fb(model="no-such-model"), 404, ("no-such-model",)),
        (_fb() * 10_001, 422, ("10001", "limit")),
    ],
)
def test_bad_feedback_gets_a_precise_4xx(
    live: Live, body: object, status: int, words: tuple[str, ...]
) -> None:
    # The stdlib encoder: one case holds an integer beyond 64 bits that orjson refuses to write.
    _check(live.post(FEEDBACK, json.dumps(body).encode(), JSON), status, *words)


def test_feedback_duplicate_keys_are_refused(live: Live) -> None:
    body = b'[{"request_id": "r", "label": "benign", "label": "malignant"}]'
    _check(live.post(FEEDBACK, body, JSON), 400, "duplicate key 'label'")


# -- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "endpoint"),  # endpoint: the one the request reaches, if any
    [
        ("POST", "/nowhere", 404, None),
        ("GET", V1, 405, None),
        ("PUT", V2, 405, None),
        ("DELETE", FEEDBACK, 405, None),
        ("POST", "/v1/models/" + "m" * 5000 + "/predict", 404, V1),
        ("POST", f"/v1/models/{MODEL}/versions/" + "9" * 5000 + "/predict", 404, V1),
        ("POST", "/v1/models/%00%01%1b[31m/predict", 404, None),  # control chars: no route
        ("POST", "/v1/models/..%2F..%2Fetc/predict", 404, None),
    ],
)
def test_routing_abuse_is_an_error_object(
    live: Live, method: str, path: str, status: int, endpoint: str | None
) -> None:
    r = live.client.request(method, path, json={"instances": [live.row]})
    if endpoint is not None:
        live.rejected.append(endpoint)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}


# -- slow clients ----------------------------------------------------------------------------


def test_a_stalled_body_is_cut_off_by_the_request_timeout(
    vigil_server: Callable[..., VigilServer],
) -> None:
    """A client that sends half a body and stalls (slowloris) gets a 503, not a held worker."""
    server = vigil_server(env={"VIGIL_REQUEST_TIMEOUT_S": "1"})
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=15)
    try:
        conn.putrequest("POST", V1)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "1000")
        conn.endheaders(b'{"instances": [')
        started = time.monotonic()
        resp = conn.getresponse()
        status, body = resp.status, orjson.loads(resp.read())
    finally:
        conn.close()
    assert status == 503, body
    assert body == {"error": "request timed out"}
    assert time.monotonic() - started < 10
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200


def test_a_client_gone_mid_body_is_logged_as_rejected(live: Live) -> None:
    """Half a body, then the connection closes: a 400 in the log (nobody to answer), no 500."""
    url = urlsplit(live.server.url)
    before = _errors_total(live.client.get("/metrics").text)
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=5) as sock:
        sock.sendall(
            f"POST {V1} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
            + b'{"instances": ['
        )
    live.rejected.append(V1)
    deadline = time.monotonic() + 10
    while _errors_total(live.client.get("/metrics").text) == before:
        assert time.monotonic() < deadline, "the disconnect was never counted"
        time.sleep(0.05)


# -- afterwards ------------------------------------------------------------------------------


def test_after_the_corpus_the_server_is_healthy_and_counted_every_rejection(live: Live) -> None:
    ready = live.client.get("/v2/health/ready")
    assert ready.status_code == 200, ready.text
    r = live.client.post(V1, json={"instances": [live.row]})
    assert r.status_code == 200, r.text
    grown = psutil.Process(live.server.proc.pid).memory_info().rss - live.rss_before
    assert grown < RSS_GROWTH_LIMIT, f"RSS grew by {grown / 2**20:.0f} MiB"
    counted = _errors_total(live.client.get("/metrics").text) - live.errors_before
    # Every rejected prediction/infer/feedback request is counted (routing errors are not:
    # no endpoint was reached), and nothing else is.
    on_endpoints = [p for p in live.rejected if p in (V1, V2, FEEDBACK)]
    assert counted == len(on_endpoints), (counted, len(on_endpoints))
    log = live.server.log()
    assert "unhandled error" not in log
    assert "Traceback" not in log
    # Each rejection is in the I/O log with its status and error, and a bounded body excerpt.
    assert live.server.stop() == 0
    settings = Settings(model_store=live.home / "models", data_dir=live.home / "data")
    rejected = read_rejected(settings)
    assert len(rejected) == len(on_endpoints)
    assert rejected["status"].between(400, 499).all()
    assert (rejected["error"].str.len() > 0).all()
    assert rejected["body"].str.len().max() <= 2048
    assert {413, 415, 422, 400, 404} <= set(rejected["status"])
