"""The status page with access control on, in headless Chromium: the key prompt and signed URLs in both players."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.access_support import create_consumer, wait_for_events
from tests.support import GstRtspServer, Pantau, camera_entry, ffprobe_frames
from tests.test_status_page import ARTIFACTS, PLAY_TIMEOUT_MS, chromium_page

pytestmark = pytest.mark.browser

CARD = '[data-camera-id="cam"]'


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Iterator[tuple[Pantau, str]]:
    """Pantau with checks on, two cameras, and a consumer whose key allows live video of one."""
    server = GstRtspServer({"/cam": "h264", "/other": "d1"}).start()
    instance = Pantau(
        data_dir=tmp_path_factory.mktemp("guarded"),
        cameras=[
            camera_entry("cam", server.url("/cam"), name="Simpang Dewa Ruci (uji)"),
            camera_entry("other", server.url("/other"), name="Kamera lain"),
        ],
        auth=True,
        env={"PANTAU_IDLE_CLOSE_SECONDS": "3"},
    ).start()
    key = create_consumer(instance, "videowall", {"cameras": ["cam"], "actions": ["live"]})
    try:
        yield instance, key
    finally:
        instance.stop()
        server.stop()


def enter_key(page, key: str) -> None:
    page.wait_for_selector("#key-form:not([hidden])", timeout=15_000)
    page.fill("#key-input", key)
    page.click('#key-form button[type="submit"]')
    page.wait_for_selector(f"{CARD} .state", timeout=15_000)


def test_status_page_asks_for_key_once(guarded, tmp_path):
    instance, key = guarded
    with chromium_page(tmp_path / "profile") as page:
        page.goto(instance.base + "/")
        page.wait_for_selector("#key-form:not([hidden])", timeout=15_000)
        prompt = page.inner_text("#key-message")
        no_cameras_hidden = page.is_hidden("#empty")  # the list is empty only for lack of a key
        page.fill("#key-input", "pk_000000000000_" + "x" * 43)
        page.click('#key-form button[type="submit"]')
        page.wait_for_function(
            "() => document.querySelector('#key-message').textContent.startsWith('Kunci ditolak')", timeout=15_000
        )
        rejected = page.inner_text("#key-message")
        page.fill("#key-input", key)
        page.click('#key-form button[type="submit"]')
        page.wait_for_selector(f"{CARD} .state", timeout=15_000)
        cards = page.eval_on_selector_all("[data-camera-id]", "cards => cards.map(card => card.dataset.cameraId)")
        page.reload()
        page.wait_for_selector(f"{CARD} .state", timeout=15_000)
        form_hidden_after_reload = page.is_hidden("#key-form")
        stored = page.evaluate("() => localStorage.getItem('pantau.key')")
        page.click("#key-forget")
        page.wait_for_selector("#key-form:not([hidden])", timeout=15_000)
        cards_after_forget = page.eval_on_selector_all("[data-camera-id]", "cards => cards.length")

    assert prompt.startswith("Pantau meminta kunci akses")
    assert no_cameras_hidden
    assert "unknown, revoked or wrong" in rejected
    assert cards == ["cam"]  # the consumer's scope, not every camera
    assert form_hidden_after_reload
    assert stored == key
    assert cards_after_forget == 0


@pytest.mark.parametrize(("kind", "player", "audit_format"), [("hls", "hls.js", "hls_fmp4"), ("flv", "mpegts.js", "flv")])
def test_signed_url_plays_in_status_page(kind, player, audit_format, guarded, tmp_path):
    instance, key = guarded
    with chromium_page(tmp_path / "profile") as page:
        page.goto(instance.base + "/")
        enter_key(page, key)
        page.click(f'{CARD} [data-play="{kind}"]')
        page.wait_for_function(
            """(selector) => {
                const video = document.querySelector(selector + " video");
                return video.currentTime > 2 && video.videoWidth > 0;
            }""",
            arg=CARD,
            timeout=PLAY_TIMEOUT_MS,
        )
        state = page.evaluate(
            """(selector) => {
                const video = document.querySelector(selector + " video");
                return {time: video.currentTime, width: video.videoWidth, height: video.videoHeight};
            }""",
            CARD,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"status-page-signed-{kind}.png"), full_page=True)

    # Closing the browser ends the viewing; its audit event names the token that played it.
    events = wait_for_events(
        instance,
        lambda event: event["action"] == "live" and event.get("format") == audit_format and event["credential"] == "token",
        timeout=20,
    )
    print(f"{player} with a signed URL: currentTime {state['time']:.2f} s at {state['width']}x{state['height']}")
    assert state["time"] > 2
    assert (state["width"], state["height"]) == (2688, 1520)
    assert events, f"no {audit_format} session played with a token"
    assert events[-1]["consumer"] == "videowall"
    assert events[-1]["camera_id"] == "cam"
    assert events[-1]["bytes"] > 100_000
    assert events[-1]["result"] == "ok"


def test_copied_url_carries_signed_token(guarded, tmp_path):
    instance, key = guarded
    with chromium_page(tmp_path / "profile") as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=instance.base)
        page.goto(instance.base + "/")
        enter_key(page, key)
        displayed_url = page.input_value(f'{CARD} input[data-url="flv"]')
        page.click(f'{CARD} [data-copy="flv"]')
        page.wait_for_function(
            "(selector) => document.querySelector(selector).textContent.startsWith('Disalin')",
            arg=f'{CARD} [data-copy="flv"]',
            timeout=15_000,
        )
        label = page.inner_text(f'{CARD} [data-copy="flv"]')
        copied = page.evaluate("() => navigator.clipboard.readText()")

    probed = ffprobe_frames(copied, packets=30)

    assert displayed_url == f"{instance.base}/live/cam.flv"
    assert copied.startswith(f"{instance.base}/live/cam.flv?token=")
    assert "berlaku sampai" in label
    assert (probed.width, probed.height) == (2688, 1520)
    assert probed.frames >= 25
