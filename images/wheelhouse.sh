#!/usr/bin/env bash
# Fill build/wheelhouse with every wheel the images install, so the Docker builds never
# reach an index (pip inside a container lacks this host's pip configuration, and the
# build may have no network at all):
#   build/wheelhouse/deps/  the locked runtime set: `pip wheel -c constraints.txt .`, i.e.
#                           exactly the pins of constraints.txt that flywheel needs
#                           (re-filled only when constraints.txt or pyproject.toml change);
#   build/wheelhouse/app/   flywheel itself, rebuilt every time (a few seconds) with a fixed
#                           SOURCE_DATE_EPOCH, so unchanged sources give a byte-identical
#                           wheel and Docker's layer cache holds.
# Usage: images/wheelhouse.sh   (PIP defaults to .venv/bin/pip; LOCK to constraints.txt)
# The lock used is copied to build/wheelhouse/constraints.txt; the image builds read it there.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP="${PIP:-.venv/bin/pip}"
LOCK="${LOCK:-constraints.txt}"
OUT=build/wheelhouse
EXTRA=images/constraints-bookworm.txt
KEY="$(cat "$LOCK" "$EXTRA" pyproject.toml | sha256sum | cut -d' ' -f1)"

# pip, minus the noise of this host's index configuration and setuptools' deprecation box.
pip_quiet() {
    "$PIP" "$@" --quiet --disable-pip-version-check 2>&1 \
        | { grep -v -E 'is ignored: it is neither|BuildBackendWarning|^\s*(\*+|!!|)$|^\s{6,}\S|corresp\(' || true; }
    return "${PIPESTATUS[0]}"
}

if [[ "$(cat "$OUT/deps/.key" 2>/dev/null)" != "$KEY" ]]; then
    echo "wheelhouse: downloading the locked runtime set into $OUT/deps"
    rm -rf "$OUT/deps" && mkdir -p "$OUT/deps"
    pip_quiet wheel --wheel-dir "$OUT/deps" -c "$LOCK" .
    rm -f "$OUT"/deps/flywheel-*.whl
    # pip resolves markers for the host's Python; add what only the image's Python needs.
    pip_quiet wheel --no-deps --wheel-dir "$OUT/deps" -r "$EXTRA"
    # Never CUDA: xgboost comes from xgboost-cpu, and nothing else may pull nvidia/torch.
    for wheel in "$OUT"/deps/*.whl; do
        if [[ "$(basename "$wheel")" =~ ^(nvidia_(cu|nccl|cudnn)|torch|xgboost-) ]]; then
            echo "wheelhouse: $wheel is a CUDA/torch wheel; the lock must not pull it" >&2
            exit 1
        fi
    done
    echo "$KEY" > "$OUT/deps/.key"
fi

# Every wheel must be a pin of the lock (names normalised per PEP 503).
python3 - "$OUT/deps" "$LOCK" "$EXTRA" <<'PY'
import pathlib, re, sys
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
pins = {}
lines = [ln for f in sys.argv[2:] for ln in pathlib.Path(f).read_text().splitlines()]
for line in lines:
    if "==" in line and not line.startswith("#"):
        name, version = line.split("==", 1)
        pins[norm(name)] = version.strip()
wheels = sorted(pathlib.Path(sys.argv[1]).glob("*.whl"))
bad = [w.name for w in wheels if pins.get(norm(w.name.split("-")[0])) != w.name.split("-")[1]]
if bad:
    sys.exit(f"wheelhouse: wheels not pinned by {' or '.join(sys.argv[2:])}: {bad}")
print(f"wheelhouse: {len(wheels)} dependency wheels, all pinned by {' + '.join(sys.argv[2:])}")
PY

cp "$LOCK" "$OUT/constraints.txt"

rm -rf "$OUT/app" build/lib build/bdist.* && mkdir -p "$OUT/app"
SOURCE_DATE_EPOCH=315532800 pip_quiet wheel --no-deps --wheel-dir "$OUT/app" .
rm -rf build/lib build/bdist.*
echo "wheelhouse: $(cd "$OUT/app" && ls) sha256 $(sha256sum "$OUT"/app/*.whl | cut -c1-12)"
