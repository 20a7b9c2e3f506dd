"""Output timestamps stay monotonic whatever the camera's RTP clock does."""

from __future__ import annotations

from relay.timeline import CameraTimeline, DecodeTimestamps, TrackClock

FRAME = 6000  # 15 fps at 90 kHz


class Jumps:
    def __init__(self) -> None:
        self.events: list[tuple[str, float, str]] = []

    def __call__(self, track: str, seconds: float, kind: str) -> None:
        self.events.append((track, seconds, kind))


def run_clock(rtp_values: list[int], arrival_step: float = 1 / 15) -> tuple[list[int], Jumps]:
    jumps = Jumps()
    clock = TrackClock(CameraTimeline(), 90000, "video", jumps)
    out = [clock.map(value, index * arrival_step, FRAME) for index, value in enumerate(rtp_values)]
    return out, jumps


def test_steady_stream_maps_one_to_one():
    out, jumps = run_clock([1000 + i * FRAME for i in range(10)])

    assert [b - a for a, b in zip(out, out[1:], strict=False)] == [FRAME] * 9
    assert jumps.events == []


def test_wraparound_is_not_a_jump():
    start = 0xFFFFFFFF - 2 * FRAME
    out, jumps = run_clock([(start + i * FRAME) & 0xFFFFFFFF for i in range(6)])

    assert [b - a for a, b in zip(out, out[1:], strict=False)] == [FRAME] * 5
    assert jumps.events == []


def test_backward_jump_is_rebased_once():
    values = [500_000 + i * FRAME for i in range(5)] + [1000 + i * FRAME for i in range(5)]
    out, jumps = run_clock(values)

    assert all(b > a for a, b in zip(out, out[1:], strict=False))
    assert len(jumps.events) == 1
    assert jumps.events[0][2] == "jump"
    assert jumps.events[0][1] < -1


def test_forward_jump_is_rebased_once():
    values = [1000 + i * FRAME for i in range(5)] + [1000 + 3600 * 90000 + i * FRAME for i in range(5)]
    out, jumps = run_clock(values)

    assert all(0 < b - a <= 2 * FRAME for a, b in zip(out, out[1:], strict=False))
    assert len(jumps.events) == 1
    assert jumps.events[0][1] > 3000


def test_single_outlier_restores_mapping():
    values = [1000 + i * FRAME for i in range(5)]
    values.append(1000 + 7 * 3600 * 90000)  # one frame hours away
    values += [1000 + i * FRAME for i in range(6, 10)]
    out, jumps = run_clock(values)

    assert all(b > a for a, b in zip(out, out[1:], strict=False))
    assert [kind for _, _, kind in jumps.events] == ["jump", "outlier"]
    # After the outlier the original spacing continues.
    assert out[-1] - out[-2] == FRAME


def test_reconnect_continues_the_line():
    timeline = CameraTimeline()
    jumps = Jumps()
    first = TrackClock(timeline, 90000, "video", jumps)
    last = 0
    for index in range(10):
        last = first.map(123 + index * FRAME, index / 15, FRAME)
        timeline.advance(last, index / 15)
    timeline.new_session()
    second = TrackClock(timeline, 90000, "video", jumps)

    resumed = second.map(987_654, 10 / 15 + 5.0, FRAME)  # a new random base, 5 s later

    assert resumed > last
    assert abs((resumed - last) - 5 * 90000) < 2 * FRAME


def test_decode_timestamps_without_reordering_equal_pts():
    dts = DecodeTimestamps(0, FRAME)

    pairs = [dts.compute(i * FRAME, i % 30 == 0) for i in range(60)]

    assert all(d == p for d, p in pairs)


def test_decode_timestamps_with_b_frames():
    # Decode order I0 P3 B1 B2 P6 B4 B5 ..., presentation in frame units.
    order = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8, 12, 10, 11]
    dts = DecodeTimestamps(2, FRAME)

    pairs = [dts.compute(pts * FRAME, index == 0) for index, pts in enumerate(order)]

    decode = [d for d, _ in pairs]
    assert all(b > a for a, b in zip(decode, decode[1:], strict=False))
    assert all(d <= p for d, p in pairs)
    assert [p for _, p in pairs] == [pts * FRAME for pts in order]


def test_decode_timestamps_detect_reordering():
    order = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8]
    dts = DecodeTimestamps(None, FRAME)

    pairs = [dts.compute(pts * FRAME, index == 0) for index, pts in enumerate(order)]

    decode = [d for d, _ in pairs]
    assert dts.reorder_frames and dts.reorder_frames >= 1
    assert all(b > a for a, b in zip(decode, decode[1:], strict=False))
    assert all(d <= p for d, p in pairs)
