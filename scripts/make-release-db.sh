#!/bin/sh
# Rebuilds test/fixtures/release-0.db with the last release's own code (see scripts/make-release-db.ts).
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
RELEASE=${RELEASE:-5c32aa5}
TREE=$(mktemp -d)/release
git -C "$REPO" worktree add --detach "$TREE" "$RELEASE" >/dev/null
trap 'git -C "$REPO" worktree remove --force "$TREE"' EXIT
ln -s "$(readlink -f "$REPO/node_modules")" "$TREE/node_modules"
cp "$REPO/scripts/make-release-db.ts" "$TREE/scripts/"
(cd "$TREE" && npm run --silent build && npx vite-node scripts/make-release-db.ts "$REPO/test/fixtures/release-0.db")
