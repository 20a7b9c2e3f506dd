#!/usr/bin/env bash
# The runs behind BENCHMARKS.md, one after the other on an otherwise idle machine.
# Usage: loadtest/benchmarks.sh [OUTPUT_DIR] [ingest|peer|fanout|soak|all]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmark-results}"
what="${2:-all}"
mkdir -p "$out"
python=.venv/bin/python
[ -x "$python" ] || python=python3

run() {  # name, then load-test arguments
  local name="$1"
  shift
  echo "== $name: python -m loadtest $*" >&2
  "$python" -m loadtest "$@" --json "$out/$name.json" >"$out/$name.txt" || true
}

if [ "$what" = ingest ] || [ "$what" = all ]; then
  for cameras in 50 100 200; do
    run "ingest-$cameras" --cameras "$cameras" --viewers-per-camera 1 --always --warmup 20 --duration 60
    run "ingest-record-$cameras" --cameras "$cameras" --viewers-per-camera 1 --record --warmup 20 --duration 60
  done
  # on_demand cameras: each viewer's request opens the upstream, so first keyframe is "cold".
  run "cold-50" --cameras 50 --viewers-per-camera 1 --warmup 20 --duration 30
  run "ingest-profile-100" --cameras 100 --viewers-per-camera 1 --always --warmup 20 --duration 60 --profile
fi
if [ "$what" = peer ] || [ "$what" = all ]; then
  for cameras in 50 100 200; do
    # Pantau doing the peer's job alone: recording, no viewers.
    run "record-only-$cameras" --cameras "$cameras" --viewers-per-camera 0 --record --warmup 20 --duration 60
    echo "== peer-$cameras: python -m loadtest.peer --cameras $cameras" >&2
    "$python" -m loadtest.peer --cameras "$cameras" --warmup 20 --duration 60 --json "$out/peer-$cameras.json" \
      >"$out/peer-$cameras.txt" || true
  done
fi
if [ "$what" = fanout ] || [ "$what" = all ]; then
  for viewers in 50 200 500 1000; do
    run "fanout-flv-$viewers" --cameras 1 --viewers-per-camera "$viewers" --always --warmup 15 --duration 60
  done
  run "fanout-flv-1000-profile" --cameras 1 --viewers-per-camera 1000 --always --warmup 15 --duration 60 --profile
  run "fanout-hls-200" --cameras 1 --viewers-per-camera 200 --protocol hls --always --warmup 15 --duration 60
fi
if [ "$what" = soak ] || [ "$what" = all ]; then
  run "soak-100" --cameras 100 --viewers-per-camera 1 --record --flap-share 0.1 --warmup 30 --duration 1800 \
    --soak --pantau-env PANTAU_RETENTION_MAX_BYTES=20000000000 --pantau-env PANTAU_RETENTION_INTERVAL_SECONDS=20
fi
echo "results in $out" >&2
