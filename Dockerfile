# open-dsm: one process serving the BACnet/IP device (UDP 47808) and the REST API (TCP 8000).
# BACnet discovery uses broadcasts: run with `--network host` (or give the container an address on
# the BAS network), not behind Docker's NAT.
#
# Two images from this file:
#   docker build -t open-dsm .                    serving image: no TensorFlow (about 1/4 the size);
#                                                 trained models are loaded with LiteRT; nightly
#                                                 training is off (POST /model/train answers 503)
#   docker build --target full -t open-dsm:full .  the same plus the trainer (TensorFlow), for
#                                                 nightly training in the container
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OPEN_DSM_DATA_DIR=/data \
    OPEN_DSM_HTTP_HOST=0.0.0.0

RUN groupadd --system --gid 10001 opendsm \
    && useradd --system --uid 10001 --gid opendsm --home-dir /app --shell /usr/sbin/nologin opendsm \
    && mkdir -p /data /app && chown opendsm:opendsm /data

WORKDIR /app
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY api ./api
COPY bacnet ./bacnet
COPY bench ./bench
COPY core ./core
COPY migrations ./migrations
COPY open_dsm ./open_dsm
VOLUME ["/data"]
EXPOSE 8000/tcp 47808/udp
# The probe follows the port the service was started with (--http-port in the command, or
# OPEN_DSM_HTTP_PORT), read from PID 1, not a fixed 8000.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "open_dsm.healthcheck"]
ENTRYPOINT ["open-dsm"]
CMD ["serve"]

# Nightly training in the container: the trainer's TensorFlow beside the service.
FROM base AS full
RUN pip install -c constraints.txt ".[train,lite,postgres]"
USER opendsm

# The default image (last stage): serving only; the serving process never imports TensorFlow.
FROM base AS serve
RUN pip install -c constraints.txt ".[lite,postgres]"
USER opendsm
