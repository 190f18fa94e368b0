# A Python 3.11 base for streamserve's Dockerfile on machines without an image registry:
# Debian's python3 on the local bookworm root file system (setup.sh), a virtual environment
# on PATH with streamserve's dependencies already installed, and a wheel folder that pip
# uses instead of an index (pip cannot reach PyPI from inside containers here).
#   podman build -f tests/containers/python.Dockerfile -t localhost/streamserve-python:3.11 CONTEXT
# CONTEXT holds wheels/ (pip download on the host) and pins.txt (python tests/containers/pins.py).
ARG BASE_IMAGE=localhost/debian:bookworm-min
FROM ${BASE_IMAGE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# The Dockerfile's `pip install` steps then resolve from /wheels, build isolation included.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY wheels /wheels
COPY pins.txt /wheels/pins.txt
RUN pip install --no-index --find-links /wheels -r /wheels/pins.txt
