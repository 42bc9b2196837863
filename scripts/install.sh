#!/usr/bin/env bash
# Installs inboxd on a Debian server from a package tarball (`npm pack` makes one), idempotently: run it
# again for an upgrade. As root. DRY_RUN=1 prints the commands instead of running them.
#   scripts/install.sh inboxd-0.1.0.tgz
# PREFIX (/opt/inboxd), CONFIG_DIR (/etc/inboxd), ROOT (/srv/inboxd), USER_NAME (inboxd) may be set.
set -euo pipefail
tarball=${1:?usage: install.sh inboxd-VERSION.tgz}
PREFIX=${PREFIX:-/opt/inboxd} CONFIG_DIR=${CONFIG_DIR:-/etc/inboxd} ROOT=${ROOT:-/srv/inboxd} USER_NAME=${USER_NAME:-inboxd}
run() { echo "+ $*"; [ -n "${DRY_RUN:-}" ] || "$@"; }

# Node.js 20 or later (22 and 24 are the supported release lines): Debian 13's nodejs, or NodeSource.
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  echo "install.sh: Node.js 20 or later is needed (found: ${major/#0/none}); e.g. apt-get install nodejs npm on Debian 13" >&2
  [ -n "${DRY_RUN:-}" ] || exit 1
fi
# better-sqlite3 builds its native addon when no prebuilt one fits.
run apt-get install -y -qq python3 make g++
id "$USER_NAME" >/dev/null 2>&1 || run useradd --system --user-group --home-dir /var/lib/inboxd --shell /usr/sbin/nologin "$USER_NAME"
run install -d -o root -g root -m 0755 "$PREFIX" "$CONFIG_DIR" "$ROOT"
# The package replaces what was there (dist/ of an older version); the configuration stays.
run rm -rf "$PREFIX/dist"
run tar -xzf "$tarball" -C "$PREFIX" --strip-components=1 --no-same-owner
# Runtime dependencies only; better-sqlite3's own install script builds (or fetches) its addon.
run npm install --prefix "$PREFIX" --omit=dev --ignore-scripts --no-audit --no-fund
run npm rebuild --prefix "$PREFIX" better-sqlite3
run ln -sfn "$PREFIX/dist/cli.js" /usr/local/bin/inboxd
if [ ! -e "$CONFIG_DIR/inboxd.yaml" ]; then
  run install -o root -g "$USER_NAME" -m 0640 "$PREFIX/config/inboxd.production.yaml" "$CONFIG_DIR/inboxd.yaml"
  run install -d -o root -g "$USER_NAME" -m 0750 "$CONFIG_DIR/mappings"
fi
run install -o root -g root -m 0644 "$PREFIX/systemd/inboxd.service" /etc/systemd/system/inboxd.service
run systemctl daemon-reload
run systemctl enable inboxd
echo "installed: edit $CONFIG_DIR/inboxd.yaml, add partners (scripts/add-partner.sh), run inboxd check-config, then systemctl restart inboxd"
