#!/usr/bin/env bash
# Install the llama.cpp peer used by bench/run.sh: npm package node-llama-cpp (pinned in bench/package.json /
# package-lock.json), which ships prebuilt llama.cpp binaries in per-platform packages
# (@node-llama-cpp/linux-x64 here). --ignore-scripts: no download/compile step at install time.
# Idempotent: does nothing when the pinned version is already installed. Exit 0 also when npm is missing
# (run.sh then skips the peer and says so).
set -eu
cd "$(dirname "$0")"
want=$(node -e 'console.log(require("./package.json").dependencies["node-llama-cpp"])' 2>/dev/null || echo "")
have=$(node -e 'console.log(require("./node_modules/node-llama-cpp/package.json").version)' 2>/dev/null || echo "")
if [ -n "$want" ] && [ "$want" = "$have" ]; then exit 0; fi
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "bench/setup.sh: node/npm not found (apt-get install nodejs npm): no llama.cpp peer"; exit 0
fi
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  echo "bench/setup.sh: node-llama-cpp needs Node.js >= 20 (found $(node --version)): no llama.cpp peer"; exit 0
fi
if [ -f package-lock.json ]; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
else
  npm install --ignore-scripts --no-audit --no-fund --loglevel=error
fi
