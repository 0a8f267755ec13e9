# Mastodon on balena: every image of the stack, one target per kind of service
# (docker-compose.yml picks them with build.target). balena builds each image
# natively on the device's architecture.
#
# Version pins: this block is the ONLY place where versions of the stack live.
# Tests (e2e/pins_test.go) fail when another file disagrees with it.
#   GO_VERSION        golang:<GO_VERSION>-trixie, must equal go.mod's `go` line
#   MASTODON_VERSION  ghcr.io/mastodon/mastodon and mastodon-streaming
#   POSTGRES_VERSION  postgres:<POSTGRES_VERSION>-trixie; the Mastodon image gets
#                     postgresql-client-<major of POSTGRES_VERSION>
#   REDIS_VERSION     redis:<REDIS_VERSION>-alpine
#   CADDY_VERSION     caddy:<CADDY_VERSION>-alpine; tests build the same Caddy
#   CLOUDFLARED_VERSION  cloudflare/cloudflared, the optional tunnel
ARG GO_VERSION=1.26.8
ARG MASTODON_VERSION=v4.7.0
ARG POSTGRES_VERSION=17.11
ARG REDIS_VERSION=7.4.11
ARG CADDY_VERSION=2.11.4
ARG CLOUDFLARED_VERSION=2026.8.2

# No secret ever goes into an image: instance secrets are generated at run time
# by mastokeeper and kept in volumes.

# Stages are ordered so that a builder which builds every stage up to the
# target (the classic builder) does the least work for the small targets.

########################################################################
# redis: Mastodon's queues and caches (persistence is set in compose)
FROM redis:${REDIS_VERSION}-alpine AS redis

########################################################################
# build: the mastokeeper binary (static, for the building architecture)
FROM golang:${GO_VERSION}-trixie AS build
ENV CGO_ENABLED=0 GOTOOLCHAIN=local
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -trimpath -ldflags='-s -w' -o /out/mastokeeper ./cmd/mastokeeper

########################################################################
# db: PostgreSQL, started through `mastokeeper launch postgres`
FROM postgres:${POSTGRES_VERSION}-trixie AS db
RUN set -eux; \
    mkdir -p /var/lib/mastokeeper; \
    chown 991:991 /var/lib/mastokeeper
COPY --from=build /out/mastokeeper /usr/local/bin/mastokeeper

########################################################################
# streaming: Mastodon's streaming server (its own image since 4.3)
FROM ghcr.io/mastodon/mastodon-streaming:${MASTODON_VERSION} AS streaming
ARG MASTODON_VERSION
USER root
# Unlike the main image, this one has no init: node would run as PID 1, where
# signals without a handler are ignored and a stop waits for the kill.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends tini; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /var/lib/mastokeeper; \
    chown 991:991 /var/lib/mastokeeper
COPY --from=build /out/mastokeeper /usr/local/bin/mastokeeper
ENV MASTOKEEPER_MASTODON_VERSION=${MASTODON_VERSION}
ENTRYPOINT ["/usr/bin/tini", "--"]
USER mastodon

########################################################################
# mastodon: web, sidekiq and keeper (keeper needs tootctl, rails and the
# PostgreSQL client tools for backups)
FROM ghcr.io/mastodon/mastodon:${MASTODON_VERSION} AS mastodon
ARG MASTODON_VERSION
ARG POSTGRES_VERSION
USER root
# The client's major must be >= the server's: install exactly the server's
# major (Debian trixie ships postgresql-client-17; a newer server major makes
# this step fail instead of producing unusable dumps).
RUN set -eux; \
    pg_major="${POSTGRES_VERSION%%.*}"; \
    apt-get update; \
    apt-get install -y --no-install-recommends "postgresql-client-${pg_major}"; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    client_major="$("/usr/lib/postgresql/${pg_major}/bin/pg_dump" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')"; \
    test "${client_major}" -ge "${pg_major}"; \
    mkdir -p /var/lib/mastokeeper /opt/mastodon/public/system /backups /var/lib/tor; \
    chown 991:991 /var/lib/mastokeeper /opt/mastodon/public/system /backups /var/lib/tor; \
    chmod 0700 /var/lib/tor
COPY --from=build /out/mastokeeper /usr/local/bin/mastokeeper
ENV MASTOKEEPER_MASTODON_VERSION=${MASTODON_VERSION}
USER mastodon

########################################################################
# tor: the optional onion service (TOR_ENABLED=true), on the Mastodon image
# the device has anyway, so it adds only Debian's tor. tor runs as the
# mastodon user (991), like the keeper, which backs up and restores the
# onion key in the `tor` volume: tor wants its directory 0700 and its own.
FROM mastodon AS tor
USER root
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends tor; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /var/lib/tor; \
    chown -R 991:991 /var/lib/tor; \
    chmod 0700 /var/lib/tor
USER mastodon

########################################################################
# proxy: Caddy on port 80 (and 443 when it ends TLS itself: PROXY_MODE),
# serving Mastodon's precompiled static files itself. public/system
# (uploads) is NOT copied: it is the `system` volume, mounted read-only.
FROM caddy:${CADDY_VERSION}-alpine AS proxy
COPY proxy/Caddyfile /etc/caddy/Caddyfile
# `mastokeeper launch proxy` turns PROXY_MODE into the Caddyfile's settings.
COPY --from=build /out/mastokeeper /usr/local/bin/mastokeeper
# The starting page shown while web does not answer; the keeper's own, when
# it writes one, comes through the `frontdoor` volume at live/.
COPY proxy/starting/starting.html /srv/frontdoor/starting.html
COPY --from=mastodon /opt/mastodon/public /srv/mastodon/public
# Owned by 991 like in the Mastodon image: whichever container mounts the empty
# `system` volume first gives it this directory's ownership.
RUN set -eux; \
    mkdir -p /srv/frontdoor/live; \
    rm -rf /srv/mastodon/public/system; \
    mkdir -m 0755 /srv/mastodon/public/system; \
    chown 991:991 /srv/mastodon/public/system

########################################################################
# cloudflared: the optional Cloudflare tunnel (PROXY_MODE=cloudflare-tunnel),
# idle until CLOUDFLARE_TUNNEL_TOKEN is set. The image has no shell; the
# static mastokeeper decides and execs cloudflared (docker-compose.yml).
FROM cloudflare/cloudflared:${CLOUDFLARED_VERSION} AS cloudflared
COPY --from=build /out/mastokeeper /usr/local/bin/mastokeeper
ENTRYPOINT ["mastokeeper", "launch", "cloudflared", "--", "cloudflared", "--no-autoupdate"]
CMD ["tunnel", "run"]
