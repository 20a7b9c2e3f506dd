"""Prometheus metrics, read from the service's own counters at scrape time.

Nothing on the packet path touches a Prometheus object: cameras, outputs and
the recorder keep plain integer counters, and :class:`ServiceCollector`
turns them into metric families when ``/metrics`` is scraped. Other modules
add families by appending a callable to ``Service.metric_sources``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from relay.camera import READER_KINDS
from relay.compliance import compliance_of

if TYPE_CHECKING:
    from relay.service import Service

CAMERA_STATES = ("idle", "connecting", "live", "retrying")


class ServiceCollector(Collector):
    """Collect per-camera and per-output metrics from a running service."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        service = self._service
        labels = ["camera_id"]
        state = GaugeMetricFamily(
            "pantau_camera_state", "1 for the camera's current state, 0 for the others.", labels=["camera_id", "state"]
        )
        reconnects = CounterMetricFamily(
            "pantau_camera_reconnects", "Upstream sessions that ended after going live.", labels=labels
        )
        ingest_bytes = CounterMetricFamily("pantau_ingest_bytes", "RTP bytes received from the camera.", labels=labels)
        ingest_frames = CounterMetricFamily("pantau_ingest_frames", "Frames (video and audio) received.", labels=labels)
        corrections = CounterMetricFamily(
            "pantau_timestamp_corrections", "Camera timestamp jumps rebased onto the output timeline.", labels=labels
        )
        gop_overflows = CounterMetricFamily(
            "pantau_gop_cache_overflows", "Times the GOP cache exceeded its limits and was emptied.", labels=labels
        )
        readers = GaugeMetricFamily("pantau_camera_readers", "Readers of the camera by kind.", labels=["camera_id", "kind"])
        bitrate = GaugeMetricFamily("pantau_camera_bitrate_bps", "Measured media bit rate.", labels=labels)
        fps = GaugeMetricFamily("pantau_camera_fps", "Measured video frame rate.", labels=labels)
        for camera in service.cameras.values():
            camera_id = camera.id
            for name in CAMERA_STATES:
                state.add_metric([camera_id, name], 1.0 if camera.state == name else 0.0)
            reconnects.add_metric([camera_id], camera.reconnects)
            ingest_bytes.add_metric([camera_id], camera.ingest_bytes)
            ingest_frames.add_metric([camera_id], camera.frames_in)
            corrections.add_metric([camera_id], camera.timestamp_corrections)
            gop_overflows.add_metric([camera_id], camera.gop_overflows)
            for kind in READER_KINDS:
                readers.add_metric([camera_id, kind], camera.readers.get(kind, 0))
            if camera.rate.bitrate_bps is not None:
                bitrate.add_metric([camera_id], camera.rate.bitrate_bps)
            if camera.rate.fps is not None:
                fps.add_metric([camera_id], camera.rate.fps)
        yield from (state, reconnects, ingest_bytes, ingest_frames, corrections, gop_overflows, readers, bitrate, fps)
        yield from self._flv()
        yield from self._hls()
        yield from self._probes()
        for source in service.metric_sources:
            yield from source()

    def _flv(self) -> Iterable[Metric]:
        service = self._service
        output_labels = ["camera_id", "output"]
        egress = CounterMetricFamily("pantau_egress_bytes", "Bytes written to live clients.", labels=output_labels)
        skipped = CounterMetricFamily(
            "pantau_skipped_frames", "Frames not sent to clients that were behind.", labels=output_labels
        )
        slow = CounterMetricFamily(
            "pantau_slow_client_disconnects", "Clients disconnected for staying behind.", labels=output_labels
        )
        clients = GaugeMetricFamily("pantau_live_clients", "Connected live clients.", labels=output_labels)
        for camera_id in service.cameras:
            totals = service.flv_totals(camera_id)
            egress.add_metric([camera_id, "flv"], totals["egress_bytes"])
            skipped.add_metric([camera_id, "flv"], totals["skipped_frames"])
            slow.add_metric([camera_id, "flv"], totals["slow_disconnects"])
            clients.add_metric([camera_id, "flv"], totals["clients"])
        return (egress, skipped, slow, clients)


    def _hls(self) -> Iterable[Metric]:
        service = self._service
        egress = CounterMetricFamily(
            "pantau_hls_egress_bytes", "HLS segment bytes served.", labels=["camera_id", "format"]
        )
        segments = GaugeMetricFamily(
            "pantau_hls_segments", "HLS segments held in memory.", labels=["camera_id", "format"]
        )
        for (camera_id, fmt), value in list(service.hls_egress.items()):
            egress.add_metric([camera_id, fmt], value)
        for (camera_id, fmt), stream in list(service.hls.items()):
            segments.add_metric([camera_id, fmt], len(stream.segments))
        return (egress, segments)

    def _probes(self) -> Iterable[Metric]:
        service = self._service
        pixels = GaugeMetricFamily("pantau_probe_pixels", "Displayed width x height from the last probe.", labels=["camera_id"])
        status = GaugeMetricFamily(
            "pantau_compliance_status", "1 for the camera's compliance status.", labels=["camera_id", "status"]
        )
        for camera_id, camera in list(service.cameras.items()):
            view = service.probes.view(camera_id) or {}
            facts = view.get("facts") or {}
            if facts.get("pixels"):
                pixels.add_metric([camera_id], facts["pixels"])
            compliance = compliance_of(service, camera).as_dict()
            status.add_metric([camera_id, compliance["status"]], 1.0)
        return (pixels, status)


def create_registry(service: Service) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """Return the exposition text and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
