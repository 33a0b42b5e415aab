# flywheel-platform: the `flywheel` package and its locked dependencies in /opt/venv.
# Runs the KFP pipeline components and the KubeRay head/worker pods (python, ray on PATH).
#
# Built by `make images` (images/build.sh) from the repository root, offline: the base is
# images/base (debootstrap + docker import, or images/base/Dockerfile with a registry) and
# every Python package comes from the wheelhouse that `make wheelhouse` fills with exactly
# the pins of constraints.txt (copied to build/wheelhouse/constraints.txt) and
# images/constraints-bookworm.txt. No index is consulted.
ARG BASE_IMAGE=flywheel/base:bookworm

# ---- deps: a virtualenv of the locked dependencies, from wheels only -----------------------
FROM ${BASE_IMAGE} AS deps
# pip runs from Debian's pip wheel (python-wheels), so the venv never holds pip or
# setuptools: installers stay out of the final image without an uninstall step.
ENV PIP="/opt/venv/bin/python /usr/share/python-wheels/pip-23.0.1-py3-none-any.whl/pip" \
    PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv --without-pip /opt/venv
COPY build/wheelhouse/constraints.txt images/constraints-bookworm.txt /tmp/
COPY build/wheelhouse/deps/ /tmp/wheels/
RUN $PIP install --find-links /tmp/wheels \
        -c /tmp/constraints.txt -c /tmp/constraints-bookworm.txt /tmp/wheels/*.whl

# ---- app: flywheel alone, so a code change rebuilds (and ships) a layer of ~1 MB -----------
FROM deps AS app
COPY build/wheelhouse/app/ /tmp/app/
RUN $PIP install --no-deps --target /opt/app /tmp/app/flywheel-*.whl \
    && PYTHONPATH=/opt/app $PIP check \
    && mv /opt/app/bin /opt/app-bin

# ---- final: the virtualenv and a non-root user, nothing else -------------------------------
FROM ${BASE_IMAGE}
RUN groupadd --gid 1000 flywheel \
    && useradd --uid 1000 --gid 1000 --home-dir /home/flywheel --create-home \
        --shell /bin/bash flywheel \
    && mkdir -p /app /mnt/flywheel \
    && chown 1000:1000 /app /mnt/flywheel \
    && printf '%s\n' '# KubeRay starts Ray with bash -lc: keep the venv first after /etc/profile.' \
        'export PATH="/opt/venv/bin:$PATH"' > /etc/profile.d/flywheel-venv.sh
COPY --from=deps /opt/venv /opt/venv
COPY --from=app /opt/app/ /opt/venv/lib/python3.11/site-packages/
COPY --from=app /opt/app-bin/ /opt/venv/bin/
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    FEAST_USAGE=False \
    BENTOML_DO_NOT_TRACK=true \
    DO_NOT_TRACK=1
WORKDIR /app
USER 1000:1000
LABEL org.opencontainers.image.title="flywheel-platform" \
      org.opencontainers.image.description="Flywheel pipeline components and Ray pods"
CMD ["python"]
