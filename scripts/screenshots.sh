#!/usr/bin/env bash
# Screenshots of a leaderboard site in a real headless Chromium (Debian's `chromium` package), for README.
#
#   scripts/screenshots.sh SITE_DIR OUT_DIR [TASK_SLUG]
#
# Opens SITE_DIR/index.html, SITE_DIR/task-TASK_SLUG.html and SITE_DIR/cases-TASK_SLUG.html from file://
# (TASK_SLUG: the first task page by default) with networking off, and writes overview.png, task.png
# and drilldown.png (desktop: SCREENSHOT_WIDTH x SCREENSHOT_HEIGHT, default 1440 x 1600 CSS px) and
# overview-phone.png, task-phone.png and drilldown-phone.png (a phone: SCREENSHOT_PHONE_WIDTH x
# SCREENSHOT_PHONE_HEIGHT, default 390 x 1200 CSS px at SCREENSHOT_PHONE_SCALE = 2 device pixels per CSS
# px, as phones draw; SCREENSHOT_PHONE_WIDTH=0 skips them) into OUT_DIR. Install the browser with
# `apt-get install -y chromium`; as root it runs with --no-sandbox. Each page gets a fresh, empty
# profile directory. The PNGs are then reduced to 256 colours (a third of the size, text stays sharp)
# with Pillow from $PYTHON (default: python3).
set -euo pipefail

site=$(cd "${1:?usage: scripts/screenshots.sh SITE_DIR OUT_DIR [TASK_SLUG]}" && pwd)
out=${2:?usage: scripts/screenshots.sh SITE_DIR OUT_DIR [TASK_SLUG]}
mkdir -p "$out"
out=$(cd "$out" && pwd)
task=${3:-$(cd "$site" && ls task-*.html | head -n 1 | sed 's/^task-//; s/\.html$//')}
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$browser" ]]; then
    echo "screenshots.sh: no chromium found (apt-get install -y chromium)" >&2
    exit 1
fi
width=${SCREENSHOT_WIDTH:-1440}
height=${SCREENSHOT_HEIGHT:-1600}
phone_width=${SCREENSHOT_PHONE_WIDTH:-390}
phone_height=${SCREENSHOT_PHONE_HEIGHT:-1200}
phone_scale=${SCREENSHOT_PHONE_SCALE:-2}
shots=()

shoot() {  # shoot PAGE PNG WIDTH HEIGHT SCALE
    local profile
    profile=$(mktemp -d)
    "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --hide-scrollbars --force-device-scale-factor="$5" --user-data-dir="$profile" \
        --window-size="$3,$4" --screenshot="$out/$2" "file://$site/$1" >/dev/null 2>&1
    rm -rf "$profile"
    [[ -s "$out/$2" ]] || { echo "screenshots.sh: no screenshot of $1" >&2; exit 1; }
    shots+=("$out/$2")
    echo "$out/$2"
}

for suffix in "" -phone; do
    if [[ -z "$suffix" ]]; then size=("$width" "$height" 1); else size=("$phone_width" "$phone_height" "$phone_scale"); fi
    [[ "${size[0]}" == 0 ]] && continue
    shoot index.html "overview$suffix.png" "${size[@]}"
    shoot "task-$task.html" "task$suffix.png" "${size[@]}"
    shoot "cases-$task.html" "drilldown$suffix.png" "${size[@]}"
done

"${PYTHON:-python3}" - "${shots[@]}" <<'PY' ||
import sys
from PIL import Image
for path in sys.argv[1:]:
    Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
PY
    echo "screenshots.sh: Pillow not found in ${PYTHON:-python3}; PNGs left as Chromium wrote them" >&2
