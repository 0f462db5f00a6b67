#!/bin/bash
# build-guest.sh OUTDIR
#
# Builds a tiny direct-kernel-boot guest for vmsnapfs integration tests from
# the Debian packages installed on this machine (no network needed):
#
#   OUTDIR/vmlinuz     copy of /boot/vmlinuz-<ver>
#   OUTDIR/initrd.img  gzip'd cpio (newc) initramfs: busybox-static, the
#                      virtio + ext4 kernel modules, qemu-ga with the shared
#                      libraries ldd lists, and an /init script (see below).
#   OUTDIR/kver        the kernel version used
#   OUTDIR/stamp       what the build was made from; when it still matches,
#                      a rerun does nothing (idempotent, cheap).
#
# Needs: linux-image-amd64 busybox-static qemu-guest-agent cpio kmod gzip.
#
# The kernel version is the newest /boot/vmlinuz-* that has a matching
# /lib/modules/<ver> directory (the running kernel may be a different one
# without modules, e.g. inside a container); $VMSNAPFS_GUEST_KVER overrides.
#
# Guest kernel command line words understood by /init:
#   noagent             do not start qemu-ga
#   freezehook_sleep=N  start qemu-ga with an fsfreeze hook
#                       (-F/run/fsfreeze-hook) that sleeps N seconds on
#                       "freeze"; every call is logged to /run/fsfreeze-hook.log
#   nomount             do not mount the virtio disks
# The first virtio disk (/dev/vda) is mounted read-write as ext4 at /data,
# further ones (/dev/vdb ...) at /mnt/vdb ...; a disk that is not ext4 is left
# unmounted. The console (console=ttyS0) gets "vmsnapfs-guest: ..." lines.
set -euo pipefail

die() { echo "build-guest: $*" >&2; exit 1; }

[[ $# -eq 1 && -n "$1" ]] || die "usage: $0 OUTDIR"
outdir=$1

# Module load order that works for the Debian kernel (dependencies first).
# Modules that are built in are skipped; missing dependencies are added.
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
         virtio_pci virtio_blk virtio_console crc16 crc32c_generic mbcache
         jbd2 ext4)

pick_kver() {
    if [[ -n "${VMSNAPFS_GUEST_KVER:-}" ]]; then
        echo "$VMSNAPFS_GUEST_KVER"
        return
    fi
    local f v best=""
    for f in /boot/vmlinuz-*; do
        [[ -e "$f" ]] || continue
        v=${f#/boot/vmlinuz-}
        [[ -d "/lib/modules/$v/kernel" ]] || continue
        best=$(printf '%s\n%s\n' "$best" "$v" | sed '/^$/d' | sort -V | tail -n 1)
    done
    [[ -n "$best" ]] || die "no /boot/vmlinuz-<ver> with /lib/modules/<ver> (install linux-image-amd64)"
    echo "$best"
}

kver=$(pick_kver)
kernel=/boot/vmlinuz-$kver
[[ -r "$kernel" ]] || die "cannot read $kernel"
# busybox-static installs /bin/busybox; it must not need shared libraries.
busybox=/bin/busybox
[[ -x "$busybox" ]] || die "$busybox not found (install busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked (install busybox-static)"
fi
qga=/usr/sbin/qemu-ga
[[ -x "$qga" ]] || die "$qga not found (install qemu-guest-agent)"
for tool in cpio gzip modinfo ldd flock; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

# What the result depends on: kernel version and file identities, the
# binaries copied in, and this script itself (it holds the /init text).
self=$(readlink -f "$0")
stamp_text() {
    echo "kver=$kver"
    stat -L -c 'kernel %s %Y' "$kernel"
    stat -L -c 'modules %Y' "/lib/modules/$kver/modules.dep" 2>/dev/null || echo "modules none"
    sha256sum "$busybox" "$qga" "$self" | awk '{print $1}'
    # the libraries qemu-ga loads (a Debian update changes them)
    ldd "$qga" | awk '/=>/ {print $3} /^[[:space:]]*\// {print $1}' \
        | while read -r lib; do [[ -e "$lib" ]] && stat -L -c '%n %s %Y' "$lib"; done
}

mkdir -p "$outdir"
chmod 0755 "$outdir"
outdir=$(cd "$outdir" && pwd -P)

# Serialise concurrent builds into the same OUTDIR.
exec 9>"$outdir/.lock"
flock -w 600 9 || die "timed out waiting for the lock on $outdir"

want=$(stamp_text)
if [[ -f "$outdir/stamp" && -f "$outdir/vmlinuz" && -f "$outdir/initrd.img" ]] \
   && [[ "$(cat "$outdir/stamp")" == "$want" ]]; then
    echo "build-guest: $outdir is up to date (kernel $kver)" >&2
    exit 0
fi

echo "build-guest: building guest for kernel $kver in $outdir" >&2
work=$(mktemp -d "$outdir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/modules,lib64,etc,proc,sys,dev,run,var/run,tmp,data,mnt}
chmod 1777 "$root/tmp"

# --- busybox and its applet links -------------------------------------------
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
while read -r applet; do
    # "--list-full" prints e.g. "bin/sh", "usr/sbin/chroot"
    [[ -n "$applet" && "$applet" != bin/busybox ]] || continue
    mkdir -p "$root/$(dirname "$applet")"
    [[ -e "$root/$applet" ]] || ln -s /bin/busybox "$root/$applet"
done < <("$root/bin/busybox" --list-full)
[[ -L "$root/bin/sh" ]] || ln -s /bin/busybox "$root/bin/sh"

# --- kernel modules ---------------------------------------------------------
# Resolve each module to a file (or "builtin"), add its dependencies first,
# and decompress .ko.xz / .ko.zst / .ko.gz so busybox insmod can load it.
declare -A seen=()
order=()
add_module() {
    local m=$1 file deps d
    m=${m//-/_}
    [[ -z "${seen[$m]:-}" ]] || return 0
    seen[$m]=1
    file=$(modinfo -k "$kver" -F filename "$m" 2>/dev/null | head -n 1) || true
    if [[ -z "$file" ]]; then
        if grep -qE "/${m//_/[_-]}\.ko$" "/lib/modules/$kver/modules.builtin" 2>/dev/null; then
            file="(builtin)"
        else
            die "kernel module $m not found for $kver"
        fi
    fi
    if [[ "$file" == "(builtin)" || "$file" == *builtin* ]]; then
        echo "build-guest: module $m is built in" >&2
        return 0
    fi
    deps=$(modinfo -k "$kver" -F depends "$m" 2>/dev/null || true)
    for d in ${deps//,/ }; do
        add_module "$d"
    done
    case "$file" in
        *.ko.xz)  xz -dc "$file" > "$root/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$file" > "$root/lib/modules/$m.ko" ;;
        *.ko.gz)  gzip -dc "$file" > "$root/lib/modules/$m.ko" ;;
        *.ko)     cp "$file" "$root/lib/modules/$m.ko" ;;
        *)        die "unexpected module file $file" ;;
    esac
    order+=("$m")
}
for m in "${MODULES[@]}"; do
    add_module "$m"
done
printf '%s\n' "${order[@]}" > "$root/lib/modules/load-order"

# --- qemu-ga and its libraries ----------------------------------------------
cp "$qga" "$root/usr/sbin/qemu-ga"
copy_lib() {
    # copy to the same path inside the guest, following symlinks
    local lib=$1
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
}
while read -r lib; do
    [[ -n "$lib" ]] || continue
    copy_lib "$lib"
done < <(ldd "$qga" | awk '/=>/ && $3 ~ /^\// {print $3} /^[[:space:]]*\// {print $1}' | sort -u)
# the ELF interpreter, whatever ldd called it
interp=$(readelf -l "$qga" 2>/dev/null | sed -n 's/.*interpreter: \(.*\)]/\1/p' || true)
[[ -z "$interp" || -e "$root$interp" ]] || copy_lib "$interp"

# --- /etc -------------------------------------------------------------------
printf 'root:x:0:0:root:/:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
mkdir -p "$root/etc/qemu"

# qemu-ga's guest-shutdown runs /sbin/shutdown (-P|-H|-r +0 "message").
rm -f "$root/sbin/shutdown"
cat > "$root/sbin/shutdown" <<'SHUTDOWN'
#!/bin/sh
# Minimal /sbin/shutdown for qemu-ga's guest-shutdown: flush and unmount
# the data disks, then power off (or reboot with -r) at once.
echo "vmsnapfs-guest: shutdown $*" > /dev/console
sync
for m in $(awk '$1 ~ /^\/dev\/vd/ {print $2}' /proc/mounts); do
    umount "$m" 2>/dev/null || mount -o remount,ro "$m" 2>/dev/null
done
sync
case " $* " in
    *" -r "*) reboot -f ;;
    *)        poweroff -f ;;
esac
SHUTDOWN
chmod 0755 "$root/sbin/shutdown"

# --- /init ------------------------------------------------------------------
cat > "$root/init" <<'INIT'
#!/bin/sh
# vmsnapfs test guest init (busybox ash, PID 1).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/

log() { echo "vmsnapfs-guest: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts /run /var/run /tmp /data
mount -t devpts devpts /dev/pts 2>/dev/null || true

cmdline=$(cat /proc/cmdline)
has_word() {
    for w in $cmdline; do [ "$w" = "$1" ] && return 0; done
    return 1
}
word_value() {
    for w in $cmdline; do
        case "$w" in "$1"=*) echo "${w#*=}"; return 0 ;; esac
    done
    return 1
}
# wait_for PATH DECISECONDS: wait until PATH exists
wait_for() {
    n=0
    while [ ! -e "$1" ]; do
        [ "$n" -ge "$2" ] && return 1
        n=$((n + 1))
        sleep 0.1
    done
    return 0
}
# has_virtio_dev ID: is there a virtio device of that type (2 = block,
# 3 = console/serial)?
has_virtio_dev() {
    for d in /sys/bus/virtio/devices/*/device; do
        [ -r "$d" ] || continue
        [ "$(cat "$d")" = "$(printf '0x%04x' "$1")" ] && return 0
    done
    return 1
}

# Kernel modules, in dependency order (built-in ones are not in the list).
while read -r m; do
    insmod "/lib/modules/$m.ko" 2>/dev/null || log "insmod $m failed"
done < /lib/modules/load-order

# Disks: /dev/vda -> /data, /dev/vdX -> /mnt/vdX (ext4, read-write).
if has_word nomount; then
    log "nomount: not mounting disks"
elif has_virtio_dev 2; then
    wait_for /dev/vda 100 || log "no /dev/vda after 10 s"
    for dev in /dev/vd[a-z]; do
        [ -b "$dev" ] || continue
        name=${dev#/dev/}
        if [ "$name" = vda ]; then mp=/data; else mp=/mnt/$name; fi
        mkdir -p "$mp"
        if mount -t ext4 -o rw "$dev" "$mp"; then
            log "mounted $dev on $mp"
        else
            log "could not mount $dev on $mp (not ext4?)"
        fi
    done
fi

# Guest agent.
if has_word noagent; then
    log "noagent: not starting qemu-ga"
else
    # Find the agent's port by name (no udev, so no /dev/virtio-ports/ link).
    port=""
    n=0
    while [ -z "$port" ] && [ "$n" -lt 100 ]; do
        for p in /sys/class/virtio-ports/vport*; do
            [ -r "$p/name" ] || continue
            if [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ]; then
                port=/dev/${p##*/}
            fi
        done
        [ -n "$port" ] && break
        # no virtio-serial device at all: no channel, do not wait
        has_virtio_dev 3 || break
        n=$((n + 1))
        sleep 0.1
    done
    if [ -n "$port" ] && wait_for "$port" 50; then
        hook=""
        if secs=$(word_value freezehook_sleep); then
            case "$secs" in
                ''|*[!0-9]*) log "bad freezehook_sleep=$secs, ignored"; secs="" ;;
            esac
            if [ -n "$secs" ]; then
                cat > /run/fsfreeze-hook <<HOOK
#!/bin/sh
# fsfreeze hook: \$1 is "freeze" or "thaw"
echo "\$(date +%s) \$1 start" >> /run/fsfreeze-hook.log
if [ "\$1" = freeze ]; then sleep $secs; fi
echo "\$(date +%s) \$1 end" >> /run/fsfreeze-hook.log
exit 0
HOOK
                chmod 0755 /run/fsfreeze-hook
                hook=-F/run/fsfreeze-hook
                log "fsfreeze hook sleeps $secs s on freeze"
            fi
        fi
        # shellcheck disable=SC2086 # $hook is empty or one word
        if qemu-ga -d -m virtio-serial -p "$port" -l /run/qemu-ga.log $hook; then
            log "qemu-ga started on $port"
        else
            log "qemu-ga failed to start"
        fi
    else
        log "no guest agent port (org.qemu.guest_agent.0)"
    fi
fi

log "ready"
# Stay alive as PID 1 (the shell reaps orphans while waiting for sleep).
while :; do
    sleep 60
done
INIT
chmod 0755 "$root/init"

# --- pack -------------------------------------------------------------------
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z \
    | cpio --null --create --format=newc --owner=0:0 --quiet) \
    | gzip -6 -n > "$work/initrd.img"
cp "$kernel" "$work/vmlinuz"
echo "$kver" > "$work/kver"
chmod 0644 "$work/initrd.img" "$work/vmlinuz" "$work/kver"
# Replace the results; the stamp goes last so a broken build is redone.
rm -f "$outdir/stamp"
mv -f "$work/vmlinuz" "$outdir/vmlinuz"
mv -f "$work/initrd.img" "$outdir/initrd.img"
mv -f "$work/kver" "$outdir/kver"
printf '%s\n' "$want" > "$outdir/stamp.tmp"
mv -f "$outdir/stamp.tmp" "$outdir/stamp"
echo "build-guest: done: $outdir/vmlinuz $outdir/initrd.img ($(du -k "$outdir/initrd.img" | cut -f1) KiB)" >&2
