"""A replay mount: one scenario of a case, resolved for serving on one port.

The scenario's SDP gets the clip's video where the case publishes none,
every camera address is pointed at the replay (loopback and the mount's
port), and the clip, audio and camera URL path are chosen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from loadtest.cases import DEFAULT_PASSWORD, DEFAULT_USER, PLACEHOLDERS, Scenario, merge_with_clip_video
from loadtest.clip import Clip
from loadtest.replay_media import AudioPlan, MediaLibrary, VideoPlan, plan_audio, plan_video

# Addresses the corpus uses in place of real ones, and host names it kept.
_HOST = r"(?:192\.0\.2\.\d{1,3}|198\.51\.100\.\d{1,3}|203\.0\.113\.\d{1,3}|camera\.example|cam-driveway|turret2-cam\.lan)"
_STATIC_PAYLOAD_TYPES = {
    0: "PCMU/8000",
    8: "PCMA/8000",
    10: "L16/44100/2",
    11: "L16/44100",
    14: "MPA/90000",
    26: "JPEG/90000",
}


# --- text rewriting -------------------------------------------------------------------------


def rewrite_addresses(text: str, port: int) -> str:
    """Point every camera address of a case at the replay: loopback, and this mount's port in URLs.

    ``127.0.0.1`` and ``0.0.0.0`` stay as they are, because a camera that
    advertises them does so on purpose (the corpus keeps them for that).
    """
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    # rtsp://[user:pass@]HOST[:PORT] -> rtsp://[user:pass@]127.0.0.1:PORT
    text = re.sub(
        rf"(?i)(rtsps?://)((?:[^/@\s]*@)?){_HOST}(?::\d+)?",
        lambda match: f"{match.group(1)}{match.group(2)}127.0.0.1:{port}",
        text,
    )
    # A bare host:port (a Content-Base without scheme) gets the mount's port too.
    text = re.sub(rf"(?<![\w./:]){_HOST}:\d+(?=/)", f"127.0.0.1:{port}", text)
    return re.sub(_HOST, "127.0.0.1", text)


def path_view(url: str) -> str:
    """Return the path and query of a URL, whatever scheme or authority it has; cameras compare only those."""
    value = url.strip()
    while re.match(r"(?i)^rtsps?://", value):
        value = value.split("://", 1)[1]
    slash = value.find("/")
    return value[slash:] if slash >= 0 else "/"


def join_control(base: str, control: str) -> str:
    """Join a control to a base the way live555 and FFmpeg do: absolute as is, else appended."""
    if re.match(r"(?i)^rtsps?://", control):
        return control
    if base.endswith("/"):
        return base + control.lstrip("/")
    return f"{base}/{control.lstrip('/')}"


# --- session descriptions ---------------------------------------------------------------------


@dataclass(slots=True)
class MediaSection:
    index: int
    kind: str
    payload_types: list[str]
    control: str
    direction: str | None
    rtpmaps: dict[str, str]
    fmtps: dict[str, str]

    @property
    def payload_type(self) -> int | None:
        first = self.payload_types[0] if self.payload_types else ""
        return int(first) if first.isdigit() else None

    def encoding(self) -> tuple[str, int, int]:
        """Return (encoding, clock rate, channels) of the first payload type."""
        first = self.payload_types[0] if self.payload_types else ""
        mapping = self.rtpmaps.get(first) or _STATIC_PAYLOAD_TYPES.get(
            int(first) if first.isdigit() else -1, ""
        )
        fields = [item.strip() for item in mapping.split("/")]
        encoding = fields[0].upper() if fields and fields[0] else ""
        try:
            clock = int(fields[1]) if len(fields) > 1 else 90000
        except ValueError:
            clock = 90000
        try:
            channels = (
                int(fields[2])
                if len(fields) > 2 and encoding not in ("JPEG",) and self.kind == "audio"
                else 1
            )
        except ValueError:
            channels = 1
        return encoding, clock, channels

    def fmtp(self) -> dict[str, str]:
        first = self.payload_types[0] if self.payload_types else ""
        raw = self.fmtps.get(first, "")
        params = {}
        for item in raw.split(";"):
            key, _, value = item.strip().partition("=")
            if key.strip():
                params[key.strip().lower()] = value.strip()
        return params


def media_sections(sdp: str) -> tuple[list[MediaSection], str]:
    """Return the media sections and the session-level control of an SDP."""
    sections: list[MediaSection] = []
    session_control = ""
    current: MediaSection | None = None
    for raw in sdp.replace("\r", "\n").split("\n"):
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            current = MediaSection(
                len(sections), parts[0].lower() if parts else "", parts[3:], "", None, {}, {}
            )
            sections.append(current)
        elif line.startswith("a="):
            name, _, value = line[2:].partition(":")
            name = name.strip().lower()
            if current is None:
                if name == "control":
                    session_control = value.strip()
                continue
            if name == "control" and not current.control:
                current.control = value.strip()
            elif name in ("sendonly", "recvonly", "sendrecv", "inactive"):
                current.direction = name
            elif name == "rtpmap":
                pt, _, rest = value.strip().partition(" ")
                current.rtpmaps.setdefault(pt, rest.strip())
            elif name == "fmtp":
                pt, _, rest = value.strip().partition(" ")
                current.fmtps.setdefault(pt, rest.strip())
    return sections, session_control


def is_backchannel(sections: list[MediaSection], section: MediaSection) -> bool:
    directions = {item.direction for item in sections if item.kind in ("audio", "video")}
    return section.kind == "audio" and section.direction == "sendonly" and "recvonly" in directions


# --- mounts ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Mount:
    """One scenario served on its own port."""

    scenario: Scenario
    clip: Clip
    video: VideoPlan
    port: int = 0
    path: str = "/"
    sdp: str = ""
    sections: list[MediaSection] = field(default_factory=list)
    audio: dict[int, AudioPlan] = field(default_factory=dict)  # by media index
    credentials: tuple[str, str] | None = None
    stale_video: VideoPlan | None = None  # what an earlier session of another stream keeps sending

    @property
    def name(self) -> str:
        return self.scenario.name

    def url(self, host: str = "127.0.0.1", with_credentials: bool = True) -> str:
        userinfo = ""
        if self.credentials and with_credentials:
            user, password = self.credentials
            userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        return f"rtsp://{userinfo}{host}:{self.port}{self.path}"

    def description(self) -> dict[str, Any]:
        """Describe the mount for the ready line."""
        kinds = []
        for section in self.sections:
            label = section.kind
            if is_backchannel(self.sections, section):
                label = "backchannel"
            kinds.append({"kind": label, "encoding": section.encoding()[0], "control": section.control})
        return {
            "name": self.name,
            "case": self.scenario.case.case_id,
            "port": self.port,
            "url": self.url(),
            "video": {
                "codec": self.video.codec,
                "width": self.video.width,
                "height": self.video.height,
                "fps": self.video.fps,
            },
            "audio": sorted({plan.codec for plan in self.audio.values()}),
            "media": kinds,
        }


def _clip_name(scenario: Scenario, sdp: str) -> str:
    if scenario.behaviour.clip:
        return scenario.behaviour.clip
    sections, _ = media_sections(sdp)
    for section in sections:
        if section.kind == "video":
            encoding = section.encoding()[0]
            fmtp = section.fmtp()
            if "sprop-vps" in fmtp or "sprop-sps" in fmtp:
                return "h265"
            return {"H264": "h264", "H265": "h265", "HEVC": "h265", "JPEG": "mjpeg", "MP4V-ES": "mpeg4"}.get(
                encoding, "h264"
            )
    return "h264"


def _video_section_of(clip_sdp: str) -> str:
    lines = clip_sdp.replace("\r\n", "\n").split("\n")
    start = next(index for index, line in enumerate(lines) if line.startswith("m=video"))
    end = next((index for index in range(start + 1, len(lines)) if lines[index].startswith("m=")), len(lines))
    return "\n".join(lines[start:end])


def _infer_path(mount: Mount, sections: list[MediaSection], session_control: str) -> str:
    scenario = mount.scenario
    if scenario.behaviour.path:
        return scenario.behaviour.path
    base = scenario.describe.get("Content-Base") or scenario.describe.get("Content-Location")
    candidates: list[str] = []
    if base:
        candidates.append(path_view(base))
    if re.match(r"(?i)^rtsps?://", session_control):
        candidates.append(path_view(session_control))
    for section in sections:
        if re.match(r"(?i)^rtsps?://", section.control):
            candidates.append(path_view(section.control).rsplit("/", 1)[0] + "/")
    if scenario.play is not None:
        for match in re.finditer(r"url=(rtsps?://[^;,\s]+)", scenario.play.get("RTP-Info") or ""):
            candidates.append(path_view(match.group(1)).rsplit("/", 1)[0] + "/")
    for candidate in candidates:
        if candidate and candidate != "/":
            return candidate[:-1] if candidate.endswith("/") and len(candidate) > 1 else candidate
    return "/stream"


def prepare_mount(scenario: Scenario, library: MediaLibrary, port: int) -> Mount:
    """Resolve a scenario's SDP, clip and audio for serving on ``port``."""
    sdp = scenario.sdp
    clip_name = _clip_name(scenario, sdp) if sdp else (scenario.behaviour.clip or "h264")
    clip = library.clip(clip_name)
    if not sdp.strip():
        sdp = clip.sdp()
    elif not re.search(r"(?m)^m=video ", sdp.replace("\r", "")):
        sdp = merge_with_clip_video(sdp, _video_section_of(clip.sdp()))
    sdp = rewrite_addresses(sdp, port)

    sections, session_control = media_sections(sdp)
    video_section = next((section for section in sections if section.kind == "video"), None)
    mode = 1
    if video_section is not None:
        try:
            mode = int(video_section.fmtp().get("packetization-mode", "1") or 1)
        except ValueError:
            mode = 1
    mount = Mount(
        scenario, clip, plan_video(clip, scenario.behaviour, mode), port=port, sdp=sdp, sections=sections
    )

    for section in sections:
        if section.kind == "audio" and not is_backchannel(sections, section):
            encoding, clock, channels = section.encoding()
            plan = plan_audio(library, encoding, clock, channels, section.fmtp())
            if plan is not None:
                mount.audio[section.index] = plan

    if scenario.behaviour.stale_session:
        # The earlier session streams another picture size, so a client that
        # follows it reports the wrong size.
        stale_clip = library.clip(
            {"h264": "h264-1080p", "h265": "h265-slices", "mjpeg": "mjpeg-small"}.get(clip.codec, clip_name)
        )
        mount.stale_video = plan_video(stale_clip, replace(scenario.behaviour, no_marker=False), mode)

    mount.path = _infer_path(mount, sections, session_control)
    needs_credentials = (
        scenario.behaviour.auth
        or scenario.unauthorized is not None
        or "<USER>" in (scenario.describe.get("Content-Base") or "")
    )
    if needs_credentials:
        mount.credentials = (DEFAULT_USER, DEFAULT_PASSWORD)
    return mount
