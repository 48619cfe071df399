# syntax=docker/dockerfile:1
# rotator's container image: the daemon as a non-root user (10001), nothing but Python and
# rotator's wheels in it.
#
#     docker build -t registry.example.com/platform/rotator:0.1.0 .
#     docker build --build-arg EXTRAS=aws -t ...   # with boto3, for the AWS Secrets Manager store
#
# Run: `docker run ... rotator:0.1.0` starts `rotator run` with /etc/rotator/rotator.toml; mount
# the config there (deploy/kubernetes does) and set listen = "0.0.0.0:9464" to reach
# /healthz, /readyz and /metrics from outside the container.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: rotator's wheel and the wheels of everything it needs
FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rotator ./rotator
RUN pip wheel --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}"

# ---- runtime: a clean image with a venv installed from those wheels only
FROM ${PYTHON_IMAGE}
ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/rotator/bin:$PATH
RUN groupadd --system --gid 10001 rotator \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin rotator \
 && install -d -m 0755 /etc/rotator \
 && install -d -m 0700 -o 10001 -g 10001 /var/lib/rotator
# The wheels are bind-mounted from the build stage, so they never become a layer here; with
# --no-index the versions are exactly the ones built above (hence no pins for hadolint).
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/rotator \
 && pip --python /opt/rotator/bin/python install --no-index --find-links /wheels \
      "rotator${EXTRAS:+[$EXTRAS]}" \
 && /opt/rotator/bin/rotator --version

# The .pyc files were compiled at install time; the root file system is read-only in Kubernetes.
ENV PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/rotator
EXPOSE 9464
ENTRYPOINT ["rotator"]
CMD ["run"]
