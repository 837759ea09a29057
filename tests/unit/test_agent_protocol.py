"""Agent wire format: framing round trips, partial feeds, bad input."""

import pytest

from kubevisor.agent import protocol as p


def test_round_trip_in_pieces():
    data = p.encode_json(1, p.REQUEST, {"op": "ping"}) + p.encode(3, p.DATA, b"x" * 70000, p.FLAG_STDERR)
    dec = p.FrameDecoder()
    frames = []
    for i in range(0, len(data), 7):
        frames += dec.feed(data[i : i + 7])
    assert [(f.stream, f.type, f.flags) for f in frames] == [(1, p.REQUEST, 0), (3, p.DATA, p.FLAG_STDERR)]
    assert frames[0].json() == {"op": "ping"}
    assert frames[1].payload == b"x" * 70000
    assert dec.pending == 0


def test_rejects_oversized_and_unknown():
    dec = p.FrameDecoder()
    with pytest.raises(p.ProtocolError):
        dec.feed(p.HEADER.pack(p.MAX_PAYLOAD + 1, 1, p.DATA, 0))
    with pytest.raises(p.ProtocolError):
        p.FrameDecoder().feed(p.HEADER.pack(0, 1, 99, 0))
    with pytest.raises(p.ProtocolError):
        p.Frame(1, p.REQUEST, 0, b"[1]").json()
