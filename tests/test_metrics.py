"""/metrics parses as Prometheus text and its counters move while a stream plays."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_pantau
from tests.support import camera_entry, decode_stream


def scrape(instance) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = instance.request("GET", "/metrics")
    assert status == 200
    text = body.decode() if isinstance(body, bytes) else str(body)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_move_while_stream_plays(gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url("/aac"))])
    before = scrape(instance)

    decode_stream(f"{instance.base}/live/cam.flv", frames=30)
    after = scrape(instance)

    assert value(before, "pantau_camera_state", camera_id="cam", state="idle") == 1
    assert value(after, "pantau_ingest_bytes_total", camera_id="cam") > 200_000
    assert value(after, "pantau_ingest_frames_total", camera_id="cam") >= 30
    assert value(after, "pantau_egress_bytes_total", camera_id="cam", output="flv") > 200_000
    assert value(after, "pantau_camera_reconnects_total", camera_id="cam") == 0
    assert value(after, "process_resident_memory_bytes") > 10_000_000
    assert value(after, "process_cpu_seconds_total") > 0


def test_metrics_cover_hls_probe_and_recording(gst, pantau, tmp_path):
    import time

    from tests.support import decode_stream as decode

    instance = start_pantau(
        pantau,
        tmp_path,
        [camera_entry("rec", gst.url("/d1"), mode="always", record=True)],
        PANTAU_SEGMENT_SECONDS="2",
        PANTAU_PROBE_INTERVAL_HOURS="24",
        PANTAU_PROBE_WINDOW_SECONDS="2",
    )
    instance.wait_state("rec", "live")
    decode(f"{instance.base}/live/rec/index.m3u8", frames=20)
    time.sleep(6)

    samples = scrape(instance)

    assert value(samples, "pantau_hls_egress_bytes_total", camera_id="rec", format="fmp4") > 50_000
    assert value(samples, "pantau_recording_bytes_total", camera_id="rec") > 100_000
    assert value(samples, "pantau_recording_segments_total", camera_id="rec") >= 1
    assert value(samples, "pantau_recording_queue_bytes") >= 0
    assert value(samples, "pantau_retention_deleted_segments_total", reason="age") == 0
    assert value(samples, "pantau_probe_pixels", camera_id="rec") == 768 * 576
    assert value(samples, "pantau_compliance_status", camera_id="rec", status="exempt") == 1
