# syntax=docker/dockerfile:1
# Muster for Fly.io (see fly.toml); also runs under plain Docker.
#
# Node 24 runs the TypeScript sources directly (type stripping): there is no
# build step, and no dev dependency is needed at run time. (The `node`
# devDependency only brings Node 24 to machines whose system Node is older;
# here the image's own Node is 24.) To run exactly the Node the tests ran on:
#   docker build --build-arg NODE_VERSION=24.21.0 .
ARG NODE_VERSION=24
FROM node:${NODE_VERSION}-bookworm-slim

ENV NODE_ENV=production \
    DATA_DIR=/data \
    PORT=8080 \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false \
    NPM_CONFIG_AUDIT=false

WORKDIR /app

# Production dependencies only, from the lockfile (this layer is cached until
# package*.json change). better-sqlite3 ships prebuilt binaries (linux-x64,
# linux-arm64, glibc and musl) inside its npm package and loads them directly.
# --ignore-scripts: its binding.gyp makes npm run an implicit `node-gyp
# rebuild`, a no-op when a prebuild fits but one that still needs python3 and
# make, which the slim image lacks; no production dependency has a script of
# its own. The node -e line then fails the build early if the prebuild does
# not load on this platform.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts \
 && node -e "const D = require('better-sqlite3'); new D(':memory:').prepare('select 1').get()" \
 && npm cache clean --force

# Only what runs: .dockerignore is an allow-list of package*.json, src/,
# federation/, solana/, migrations/, public/ and bin/, so `COPY . .` copies
# exactly those. (Naming each folder in its own COPY would break the build
# when one is absent: git keeps no empty folder, and solana/ may be empty.)
# The app files stay owned by root; the server only reads them.
COPY . .

# The server runs as the unprivileged user `muster`, which owns /data.
RUN groupadd --system --gid 10001 muster \
 && useradd --system --uid 10001 --gid muster --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin muster \
 && mkdir -p /data \
 && chown muster:muster /data

# A Fly volume (and a new Docker volume on some hosts) is mounted over /data
# owned by root, hiding the chown above. So the container starts as root only
# long enough to give DATA_DIR to `muster` (recursively: it also repairs files
# a root `fly ssh console` session may have created, such as SQLite's -wal and
# -shm), then drops to `muster` with setpriv (util-linux, in every Debian image)
# and execs the command, which Fly's [processes] replace and this entrypoint
# still wraps. Started with --user already, it just execs the command.
ENTRYPOINT ["/bin/sh", "-c", "set -e; if [ \"$(id -u)\" = 0 ]; then mkdir -p \"$DATA_DIR\"; chown -R muster:muster \"$DATA_DIR\"; exec setpriv --reuid=muster --regid=muster --init-groups -- \"$@\"; fi; exec \"$@\"", "muster-entrypoint"]

EXPOSE 8080
VOLUME ["/data"]

# fly.toml has its own HTTP check on /healthz; this one serves plain Docker.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

CMD ["node", "src/cli/main.ts", "serve"]
