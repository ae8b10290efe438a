# Dockerfile: optillm-c in two stages on Debian 12 slim; the image runs as a non-root user.
#   docker build -t optillm-c .
#   docker run --rm -p 8000:8000 -e OPENAI_API_KEY -e OPTILLM_API_KEY optillm-c
# Untested here (no Docker on the build machine; hadolint is not in Debian): see README.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc make pkg-config libc6-dev \
      libmicrohttpd-dev libcurl4-openssl-dev libcjson-dev libpcre2-dev libssl-dev \
      libz3-dev libhiredis-dev libxml2-dev libsqlite3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make clean && make -j"$(nproc)" all && make install PREFIX=/usr/local DESTDIR=/out

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libmicrohttpd12 libcurl4 \
      libcjson1 libpcre2-8-0 libssl3 libz3-4 libhiredis0.14 libxml2 libsqlite3-0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin optillm
COPY --from=build /out/usr/local/ /usr/local/
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
# 0.0.0.0 inside the container: set OPTILLM_API_KEY (or OPTILLM_TENANTS), or anyone who can
# reach the port uses the upstream key; the proxy warns at start-up otherwise.
ENTRYPOINT ["optillm", "--host", "0.0.0.0", "--port", "8000"]
