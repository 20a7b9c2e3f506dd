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
