"""Recorded video plays in hls.js in headless Chromium, across a recording gap."""

from __future__ import annotations

import time

from tests.conftest import start_pantau
from tests.recording_support import complete_segments, iso, parse_iso, recordings, wait_until
from tests.support import GstRtspServer, camera_entry
from tests.test_status_page import chromium_page

PLAY_VOD = """async ([url]) => {
  const video = document.createElement("video");
  video.muted = true;
  document.body.append(video);
  const hls = new Hls();
  window.vodErrors = [];
  hls.on(Hls.Events.ERROR, (_event, data) => { if (data.fatal) window.vodErrors.push(data.details); });
  hls.loadSource(url);
  hls.attachMedia(video);
  window.vodVideo = video;
  video.playbackRate = 4;
  await video.play();
}"""


def test_vod_plays_in_hls_js_across_gap(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "d1"}).start()
    own_gst.append(server)
    instance = start_pantau(
        pantau,
        tmp_path / "data",
        [camera_entry("cam", server.url("/cam"), mode="always", record=True)],
        PANTAU_SEGMENT_SECONDS="3",
        PANTAU_RETRY_MAX_SECONDS="1",
    )
    assert wait_until(lambda: len(complete_segments(instance, "cam")) >= 2, timeout=30)
    server.stop()
    stopped_at = time.time()
    time.sleep(4)
    own_gst.append(GstRtspServer({"/cam": "d1"}, port=server.port).start())
    assert wait_until(
        lambda: [i for i in complete_segments(instance, "cam") if parse_iso(i["start"]) > stopped_at], timeout=30
    )
    listing = recordings(instance, "cam")
    assert [gap["cause"] for gap in listing["gaps"]].count("camera_offline") == 1
    complete = [item for item in listing["items"] if item["status"] == "complete"]
    start = parse_iso(complete[0]["start"])
    end = parse_iso(complete[-1]["end"])
    url = f"{instance.base}/vod/cam/index.m3u8?start={iso(start)}&end={iso(end)}"

    with chromium_page(tmp_path / "profile") as page:
        page.goto(instance.base + "/")
        page.wait_for_function("typeof Hls !== 'undefined'", timeout=30_000)
        page.evaluate(PLAY_VOD, [url])
        page.wait_for_function(
            "window.vodVideo.duration > 0 && (window.vodVideo.ended || "
            "window.vodVideo.currentTime > window.vodVideo.duration - 1.5)",
            timeout=60_000,
        )
        width = page.evaluate("window.vodVideo.videoWidth")
        duration = page.evaluate("window.vodVideo.duration")
        position = page.evaluate("window.vodVideo.currentTime")
        errors = page.evaluate("window.vodErrors")

    recorded = sum(parse_iso(item["end"]) - parse_iso(item["start"]) for item in complete)
    assert width == 768
    assert errors == []
    # The playlist spans the recorded segments only: the gap is a discontinuity, not time.
    assert abs(duration - recorded) < 3.0, (duration, recorded)
    assert position > duration - 1.5
