"""The status page in Debian's headless Chromium (Playwright): text, languages and both players.

Chromium is started from ``/usr/bin/chromium`` with a fresh profile and the
flags that keep it off the network; Playwright downloads no browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import REPO, GstRtspServer, Pantau, camera_entry, free_port

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
PLAY_TIMEOUT_MS = 60_000


@contextmanager
def chromium_page(profile: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1100},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            yield page
        finally:
            context.close()


@pytest.fixture(scope="module")
def page_service(tmp_path_factory) -> Iterator[Pantau]:
    """Pantau with a 4 MP H.264 camera and a camera whose RTSP port is closed."""
    server = GstRtspServer({"/cam": "h264"}).start()
    data_dir = tmp_path_factory.mktemp("status-page")
    cameras = [
        camera_entry("cam", server.url("/cam"), name="Simpang Dewa Ruci (uji)"),
        camera_entry(
            "offline",
            f"rtsp://127.0.0.1:{free_port()}/stream",
            name="Pantai Kuta (mati)",
            mode="always",
            owner={"category": "swasta", "name": "Hotel Contoh"},
        ),
    ]
    instance = Pantau(data_dir=data_dir, cameras=cameras, env={"PANTAU_PROBE_WINDOW_SECONDS": "2"}).start()
    try:
        yield instance
    finally:
        instance.stop()
        server.stop()


def test_status_page_text_and_language_switch(page_service, tmp_path):
    with chromium_page(tmp_path / "profile") as page:
        page.goto(page_service.base + "/")
        page.wait_for_selector('[data-camera-id="offline"] .message.error', timeout=30_000)

        heading_id = page.inner_text("h1")
        lang_id = page.get_attribute("html", "lang")
        offline_id = page.inner_text('[data-camera-id="offline"] .message')
        card_id = page.inner_text('[data-camera-id="cam"]')
        missing_banner_hidden = page.is_hidden("#players-missing")

        page.click('button[data-lang="en"]')
        heading_en = page.inner_text("h1")
        lang_en = page.get_attribute("html", "lang")
        offline_en = page.inner_text('[data-camera-id="offline"] .message')
        play_en = page.inner_text('[data-camera-id="cam"] [data-play="hls"]')
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "status-page-english.png"), full_page=True)

        page.click('button[data-lang="id"]')
        heading_back = page.inner_text("h1")

    assert heading_id == "Status Kamera"
    assert lang_id == "id"
    assert offline_id.startswith("Kamera offline sejak"), offline_id
    assert "mencoba lagi" in offline_id
    for text in ("Simpang Dewa Ruci (uji)", "Pemkab: Diskominfo Badung", "Kuta", "Putar HLS", "Putar FLV"):
        assert text in card_id, card_id
    assert missing_banner_hidden
    assert heading_en == "Camera status"
    assert lang_en == "en"
    assert offline_en.startswith("Camera offline since"), offline_en
    assert "retries in" in offline_en or "is retrying" in offline_en
    assert play_en == "Play HLS"
    assert heading_back == "Status Kamera"


def test_status_page_shows_measured_facts_and_rule(page_service, tmp_path):
    page_service.request("POST", "/api/cameras/cam/probe")
    card = '[data-camera-id="cam"]'
    offline = '[data-camera-id="offline"]'
    with chromium_page(tmp_path / "profile") as page:
        page.goto(page_service.base + "/")
        page.wait_for_function(
            f"document.querySelector('{card} .measured').textContent.includes('2688×1520')", timeout=30_000
        )
        facts = page.inner_text(f"{card} .measured")
        rule = page.inner_text(f"{card} .rule")
        offline_rule = page.inner_text(f"{offline} .rule")

    assert "2688×1520 (4.09 MP)" in facts
    assert "15.0 fps" in facts
    assert rule.startswith("dikecualikan")  # a pemkab camera
    assert "kategori pemilik pemkab: aturan hanya berlaku untuk kamera swasta" in rule
    assert offline_rule.startswith("belum diketahui")  # a swasta camera never probed


def test_status_page_lists_copyable_urls_and_fields(page_service, tmp_path):
    with chromium_page(tmp_path / "profile") as page:
        page.goto(page_service.base + "/")
        card = '[data-camera-id="cam"]'
        page.wait_for_selector(f"{card} .state")
        flv = page.input_value(f'{card} input[data-url="flv"]')
        hls = page.input_value(f'{card} input[data-url="hls"]')
        ts = page.input_value(f'{card} input[data-url="ts"]')
        page.click(f"{card} details summary")
        fields = page.inner_text(f"{card} .all-fields")

    assert flv == f"{page_service.base}/live/cam.flv"
    assert hls == f"{page_service.base}/live/cam/index.m3u8"
    assert ts == f"{page_service.base}/live/cam/ts/index.m3u8"
    # Every field of GET /api/cameras is listed, nested ones by their path.
    for key in ("owner.category", "location.kecamatan", "state", "readers.hls", "offline_since"):
        assert key in fields, fields


@pytest.mark.parametrize(("kind", "player"), [("hls", "hls.js"), ("flv", "mpegts.js")])
def test_status_page_player_plays_4mp_h264(kind, player, page_service, tmp_path):
    card = '[data-camera-id="cam"]'
    with chromium_page(tmp_path / "profile") as page:
        page.goto(page_service.base + "/")
        page.wait_for_selector(f"{card} .state")
        page.click(f'{card} [data-play="{kind}"]')
        page.wait_for_function(
            """(selector) => {
                const video = document.querySelector(selector + " video");
                return video.currentTime > 2 && video.videoWidth > 0;
            }""",
            arg=card,
            timeout=PLAY_TIMEOUT_MS,
        )
        state = page.evaluate(
            """(selector) => {
                const video = document.querySelector(selector + " video");
                return {time: video.currentTime, width: video.videoWidth, height: video.videoHeight,
                        overlayHidden: document.querySelector(selector + " .overlay").hidden};
            }""",
            card,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"status-page-{kind}.png"), full_page=True)
        readers = page_service.camera("cam")["readers"]

    print(f"{player}: currentTime {state['time']:.2f} s at {state['width']}x{state['height']}")
    assert state["time"] > 2
    assert (state["width"], state["height"]) == (2688, 1520)
    assert state["overlayHidden"]
    assert readers[kind] >= 1


def test_status_page_without_players_says_how_to_install(gst, tmp_path):
    empty = tmp_path / "no-node-modules"
    empty.mkdir()
    instance = Pantau(
        data_dir=tmp_path / "data",
        cameras=[camera_entry("cam", gst.url("/h264"))],
        env={"PANTAU_NODE_MODULES": str(empty)},
    ).start()
    try:
        with chromium_page(tmp_path / "profile") as page:
            page.goto(instance.base + "/")
            page.wait_for_selector('[data-camera-id="cam"] .state')
            banner = page.inner_text("#players-missing")
            page.click('[data-camera-id="cam"] [data-play="hls"]')
            overlay = page.inner_text('[data-camera-id="cam"] .overlay')
            url = page.input_value('[data-camera-id="cam"] input[data-url="flv"]')
        status, body = instance.request("GET", "/static/vendor/hls.min.js")
        warnings = instance.log_events("status_page_players_missing")
    finally:
        instance.stop()

    assert "npm ci" in banner
    assert "hls.js" in overlay
    assert url.endswith("/live/cam.flv")
    assert status == 404
    assert body["error"] == "player_not_installed"
    assert "npm ci" in body["reason"]
    assert warnings and set(warnings[0]["packages"]) == {"hls.js", "mpegts.js"}


def test_status_page_player_explains_camera_outage(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "d1"}).start()
    own_gst.append(server)
    instance = Pantau(data_dir=tmp_path / "data", cameras=[camera_entry("cam", server.url("/cam"), mode="always")])
    pantau.append(instance)
    instance.start()
    instance.wait_state("cam", "live")
    card = '[data-camera-id="cam"]'

    with chromium_page(tmp_path / "profile") as page:
        page.goto(instance.base + "/")
        page.wait_for_selector(f"{card} .state")
        page.click(f'{card} [data-play="flv"]')
        page.wait_for_function(
            "(selector) => document.querySelector(selector + ' video').currentTime > 1", arg=card, timeout=PLAY_TIMEOUT_MS
        )
        server.stop()
        page.wait_for_function(
            "(selector) => document.querySelector(selector + ' .state').textContent === 'Offline'",
            arg=card,
            timeout=40_000,
        )
        page.wait_for_timeout(4_000)  # one more refresh of the page
        overlay = page.inner_text(f"{card} .overlay")
        message = page.inner_text(f"{card} .message")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "status-page-outage.png"), full_page=True)

        restarted = GstRtspServer({"/cam": "d1"}, port=server.port).start()
        own_gst.append(restarted)
        page.wait_for_function(
            """(selector) => {
                const video = document.querySelector(selector + ' video');
                return document.querySelector(selector + ' .overlay').hidden && video.currentTime > 1;
            }""",
            arg=card,
            timeout=PLAY_TIMEOUT_MS,
        )
        width = page.evaluate("(selector) => document.querySelector(selector + ' video').videoWidth", card)

    assert overlay.startswith("Kamera offline"), overlay
    assert "otomatis" in overlay
    assert message.startswith("Kamera offline sejak"), message
    assert "Penyebab:" in message
    assert width == 768
