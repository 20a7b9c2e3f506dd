// Pantau status page: every camera with its state, a player and its stream URLs.
// Bahasa Indonesia by default, English after the switch (kept in localStorage).
"use strict";

const REFRESH_SECONDS = 3;
const PLAYER_RETRY_SECONDS = 5;
const STALL_SECONDS = 12;

const TEXT = {
  id: {
    title: "Status Kamera",
    subtitle: "Pantau, relai video CCTV Kabupaten Badung",
    filter: "Cari nama, ID, pemilik atau kecamatan",
    summary: "{live} live, {offline} offline, {connecting} menghubungkan, {idle} siaga, dari {total} kamera",
    updated: "Diperbarui {time}",
    empty: "Belum ada kamera terdaftar. Tambahkan kamera lewat berkas kamera atau PUT /api/cameras/{id}.",
    api_error: "Status tidak dapat diambil dari Pantau ({reason}). Mencoba lagi setiap {seconds} detik.",
    players_missing:
      "Pemutar video (hls.js dan mpegts.js) belum terpasang di server ini, jadi video tidak dapat diputar di halaman ini. " +
      "Di server Pantau, jalankan <code>npm ci</code> di direktori Pantau (deploy/bootstrap.sh menjalankannya), " +
      "lalu muat ulang halaman ini. Alamat FLV dan HLS di bawah tetap bisa dibuka di VLC atau ffplay.",
    state_idle: "Siaga",
    state_connecting: "Menghubungkan",
    state_live: "Live",
    state_retrying: "Offline",
    field_id: "ID",
    field_owner: "Pemilik",
    field_kecamatan: "Kecamatan",
    field_codec: "Kodek",
    field_resolution: "Resolusi",
    field_rate: "Laju",
    field_readers: "Pembaca",
    field_facts: "Terukur",
    field_compliance: "Aturan 4 MP",
    facts_none: "belum diprobe",
    facts_probed: "diprobe {ago}",
    compliance_compliant: "memenuhi",
    compliance_below_minimum: "di bawah minimum",
    compliance_exempt: "dikecualikan",
    compliance_unknown: "belum diketahui",
    owner_pemkab: "Pemkab",
    owner_desa: "Desa",
    owner_swasta: "Swasta",
    play_flv: "Putar FLV",
    play_hls: "Putar HLS",
    stop: "Hentikan",
    copy: "Salin",
    copied_signed: "Disalin, berlaku sampai {time}",
    copy_failed: "Gagal: {reason}",
    copied: "Tersalin",
    all_fields: "Semua data kamera",
    none: "tidak ada",
    msg_idle: "Kamera tidak sedang ditarik (mode on_demand). Tekan Putar untuk menghubungkan.",
    msg_connecting: "Menghubungkan ke kamera…",
    msg_live_since: "Live sejak {time} ({ago}).",
    msg_offline:
      "Kamera offline sejak {time} ({ago}). Pantau mencoba lagi dalam {retry} detik. Penyebab: {reason}",
    msg_offline_no_retry: "Kamera offline sejak {time} ({ago}). Pantau sedang mencoba lagi. Penyebab: {reason}",
    msg_unsupported: "Kamera mengirim video {codec}; hanya H.264 dan H.265 yang dapat diputar.",
    player_loading: "Memuat video…",
    player_waiting_camera: "Kamera offline. Video akan mulai lagi otomatis saat kamera kembali.",
    player_error: "Pemutar berhenti ({detail}). Mencoba lagi dalam {seconds} detik.",
    player_stalled: "Video tidak bergerak selama {seconds} detik. Menyambung ulang.",
    player_missing: "Pemutar {name} belum terpasang di server ini.",
    player_unsupported: "Peramban ini tidak dapat memutar format ini (Media Source Extensions tidak tersedia).",
    key_prompt: "Pantau meminta kunci akses. Masukkan kunci konsumen atau token admin; kunci disimpan di peramban ini.",
    key_rejected: "Kunci ditolak ({reason}). Masukkan kunci lain.",
    key_label: "Kunci akses",
    key_save: "Simpan",
    key_forget: "Lupakan kunci",
    ago_seconds: "{n} detik lalu",
    ago_minutes: "{n} menit lalu",
    ago_hours: "{n} jam lalu",
    ago_days: "{n} hari lalu",
    locale: "id-ID",
  },
  en: {
    title: "Camera status",
    subtitle: "Pantau, the CCTV video relay of Badung Regency",
    filter: "Search name, id, owner or kecamatan",
    summary: "{live} live, {offline} offline, {connecting} connecting, {idle} idle, of {total} cameras",
    updated: "Updated {time}",
    empty: "No cameras yet. Add cameras in the cameras file or with PUT /api/cameras/{id}.",
    api_error: "Cannot fetch the status from Pantau ({reason}). Retrying every {seconds} s.",
    players_missing:
      "The video players (hls.js and mpegts.js) are not installed on this server, so this page cannot play video. " +
      "On the Pantau server, run <code>npm ci</code> in the Pantau directory (deploy/bootstrap.sh runs it), " +
      "then reload this page. The FLV and HLS URLs below still open in VLC or ffplay.",
    state_idle: "Idle",
    state_connecting: "Connecting",
    state_live: "Live",
    state_retrying: "Offline",
    field_id: "Id",
    field_owner: "Owner",
    field_kecamatan: "Kecamatan (district)",
    field_codec: "Codec",
    field_resolution: "Resolution",
    field_rate: "Rate",
    field_readers: "Readers",
    field_facts: "Measured",
    field_compliance: "4 MP rule",
    facts_none: "not probed yet",
    facts_probed: "probed {ago}",
    compliance_compliant: "compliant",
    compliance_below_minimum: "below minimum",
    compliance_exempt: "exempt",
    compliance_unknown: "unknown",
    owner_pemkab: "Regency government",
    owner_desa: "Village",
    owner_swasta: "Private",
    play_flv: "Play FLV",
    play_hls: "Play HLS",
    stop: "Stop",
    copy: "Copy",
    copied_signed: "Copied, valid until {time}",
    copy_failed: "Failed: {reason}",
    copied: "Copied",
    all_fields: "All camera fields",
    none: "none",
    msg_idle: "The camera is not being pulled now (on_demand mode). Press Play to connect.",
    msg_connecting: "Connecting to the camera…",
    msg_live_since: "Live since {time} ({ago}).",
    msg_offline: "Camera offline since {time} ({ago}). Pantau retries in {retry} s. Cause: {reason}",
    msg_offline_no_retry: "Camera offline since {time} ({ago}). Pantau is retrying. Cause: {reason}",
    msg_unsupported: "The camera sends {codec} video; only H.264 and H.265 can be played.",
    player_loading: "Loading video…",
    player_waiting_camera: "The camera is offline. The video starts again by itself when the camera is back.",
    player_error: "The player stopped ({detail}). Retrying in {seconds} s.",
    player_stalled: "The video has not moved for {seconds} s. Reconnecting.",
    player_missing: "The {name} player is not installed on this server.",
    player_unsupported: "This browser cannot play this format (no Media Source Extensions).",
    key_prompt: "Pantau needs an access key. Enter a consumer key or the admin token; it is kept in this browser.",
    key_rejected: "The key was rejected ({reason}). Enter another key.",
    key_label: "Access key",
    key_save: "Save",
    key_forget: "Forget key",
    ago_seconds: "{n} s ago",
    ago_minutes: "{n} min ago",
    ago_hours: "{n} h ago",
    ago_days: "{n} days ago",
    locale: "en-GB",
  },
};

let language = localStorage.getItem("pantau.language") === "en" ? "en" : "id";
const cards = new Map(); // camera id -> Card
let lastCameras = [];

function t(key, values = {}) {
  const template = TEXT[language][key] ?? TEXT.en[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (match, name) => (name in values ? String(values[name]) : match));
}

// --- requests to Pantau ----------------------------------------------------------
// Every request goes through authHeaders() and streamUrls(). The operator's key is
// asked for once and kept in localStorage; API requests send it as a Bearer header,
// and players get signed URLs (POST /api/tokens), which need no header.

const KEY_STORAGE = "pantau.key";

function storedKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders() {
  const key = storedKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function apiRequest(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) }, cache: "no-store" });
  if (!response.ok) {
    let reason = `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (body && body.reason) reason = body.reason;
    } catch (error) {
      // The body was not JSON; the status code is the reason.
    }
    throw new ApiError(reason, response.status);
  }
  return response.json();
}

function apiGet(path) {
  return apiRequest(path);
}

function apiPost(path, body) {
  return apiRequest(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function streamUrls(cameraId, token = "") {
  const base = new URL(".", window.location.href);
  const id = encodeURIComponent(cameraId);
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return {
    flv: new URL(`live/${id}.flv${query}`, base).href,
    hls: new URL(`live/${id}/index.m3u8${query}`, base).href,
    ts: new URL(`live/${id}/ts/index.m3u8${query}`, base).href,
  };
}

// With a key, a player plays a signed URL made for its camera; without one
// (access control off), the plain URL. A token is reused until a minute before
// it expires, so that player retries do not each make a new one.
const TOKEN_REUSE_MARGIN_MS = 60 * 1000;
const tokens = new Map(); // camera id -> {token, expires}

async function playUrls(cameraId) {
  if (!storedKey()) return streamUrls(cameraId);
  const cached = tokens.get(cameraId);
  if (cached && cached.expires - Date.now() > TOKEN_REUSE_MARGIN_MS) return streamUrls(cameraId, cached.token);
  const body = await apiPost("api/tokens", { camera_id: cameraId, actions: ["live"] });
  tokens.set(cameraId, { token: body.token, expires: new Date(body.expires_at).getTime() });
  return streamUrls(cameraId, body.token);
}

// --- formatting ------------------------------------------------------------------

function formatTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(t("locale"), { dateStyle: "short", timeStyle: "medium" });
}

function formatAgo(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (seconds < 90) return t("ago_seconds", { n: seconds });
  if (seconds < 90 * 60) return t("ago_minutes", { n: Math.round(seconds / 60) });
  if (seconds < 36 * 3600) return t("ago_hours", { n: Math.round(seconds / 3600) });
  return t("ago_days", { n: Math.round(seconds / 86400) });
}

function formatReaders(readers) {
  const parts = Object.entries(readers || {})
    .filter(([, count]) => count > 0)
    .map(([kind, count]) => `${kind.toUpperCase()} ${count}`);
  return parts.length ? parts.join(", ") : t("none");
}

function formatRate(camera) {
  const parts = [];
  if (camera.fps != null) parts.push(`${camera.fps} fps`);
  if (camera.bitrate_bps != null) parts.push(`${(camera.bitrate_bps / 1e6).toFixed(2)} Mbit/s`);
  return parts.join(", ") || "—";
}

function formatFacts(probe) {
  const facts = probe && probe.facts;
  if (!facts) return t("facts_none");
  const parts = [`${facts.width}×${facts.height} (${facts.megapixels} MP)`];
  if (facts.fps) parts.push(`${facts.fps.toFixed(1)} fps`);
  if (facts.gop_seconds) parts.push(`GOP ${facts.gop_seconds.toFixed(1)} s`);
  if (facts.video_bitrate_bps) parts.push(`${(facts.video_bitrate_bps / 1e6).toFixed(2)} Mbit/s`);
  if (facts.b_frames) parts.push("B-frames");
  if (probe.probed_at) parts.push(t("facts_probed", { ago: formatAgo(probe.probed_at) }));
  return parts.join(", ");
}

// The server writes compliance reasons in English; these are their Indonesian forms.
const REASONS_ID = [
  [/^owner category (\S+): the rule covers (\S+) cameras only$/, "kategori pemilik $1: aturan hanya berlaku untuk kamera $2"],
  [/^installed_on missing$/, "installed_on tidak diisi"],
  [/^installed on (\S+), before PANTAU_MIN_PIXELS_SINCE (\S+)$/, "dipasang $1, sebelum PANTAU_MIN_PIXELS_SINCE $2"],
  [/^(\d+x\d+) = ([\d ]+) pixels, at least the minimum ([\d ]+)/, "$1 = $2 piksel, tidak kurang dari minimum $3"],
  [/^(\d+x\d+) = ([\d ]+) pixels, below the minimum ([\d ]+)/, "$1 = $2 piksel, di bawah minimum $3"],
  [/^never probed; last connection error: /, "belum pernah diprobe; galat koneksi terakhir: "],
  [/^never probed$/, "belum pernah diprobe"],
  [/^probe failed: /, "probe gagal: "],
];

function translateReason(reason) {
  if (language !== "id" || !reason) return reason;
  for (const [pattern, replacement] of REASONS_ID) {
    if (pattern.test(reason)) return reason.replace(pattern, replacement);
  }
  return reason;
}

function formatCompliance(compliance) {
  if (!compliance) return "—";
  return `${t(`compliance_${compliance.status}`)}: ${translateReason(compliance.reason)}`;
}

function formatValue(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// Flatten nested objects into "owner.category"-style keys, so that fields added to
// GET /api/cameras later (probe facts, compliance) show up without changes here.
function flatten(object, prefix = "", out = []) {
  for (const [key, value] of Object.entries(object)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value)) flatten(value, name, out);
    else out.push([name, value]);
  }
  return out;
}

// --- players ---------------------------------------------------------------------

function playerAvailable(kind) {
  return kind === "hls" ? typeof window.Hls !== "undefined" : typeof window.mpegts !== "undefined";
}

class Player {
  constructor(card) {
    this.card = card;
    this.video = card.root.querySelector("video");
    this.box = card.root.querySelector(".player");
    this.overlay = card.root.querySelector(".overlay");
    this.kind = null; // "flv" or "hls" while the operator wants video
    this.engine = null;
    this.retryTimer = null;
    this.lastTime = 0;
    this.lastProgress = 0;
    this.waitingForCamera = false;
    this.overlayMessage = null;
    this.attempt = 0; // counts start() calls, so a late token response cannot start an old attempt
    this.video.addEventListener("playing", () => this.hideOverlay());
    this.video.addEventListener("timeupdate", () => {
      if (this.video.currentTime !== this.lastTime) {
        this.lastTime = this.video.currentTime;
        this.lastProgress = Date.now();
      }
    });
  }

  async start(kind) {
    this.stopEngine();
    const attempt = ++this.attempt;
    this.kind = kind;
    this.box.classList.add("active");
    this.waitingForCamera = false;
    if (!playerAvailable(kind)) {
      this.showOverlay("player_missing", { name: kind === "hls" ? "hls.js" : "mpegts.js" });
      return;
    }
    this.showOverlay("player_loading");
    this.lastProgress = Date.now();
    let urls;
    try {
      urls = await playUrls(this.card.id);
    } catch (error) {
      if (attempt === this.attempt) this.fail(error.message);
      return;
    }
    if (attempt !== this.attempt || this.kind !== kind) return;
    if (kind === "hls") this.startHls(urls.hls);
    else this.startFlv(urls.flv);
  }

  startHls(url) {
    const Hls = window.Hls;
    if (!Hls.isSupported()) {
      if (this.video.canPlayType("application/vnd.apple.mpegurl")) {
        this.video.src = url; // Safari plays HLS natively, without an Authorization header
        this.video.play().catch(() => {});
        return;
      }
      this.showOverlay("player_unsupported");
      return;
    }
    // A signed URL carries its token into every playlist URI; only a plain URL needs the header.
    const headers = url.includes("token=") ? {} : authHeaders();
    const hls = new Hls({
      xhrSetup: (xhr) => {
        for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      },
    });
    this.engine = { destroy: () => hls.destroy() };
    hls.on(Hls.Events.ERROR, (event, data) => {
      if (data.fatal) this.fail(`${data.type}: ${data.details}`);
    });
    hls.loadSource(url);
    hls.attachMedia(this.video);
    hls.on(Hls.Events.MANIFEST_PARSED, () => this.video.play().catch(() => {}));
  }

  startFlv(url) {
    const mpegts = window.mpegts;
    if (!mpegts.getFeatureList().mseLivePlayback) {
      this.showOverlay("player_unsupported");
      return;
    }
    const player = mpegts.createPlayer(
      { type: "flv", isLive: true, url },
      { enableStashBuffer: false, liveBufferLatencyChasing: true, headers: url.includes("token=") ? {} : authHeaders() },
    );
    this.engine = {
      destroy: () => {
        player.pause();
        player.unload();
        player.detachMediaElement();
        player.destroy();
      },
    };
    player.on(mpegts.Events.ERROR, (type, detail, info) => {
      const code = info && info.code ? ` ${info.code}` : "";
      this.fail(`${type}: ${detail}${code}`);
    });
    player.attachMediaElement(this.video);
    player.load();
    const started = player.play();
    if (started && started.catch) started.catch(() => {});
  }

  fail(detail) {
    this.stopEngine();
    tokens.delete(this.card.id); // the token may be the reason: revoked, or expired during playback
    if (this.card.camera && this.card.camera.state === "retrying") {
      this.waitForCamera();
      return;
    }
    this.showOverlay("player_error", { detail, seconds: PLAYER_RETRY_SECONDS });
    this.retryTimer = setTimeout(() => this.kind && this.start(this.kind), PLAYER_RETRY_SECONDS * 1000);
  }

  waitForCamera() {
    this.stopEngine();
    this.waitingForCamera = true;
    this.showOverlay("player_waiting_camera");
  }

  // Called after every status refresh with the camera's new state.
  onCameraState(state) {
    if (!this.kind) return;
    if (state === "retrying" && !this.waitingForCamera) {
      this.waitForCamera();
    } else if (state === "live" && this.waitingForCamera) {
      this.start(this.kind);
    } else if (this.engine && state === "live" && Date.now() - this.lastProgress > STALL_SECONDS * 1000) {
      this.start(this.kind);
      this.showOverlay("player_stalled", { seconds: STALL_SECONDS });
    }
  }

  stopEngine() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.engine) {
      try {
        this.engine.destroy();
      } catch (error) {
        console.warn("player cleanup failed", error);
      }
      this.engine = null;
    }
    this.video.removeAttribute("src");
    this.video.load();
  }

  stop() {
    this.attempt += 1;
    this.kind = null;
    this.waitingForCamera = false;
    this.stopEngine();
    this.hideOverlay();
    this.box.classList.remove("active");
  }

  // Show a message over the video; the key and values let a language switch redraw it.
  showOverlay(key, values = {}) {
    this.overlayMessage = [key, values];
    this.overlay.textContent = t(key, values);
    this.overlay.hidden = false;
  }

  hideOverlay() {
    this.overlay.hidden = true;
  }

  retranslate() {
    if (!this.overlay.hidden && this.overlayMessage) this.showOverlay(...this.overlayMessage);
  }
}

// --- camera cards ----------------------------------------------------------------

class Card {
  constructor(camera) {
    this.id = camera.id;
    this.camera = null;
    this.root = document.getElementById("camera-card").content.firstElementChild.cloneNode(true);
    this.root.dataset.cameraId = camera.id;
    this.player = new Player(this);
    const urls = streamUrls(camera.id);
    for (const input of this.root.querySelectorAll("[data-url]")) input.value = urls[input.dataset.url];
    for (const button of this.root.querySelectorAll("[data-play]")) {
      button.addEventListener("click", () => this.player.start(button.dataset.play));
    }
    this.root.querySelector("[data-stop]").addEventListener("click", () => this.player.stop());
    for (const button of this.root.querySelectorAll("[data-copy]")) {
      button.addEventListener("click", () =>
        copyUrl(button, this.root.querySelector(`[data-url="${button.dataset.copy}"]`), this.id),
      );
    }
    translate(this.root);
  }

  update(camera) {
    this.camera = camera;
    const root = this.root;
    const set = (selector, text) => {
      const element = root.querySelector(selector);
      if (element.textContent !== text) element.textContent = text;
    };
    set(".name", camera.name || camera.id);
    set(".id", camera.id);
    const owner = camera.owner || {};
    set(".owner", owner.category ? `${t(`owner_${owner.category}`)}: ${owner.name}` : "—");
    set(".kecamatan", formatValue(camera.location && camera.location.kecamatan));
    set(".codec", camera.codec ? `${camera.codec.toUpperCase()}${camera.profile ? ` ${camera.profile}` : ""}` : "—");
    set(".resolution", camera.width && camera.height ? `${camera.width}×${camera.height}` : "—");
    set(".rate", formatRate(camera));
    set(".readers", formatReaders(camera.readers));
    set(".measured", formatFacts(camera.probe));
    set(".rule", formatCompliance(camera.compliance));
    root.querySelector(".rule").dataset.status = camera.compliance ? camera.compliance.status : "";
    const state = root.querySelector(".state");
    state.className = `state ${camera.state}`;
    set(".state", t(`state_${camera.state}`));

    const message = root.querySelector(".message");
    const [text, isError] = cameraMessage(camera);
    message.classList.toggle("error", isError);
    if (message.textContent !== text) message.textContent = text;

    const fields = root.querySelector(".all-fields");
    const rows = flatten(camera);
    const html = rows.map(([key]) => key).join("|");
    if (fields.dataset.keys !== html) {
      fields.replaceChildren();
      for (const [key] of rows) {
        const dt = document.createElement("dt");
        dt.textContent = key;
        const dd = document.createElement("dd");
        dd.dataset.key = key;
        fields.append(dt, dd);
      }
      fields.dataset.keys = html;
    }
    for (const [key, value] of rows) {
      const dd = fields.querySelector(`dd[data-key="${CSS.escape(key)}"]`);
      const text = formatValue(value);
      if (dd.textContent !== text) dd.textContent = text;
    }
    this.player.onCameraState(camera.state);
  }
}

function cameraMessage(camera) {
  if (camera.codec && !["h264", "h265"].includes(camera.codec)) {
    return [t("msg_unsupported", { codec: camera.codec }), true];
  }
  if (camera.state === "retrying") {
    const error = camera.last_error || {};
    const since = camera.offline_since || error.at;
    const reason = error.reason || "—";
    if (camera.retry_in_seconds != null) {
      return [t("msg_offline", { time: formatTime(since), ago: formatAgo(since), retry: Math.ceil(camera.retry_in_seconds), reason }), true];
    }
    return [t("msg_offline_no_retry", { time: formatTime(since), ago: formatAgo(since), reason }), true];
  }
  if (camera.state === "connecting") return [t("msg_connecting"), false];
  if (camera.state === "live" && camera.connected_since) {
    return [t("msg_live_since", { time: formatTime(camera.connected_since), ago: formatAgo(camera.connected_since) }), false];
  }
  return [t("msg_idle"), false];
}

// With a key, the copied URL carries a signed token, so VLC or ffplay can open it
// without a header. The field keeps showing the plain URL.
async function copyUrl(button, input, cameraId) {
  const plain = input.value;
  let text = plain;
  let label = t("copied");
  if (storedKey()) {
    try {
      text = (await playUrls(cameraId))[input.dataset.url];
      label = t("copied_signed", { time: formatTime(new Date(tokens.get(cameraId).expires).toISOString()) });
    } catch (error) {
      button.textContent = t("copy_failed", { reason: error.message });
      setTimeout(() => (button.textContent = t("copy")), 4000);
      return;
    }
  }
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {
    // The clipboard API needs a secure context (https or localhost); fall back to a selection.
    input.value = text;
    input.select();
    document.execCommand("copy");
    input.value = plain;
  }
  button.textContent = label;
  setTimeout(() => (button.textContent = t("copy")), text === plain ? 1500 : 4000);
}

// --- page ------------------------------------------------------------------------

function translate(root = document) {
  for (const element of root.querySelectorAll("[data-text]")) element.textContent = t(element.dataset.text);
}

function setLanguage(next) {
  language = next;
  localStorage.setItem("pantau.language", next);
  document.documentElement.lang = next;
  document.title = `Pantau — ${t("title")}`;
  translate();
  document.getElementById("filter").placeholder = t("filter");
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === next));
  }
  const missing = document.getElementById("players-missing");
  if (!missing.hidden) missing.innerHTML = t("players_missing");
  if (keyMessage) showKeyForm(...keyMessage);
  render(lastCameras);
  for (const card of cards.values()) card.player.retranslate();
}

function matchesFilter(camera, query) {
  if (!query) return true;
  const owner = camera.owner || {};
  const location = camera.location || {};
  const text = [camera.id, camera.name, owner.name, owner.category, location.kecamatan, location.desa].join(" ");
  return text.toLowerCase().includes(query);
}

function render(cameras) {
  const container = document.getElementById("cameras");
  const query = document.getElementById("filter").value.trim().toLowerCase();
  const seen = new Set();
  const counts = { live: 0, retrying: 0, connecting: 0, idle: 0 };
  for (const camera of cameras) {
    seen.add(camera.id);
    counts[camera.state] = (counts[camera.state] || 0) + 1;
    let card = cards.get(camera.id);
    if (!card) {
      card = new Card(camera);
      cards.set(camera.id, card);
      container.append(card.root);
    }
    card.update(camera);
    card.root.hidden = !matchesFilter(camera, query);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.player.stop();
      card.root.remove();
      cards.delete(id);
    }
  }
  document.getElementById("summary").textContent = t("summary", {
    live: counts.live,
    offline: counts.retrying,
    connecting: counts.connecting,
    idle: counts.idle,
    total: cameras.length,
  });
  const empty = document.getElementById("empty");
  empty.hidden = cameras.length > 0 || keyMessage !== null; // while a key is missing, an empty list means nothing
  empty.textContent = t("empty");
}

// --- access key ------------------------------------------------------------------

let keyMessage = null; // [text key, values] of the key form while it is shown

function showKeyForm(key, values = {}) {
  keyMessage = [key, values];
  document.getElementById("empty").hidden = true;
  document.getElementById("key-message").textContent = t(key, values);
  document.getElementById("key-form").hidden = false;
}

function hideKeyForm() {
  keyMessage = null;
  document.getElementById("key-form").hidden = true;
}

function showKeyButton() {
  document.getElementById("key-forget").hidden = !storedKey();
}

function saveKey(event) {
  event.preventDefault();
  const input = document.getElementById("key-input");
  const key = input.value.trim();
  if (!key) return;
  localStorage.setItem(KEY_STORAGE, key);
  tokens.clear();
  input.value = "";
  hideKeyForm();
  showKeyButton();
  refresh();
}

function forgetKey() {
  localStorage.removeItem(KEY_STORAGE);
  tokens.clear();
  showKeyButton();
  lastCameras = [];
  render(lastCameras);
  refresh();
}

// --- status refresh --------------------------------------------------------------

let refreshTimer = null;

async function refresh() {
  clearTimeout(refreshTimer);
  const apiError = document.getElementById("api-error");
  try {
    const body = await apiGet("api/cameras");
    lastCameras = body.items || [];
    apiError.hidden = true;
    hideKeyForm();
    render(lastCameras);
    document.getElementById("updated").textContent = t("updated", { time: new Date().toLocaleTimeString(t("locale")) });
  } catch (error) {
    if (error.status === 401 || error.status === 429) {
      // Polling with a missing or wrong key would only add failed attempts: wait for a key.
      apiError.hidden = true;
      showKeyForm(storedKey() ? "key_rejected" : "key_prompt", { reason: error.message });
      return;
    }
    apiError.textContent = t("api_error", { reason: error.message, seconds: REFRESH_SECONDS });
    apiError.hidden = false;
  }
  refreshTimer = setTimeout(refresh, REFRESH_SECONDS * 1000);
}

function start() {
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.addEventListener("click", () => setLanguage(button.dataset.lang));
  }
  document.getElementById("filter").addEventListener("input", () => render(lastCameras));
  document.getElementById("key-form").addEventListener("submit", saveKey);
  document.getElementById("key-forget").addEventListener("click", forgetKey);
  showKeyButton();
  if (!playerAvailable("hls") || !playerAvailable("flv")) {
    const missing = document.getElementById("players-missing");
    missing.hidden = false;
  }
  setLanguage(language);
  refresh();
}

start();
