# flywheel-serving: the ranking service, `flywheel serve --port 3000` (BentoML) as uid 1000.
#
# It starts FROM the platform image, so it runs the very /opt/venv the pipeline trained
# and registered with (the same ranking code, Feast and XGBoost builds: no skew between
# the two images), and shares all of its layers (a kind node or registry stores them
# once). Built by `make images` after the platform image.
#
# Writes go only to the workspace volume (/mnt/flywheel: the BentoML home
# /mnt/flywheel/bentoml, prediction logs, the online store) and /tmp, so the container
# runs with a read-only root filesystem:
#   docker run --read-only --tmpfs /tmp -v WS:/mnt/flywheel -p 3000:3000 flywheel-serving:0.1.0
ARG PLATFORM_IMAGE=flywheel-platform:0.1.0
FROM ${PLATFORM_IMAGE}
# The workspace the service reads (profiles kind/prod use the same path); FLYWHEEL_PROFILE
# and the rest of Settings come from the pod's environment.
ENV FLYWHEEL_WORKSPACE=/mnt/flywheel
EXPOSE 3000
USER 1000:1000
# tini forwards SIGTERM to the whole process group (-g): `flywheel serve` and the
# `bentoml serve` it starts both shut down gracefully when the pod stops.
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["flywheel", "serve", "--host", "0.0.0.0", "--port", "3000"]
LABEL org.opencontainers.image.title="flywheel-serving" \
      org.opencontainers.image.description="Flywheel ranking service (BentoML) on port 3000"
