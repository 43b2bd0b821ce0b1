#!/usr/bin/env bash
# Builds the emulator of tests/bochs/run.sh into CACHE_DIR/bochs-3.0/bochs (once; later calls return at once).
# Usage: bash tests/bochs/build-bochs.sh CACHE_DIR. Exits 77 with one line on stderr when it cannot.
#
# Why not Debian 12's `bochs` package: Bochs 2.7 has no AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16), which the avx512bf16
# kernels need. Bochs 3.0 has it (CPU model sapphire_rapids). It is Debian's own source package of the next release
# (trixie, bochs 3.0+dfsg-1): the upstream tarball from deb.debian.org, checked against the SHA-256 that Debian's
# Sources index gives, built here with the compilers of scripts/install-deps.sh (about 1.5 minutes on 2 cores) in the
# smallest configuration run.sh needs: x86-64, AVX-512, no GUI (display nogui), no plugins, no debugger.
set -euo pipefail
cache=${1:?usage: build-bochs.sh CACHE_DIR}
skip() { echo "bochs: skipped: $*" >&2; exit 77; }

ver=3.0
tarball=bochs_${ver}+dfsg.orig.tar.xz
sha256=78f6c73d4a6472d5130a87ab9dc306d02c7c71ed8e25b3a8ef642e2a7acd282b
url=${MOEC_BOCHS_SRC_URL:-http://deb.debian.org/debian/pool/main/b/bochs/$tarball}
conf=(--enable-x86-64 --enable-cpu-level=6 --enable-avx --enable-evex --enable-all-optimizations --with-nogui
      --without-x --without-x11 --disable-plugins --disable-debugger --disable-gdb-stub)
dir=$cache/bochs-$ver
stamp="$sha256 ${conf[*]}"

mkdir -p "$cache"
exec 9>"$cache/build-bochs.lock"
flock 9 # one build at a time; a waiting caller then finds it done
[ -x "$dir/bochs" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ] && exit 0

for t in curl g++ make tar xz flock; do
    command -v "$t" >/dev/null || skip "$t is missing (scripts/install-deps.sh)"
done
tmp=$(mktemp -d "$cache/bochs-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "bochs: building Bochs $ver (Debian trixie source package) into $dir" >&2
curl -fsS --retry 2 -m 300 -o "$tmp/$tarball" "$url" || skip "cannot download $url"
echo "$sha256  $tmp/$tarball" | sha256sum -c --quiet - || skip "$tarball: SHA-256 mismatch"
tar -xf "$tmp/$tarball" -C "$tmp"
src=$tmp/bochs-$ver
[ -d "$src" ] || skip "$tarball has no bochs-$ver/ directory"
(cd "$src" && ./configure -q "${conf[@]}" >"$tmp/configure.log" 2>&1) ||
    { tail -n 20 "$tmp/configure.log" >&2; skip "configure of Bochs $ver failed"; }
(cd "$src" && make -j"$(nproc)" bochs >"$tmp/make.log" 2>&1) ||
    { tail -n 20 "$tmp/make.log" >&2; skip "build of Bochs $ver failed"; }
rm -rf "$dir"
mkdir -p "$dir"
mv "$src/bochs" "$dir/bochs"
echo "$stamp" >"$dir/.stamp"
echo "bochs: built $dir/bochs" >&2
