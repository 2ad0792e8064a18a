#!/usr/bin/env bash
# Replays README.md's daemon-and-CLI block verbatim, as a script would (no pause between
# starting maasd and using it): in a fresh directory inside target/ (so that cargo finds
# the workspace), with fresh certificates, policy and SQLite file; the first
# `submit --wait` and the curl calls must succeed as written. maasd listens on its
# defaults (gRPC on 127.0.0.1:7443) and on 127.0.0.1:7444 (REST), so nothing else may hold
# them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$root/target/readme-replay
rm -rf "$work"
mkdir -p "$work"
# The ```sh block after the daemon-and-cli marker.
awk '/<!-- daemon-and-cli/ {marked=1; next} marked && /^```sh/ {inside=1; next} inside && /^```/ {exit} inside' \
  "$root/README.md" > "$work/block.sh"
if [ ! -s "$work/block.sh" ]; then
  echo "readme-daemon: no daemon-and-cli block in README.md" >&2
  exit 1
fi
stop_maasd() { pkill -f "maasd --policy policy.json" 2> /dev/null || true; }
trap stop_maasd EXIT
sed 's/^/     /' "$work/block.sh"
if ! (cd "$work" && bash -euo pipefail block.sh > out.txt 2>&1); then
  cat "$work/out.txt"
  echo "readme-daemon: the README block failed as written" >&2
  exit 1
fi
tail -n 2 "$work/out.txt"
