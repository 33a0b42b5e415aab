#!/usr/bin/env bash
# Build flywheel-platform and flywheel-serving (tags per the k8s contract) from the
# wheelhouse, on top of the local base image; Docker's layer cache makes a rebuild with
# nothing changed take seconds. Prints the image sizes at the end.
#
# Usage: images/build.sh   (make images: runs images/wheelhouse.sh and the base first)
# Env:   VERSION (0.1.0), BASE_IMAGE (flywheel/base:bookworm), DOCKER (docker).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${VERSION:-0.1.0}"
BASE_IMAGE="${BASE_IMAGE:-flywheel/base:bookworm}"
DOCKER="${DOCKER:-docker}"
PLATFORM="flywheel-platform:$VERSION"
SERVING="flywheel-serving:$VERSION"

"$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1 || {
    echo "base image $BASE_IMAGE is missing: make base-image (or images/base/build-base.sh)" >&2
    exit 1
}
ls build/wheelhouse/app/flywheel-*.whl >/dev/null 2>&1 || {
    echo "build/wheelhouse is empty: make wheelhouse (or images/wheelhouse.sh)" >&2
    exit 1
}

build() {  # tag, dockerfile, build args...
    local tag="$1" file="$2" started=$SECONDS
    shift 2
    echo "building $tag from $file"
    "$DOCKER" build --quiet --tag "$tag" --file "$file" "$@" . 2>&1 >/dev/null \
        | { grep -v -E "legacy builder is deprecated|buildx|^\s*$" || true; }
    echo "built $tag in $((SECONDS - started)) s"
}
build "$PLATFORM" images/platform.Dockerfile --build-arg "BASE_IMAGE=$BASE_IMAGE"
build "$SERVING" images/serving.Dockerfile --build-arg "PLATFORM_IMAGE=$PLATFORM"
# Builder stages are left as dangling images; they are cache, not output.
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
    | grep -E "^(flywheel-platform|flywheel-serving):$VERSION|^$BASE_IMAGE" | sort
