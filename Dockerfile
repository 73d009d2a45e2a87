# One image, both services: `edge serve` (the default) and `distribution serve`.
#   docker build -t edge-distribution .
#   docker run -p 127.0.0.1:8082:8082 -e EDGE_ADMIN_TOKEN=change-me edge-distribution
#   docker run -p 127.0.0.1:8080:8080 -e DISTRIBUTION_ADMIN_TOKEN=change-me edge-distribution \
#       distribution serve --host 0.0.0.0
# Settings are the environment variables of the README (EDGE_*, DISTRIBUTION_*).
FROM python:3.11-slim

# GnuPG: the Distribution service signs bundles with it, edges verify with it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gnupg \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from setup.cfg alone: this layer is rebuilt only when they change.
COPY setup.cfg ./
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); print(c['options']['install_requires'])" > requirements.txt \
    && pip install -r requirements.txt

# Then the code.
COPY . .
RUN pip install --no-deps . && rm -rf build ./*.egg-info

RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /data \
    && chown app:app /data
USER app
ENV EDGE_DATA_DIR=/data/edge \
    DISTRIBUTION_DATA_DIR=/data/distribution
VOLUME /data
EXPOSE 8082 8080

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "devstack.healthcheck", "http://127.0.0.1:8082"]
CMD ["edge", "serve", "--host", "0.0.0.0", "--port", "8082"]
