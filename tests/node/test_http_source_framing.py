"""httpSource's request framing over raw sockets: every header combination a proxy in
front could read differently (request smuggling) is answered 400 and closed, counted as
``refused_framing``; chunked bodies stay 411."""
from __future__ import annotations

import logging
import socket
import threading

import pytest

from flume_og.node.builder import build_source
from flume_og.node.spec import parse_source

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def src(ctx):
    s = build_source(parse_source('httpSource(0, bind="127.0.0.1")'))
    s.open(ctx)
    taken: list = []

    def consume():
        while (batch := s.next_batch(0.05)) is not None:
            taken.extend(batch)
    threading.Thread(target=consume, daemon=True).start()
    s.taken = taken
    yield s
    s.close()


def exchange(port: int, data: bytes) -> list[tuple[int, bytes]]:
    """Send ``data``, half-close, and read until the server closes: every answer's
    (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := c.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    answers = []
    while out:
        head, _, rest = out.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
                      if k.strip().lower() == b"content-length")
        answers.append((int(lines[0].split()[1]), rest[:length]))
        out = rest[length:]
    return answers


SMUGGLE = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
           b"POST / HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nabc\n")


def post(length_headers: bytes, body: bytes = b"one\n") -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n" + length_headers
            + b"\r\n" + body)


def test_content_length_with_transfer_encoding_is_400_and_nothing_is_taken(src):
    answers = exchange(src.port, SMUGGLE)
    assert [code for code, _ in answers] == [400]       # the second request is never read
    assert b'"reason": "framing"' in answers[0][1] and b"ambiguous" in answers[0][1]
    assert src.metrics["refused_framing"] == 1
    assert src.metrics.get("bytes_in", 0) == 0 and src.taken == []


@pytest.mark.parametrize("headers", [
    b"Content-Length: 4\r\nContent-Length: 100\r\n",       # the first used to win
    b"Content-Length: 4\r\nContent-Length: 4\r\n",
    b"Content-Length: 4, 4\r\n",
    b"Content-Length: 1_0\r\n",                            # int() reads 10
    b"Content-Length: +4\r\n",
    b"Content-Length: -4\r\n",
    b"Content-Length: 0x4\r\n",
    b"Content-Length: \xb2\r\n",                           # a digit to str.isdigit()
    b"Content-Length: \x0c4\r\n",                          # whitespace to int()
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
], ids=lambda h: h.decode("latin-1").strip())
def test_ambiguous_or_unplain_lengths_are_400_and_closed(src, headers, caplog):
    answers = exchange(src.port, post(headers) + post(b"Content-Length: 4\r\n"))
    assert [code for code, _ in answers] == [400], answers
    assert b'"reason": "framing"' in answers[0][1]
    assert src.metrics["refused_framing"] == 1 and src.metrics["refused"] == 1
    assert src.taken == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_chunked_alone_is_still_411_and_a_huge_length_413(src):
    body = b"4\r\none\n\r\n0\r\n\r\n"
    answers = exchange(src.port, post(b"Transfer-Encoding: chunked\r\n", body))
    assert [code for code, _ in answers] == [411]
    assert src.metrics["refused_no_length"] == 1
    answers = exchange(src.port, post(b"Content-Length: " + b"9" * 5000 + b"\r\n"))
    assert [code for code, _ in answers] == [413]
    assert src.metrics["refused_request_bytes"] == 1


def test_plain_lengths_still_work_with_spaces_and_leading_zeros(src):
    answers = exchange(src.port, post(b"Content-Length:  004 \r\n")
                       + post(b"Content-Length: 4\r\n", b"two\n"))
    assert answers == [(200, b'{"accepted": 1}\n'), (200, b'{"accepted": 1}\n')]
    assert [e.body for e in src.taken] == [b"one", b"two"]
    assert "refused" not in src.metrics
