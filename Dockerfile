# open-dsm: one process serving the BACnet/IP device (UDP 47808) and the REST API (TCP 8000).
# BACnet discovery uses broadcasts: run with `--network host` (or give the container an address on
# the BAS network), not behind Docker's NAT.
FROM python:3.11-slim

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
# The trainer extra (TensorFlow) is what the nightly training process needs; the serving process
# itself never imports it.
RUN pip install -c constraints.txt ".[train,lite,postgres]"

USER opendsm
VOLUME ["/data"]
EXPOSE 8000/tcp 47808/udp
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)" || exit 1
ENTRYPOINT ["open-dsm"]
CMD ["serve"]
