#!/usr/bin/env bash
# Runs a statically linked x86-64 Linux program on an emulated AVX-512 CPU (Bochs 3.0, built by build-bochs.sh; CPU
# model sapphire_rapids: AVX-512 F/BW/VL/VNNI/BF16) and exits with the program's exit status.
# Usage: bash tests/bochs/run.sh [--timeout SECONDS] STATIC_BINARY [ARGS...]
# Boots a Debian kernel from a small ISO whose initramfs /init (tests/bochs/init.c) runs the
# program; everything is cached under ${MOEC_BUILD:-build}/bochs/ (run-<hash of binary+args>/ also
# keeps serial.log, the full console log, and bochs.log). Prints only the program's output
# (stdout and stderr both, on stdout), timings on stderr. Exits 77 when Bochs or the kernel are
# not available, 124 on timeout, 125 when Bochs fails before the program ends.
# Debug knobs: MOEC_BOCHS_APPEND (extra kernel args, e.g. "loglevel=8" shows the boot log in
# serial.log), MOEC_BOCHS_CPU (Bochs CPU model, default sapphire_rapids; tigerlake has no AVX512_BF16).
# Kernel args found with Bochs 2.7 and kept (the features are not needed): clearcpuid=pku,xsavec,xsaves (Bochs
# reported a bad XSAVE layout for PKRU and a wrong compacted size; without this Linux disables XSAVE, so no AVX),
# fsrm,erms (with them Linux 6.1's patched memmove broke under Bochs and corrupted memory at boot),
# tsc_early_khz = ips/1000 (Bochs' TSC counts instructions; the CPUID-reported 2.4 GHz is wrong).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
timeout=900
while [ $# -gt 0 ]; do
    case $1 in
        --timeout) timeout=$2; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--timeout SECONDS] STATIC_BINARY [ARGS...]" >&2; exit 2; }
bin=$1; shift
[ -f "$bin" ] || { echo "bochs: no such file: $bin" >&2; exit 2; }
if LC_ALL=C readelf -lW "$bin" 2>/dev/null | grep -q 'Requesting program interpreter'; then
    echo "bochs: $bin is dynamically linked; link it with -static" >&2; exit 2
fi
mkdir -p "${MOEC_BUILD:-build}/bochs"
cache=$(cd "${MOEC_BUILD:-build}/bochs" && pwd)
bash "$here/setup.sh" "$cache"   # exits 77 (skip) when something is missing

# The init program, rebuilt when init.c changes.
if [ ! -x "$cache/init" ] || [ "$here/init.c" -nt "$cache/init" ]; then
    gcc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -static -O2 -o "$cache/init.tmp" "$here/init.c"
    mv "$cache/init.tmp" "$cache/init"
fi

# The ISO (isolinux + kernel + initramfs holding init, the program and its argv), keyed by content.
append="console=ttyS0 quiet nokaslr acpi=off pci=off nosmp mitigations=off tsc=reliable tsc_early_khz=50000"
append+=" no_timer_check lpj=200000 clearcpuid=pku,xsavec,xsaves,fsrm,erms,aperfmperf panic=-1 ${MOEC_BOCHS_APPEND:-}"
key=$( { sha256sum "$bin" "$cache/init" "$cache/vmlinuz" | cut -d' ' -f1; printf '%s\0' "$append" "$@"; } | sha256sum | cut -c1-16)
work=$cache/run-$key
if [ ! -s "$work/boot.iso" ]; then
    tmp=$(mktemp -d "$cache/tmp.XXXXXX")
    mkdir -p "$tmp/root/dev" "$tmp/root/proc" "$tmp/root/tmp" "$tmp/iso/isolinux"
    cp "$cache/init" "$tmp/root/init"
    cp "$bin" "$tmp/root/prog"
    chmod 755 "$tmp/root/prog"
    printf '%s\0' "$(basename "$bin")" "$@" > "$tmp/root/args"
    (cd "$tmp/root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$tmp/iso/initrd.img"
    cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$tmp/iso/isolinux/"
    cat > "$tmp/iso/isolinux/isolinux.cfg" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img $append
EOF
    xorriso -as mkisofs -quiet -o "$tmp/boot.iso" -graft-points -b isolinux/isolinux.bin -c isolinux/boot.cat \
        -no-emul-boot -boot-load-size 4 -boot-info-table "$tmp/iso" "/vmlinuz=$cache/vmlinuz" 2>"$tmp/xorriso.log" ||
        { echo "bochs: FAILED: xorriso could not make the ISO:" >&2; cat "$tmp/xorriso.log" >&2; exit 125; }
    mkdir -p "$work"
    mv "$tmp/boot.iso" "$work/boot.iso"
    rm -rf "$tmp"
    find "$cache" -maxdepth 1 -name 'run-*' -mmin +1440 -exec rm -rf {} + # drop runs unused for a day
fi
touch "$work"

serial=$work/serial.log
: > "$serial"
cat > "$work/bochsrc" <<EOF
display_library: nogui
megs: 512
cpu: model=${MOEC_BOCHS_CPU:-sapphire_rapids}, count=1, ips=50000000, reset_on_triple_fault=0
clock: sync=none, time0=local
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
ata0-master: type=cdrom, path=$work/boot.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$serial
log: $work/bochs.log
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
mouse: enabled=0
EOF
t0=$EPOCHREALTIME
setsid "$cache/bochs-3.0/bochs" -q -f "$work/bochsrc" </dev/null >"$work/bochs.out" 2>&1 &
bochs_pid=$!
stop_bochs() { # give Bochs 5 s to power off by itself, then end it (its session)
    for _ in $(seq 50); do kill -0 $bochs_pid 2>/dev/null || break; sleep 0.1; done
    kill -- -$bochs_pid 2>/dev/null || true
    wait $bochs_pid 2>/dev/null || true
}
trap stop_bochs EXIT

elapsed() { local now=$EPOCHREALTIME; echo $(( (${now/./} - ${1/./}) / 1000 )); } # ms since $1
state=boot status=
exec 3< <(tail -n +1 -F --pid=$bochs_pid "$serial" 2>/dev/null)
while :; do
    left=$(( timeout * 1000 - $(elapsed "$t0") ))
    [ $left -gt 0 ] || break
    IFS= read -r -t "$((left / 1000 + 1))" -u 3 line || break
    line=${line%$'\r'}
    case $state/$line in
        boot/MOEC-START*)
            state=run; t1=$EPOCHREALTIME
            echo "bochs: booted in $(( $(elapsed "$t0") / 1000 )).$(( $(elapsed "$t0") % 1000 / 100 )) s" >&2 ;;
        boot/*"Kernel panic"*) break ;;
        run/*MOEC-EXIT\ *)
            [ -n "${line%%MOEC-EXIT *}" ] && printf '%s\n' "${line%%MOEC-EXIT *}"
            status=${line##*MOEC-EXIT }; break ;;
        run/*) printf '%s\n' "$line" ;;
    esac
done
exec 3<&-
if [ -n "$status" ]; then
    echo "bochs: program ran $(( $(elapsed "$t1") / 1000 )).$(( $(elapsed "$t1") % 1000 / 100 )) s, exit status $status" >&2
    exit "$status"
fi
if kill -0 $bochs_pid 2>/dev/null; then
    kill -- -$bochs_pid 2>/dev/null || true
    why="no MOEC-EXIT within ${timeout}s (state: $state)"; rc=124
    grep -q "Kernel panic" "$serial" && { why="the kernel panicked"; rc=125; }
else
    why="Bochs exited before the program ended"; rc=125
fi
echo "bochs: FAILED: $why; serial log $serial, Bochs log $work/bochs.log; last lines:" >&2
tail -n 20 "$serial" >&2
tail -n 5 "$work/bochs.log" >&2 2>/dev/null || true
exit $rc
