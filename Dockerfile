# One image for every step worker of a streamserve graph; `--step` picks the role:
#   docker build -t streamserve .
#   docker run --rm streamserve run examples/iris/iris.py:graph --step lr --bootstrap kafka:9092
# Brokers run elsewhere (docker-compose.yml, or any Kafka cluster), so no Java here.
# PYTHON_IMAGE swaps the base, e.g. for a local one on machines without an image registry
# (tests/containers/setup.sh builds localhost/streamserve-python:3.11; docs/deploy.md).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMSERVE_MODEL_DIR=/models

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so code changes reuse this layer.
COPY pyproject.toml /app/
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# The package (pipeline, steps); graph files such as /app/examples stay plain files,
# loaded by path from WORKDIR /app. /models is created owned by the worker user, so a
# fresh named volume mounted there inherits that and workers can save trained models.
COPY . /app
RUN pip install --no-deps . \
    && rm -rf build *.egg-info \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /app streamserve \
    && mkdir -p /models \
    && chown streamserve:streamserve /models

USER streamserve

ENTRYPOINT ["streamserve"]
CMD ["--help"]
