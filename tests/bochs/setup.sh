#!/usr/bin/env bash
# Checks the tools that tests/bochs/run.sh needs, builds the emulator (build-bochs.sh) and fetches a Debian kernel
# (the cloud flavour, via `apt-get download`, never installed) into CACHE_DIR/vmlinuz if they are not there yet.
# Usage: bash tests/bochs/setup.sh CACHE_DIR. Exits 77 with one line on stderr when something
# is missing (the packages come from scripts/install-deps.sh).
set -euo pipefail
cache=${1:?usage: setup.sh CACHE_DIR}
skip() { echo "bochs: skipped: $*" >&2; exit 77; }

for f in /usr/share/bochs/BIOS-bochs-latest /usr/share/vgabios/vgabios.bin \
         /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32; do
    [ -e "$f" ] || skip "$f is missing (install bochsbios vgabios isolinux syslinux-common: scripts/install-deps.sh)"
done
for t in xorriso cpio gcc; do
    command -v "$t" >/dev/null || skip "$t is missing (scripts/install-deps.sh)"
done
bash "$(dirname "$0")/build-bochs.sh" "$cache"

[ -s "$cache/vmlinuz" ] && exit 0
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/kernel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
meta=linux-image-cloud-amd64
pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
fi
[ -n "$pkg" ] || skip "cannot resolve $meta with apt-cache (run apt-get update)"
echo "bochs: fetching kernel package $pkg" >&2
(cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null) || skip "apt-get download $pkg failed"
dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
mv "$tmp"/boot/vmlinuz-* "$tmp/vmlinuz"
echo "$pkg" > "$cache/kernel-package"
mv "$tmp/vmlinuz" "$cache/vmlinuz"
