#!/usr/bin/env bash
# Installs what the peer benchmark needs, once: wrk and nginx (Debian), LiteLLM's proxy in its own
# virtualenv, and Portkey's open-source gateway from npm. Versions are pinned; re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")"
PEERS="${PEERS_DIR:-$PWD/.installed}"
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
mkdir -p "$PEERS"

if ! command -v wrk >/dev/null || ! { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk nginx-light >/dev/null
fi

if [ ! -f "$PEERS/litellm/.ok-$LITELLM_VERSION" ]; then
  rm -rf "$PEERS/litellm"
  python3 -m venv "$PEERS/litellm"
  "$PEERS/litellm/bin/pip" install --quiet "litellm[proxy]==$LITELLM_VERSION"
  touch "$PEERS/litellm/.ok-$LITELLM_VERSION"
fi

# Portkey streams fail on Node.js ("TypeError: immutable", Portkey-AI/gateway#1389) with
# @hono/node-server newer than 1.14.2; its issue's workaround, an older node-server, is pinned here.
HONO_NODE_SERVER="${HONO_NODE_SERVER:-1.13.0}"
if [ ! -f "$PEERS/portkey/.ok-$PORTKEY_VERSION-$HONO_NODE_SERVER" ]; then
  rm -rf "$PEERS/portkey"
  mkdir -p "$PEERS/portkey"
  cat > "$PEERS/portkey/package.json" <<JSON
{"name": "portkey-bench", "private": true, "version": "1.0.0",
 "dependencies": {"@portkey-ai/gateway": "$PORTKEY_VERSION"},
 "overrides": {"@hono/node-server": "$HONO_NODE_SERVER"}}
JSON
  (cd "$PEERS/portkey" && npm install --silent --no-audit --no-fund >/dev/null)
  touch "$PEERS/portkey/.ok-$PORTKEY_VERSION-$HONO_NODE_SERVER"
fi
echo "peers ready in $PEERS: litellm $LITELLM_VERSION, portkey $PORTKEY_VERSION, $(wrk --version 2>&1 | head -1 | cut -d" " -f1-2)"
