#!/usr/bin/env bash
# hostile-guest.sh: vmsnapfs on a host where others can plant files, and the
# secrets it handles. (1) links planted at the names overlays once had, in a
# world-writable disk directory, are never followed nor reused: mkdir (of a
# stopped and of a running VM), clone and restore make their own overlays,
# regular files, mode 0600, and the links' targets are never made or changed;
# (2) overlay names never collide with files a snapshot's history left (the
# same snapshot name again after a restore and rmdir); (3) a VNC password
# survives restore and clone, and is never shown (domain.xml, events, log);
# (4) the state directory stays private after the cycles that rewrite its
# files; (5) listing snapshots never fails while others are made and deleted.
. "${0%/*}/lib.sh"
requires_fuse
requires runuser
use_guests

mnt=$(workdir)/mnt
wd=$(workdir)

# the disk directory everyone may write to (no sticky bit): where links get
# planted; and a directory of root's they point into
pub=$GUEST_DIR/pub
mkdir -p "$pub"
chmod 0777 "$pub"
victim=$wd/victim
mkdir -m 0700 "$victim"

# the one running VM (block 1) boots while the stopped ones are worked on
vr=${TEST_PREFIX}run
guest_make_disk "$pub/run.raw" 32M
guest_define "$vr" --disk "$pub/run.raw"
guest_start "$vr"

start_vmsnapfs qemu:///system "$mnt"

# plant NAME: a link $pub/NAME.qcow2 -> $victim/NAME, made by nobody
plant() {
    runuser -u nobody -- ln -s "$victim/$1" "$pub/$1.qcow2" || fail "cannot plant $1"
}
links_now() { find "$pub" -type l -printf '%p -> %l\n' | sort; }
qcow2s_now() { find "$pub" -name '*.qcow2' | sort; }
# every overlay made since the list $1 was taken: a regular file of its own,
# private, root's or QEMU's
check_new_overlays() {
    local f new
    new=$(comm -13 "$1" <(qcow2s_now))
    [ -n "$new" ] || fail "$2: no new overlay in $pub"
    for f in $new; do
        [ -f "$f" ] && [ ! -L "$f" ] || fail "$2: $f is not a regular file"
        [ "$(stat -c %a "$f")" = 600 ] || fail "$2: $f is mode $(stat -c %a "$f")"
        case "$(stat -c %U "$f")" in
            root | libvirt-qemu) ;;
            *) fail "$2: $f is owned by $(stat -c %U "$f")" ;;
        esac
    done
}
check_victim() {
    [ "$(ls -A "$victim")" = precious ] ||
        fail "$1: a planted link was followed, made: $(ls -A "$victim" | tr '\n' ' ')"
    [ "$(cat "$victim/precious")" = precious ] || fail "$1: the target of a link was overwritten"
    [ "$(stat -c %a "$victim/precious")" = 644 ] ||
        fail "$1: the target of a link is mode $(stat -c %a "$victim/precious")"
    [ "$(links_now)" = "$(cat "$wd/links")" ] ||
        fail "$1: the planted links changed: $(diff "$wd/links" <(links_now) | tr '\n' ' ')"
}
# no file of the state directory readable by others, no directory writable
check_private() {
    local bad
    bad=$(find "$VMSNAPFS_STATE_DIR" -type f -perm /077 -printf '%m %p\n')
    [ -z "$bad" ] || fail "$1: state files readable by others: $bad"
    bad=$(find "$VMSNAPFS_STATE_DIR" -type d -perm /022 -printf '%m %p\n')
    [ -z "$bad" ] || fail "$1: state directories writable by others: $bad"
}
# stamps of the seconds from now-2 to now+N (UTC), in both forms restore
# names have them (overlays: 20261206T073904Z, safety snapshots: 20261206-073904)
stamps() {
    local now i
    now=$(date +%s)
    for ((i = -2; i <= $1; i++)); do
        date -u -d "@$((now + i))" +%Y%m%dT%H%M%SZ     # overlays of a restore
        date -u -d "@$((now + i))" +%Y%m%d-%H%M%S      # of its safety snapshot
    done
}

# ---- 1: planted links are never followed nor reused ------------------------
# Overlays were once named VM.DISK.SNAP.qcow2 beside the disk and made by
# following whatever was at that name: root made or overwrote the link's
# target. Now they get a random part and are made O_EXCL|O_NOFOLLOW, 0600.
v1=${TEST_PREFIX}links
c1=${TEST_PREFIX}links-copy
guest_make_disk "$pub/links.raw" 32M
guest_define "$v1" --disk "$pub/links.raw"
V1=$mnt/$v1
echo precious >"$victim/precious"
chmod 0644 "$victim/precious"
plant "$v1.vda.s1"                          # snapshot s1: a link to nothing
runuser -u nobody -- ln -s "$victim/precious" "$pub/$v1.vda.s2.qcow2"  # to a file
plant "$c1.vda.clone"                       # the clone's disk
for t in $(stamps 40); do                   # the restore's overlay, its safety snapshot
    plant "$v1.vda.restore-s1-$t"
    plant "$v1.vda.pre-restore-s1-$t"
done
plant "$vr.vda.r1"                          # a snapshot of the running VM
links_now >"$wd/links"
qcow2s_now >"$wd/qcow2s"

mkdir "$V1/snapshots/s1" || fail "mkdir s1 with a link planted: $(tail -n 2 "$V1/events")"
check_victim "mkdir s1"
mkdir "$V1/snapshots/s2" || fail "mkdir s2 with a link planted: $(tail -n 2 "$V1/events")"
check_victim "mkdir s2"
echo "$c1" >"$V1/snapshots/s1/clone" || fail "clone with a link planted: $(tail -n 2 "$V1/events")"
check_victim "clone"
echo s1 >"$V1/restore" || fail "restore with links planted: $(cat "$V1/restore")"
check_victim "restore"
guest_wait_agent "$vr"
mkdir "$mnt/$vr/snapshots/r1" ||
    fail "mkdir of a running VM with a link planted: $(tail -n 2 "$mnt/$vr/events")"
check_victim "mkdir of a running VM"
check_new_overlays "$wd/qcow2s" "links"
for f in $(comm -13 "$wd/qcow2s" <(qcow2s_now)); do
    [[ "${f##*/}" =~ \.[0-9a-f]{8}\.qcow2$ ]] || fail "overlay $f has no random part"
done
for d in "$(guest_virsh domblklist "$c1" | awk '$1 == "vda" { print $2 }')" \
    "$(guest_virsh domblklist "$v1" | awk '$1 == "vda" { print $2 }')" \
    "$(guest_virsh domblklist "$vr" | awk '$1 == "vda" { print $2 }')"; do
    [ -f "$d" ] && [ ! -L "$d" ] || fail "a disk is not a regular file: '$d'"
done
guest_exec "$vr" 'echo alive >/data/alive && sync' || fail "the running VM cannot write"
guest_destroy "$vr"
guest_undefine "$c1"

# ---- 2: overlay names never collide with what history left -----------------
# mkdir x, a restore, rmdir x, mkdir x: the first x's overlay is still a
# layer of the safety snapshot; the new x's must not want its name (EEXIST
# once).
v2=${TEST_PREFIX}hist
guest_make_disk "$GUEST_DIR/hist.raw" 32M
guest_define "$v2" --disk "$GUEST_DIR/hist.raw"
V2=$mnt/$v2
mkdir "$V2/snapshots/b0"
mkdir "$V2/snapshots/x"
echo b0 >"$V2/restore" || fail "restore b0: $(cat "$V2/restore")"
rmdir "$V2/snapshots/x"
expect_errno OK mkdir "$V2/snapshots/x"
expect_content "$V2/snapshots/x/phase" Succeeded

# ---- 3: a VNC password survives restore and clone, and is never shown ------
v3=${TEST_PREFIX}vnc
c3=${TEST_PREFIX}vnc-copy
pw=Q7z$(printf '%05d' $(($$ % 100000)))     # VNC: at most 8 characters
guest_make_disk "$GUEST_DIR/vnc.raw" 32M
guest_define "$v3" --disk "$GUEST_DIR/vnc.raw"
guest_virsh dumpxml --inactive --security-info "$v3" |
    sed "s|</devices>|<graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1' passwd='$pw'/></devices>|" \
        >"$wd/vnc.xml"
guest_virsh define "$wd/vnc.xml" >/dev/null || fail "cannot define $v3 with a VNC password"
# (grep -c, not -q: under pipefail an early exit of grep fails virsh with SIGPIPE)
guest_virsh dumpxml --inactive --security-info "$v3" | grep -c "passwd='$pw'" >/dev/null ||
    fail "libvirt did not keep the password"
V3=$mnt/$v3
has_pw() { guest_virsh dumpxml --inactive --security-info "$1" | grep -c "passwd='$pw'" >/dev/null; }
never_shown() {
    local what=$1 f
    shift
    for f in "$V3/domain.xml" "$V3/events" "$V3/restore" "$V3"/snapshots/*/domain.xml \
        "$V3"/snapshots/*/status.json "$VMSNAPFS_LOG" "$@"; do
        ! grep -q "passwd=" "$f" || fail "$what: $f shows passwd="
        ! grep -q -- "$pw" "$f" || fail "$what: $f shows the password"
    done
}
mkdir "$V3/snapshots/s1"
never_shown "mkdir"
echo s1 >"$V3/restore" || fail "restore s1: $(cat "$V3/restore")"
has_pw "$v3" || fail "the restored definition lost the VNC password"
never_shown "restore"
echo "$c3" >"$V3/snapshots/s1/clone" || fail "clone s1: $(tail -n 2 "$V3/events")"
has_pw "$c3" || fail "the clone's definition lost the VNC password"
wait_until 5 test -f "$mnt/$c3/domain.xml" || fail "the clone is not in the tree"
never_shown "clone" "$mnt/$c3/domain.xml"
guest_undefine "$c3"

# ---- 4: the state directory stays private ----------------------------------
# snapshot, rmdir (merge), clone and restore rewrite $VMSNAPFS_STATE_DIR's
# files (the registry of files vmsnapfs made, restore plans): none may be
# readable by others (a restore plan holds the definition, passwords too).
v4=${TEST_PREFIX}state
c4=${TEST_PREFIX}state-copy
guest_make_disk "$GUEST_DIR/state.raw" 32M
guest_define "$v4" --disk "$GUEST_DIR/state.raw"
V4=$mnt/$v4
mkdir "$V4/snapshots/a"
mkdir "$V4/snapshots/b"
rmdir "$V4/snapshots/a"
echo "$c4" >"$V4/snapshots/b/clone" || fail "clone b: $(tail -n 2 "$V4/events")"
guest_undefine "$c4"
echo b >"$V4/restore" || fail "restore b: $(cat "$V4/restore")"
for s in "$V4"/snapshots/*; do
    rmdir "$s" || fail "rmdir $s"
done
[ -d "$VMSNAPFS_STATE_DIR" ] || fail "no state directory"
[ -n "$(find "$VMSNAPFS_STATE_DIR" -type f)" ] || fail "no file in the state directory"
check_private "after the cycles"

# ---- 5: listings never fail under churn ------------------------------------
# A snapshot deleted between libvirt's list and the lookup of its XML is left
# out of the listing; it used to fail the whole listing (ENOENT for ls, and
# for the lookups of ls -l). mkdir/rmdir cycles on a VM without disks
# (metadata-only snapshots: quick), 20 kept snapshots making each listing
# longer, two listers, and the VM's definition written again, 50 times a
# second (as virsh define does: each drops what the daemon cached of the VM,
# so listings ask libvirt instead of a cache). `ls -l` may say a listed
# cN vanished before its stat: that is not a failure of the listing. Up to
# 300 cycles (about 20 s) or 45 s, ended by a first failure (the old code
# failed within 100 cycles in each of 10 runs).
v5=${TEST_PREFIX}churn
guest_define "$v5"
V5=$mnt/$v5
for ((i = 1; i <= 20; i++)); do
    mkdir "$V5/snapshots/keep$i"
done
guest_virsh dumpxml --inactive --security-info "$v5" >"$wd/churn.xml"
at_exit "touch '$wd/churn.done'"
vanished="cannot access '$V5/snapshots/c[0-9]*': No such file or directory"
lister() {
    local n=0 fails=0
    while [ ! -e "$wd/churn.done" ]; do
        ls "$V5/snapshots/" >/dev/null 2>>"$wd/ls.err.$1" || fails=$((fails + 1))
        ls -l "$V5/snapshots/" >/dev/null 2>>"$wd/ls.err.$1" || fails=$((fails + 1))
        n=$((n + 2))
    done
    echo "$n $fails" >"$wd/ls.count.$1"
}
listers=()
for l in 1 2; do
    lister $l &
    listers+=($!)
done
(
    while [ ! -e "$wd/churn.done" ]; do
        echo "define $wd/churn.xml"
        sleep 0.02
    done | guest_virsh >/dev/null
) &
definer=$!
t0=$(date +%s.%N)
end=$((SECONDS + 45))
for ((i = 1; i <= 300 && SECONDS < end; i++)); do
    mkdir "$V5/snapshots/c$i" || fail "mkdir c$i"
    rmdir "$V5/snapshots/c$i" || fail "rmdir c$i"
    ! grep -qv "$vanished" "$wd"/ls.err.* 2>/dev/null || break
done
touch "$wd/churn.done"
wait "${listers[@]}"
wait "$definer" || fail "virsh define of $v5 failed meanwhile"
n=0 fails=0
for l in 1 2; do
    read -r a b <"$wd/ls.count.$l"
    n=$((n + a)) fails=$((fails + b))
done
real=$(cat "$wd"/ls.err.* | grep -v "$vanished" || true)
[ -z "$real" ] || fail "listing under churn failed in cycle $i ($fails of $n runs of ls failed): $(head -n 3 <<<"$real")"
left=$(find "$V5/snapshots" -mindepth 1 -maxdepth 1 ! -name 'keep*')
[ -z "$left" ] || fail "snapshots left: $left"
echo "ls under churn: $n runs in $((i - 1)) cycles, $(awk -v s="$t0" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }') s, $fails with a vanished name" >&2

# everything above kept the state directory private too
check_private "at the end"
echo "PASS: $testname"
