#!/usr/bin/env bash
# Set up Pantau on a fresh Debian 12 machine, then run the demo or the test suite.
#
#   deploy/bootstrap.sh demo   install what the service needs and run it with a demo camera
#   deploy/bootstrap.sh test   install what the tests need (ffmpeg, GStreamer's RTSP server,
#                              Chromium, Playwright) and run the whole test suite
#
# Debian packages are installed only when missing; Python packages go to .venv.
set -euo pipefail

cd "$(dirname "$0")/.."
mode="${1:-}"
shift || true

case "$mode" in
  demo|test) ;;
  *) echo "usage: deploy/bootstrap.sh demo|test [pytest arguments]" >&2; exit 2 ;;
esac

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

apt_install() {
  local missing=()
  for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$package")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

packages=(ca-certificates python3 python3-venv)
if [ "$mode" = test ]; then
  # ffmpeg/ffprobe as clients, GStreamer's RTSP server as the camera (run by Debian's own
  # python3, the only one that imports python3-gi), Chromium for the browser tests.
  packages+=(ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
             gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav
             chromium iproute2)
fi
apt_install "${packages[@]}"

# Machines with NodeSource's nodejs already ship npm, which Debian's npm package conflicts with.
if [ -f package.json ] && ! command -v npm >/dev/null 2>&1; then
  apt_install npm
fi

python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: Pantau needs Python 3.11 or newer; $("$python" --version) found" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' 2>/dev/null; then
  rm -rf .venv
  "$python" -m venv .venv
fi
# Install (again) only when pyproject.toml changed; the build's chatter goes to a log.
extras=""
[ "$mode" = test ] && extras="[test]"
stamp=".venv/.pantau-installed"
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)$extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "bootstrap: installing Python packages into .venv" >&2
  if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e ".$extras"; } \
      >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "bootstrap: pip install failed (log above, also in .venv/pip.log)" >&2
    exit 1
  fi
  echo "$wanted" >"$stamp"
fi

if [ -f package.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ "$mode" = demo ]; then
  exec .venv/bin/pantau demo
fi
exec .venv/bin/python -m pytest "$@"
