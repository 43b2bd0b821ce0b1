#!/usr/bin/env bash
# Installs the Debian packages moec needs to build, test and benchmark, if any is missing (as root).
set -euo pipefail
pkgs=(build-essential clang libomp-dev libclang-rt-14-dev libcjson-dev libopenblas-dev
      python3-torch python3-numpy python3-sentencepiece sentencepiece
      bochsbios vgabios isolinux syslinux-common xorriso cpio curl)
# (the third line: the BIOSes of the AVX-512 emulator of tests/bochs/run.sh and what builds its boot ISO; the emulator
# itself is built from Debian's Bochs 3.0 source by tests/bochs/build-bochs.sh, the kernel fetched by setup.sh)
# Node.js + npm (for the llama.cpp peer): Debian's packages only when no node/npm is installed already
# (a machine may carry its own Node.js build, whose npm conflicts with Debian's npm package).
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
