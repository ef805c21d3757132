"""Small deviations from the contract, on a real server (issue 17, items 14 and 15).

- A WebRTC offer with a garbage DTLS fingerprint is 400 ``bad_sdp`` (it was 200 and a stream living 20 s).
- ``configure`` with ``settings: null`` is a non-fatal ``bad_settings``.
- A 5,000-character multipart boundary is not echoed whole.
- An unmasked client frame closes the socket with 1002 (RFC 6455 §5.1); masked frames split anywhere pass.
- After ``result``, the upload socket waits for the client's close reply (the client sees 1000, not 1006).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from server import appkeys
from server.transport.ws_masking import FrameBoundaries
from server.webrtc.messages import OfferRefused, check_fingerprints
from testkit.webrtc_client import ArrayTrack, WebRtcClient
from tests.stream_client import Publisher

SILENCE = np.zeros(48000, np.float32)


def with_fingerprint(sdp: str, value: str) -> str:
    return "\r\n".join(f"a=fingerprint:{value}" if line.startswith("a=fingerprint:") else line
                       for line in sdp.split("\r\n"))


@pytest.mark.parametrize("fingerprint", [
    "sha-256 00:11", "sha-256 " + "zz:" * 31 + "zz", "sha-256 garbage", "sha-1 " + "AB:" * 19 + "AB",
    "sha-256 " + "AB" * 32, "md5 " + "AB:" * 15 + "AB", "sha-256 " + "AB:" * 40 + "AB",
])
async def test_an_offer_with_a_garbage_fingerprint_is_bad_sdp(server: TestServer,
                                                              http: aiohttp.ClientSession,
                                                              fingerprint: str) -> None:
    client = WebRtcClient.offerer(ArrayTrack(SILENCE))
    offer_url = server.make_url("/api/v3/webrtc/offer")
    try:
        sdp = with_fingerprint(await client.offer_sdp(), fingerprint)
        async with http.post(offer_url, json={"sdp": sdp, "type": "offer"}) as r:
            body = await r.json()
            assert (r.status, body["error"]["code"]) == (400, "bad_sdp"), body
            assert "fingerprint" in body["error"]["message"]
        assert len(server.app[appkeys.WEBRTC].peers) == 0
        assert len(server.app[appkeys.STREAMS].registry) == 0
        good = await client.offer_sdp()  # the untouched offer is still taken
        async with http.post(offer_url, json={"sdp": good, "type": "offer"}) as r:
            assert r.status == 200
    finally:
        await client.close()


@settings(max_examples=300, deadline=None)
@given(algorithm=st.sampled_from(["sha-256", "sha-384", "sha-512", "SHA-256", "sha-1", "md5", "x"]),
       value=st.one_of(st.text(max_size=200), st.binary(min_size=1, max_size=70).map(
           lambda b: ":".join(f"{x:02X}" for x in b))))
def test_a_fingerprint_is_accepted_only_when_some_certificate_could_match(algorithm: str, value: str) -> None:
    lengths = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
    parts = value.split(":")
    well_formed = all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)
    expected = well_formed and lengths.get(algorithm.lower()) == len(parts)
    try:
        check_fingerprints("audio", [(algorithm, value)])
        accepted = True
    except OfferRefused as exc:
        assert exc.code == "bad_sdp" and len(exc.message) < 600
        accepted = False
    assert accepted == expected, (algorithm, value)


async def test_configure_with_null_settings_is_refused_and_the_stream_goes_on(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    publisher = await Publisher.open(http, server)
    started = await publisher.start(16000)
    await publisher.send({"type": "configure", "settings": None})
    error = await publisher.receive()
    assert (error["type"], error["code"]) == ("error", "bad_settings"), error
    await publisher.send({"type": "configure", "settings": {"threshold": 2.0}})
    assert (await publisher.receive())["type"] == "configured"
    messages = await publisher.stop()
    assert messages[0]["type"] in ("stopped", "status") and started["stream_id"]
    assert messages[-1]["type"] == "<closed>" and messages[-1].get("code", 1000) == 1000


async def test_a_long_multipart_boundary_is_not_echoed_whole(server: TestServer,
                                                             http: aiohttp.ClientSession) -> None:
    boundary = "b" * 5000
    body = (b"--other\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
            b"abc\r\n--other--\r\n")
    async with http.post(server.make_url("/api/v3/analysis"), data=body,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}) as resp:
        error = (await resp.json())["error"]
    assert (resp.status, error["code"]) == (400, "bad_multipart")
    assert len(error["message"]) < 400 and "b" * 300 not in error["message"], len(error["message"])
    async with http.post(server.make_url("/api/v3/analysis"), data=b"x",
                         headers={"Content-Type": "text/" + "y" * 5000}) as resp:
        error = (await resp.json())["error"]
    assert (resp.status, error["code"]) == (400, "not_multipart") and len(error["message"]) < 400


def frame(opcode: int, payload: bytes, masked: bool, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    if len(payload) < 126:
        head += bytes([mask_bit | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", len(payload))
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def raw_websocket(server: TestServer, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def read_frames(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """Server frames (never masked) until the server's close frame or the end of the connection."""
    frames = []
    while True:
        try:
            first, second = await asyncio.wait_for(reader.readexactly(2), 30)
        except asyncio.IncompleteReadError:
            return frames
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", await reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await reader.readexactly(8))[0]
        frames.append((first & 0x0F, await reader.readexactly(length)))
        if first & 0x0F == 0x8:
            return frames


START = json.dumps({"type": "start", "sample_rate": 16000, "channels": 1, "encoding": "pcm_f32le"}).encode()


@pytest.mark.parametrize("path", ["/api/v3/stream", "/api/v3/upload"])
@pytest.mark.parametrize("unmasked_at", [0, 1])
async def test_an_unmasked_client_frame_closes_with_1002(server: TestServer, path: str,
                                                         unmasked_at: int) -> None:
    reader, writer = await raw_websocket(server, path)
    frames = [frame(0x1, START, masked=True), frame(0x2, b"\x00" * 64, masked=True)]
    frames[unmasked_at] = frame(0x1, START, masked=False) if unmasked_at == 0 else frame(0x2, b"\x00" * 64,
                                                                                         masked=False)
    writer.write(b"".join(frames))
    await writer.drain()
    received = await read_frames(reader)
    writer.close()
    close = [payload for opcode, payload in received if opcode == 0x8]
    assert close and struct.unpack("!H", close[0][:2])[0] == 1002, received
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/healthz")) as resp:
        assert resp.status == 200


async def test_masked_frames_split_at_every_byte_are_taken(server: TestServer) -> None:
    reader, writer = await raw_websocket(server, "/api/v3/stream")
    data = frame(0x1, START, masked=True) + frame(0x2, b"\x00" * 70_000, masked=True) + \
        frame(0x1, b'{"type": "stop"}', masked=True)
    for i in range(0, len(data), 997):  # odd-sized reads cut headers, lengths and keys
        writer.write(data[i:i + 997])
        await writer.drain()
    received = await read_frames(reader)
    writer.write(frame(0x8, struct.pack("!H", 1000), masked=True))
    writer.close()
    texts = [json.loads(payload) for opcode, payload in received if opcode == 0x1]
    assert texts[0]["type"] == "started" and "stopped" in [t["type"] for t in texts], texts
    assert struct.unpack("!H", received[-1][1][:2])[0] == 1000


frames_strategy = st.lists(st.tuples(st.sampled_from([0x1, 0x2, 0x9, 0xA]), st.integers(0, 70_000),
                                     st.booleans()), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(frames=frames_strategy, cuts=st.lists(st.integers(1, 5000), max_size=30))
def test_frame_boundaries_find_the_first_unmasked_frame(frames: list[tuple[int, int, bool]],
                                                        cuts: list[int]) -> None:
    data = b"".join(frame(op, b"\x01" * (min(n, 125) if op > 7 else n), masked) for op, n, masked in frames)
    boundaries = FrameBoundaries()
    at = 0
    for cut in cuts:
        boundaries.feed(data[at:at + cut])
        at += cut
    boundaries.feed(data[at:])
    assert boundaries.unmasked == (not all(masked for _, _, masked in frames))
    if not boundaries.unmasked:  # every boundary followed through the cuts: the stream ends on one
        assert boundaries.between_frames
        boundaries.feed(data[:1])
        assert not boundaries.between_frames


async def test_after_result_the_upload_socket_waits_for_the_close_reply(server: TestServer) -> None:
    wav = b"RIFF" + struct.pack("<I", 36 + 32000) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", 32000) + b"\x00" * 32000
    reader, writer = await raw_websocket(server, "/api/v3/upload")
    upload = json.dumps({"type": "upload", "filename": "a.wav", "size": len(wav)}).encode()
    writer.write(frame(0x1, upload, masked=True) + frame(0x2, wav, masked=True) +
                 frame(0x1, b'{"type": "end"}', masked=True))
    await writer.drain()
    received = await read_frames(reader)
    kinds = [json.loads(payload)["type"] for opcode, payload in received if opcode == 0x1]
    assert kinds[-1] == "result", kinds
    assert received[-1][0] == 0x8 and struct.unpack("!H", received[-1][1][:2])[0] == 1000, received[-1]
    # The server has sent its close frame; it must now wait for ours, not drop the connection (which a
    # client sees as 1006 when its reply meets a reset).
    with pytest.raises(TimeoutError):
        dropped = await asyncio.wait_for(reader.read(1), 0.5)
        pytest.fail(f"the server dropped the connection before the close reply ({dropped!r})")
    writer.write(frame(0x8, struct.pack("!H", 1000), masked=True))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 30) == b""  # then it closes
    writer.close()
