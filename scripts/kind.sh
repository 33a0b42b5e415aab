#!/usr/bin/env bash
# Local Kubernetes for Flywheel: `make kind-up`, `make kind-deploy`, `make kind-down`.
#   up      create the kind cluster (k8s/kind-cluster.yaml), install KFP standalone and the
#           KubeRay operator at the pinned versions below, wait until they are ready
#   deploy  load the Flywheel images into the node, apply k8s/overlays/kind, wait, print URLs
#   down    delete the cluster
# Needs docker, kind v0.27.0 exactly (KIND=/path/to/kind picks the binary) and network
# access to GitHub and the image registries the KFP/KubeRay manifests name. Versions are
# pinned here and in k8s/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=flywheel                  # `name:` in k8s/kind-cluster.yaml
NODE="${CLUSTER}-control-plane"   # kind's name for the single node's container
KIND_VERSION=0.27.0               # kind itself: k8s/kind-cluster.yaml's node image is its release's
KFP_VERSION=2.14.3                # Kubeflow Pipelines standalone manifests (git tag)
KUBERAY_VERSION=v1.7.0            # KubeRay operator (git tag); CRDs match k8s/crds/
WORKSPACE_DIR=/var/local/flywheel # hostPath of both workspace PVs (overlays/kind)
# Serving's per-pod emptyDir for BentoML's Prometheus files is mounted inside the workspace
# (k8s/base/serving.yaml); made here so the runtime does not create it (and bentoml/) as root.
METRICS_MOUNTPOINT=bentoml/prometheus_multiproc_dir
# The retrain CronJob mounts the workspace read-only and these folders of it writable, by
# subPath (k8s/base/retrain-cron.yaml); kubelet would make a missing one as root.
RETRAIN_SUBPATHS="monitor watch logs"
IMAGE_UID=1000                    # the images' user (platform and serving)
IMAGES=(flywheel-platform:0.1.0 flywheel-serving:0.1.0)
KFP_REPO=github.com/kubeflow/pipelines/manifests/kustomize
BUCKET=flywheel                   # s3://flywheel on KFP's MinIO: where users upload raw logs
MINIO_LOCAL_PORT=19000            # port-forward of svc/minio-service while the bucket is made
FLYWHEEL="${FLYWHEEL:-.venv/bin/flywheel}"
KUBERAY_REPO=github.com/ray-project/kuberay/ray-operator/config/default

# Prefer the host's kubectl (match it to the cluster's v1.32 within one minor version);
# fall back to the tool venv's (make k8s-tools), a newer client outside the skew policy.
KUBECTL="${KUBECTL:-$(command -v kubectl || echo .venv-k8s/bin/kubectl)}"
KIND="${KIND:-kind}"
kc() { "$KUBECTL" --context "kind-${CLUSTER}" "$@"; }
kind() { "$KIND" "$@"; }
say() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind.sh: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH: $2"
}

# kind pins its node images per release: k8s/kind-cluster.yaml names the v1.32.2 image that
# kind v0.27.0 published, so another kind is refused rather than trusted to run it.
check_kind_version() {
  local have
  have="$(kind version | sed -E 's/^kind v([0-9.]+).*/\1/')"
  if [ "$have" != "$KIND_VERSION" ]; then
    die "kind v${have} found; k8s/kind-cluster.yaml is pinned to kind v${KIND_VERSION}: install it (go install sigs.k8s.io/kind@v${KIND_VERSION}, or https://kind.sigs.k8s.io/dl/v${KIND_VERSION}/kind-linux-amd64) and put it on PATH or in KIND"
  fi
}

# The pods run as ${IMAGE_UID}:${IMAGE_UID} and write the workspace, but a hostPath volume
# ignores fsGroup and the restricted Pod Security Standard forbids a root initContainer that
# could chown it, so the node's directory is given to the images' user from outside, as
# root in the node container. Idempotent (`up` and `deploy` both run it); not recursive,
# since the pods create everything below it as ${IMAGE_UID}; setgid keeps the group on it.
# The exceptions are serving's nested mountpoint, which the container runtime would make
# as root (it and its parent), and the retrain CronJob's subPath folders, which kubelet
# would: they are made here, owned by ${IMAGE_UID}, first.
workspace_owned_by_image_user() {
  local mnt="${WORKSPACE_DIR}/${METRICS_MOUNTPOINT}"
  docker exec "$NODE" sh -c "mkdir -p ${WORKSPACE_DIR} ${mnt} && chown ${IMAGE_UID}:${IMAGE_UID} ${WORKSPACE_DIR} ${mnt%/*} ${mnt} && chmod 2775 ${WORKSPACE_DIR} ${mnt%/*} ${mnt}"
  docker exec "$NODE" sh -c "cd ${WORKSPACE_DIR} && mkdir -p ${RETRAIN_SUBPATHS} && chown ${IMAGE_UID}:${IMAGE_UID} ${RETRAIN_SUBPATHS} && chmod 2775 ${RETRAIN_SUBPATHS}"
}

# `kind load docker-image` fails ("ctr: content digest ... not found", kind#3795) when
# Docker keeps images in its containerd image store (the default from Docker 29): then
# each image goes through `docker save` (this platform only) + `kind load image-archive`.
load_images() {
  if kind load docker-image --name "$CLUSTER" "${IMAGES[@]}"; then
    return
  fi
  echo "kind load docker-image failed: falling back to docker save + kind load image-archive"
  local dir platform image
  dir="$(mktemp -d)"
  platform="linux/$(docker version -f '{{.Server.Arch}}')"
  for image in "${IMAGES[@]}"; do
    docker image save --platform "$platform" -o "${dir}/image.tar" "$image" 2>/dev/null \
      || docker image save -o "${dir}/image.tar" "$image"
    kind load image-archive --name "$CLUSTER" "${dir}/image.tar"
  done
  rm -rf "$dir"
}

cluster_exists() {
  kind get clusters 2>/dev/null | grep -qx "$CLUSTER"
}

up() {
  need docker "install Docker (kind runs the node as a container)"
  need "$KIND" "install kind v${KIND_VERSION} (https://kind.sigs.k8s.io)"
  [ -x "$(command -v "$KUBECTL")" ] || die "kubectl not found: install it or run make k8s-tools"
  check_kind_version

  say "1/5 kind cluster '${CLUSTER}' from k8s/kind-cluster.yaml (Kubernetes v1.32.2)"
  if cluster_exists; then
    echo "cluster exists, keeping it"
  else
    kind create cluster --config k8s/kind-cluster.yaml --wait 120s
  fi

  say "2/5 shared workspace ${WORKSPACE_DIR} on the node, owned by uid ${IMAGE_UID}"
  workspace_owned_by_image_user

  say "3/5 Kubeflow Pipelines ${KFP_VERSION} standalone (namespace kubeflow)"
  kc apply -k "${KFP_REPO}/cluster-scoped-resources?ref=${KFP_VERSION}"
  kc wait --for condition=established --timeout=120s crd/applications.app.k8s.io
  kc apply -k "${KFP_REPO}/env/platform-agnostic?ref=${KFP_VERSION}"

  say "4/5 KubeRay operator ${KUBERAY_VERSION}"
  if kc get deployment kuberay-operator >/dev/null 2>&1; then
    echo "KubeRay operator present, keeping it"
  else
    # create, not apply: the CRDs are too large for client-side apply's annotation.
    kc create -k "${KUBERAY_REPO}?ref=${KUBERAY_VERSION}"
  fi

  say "5/5 waiting for KFP and KubeRay to become available (first start pulls images: minutes)"
  kc wait --for=condition=Available deployment/kuberay-operator --timeout=300s
  kc -n kubeflow wait --for=condition=Available deployment --all --timeout=900s

  cat <<EOF

Cluster '${CLUSTER}' is up: KFP ${KFP_VERSION}, KubeRay ${KUBERAY_VERSION}.
Next: make images && make kind-deploy
KFP UI:  kubectl --context kind-${CLUSTER} -n kubeflow port-forward svc/ml-pipeline-ui 8080:80
         then open http://localhost:8080
EOF
}

# The bucket for events_uri, on the MinIO that KFP standalone runs, with the keys KFP keeps
# in its own Secret (the kind profile's ingest pod mounts the same Secret).
make_bucket() {
  local key secret pf tries
  key=$(kc -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath='{.data.accesskey}' | base64 -d)
  secret=$(kc -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath='{.data.secretkey}' | base64 -d)
  # The same keys for the Ray pods (k8s/base/raycluster.yaml), for data stages run as Ray
  # jobs (ray.data_stages=cluster): a Secret is readable only in its own namespace.
  kc -n flywheel create secret generic flywheel-s3 --from-literal=AWS_ACCESS_KEY_ID="$key" \
    --from-literal=AWS_SECRET_ACCESS_KEY="$secret" --dry-run=client -o yaml | kc apply -f -
  kc -n kubeflow port-forward svc/minio-service "${MINIO_LOCAL_PORT}:9000" >/dev/null &
  pf=$!
  for tries in 1 2 3 4 5 6 7 8 9 10; do
    if AWS_ENDPOINT_URL="http://127.0.0.1:${MINIO_LOCAL_PORT}" AWS_ACCESS_KEY_ID="$key" \
      AWS_SECRET_ACCESS_KEY="$secret" "$FLYWHEEL" upload --create-bucket --to "s3://${BUCKET}"; then
      kill "$pf"
      return 0
    fi
    sleep 2
  done
  kill "$pf"
  die "could not create s3://${BUCKET} on KFP's MinIO after ${tries} tries"
}

deploy() {
  need docker "install Docker"
  need "$KIND" "install kind v${KIND_VERSION}"
  check_kind_version
  cluster_exists || die "no kind cluster '${CLUSTER}': run make kind-up first"
  for image in "${IMAGES[@]}"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "image ${image} not built: run make images"
  done

  say "1/4 loading ${IMAGES[*]} into the node (no registry involved)"
  load_images

  say "2/4 workspace ${WORKSPACE_DIR} on the node owned by uid ${IMAGE_UID} (hostPath ignores fsGroup)"
  workspace_owned_by_image_user

  say "3/4 applying k8s/overlays/kind"
  kc apply -k k8s/overlays/kind

  say "4/4 waiting for Redis, the Ray cluster and serving"
  kc -n flywheel rollout status deployment/redis --timeout=300s
  kc -n flywheel wait --for=condition=RayClusterProvisioned raycluster/flywheel-ray --timeout=600s \
    || echo "Ray cluster not provisioned yet: kubectl -n flywheel get pods -l app.kubernetes.io/name=flywheel-ray"
  # Serving only turns ready once the pipeline has deployed a model (FLYWHEEL_MODEL_TAG).
  kc -n flywheel rollout status deployment/flywheel-serving --timeout=180s \
    || echo "serving not ready yet (expected before the first pipeline run deploys a model)"

  say "bucket s3://${BUCKET} on KFP's MinIO (minio-service.kubeflow:9000) for events_uri"
  make_bucket

  cat <<EOF

Flywheel is applied to kind cluster '${CLUSTER}'.
Serving:        http://localhost:3000  (NodePort 30300, e.g. curl http://localhost:3000/readyz)
KFP UI:         kubectl --context kind-${CLUSTER} -n kubeflow port-forward svc/ml-pipeline-ui 8080:80
                then open http://localhost:8080
KFP API:        kubectl --context kind-${CLUSTER} -n kubeflow port-forward svc/ml-pipeline 8888:8888
Ray dashboard:  kubectl --context kind-${CLUSTER} -n flywheel port-forward svc/flywheel-ray-head-svc 8265:8265
Retraining:     CronJob flywheel-retrain decides every 30 min; its decisions:
                kubectl --context kind-${CLUSTER} -n flywheel logs -l app.kubernetes.io/name=flywheel-retrain --tail=-1
Raw logs:       s3://${BUCKET} (KFP's MinIO; keys in Secret kubeflow/mlpipeline-minio-artifact),
                see README "First run on kind" for upload and submit
EOF
}

down() {
  need "$KIND" "install kind v${KIND_VERSION}"
  if cluster_exists; then
    kind delete cluster --name "$CLUSTER"
  else
    echo "no kind cluster '${CLUSTER}'"
  fi
}

case "${1:-}" in
  up) up ;;
  deploy) deploy ;;
  down) down ;;
  *) die "usage: scripts/kind.sh up|deploy|down" ;;
esac
