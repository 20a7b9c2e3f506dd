"""Camera quirk case files, and the RTSP exchanges a replay server serves from them.

A case file (format in ``tests/data/cameras/README.md``) has ``# `` header
lines and literal blocks between ``-----BEGIN label-----`` and
``-----END label-----`` lines. Most cases publish only part of an exchange:
one SDP, one SETUP response, a Transport header value or an fmtp line. This
module reads the blocks, classifies them, and assembles one or more
:class:`Scenario` objects per case: the responses to OPTIONS, DESCRIBE,
SETUP, PLAY and TEARDOWN, filled in with plain synthesized messages where
the case has nothing, plus the behaviour the case describes in prose
(:class:`Behaviour`).

Behaviour that a case states only in prose comes from ``CORPUS_BEHAVIOUR``
below or from ``# replay:`` header lines in the case file itself, so an
operator can describe a new camera in the same format.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

_BEGIN = re.compile(r"^-----BEGIN (.*)-----\r?$")
_END = re.compile(r"^-----END (.*)-----\r?$")

# Anonymization placeholders of the corpus and the values the replay uses instead.
PLACEHOLDERS = {
    "<USER>": "admin",
    "<PASSWORD>": "quirk-pass",
    "<MAC-ADDRESS-12-HEX>": "A1B2C3D4E5F6",
    "<MAC>": "a1b2c3d4e5f6",
    "<UUID>": "0b7e4a52-3c1d-4f7a-9e61-2d8c5b9f0a13",
    "<SERIAL-FRAGMENT>": "SN0000",
    "<RESPONSE>": "00000000000000000000000000000000",
}
DEFAULT_USER = PLACEHOLDERS["<USER>"]
DEFAULT_PASSWORD = PLACEHOLDERS["<PASSWORD>"]


@dataclass(slots=True)
class Block:
    label: str
    text: str  # the literal data, line endings as published


@dataclass(slots=True)
class CaseFile:
    path: Path
    case_id: str  # "q01", or the file name's first dash-separated part
    title: str
    header: list[str]
    blocks: list[Block]
    replay_options: list[str]  # "key=value" or "flag" items from "# replay:" lines


def read_case(path: str | Path) -> CaseFile:
    """Read a case file; line endings inside blocks are kept as they are in the file."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    lines = text.split("\n")

    header: list[str] = []
    blocks: list[Block] = []
    options: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        begin = _BEGIN.match(line)
        if begin:
            body: list[str] = []
            index += 1
            while index < len(lines) and not _END.match(lines[index]):
                body.append(lines[index])
                index += 1
            # Joining with "\n" drops the separator newline before the END line.
            blocks.append(Block(begin.group(1), "\n".join(body)))
        elif line.startswith("# "):
            content = line[2:].rstrip("\r")
            header.append(content)
            if content.lower().startswith("replay:"):
                options += [item.strip() for item in content[7:].split(";") if item.strip()]
        index += 1

    name = path.stem
    first = header[0] if header else name
    case_id = first.split(" - ", 1)[0].strip() if " - " in first else name.split("-", 1)[0]
    title = first.split(" - ", 1)[1].strip() if " - " in first else first
    return CaseFile(path, case_id, title, header, blocks, options)


# --- messages -----------------------------------------------------------------------


@dataclass(slots=True)
class Message:
    """An RTSP response as a case publishes it, kept close to its bytes.

    Header values keep the whitespace after the colon, so ``Session:
    708345999`` goes out padded as the camera sent it.
    """

    first_line: str
    headers: list[tuple[str, str]]  # (name as spelled, raw text after the colon)
    body: str = ""
    newline: str = "\r\n"
    synthesized: bool = False

    @property
    def status(self) -> int:
        parts = self.first_line.split()
        try:
            return int(parts[1])
        except (IndexError, ValueError):
            return 0

    def get(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers:
            if key.strip().lower() == lower:
                return value.strip()
        return None

    def set(self, name: str, value: str, *, add: bool = True) -> None:
        """Replace a header's value, keeping its spelling and padding; add it when missing."""
        lower = name.lower()
        for index, (key, raw) in enumerate(self.headers):
            if key.strip().lower() == lower:
                padding = raw[: len(raw) - len(raw.lstrip())] or " "
                self.headers[index] = (key, padding + value)
                return
        if add:
            self.headers.append((name, " " + value))

    def remove(self, name: str) -> None:
        lower = name.lower()
        self.headers = [(key, raw) for key, raw in self.headers if key.strip().lower() != lower]

    def copy(self) -> Message:
        return replace(self, headers=list(self.headers))

    def encode(self) -> bytes:
        """Serialize with the published line endings and a Content-Length that fits the body."""
        body = self.body.encode("utf-8")
        message = self.copy()
        if body or message.get("Content-Length") is not None:
            message.set("Content-Length", str(len(body)))
        newline = self.newline
        lines = [message.first_line] + [f"{key}:{raw}" for key, raw in message.headers]
        return (newline.join(lines) + newline + newline).encode("utf-8") + body


def parse_message(text: str) -> Message:
    """Parse a response as published; the newline style is taken from its first line."""
    newline = "\r\n" if "\r\n" in text.split("\n", 1)[0] + "\n" else "\n"
    head, body = _split_head(text)
    lines = head.replace("\r\n", "\n").split("\n")
    headers = []
    for line in lines[1:]:
        if not line.strip():
            continue
        name, sep, raw = line.partition(":")
        if sep:
            headers.append((name, raw))
    return Message(lines[0].strip(), headers, body, newline)


def _split_head(text: str) -> tuple[str, str]:
    for separator in ("\r\n\r\n", "\n\n"):
        index = text.find(separator)
        if index >= 0:
            return text[:index], text[index + len(separator) :]
    return text.rstrip("\r\n"), ""


def synthesized(
    status: str = "200 OK", headers: list[tuple[str, str]] | None = None, body: str = ""
) -> Message:
    """Build a plain response for a step that the case does not publish."""
    return Message(
        f"RTSP/1.0 {status}",
        [("CSeq", " 0")] + [(name, " " + value) for name, value in headers or []],
        body,
        "\r\n",
        synthesized=True,
    )


# --- behaviour ----------------------------------------------------------------------


@dataclass(slots=True)
class Behaviour:
    """Replay behaviour beyond the literal messages, from case prose or ``# replay:`` lines.

    Every field has a ``# replay:`` key of the same name with ``-`` for
    ``_``; boolean fields are set by naming them.
    """

    clip: str = ""  # "", "h264", "h265", "bframes", "h264-slices", "h265-slices", "mjpeg", "mpeg4"
    path: str = ""  # request path of the camera URL; inferred from the case when empty
    auth: str = ""  # "", "digest", "digest-qop", "basic", "basic+digest"
    realm: str = "camera"
    nonce: str = "5f1c0e4b8f2d4a7c"
    marker_on_parameter_sets: bool = False  # marker bit on separate SPS, PPS and SEI packets
    marker_on_slices: bool = False  # marker bit on the last packet of every slice, not of every picture
    no_marker: bool = False  # the marker bit is never set
    parameter_set_ts_offset: int = 0  # SPS/PPS stamped this many 90 kHz ticks before their picture
    aggregate_parameter_sets: bool = False  # SPS and PPS in one STAP-A (AP for H.265)
    annexb_in_fu: bool = False  # keyframe sent as one FU-A holding an Annex B byte stream, typed SPS
    fu_type_changes: bool = False  # FU continuation fragments carry another NAL type
    aud: bool = False  # access unit delimiter before every picture
    sei: int = -1  # SEI NAL with this payload type before every picture (-1: none)
    frame_num_gap: bool = False  # one non-reference-safe picture per GOP is never sent
    stray_sps_byte: bool = False  # in-band SPS carries one byte after its trailing bits
    no_inband_parameter_sets: bool = False
    rtcp_before_play: bool = False  # an RTCP sender report goes out before the PLAY response
    malformed_rtcp_sdes: bool = False  # sender reports followed by an unterminated SDES chunk
    stale_session: float = 0.0  # seconds of packets from an earlier session (other SSRC) on the channel
    unassigned_channel_data: bool = False  # interleaved packets on channels that were never set up
    get_parameter_unanswered: bool = False
    keepalive: str = "any"  # what refreshes the session: "any", "options", "get_parameter" or "rtcp"
    session_timeout: float = 0.0  # enforced session timeout; 0 means the announced one or 60 s
    require_rejected: bool = False  # DESCRIBE with a Require header gets the case's 551 response
    timestamp_step: float = 0.0  # seconds the RTP clock steps forward now and then
    timestamp_outlier: float = 0.0  # seconds a single picture's timestamp is off now and then
    timestamp_reset: bool = False  # the RTP clock restarts from 0 now and then
    fault_interval: float = 4.0  # seconds between timestamp faults
    foreign_payload_type: int = -1  # packets of this payload type interleaved into the video
    payload_type: int = -1  # video goes out on this payload type instead of the SDP's (-1: the SDP's)
    cseq: str = "echo"  # "echo", "missing" or "zero"
    own_channels: bool = False  # the server picks other interleaved channels than requested


def parse_options(items: list[str], behaviour: Behaviour | None = None) -> Behaviour:
    """Apply ``key=value`` and flag items to a behaviour; raise ValueError on unknown keys."""
    behaviour = replace(behaviour) if behaviour is not None else Behaviour()
    types = {item.name: item.type for item in fields(Behaviour)}
    for item in items:
        key, sep, value = item.partition("=")
        name = key.strip().replace("-", "_")
        if name not in types:
            raise ValueError(f"unknown replay option {key.strip()!r}")
        kind = types[name]
        if kind in (bool, "bool"):
            parsed: object = value.strip().lower() not in ("0", "false", "no") if sep else True
        elif kind in (int, "int"):
            parsed = int(value)
        elif kind in (float, "float"):
            parsed = float(value)
        else:
            parsed = value.strip()
        setattr(behaviour, name, parsed)
    return behaviour


# Behaviour that corpus cases describe only in prose, in the ``# replay:`` vocabulary.
CORPUS_BEHAVIOUR: dict[str, list[str]] = {
    "q08": ["auth=digest", "realm=IP Camera(12345)"],
    "q14": ["rtcp-before-play", "stale-session=65"],
    "q16": ["stray-sps-byte"],
    "q17": ["clip=h265-slices", "aud"],
    "q20": ["auth=digest", "realm=TP-LINK Streaming Media", "nonce=54989645090abd69705b36970ce51ca6"],
    "q23": ["auth=digest"],
    "q25": ["clip=bframes"],
    "q26": ["require-rejected"],
    "q28": ["malformed-rtcp-sdes"],
    "q32": ["aud", "sei=5"],
    "q37": ["unassigned-channel-data"],
    "q40": ["marker-on-parameter-sets", "sei=229"],
    "q41": ["stale-session=65"],
    "q44": ["annexb-in-fu"],
    "q50": ["clip=h265", "fu-type-changes"],
    "q53": ["sei=240", "frame-num-gap"],
    "q62": ["stale-session=65"],
    "q65": ["path=/stream_main"],
    "q67": ["get-parameter-unanswered"],
}


# --- scenarios ----------------------------------------------------------------------


@dataclass(slots=True)
class Scenario:
    """The responses and behaviour that one replay mount serves for a case."""

    name: str
    case: CaseFile
    describe: Message
    options: Message | None = None
    setups: list[Message] = field(default_factory=list)
    play: Message | None = None
    teardown: Message | None = None
    unauthorized: Message | None = None
    require_rejected: Message | None = None
    behaviour: Behaviour = field(default_factory=Behaviour)

    @property
    def sdp(self) -> str:
        return self.describe.body


def _looks_like_sdp(text: str) -> bool:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return bool(re.match(r"^[vosmtcab]=", first)) and "\n" in text.strip()


def _looks_like_fmtp(text: str) -> bool:
    stripped = text.strip()
    if "\n" in stripped or stripped.startswith("RTSP/"):
        return False
    return bool(re.search(r"(?i)sprop-|packetization-mode|profile-level-id", stripped))


def _split_messages(text: str) -> list[str]:
    """Split a block holding several messages (or an SDP followed by a response) at each status line."""
    parts = re.split(r"(?m)^(?=RTSP/1\.0 )", text)
    return [part for part in parts if part.strip()]


_METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "TEARDOWN")


def _method_of(label: str, message: Message) -> str:
    if message.status == 401:
        return "401"
    if message.status >= 300:
        return "error"
    upper = label.upper()
    for method in _METHODS:
        if method in upper:
            return method
    content_type = (message.get("Content-Type") or "").lower()
    if "sdp" in content_type or _looks_like_sdp(message.body):
        return "DESCRIBE"
    if message.get("Transport") is not None:
        return "SETUP"
    if message.get("RTP-Info") is not None:
        return "PLAY"
    if message.get("Public") is not None:
        return "OPTIONS"
    return "unknown"


@dataclass(slots=True)
class _Parts:
    responses: dict[str, list[Message]] = field(default_factory=dict)
    sdps: list[tuple[str, Message | None]] = field(default_factory=list)  # (sdp, its DESCRIBE head)
    heads_without_body: list[Message] = field(default_factory=list)
    fmtps: list[str] = field(default_factory=list)


def _collect(case: CaseFile) -> _Parts:
    parts = _Parts()
    for block in case.blocks:
        text = block.text
        if not text.strip():
            continue
        if text.lstrip().startswith("RTSP/") or "\nRTSP/1.0 " in text:
            for piece in _split_messages(text):
                if not piece.lstrip().startswith("RTSP/"):
                    if _looks_like_sdp(piece):
                        parts.sdps.append((piece, None))
                    continue
                message = parse_message(piece)
                method = _method_of(block.label, message)
                if method == "DESCRIBE":
                    if _looks_like_sdp(message.body) or "m=" in message.body:
                        parts.sdps.append((message.body, message))
                    else:
                        parts.heads_without_body.append(message)
                        parts.responses.setdefault("DESCRIBE", []).append(message)
                        continue
                parts.responses.setdefault(method, []).append(message)
        elif text.lstrip().upper().startswith("RTP/AVP"):
            value = text.strip().splitlines()[0]
            parts.responses.setdefault("SETUP", []).append(
                synthesized(headers=[("Session", "12345678;timeout=60"), ("Transport", value)])
            )
        elif re.match(r"(?i)^\s*cseq\s*:", text) and re.search(r"(?im)^transport\s*:", text):
            # Header values dumped without a status line: a SETUP response.
            message = parse_message("RTSP/1.0 200 OK\n" + text.strip() + "\n\n")
            message.newline = "\r\n"
            parts.responses.setdefault("SETUP", []).append(message)
        elif _looks_like_sdp(text):
            parts.sdps.append((text, None))
        elif _looks_like_fmtp(text):
            parts.fmtps.append(text.strip())
    return parts


def _fmtp_value(text: str) -> str:
    return re.sub(r"(?i)^a=fmtp:\s*\d+\s+", "", text.strip())


def _fmtp_codec(value: str) -> str:
    return "h265" if re.search(r"(?i)sprop-(vps|sps|pps)", value) else "h264"


def sdp_for_fmtp(value: str, codec: str) -> str:
    """Build a minimal camera SDP around a published fmtp value."""
    encoding = "H265" if codec == "h265" else "H264"
    lines = [
        "v=0",
        "o=- 0 0 IN IP4 127.0.0.1",
        "s=Pantau quirk replay",
        "t=0 0",
        "a=control:*",
        "m=video 0 RTP/AVP 96",
        "c=IN IP4 0.0.0.0",
        f"a=rtpmap:96 {encoding}/90000",
        f"a=fmtp:96 {value}",
        "a=control:trackID=1",
    ]
    return "\r\n".join(lines) + "\r\n"


def _sdp_codec(sdp: str) -> str | None:
    """Return the first video section's codec: "h264", "h265", "mjpeg", "mpeg4" or None."""
    in_video = False
    video_pt: str | None = None
    for raw in sdp.replace("\r", "").split("\n"):
        line = raw.strip()
        if line.startswith("m="):
            if in_video:
                break
            parts = line[2:].split()
            in_video = bool(parts) and parts[0].lower() == "video"
            video_pt = parts[3] if in_video and len(parts) > 3 else None
            continue
        if in_video and line.lower().startswith("a=rtpmap:"):
            pt, _, rest = line[9:].strip().partition(" ")
            if pt == video_pt:
                encoding = rest.strip().split("/")[0].upper()
                return {
                    "H264": "h264",
                    "H265": "h265",
                    "HEVC": "h265",
                    "JPEG": "mjpeg",
                    "MP4V-ES": "mpeg4",
                }.get(encoding)
    if in_video and video_pt == "26":
        return "mjpeg"
    return None


def _has_video(sdp: str) -> bool:
    return bool(re.search(r"(?m)^m=video ", sdp.replace("\r", "")))


def _replace_video_fmtp(sdp: str, value: str) -> str:
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(newline)
    in_video = False
    for index, line in enumerate(lines):
        if line.startswith("m="):
            in_video = line.startswith("m=video")
        elif in_video and line.startswith("a=fmtp:"):
            payload_type = line[7:].split()[0]
            lines[index] = f"a=fmtp:{payload_type} {value}"
    return newline.join(lines)


def merge_with_clip_video(sdp: str, clip_video_section: str) -> str:
    """Insert a clip's video section into an SDP that has none (a published fragment)."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = [line for line in sdp.split(newline)]
    first_media = next((index for index, line in enumerate(lines) if line.startswith("m=")), None)
    video = clip_video_section.replace("\r\n", "\n").strip("\n").split("\n")
    if first_media is None:
        while lines and not lines[-1].strip():
            lines.pop()
        return newline.join(lines + video) + newline
    return newline.join(lines[:first_media] + video + lines[first_media:])


def scenarios_for(case: CaseFile, extra_options: list[str] | None = None) -> list[Scenario]:
    """Assemble every scenario a case describes (one per published SDP or fmtp variant)."""
    parts = _collect(case)
    behaviour = parse_options(
        CORPUS_BEHAVIOUR.get(case.case_id, []) + case.replay_options + (extra_options or [])
    )
    responses = parts.responses
    describe_heads = [
        message for message in responses.get("DESCRIBE", []) if message not in parts.heads_without_body
    ]
    bodies: list[tuple[str, str, Message | None]] = []  # (suffix, sdp, head)
    for index, (sdp, head) in enumerate(parts.sdps):
        bodies.append((f"-{index + 1}", sdp, head))

    for index, fmtp in enumerate(parts.fmtps):
        value = _fmtp_value(fmtp)
        codec = _fmtp_codec(value)
        base = next((sdp for sdp, _ in parts.sdps if _sdp_codec(sdp) == codec), None)
        sdp = _replace_video_fmtp(base, value) if base is not None else sdp_for_fmtp(value, codec)
        bodies.append((f"-fmtp{index + 1}", sdp, None))
    if len(bodies) == 1:
        bodies = [("", bodies[0][1], bodies[0][2])]

    if not bodies:
        # No media description at all: the replay fills in the clip's SDP.
        bodies.append(("", "", None))

    head_without_body = parts.heads_without_body[0] if parts.heads_without_body else None
    scenarios = []
    for suffix, sdp, head in bodies:
        if head is None:
            head = head_without_body or (describe_heads[0] if describe_heads else None)
        if head is None:
            describe = synthesized(headers=[("Content-Type", "application/sdp")], body=sdp)
        else:
            describe = head.copy()
            describe.body = sdp
        unauthorized = (responses.get("401") or [None])[0]
        errors = responses.get("error") or []
        scenarios.append(
            Scenario(
                name=f"{case.case_id}{suffix}",
                case=case,
                describe=describe,
                options=(responses.get("OPTIONS") or [None])[0],
                setups=list(responses.get("SETUP") or []),
                play=(responses.get("PLAY") or [None])[0],
                teardown=(responses.get("TEARDOWN") or [None])[0],
                unauthorized=unauthorized,
                require_rejected=errors[0] if errors else None,
                behaviour=behaviour,
            )
        )
    assemble = _CORPUS_ASSEMBLY.get(case.case_id)
    return assemble(case, scenarios) if assemble is not None else scenarios


# --- corpus cases that publish their data in a form the generic assembly cannot use ---


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _with_sdp(scenarios: list[Scenario], sdp: str) -> list[Scenario]:
    for scenario in scenarios:
        scenario.describe.body = sdp
    return scenarios


def _assemble_q16(case: CaseFile, scenarios: list[Scenario]) -> list[Scenario]:
    # The out-of-band SPS (first line of block 1, base64) with the published in-band PPS.
    sps = case.blocks[0].text.split()[0]
    pps = _b64(block_bytes(case.blocks[2]))
    return _with_sdp(
        scenarios, sdp_for_fmtp(f"packetization-mode=1;sprop-parameter-sets={sps},{pps}", "h264")
    )


def _assemble_q25(case: CaseFile, scenarios: list[Scenario]) -> list[Scenario]:
    lines = {
        line.split()[0]: bytes.fromhex("".join(line.split()[1:])) for line in case.blocks[1].text.splitlines()
    }
    value = f"packetization-mode=1;sprop-parameter-sets={_b64(lines['SPS'])},{_b64(lines['PPS'])}"
    return _with_sdp(scenarios, sdp_for_fmtp(value, "h264"))


def _assemble_q32(case: CaseFile, scenarios: list[Scenario]) -> list[Scenario]:
    # Only the SPS is published, so the PPS comes in-band.
    sps = case.blocks[0].text.strip()
    return _with_sdp(scenarios, sdp_for_fmtp(f"packetization-mode=1;sprop-parameter-sets={sps}", "h264"))


def _assemble_q20(case: CaseFile, scenarios: list[Scenario]) -> list[Scenario]:
    # The published DESCRIBE head ends before the media, and the published
    # SDP tail starts at the video fmtp: join them with the missing m= and rtpmap lines.
    head = next(scenario for scenario in scenarios if scenario.describe.body.startswith("v=0"))
    tail = next(scenario for scenario in scenarios if scenario.describe.body.startswith("a=fmtp"))
    body = head.describe.body
    if not body.endswith("\n"):
        body += "\n"
    body += "m=video 0 RTP/AVP 96\nc=IN IP4 0.0.0.0\nb=AS:1024\na=rtpmap:96 H264/90000\n" + tail.describe.body
    head.describe.body = body
    head.name = case.case_id
    return [head]


def _assemble_q61(case: CaseFile, scenarios: list[Scenario]) -> list[Scenario]:
    # Block 2 lists more malformed Content-Base values seen from other cameras.
    result = list(scenarios)
    for index, value in enumerate(case.blocks[1].text.split(), start=1):
        variant = replace(
            scenarios[0], name=f"{case.case_id}-base{index}", describe=scenarios[0].describe.copy()
        )
        variant.describe.set("Content-Base", value)
        result.append(variant)
    return result


def _assemble_q67(case: CaseFile, scenarios: list[Scenario]) -> list[Scenario]:
    # The block is a client's printout, not a response: rebuild the headers it shows.
    values = dict(
        line.split(":", 2)[1:] for line in case.blocks[0].text.splitlines() if line.startswith("Headers:")
    )
    values = {key.strip(): value.strip() for key, value in values.items()}
    setup = synthesized(
        headers=[("Server", values.get("Server", "")), ("Session", values.get("Session", ""))]
    )
    for scenario in scenarios:
        scenario.setups = [setup]
        scenario.options = synthesized(
            headers=[
                ("Server", values.get("Server", "")),
                ("Public", "OPTIONS, DESCRIBE, SETUP, TEARDOWN, PLAY, GET_PARAMETER"),
            ]
        )
    return scenarios


_CORPUS_ASSEMBLY = {
    "q16": _assemble_q16,
    "q20": _assemble_q20,
    "q25": _assemble_q25,
    "q32": _assemble_q32,
    "q61": _assemble_q61,
    "q67": _assemble_q67,
}


def load_scenarios(paths: list[str | Path], extra_options: list[str] | None = None) -> list[Scenario]:
    scenarios = []
    for path in paths:
        scenarios += scenarios_for(read_case(path), extra_options)
    return scenarios


def block_bytes(block: Block) -> bytes:
    """Return the bytes of a hex block: plain hex, ``0000:`` dumps, or lines led by a label."""
    data = bytearray()
    for line in block.text.splitlines():
        line = line.strip()
        limit = None
        dump = re.match(r"^[0-9a-fA-F]{4}:", line)
        if dump:
            line = line[5:]
            limit = 16  # a dump line contains 16 bytes, then its ASCII column
        started = False
        count = 0
        for token in line.split():
            is_hex = re.fullmatch(r"(?:[0-9a-fA-F]{2})+", token) is not None
            if not is_hex:
                if started:
                    break
                continue
            started = True
            data += bytes.fromhex(token)
            count += len(token) // 2
            if limit is not None and count >= limit:
                break
    return bytes(data)
