#!/usr/bin/env bash
# bench/load.sh [SHELLS] [SECONDS]: vmsnapfs under concurrent use. SHELLS
# (4) background shells loop for SECONDS (60) over random operations on
# random VMs of VMS (2; at most 3) small running guests with agent (qcow2,
# 64 MiB, vmsnapfs-b-PID-a, -b, ...), while one more loop runs `ls -l` of
# the mount's root and of every VM's directory, snapshots/ and volumes/
# every 100 ms and records each call's latency. The operations, chosen
# with weights 3:3:1:1:3 (SEED=S repeats the choices, not the timing):
#   mkdir    a snapshot named for the shell (wN-M), after 2 MiB written in
#            the guest half of the time; its vda.img is then copied (cp,
#            retried for 10 s while the VM is busy) and its sha256 recorded
#   rmdir    one of the shell's own snapshots
#   restore  `S policy=StopTarget` to any snapshot of the VM
#   clone    of any snapshot of the VM (CLONES=2 per shell); the clone is
#            then undefined and its own disk (the clone's overlay) removed
#   cp       of the live volumes/vda.img, or of a snapshot's vda.img (then
#            its sha256 is compared with the one recorded at its creation,
#            or at the first copy, for snapshots made by restores)
# Each failure is classified by its errno. Expected under load (SPEC's
# table): EBUSY (another operation runs on the VM, a volume is open), ENOENT
# (a snapshot another shell removed, for rmdir, restore, clone and cp),
# EEXIST (mkdir, clone). Anything else (EIO, ETIMEDOUT, ...) is unexpected;
# for ls -l, ENOENT (an entry gone between readdir and stat) is expected.
# Output: one line per kind (done, ok, expected and unexpected errnos, the
# slowest call: a restore waits out a 60 s grace period when the guest's
# agent is not up yet, e.g. while it boots after the last restore), the
# ls -l line, the first unexpected errors with the daemon's last error lines,
# after the run whether a guest stays frozen or an image is broken, and last:
#   load: 4 shells, 60 s: 312 ops (mkdir 80, rmdir 75, restore 20, clone 12, cp 125); unexpected errors 0; data mismatches 0; ls -l p50 8 ms p90 20 ms p99 45 ms max 90 ms (of the root, VM and volumes/ directories p50 4 p99 20 max 30 ms; of the snapshots/ directories being changed p50 4 p99 40 max 80 ms); the same ls -l of a local tree meanwhile p50 4 ms p99 30 ms max 60 ms
# The local tree (same directories and files, on the bench's disk) is
# listed at the same time as each ls -l of the mount: its figures are what
# the loaded machine (two TCG guests, qemu-img, cp) takes to run ls at all.
# ls -l of the mount is two calls each time: the directories no operation
# changes, and the snapshots/ directories the shells change (a listing of
# a directory waits for a mkdir or rmdir running in it: the kernel holds
# the directory's lock for that long); the first figures are their sum.
# The start and length of every ls -l of the mount over 100 ms go to
# ls-slow beside the daemon's log (KEEP_LOGS keeps both; with
# VMSNAPFS_DEBUG=model the log says which fetches were slow).
# ops counts every attempt; data mismatches: snapshot copies whose sha256
# differs from the recorded one. The exit status is non-zero on unexpected
# errors, data mismatches, a frozen guest or a broken image. As root, with
# libvirtd; VMSNAPFS=path of the daemon (build/fs/vmsnapfs); KEEP_LOGS=DIR
# keeps the daemon's log.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib-faults.sh

shells=${1:-4}
secs=${2:-60}
nvms=${VMS:-2}
clones_per_shell=${CLONES:-2}
seed=${SEED:-$(od -An -N3 -tu4 /dev/urandom | tr -d ' ')}
((nvms >= 1 && nvms <= 3)) || { echo "VMS: 1 to 3" >&2; exit 1; }
echo "seed=$seed"
bench_init load
export GUEST_EXEC_TIMEOUT=20
vms=(a b c)
vms=("${vms[@]:0:nvms}")
mkdir -p "$work/hashes" "$work/ops" "$work/tmp"

for v in "${vms[@]}"; do bench_guest "$v" 64M; done
for v in "${vms[@]}"; do guest_wait_agent "$prefix$v"; done
daemon_start

# expected VERB ERRNO: is ERRNO expected under load for VERB?
expected() {
    case "$1:$2" in
        *:EBUSY | mkdir:EEXIST | clone:EEXIST) return 0 ;;
        rmdir:ENOENT | restore:ENOENT | clone:ENOENT | cp:ENOENT | ls:ENOENT) return 0 ;;
    esac
    return 1
}

# the worker's result of one call: sets res (OK or an errno name) from the
# status and the error output in $err
result() {
    if [ "$1" = 0 ]; then res=OK; else res=$(errno_name "$(tail -n 1 "$err")"); fi
}
log_op() {      # VERB DETAIL T0
    local ms=$(($(ms_now) - $3))
    echo "$1 $res $ms" >>"$ops"
    if [ "$res" != OK ] && ! expected "$1" "$res"; then
        echo "$(date +%T) shell $k: $1 $2: $res: $(tail -n 1 "$err")" >>"$work/unexpected"
    fi
}

# copy VM SNAP: cp of the snapshot's vda.img, checked against (or
# recording) its sha256
copy_snapshot() {
    local vm=$1 s=$2 t0 h want f=$work/hashes/$1/$2
    t0=$(ms_now)
    cp --sparse=always "$mnt/$prefix$vm/snapshots/$s/volumes/vda.img" "$tmp" 2>"$err"
    result $?
    log_op cp "$vm/snapshots/$s" "$t0"
    [ "$res" = OK ] || { rm -f "$tmp"; return 1; }
    h=$(sha256sum <"$tmp" | cut -d' ' -f1)
    rm -f "$tmp"
    mkdir -p "$work/hashes/$vm"
    if [ -s "$f" ]; then
        want=$(cat "$f")
        [ "$h" = "$want" ] ||
            echo "$(date +%T) shell $k: $vm/$s: sha256 $h, recorded $want" >>"$work/mismatches"
    else
        echo "$h" >"$f.$k" && mv -n "$f.$k" "$f" && rm -f "$f.$k"
    fi
}

# any_snapshot VM: sets s to one of VM's snapshots, or fails if it has none
any_snapshot() {
    local list
    mapfile -t list < <(ls "$mnt/$prefix$1/snapshots" 2>/dev/null)
    ((${#list[@]})) || return 1
    rnd ${#list[@]}
    s=${list[R]}
}

worker() {
    k=$1
    set +e
    local end=$2 n=0 clones=0 own=() vm V s t0 i j kind clone disk
    ops=$work/ops/w$k
    err=$work/tmp/w$k.err
    tmp=$work/tmp/w$k.img
    : >"$ops"
    rng_seed $((seed + 7919 * k))
    while (($(ms_now) < end)); do
        n=$((n + 1))
        rnd ${#vms[@]}; vm=${vms[R]}
        V=$mnt/$prefix$vm
        rnd 11
        if ((R < 3)); then kind="mkdir"
        elif ((R < 6)); then kind="rmdir"
        elif ((R < 7)); then kind=restore
        elif ((R < 8)); then kind=clone
        else kind="cp"
        fi
        # rmdir of nothing of ours on this VM: a mkdir instead; clones limited
        if [ "$kind" = rmdir ]; then
            j=()
            for i in "${!own[@]}"; do [ "${own[i]%%/*}" = "$vm" ] && j+=("$i"); done
            ((${#j[@]})) || kind="mkdir"
        fi
        ((clones < clones_per_shell)) || [ "$kind" != clone ] || kind="cp"
        case $kind in
            mkdir)
                s=w$k-$n
                rnd 2
                ((R)) && guest_exec "$prefix$vm" \
                    "dd if=/dev/urandom of=/data/w$k bs=1M count=2 2>/dev/null && sync" >/dev/null 2>&1
                t0=$(ms_now)
                mkdir "$V/snapshots/$s" 2>"$err"
                result $?
                log_op mkdir "$vm/snapshots/$s" "$t0"
                if [ "$res" = OK ]; then
                    own+=("$vm/$s")
                    # its sha256 now, while the VM is busy in a while
                    for ((i = 0; i < 20; i++)); do
                        copy_snapshot "$vm" "$s" && break
                        [ "$res" = EBUSY ] || break
                        sleep 0.5
                    done
                fi ;;
            rmdir)
                rnd ${#j[@]}
                i=${j[R]}
                s=${own[i]#*/}
                t0=$(ms_now)
                rmdir "$V/snapshots/$s" 2>"$err"
                result $?
                log_op rmdir "$vm/snapshots/$s" "$t0"
                if [ "$res" = OK ] || [ "$res" = ENOENT ]; then
                    unset "own[i]"
                    own=("${own[@]}")
                    rm -f "$work/hashes/$vm/$s"
                fi ;;
            restore)
                any_snapshot "$vm" || continue
                t0=$(ms_now)
                (echo "$s policy=StopTarget" >"$V/restore") 2>"$err"
                result $?
                log_op restore "$vm -> $s" "$t0" ;;
            clone)
                any_snapshot "$vm" || continue
                clone=${prefix}c$k-$n
                t0=$(ms_now)
                (echo "$clone" >"$V/snapshots/$s/clone") 2>"$err"
                result $?
                log_op clone "$vm/snapshots/$s -> ${clone#"$prefix"}" "$t0"
                if [ "$res" = OK ]; then
                    clones=$((clones + 1))
                    # only what the clone made: its own overlay, by its name
                    disk=$(guest_virsh domblklist "$clone" | awk '$1 == "vda" { print $2 }')
                    guest_virsh undefine "$clone" >/dev/null 2>&1
                    case "$disk" in
                        "$disks/$clone.vda.clone."*.qcow2) rm -f "$disk" ;;
                        *) echo "$(date +%T) shell $k: clone $clone: disk '$disk' left alone" >>"$work/unexpected" ;;
                    esac
                fi ;;
            cp)
                rnd 2
                if ((R)); then
                    t0=$(ms_now)
                    cp --sparse=always "$V/volumes/vda.img" "$tmp" 2>"$err"
                    result $?
                    rm -f "$tmp"
                    log_op cp "$vm/volumes/vda.img" "$t0"
                else
                    any_snapshot "$vm" || continue
                    copy_snapshot "$vm" "$s"
                fi ;;
        esac
    done
}

# the same ls -l on a local tree of the same shape, right after each one
# of the mount: what this loaded machine takes to run ls at all
mkdir -p "$work/ref"
for v in "${vms[@]}"; do
    mkdir -p "$work/ref/$v/snapshots/s1" "$work/ref/$v/snapshots/s2" "$work/ref/$v/volumes"
    touch "$work/ref/$v/"{domain.xml,state,agent,events,restore} "$work/ref/$v/volumes/vda.img"
done

# ls_time FILE DIR...: ls -l of the dirs, its ms appended to FILE; errors
# to ls-errors, a call over 100 ms to ls-slow
ls_time() {
    local file=$1 t0 t1 out
    shift
    t0=$(date +%s%N)
    out=$(ls -l "$@" 2>&1 >/dev/null)
    t1=$(date +%s%N)
    echo $(((t1 - t0 + 500000) / 1000000)) >>"$work/$file"
    (((t1 - t0) / 1000000 >= 100)) &&
        echo "$(date -d @$((t0 / 1000000000)) +%T).$(printf %03d $((t0 / 1000000 % 1000))) $file $(((t1 - t0) / 1000000)) ms" >>"$logs/ls-slow"
    if [ -n "$out" ]; then
        while IFS= read -r line; do
            echo "ls $(errno_name "$line") $line" >>"$work/ls-errors"
        done <<<"$out"
    fi
}

lsloop() {
    set +e
    local end=$1 a b dirs snaps refs
    dirs=("$mnt")
    snaps=()
    refs=("$work/ref")
    for v in "${vms[@]}"; do
        dirs+=("$mnt/$prefix$v/" "$mnt/$prefix$v/volumes/")
        snaps+=("$mnt/$prefix$v/snapshots/")
        refs+=("$work/ref/$v/" "$work/ref/$v/snapshots/" "$work/ref/$v/volumes/")
    done
    while (($(ms_now) < end)); do
        # the local tree's ls at the same time, in a shell of its own
        (
            r0=$(date +%s%N)
            ls -l "${refs[@]}" >/dev/null 2>&1
            echo $((($(date +%s%N) - r0 + 500000) / 1000000)) >>"$work/ls-ref-ms"
        ) &
        # the directories no operation changes, then the snapshots/
        # directories the shells mkdir and rmdir in: the kernel holds a
        # directory's lock for as long as a mkdir or rmdir in it runs, and
        # a listing of it waits that long
        ls_time ls-other-ms "${dirs[@]}"
        ls_time ls-snap-ms "${snaps[@]}"
        wait $!
        a=$(tail -n 1 "$work/ls-other-ms")
        b=$(tail -n 1 "$work/ls-snap-ms")
        echo $((a + b)) >>"$work/ls-ms"
        sleep 0.1
    done
}

end=$(($(ms_now) + secs * 1000))
pids=()
for ((k = 1; k <= shells; k++)); do
    worker "$k" "$end" &
    pids+=($!)
done
lsloop "$end" &
pids+=($!)
# a worker's last operation may outlast the run (a restore boots the VM)
bench_at_exit 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done'
all_done() {
    local p
    for p in "${pids[@]}"; do ! kill -0 "$p" 2>/dev/null || return 1; done
}
if ! wait_until $((secs + 600)) all_done; then
    echo "$(date +%T) a shell still runs 600 s after the end: $(cat "$work"/tmp/*.err 2>/dev/null | tail -n 1)" >>"$work/unexpected"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
fi
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done

# after the run: every guest runs and is thawed, every image is clean
after=()
for v in "${vms[@]}"; do
    if ! wait_until 120 vm_running "$prefix$v"; then
        after+=("$v is '$(guest_state "$prefix$v")'")
    elif ! guest_wait_agent "$prefix$v" 120 2>/dev/null; then
        after+=("$v: no agent")
    elif ! wait_until 30 thawed "$prefix$v"; then
        after+=("$v stays frozen")
    fi
done
for f in "$disks"/*.qcow2; do
    qemu-img check -U -q "$f" >/dev/null 2>&1 || after+=("qemu-img check: ${f##*/}")
done

cat "$work"/ops/w* >"$work/all"
for kind in mkdir rmdir restore clone cp; do
    awk -v kind="$kind" -v ok_list="$(for e in EBUSY ENOENT EEXIST; do expected "$kind" "$e" && printf '%s ' "$e"; done)" '
        BEGIN { split(ok_list, l, " "); for (i in l) okerr[l[i]] = 1 }
        $1 == kind { n++; if ($2 == "OK") ok++; else if ($2 in okerr) e[$2]++; else u[$2]++
                     if ($3 > max) max = $3 }
        END {
            printf "  %-8s %4d done, %4d ok; expected:", kind, n, ok
            s = ""; for (x in e) s = s sprintf(" %s %d", x, e[x]); printf "%s", s == "" ? " none" : s
            printf "; unexpected:"
            s = ""; for (x in u) s = s sprintf(" %s %d", x, u[x]); printf "%s", s == "" ? " none" : s
            printf "; slowest %d ms\n", max
        }' "$work/all"
done
ls_calls=$(wc -l <"$work/ls-ms")
printf '  %-8s %4d calls; errors: %s\n' "ls -l" "$ls_calls" \
    "$(if [ -s "$work/ls-errors" ]; then awk '{ c[$2]++ } END { for (x in c) printf "%s %d ", x, c[x] }' "$work/ls-errors"; else echo none; fi)"
unexpected=0
[ -s "$work/unexpected" ] && unexpected=$(wc -l <"$work/unexpected")
if [ -s "$work/ls-errors" ]; then
    unexpected=$((unexpected + $(awk '$2 != "ENOENT"' "$work/ls-errors" | wc -l)))
    awk '$2 != "ENOENT" { $1 = ""; $2 = ""; print "ls -l:" $0 }' "$work/ls-errors" >>"$work/unexpected"
fi
mismatches=0
[ -s "$work/mismatches" ] && mismatches=$(wc -l <"$work/mismatches")
if ((unexpected)); then
    echo "unexpected errors (first 10):"
    head -n 10 "$work/unexpected" | sed 's/^/  /'
    echo "the daemon's last error lines:"
    grep -hE ': error: ' "$logs"/*.log | tail -n 10 | sed 's/^/  /'
fi
((mismatches == 0)) || { echo "data mismatches:"; sed 's/^/  /' "$work/mismatches"; }
((${#after[@]} == 0)) || printf 'after the run: %s\n' "${after[@]}"

count() { awk -v k="$1" '$1 == k' "$work/all" | wc -l; }
echo "load: $shells shells, $secs s: $(wc -l <"$work/all") ops (mkdir $(count mkdir), rmdir $(count rmdir), restore $(count restore), clone $(count clone), cp $(count cp)); unexpected errors $unexpected; data mismatches $mismatches; ls -l p50 $(percentile 50 "$work/ls-ms") ms p90 $(percentile 90 "$work/ls-ms") ms p99 $(percentile 99 "$work/ls-ms") ms max $(percentile 100 "$work/ls-ms") ms (of the root, VM and volumes/ directories p50 $(percentile 50 "$work/ls-other-ms") p99 $(percentile 99 "$work/ls-other-ms") max $(percentile 100 "$work/ls-other-ms") ms; of the snapshots/ directories being changed p50 $(percentile 50 "$work/ls-snap-ms") p99 $(percentile 99 "$work/ls-snap-ms") max $(percentile 100 "$work/ls-snap-ms") ms); the same ls -l of a local tree meanwhile p50 $(percentile 50 "$work/ls-ref-ms") ms p99 $(percentile 99 "$work/ls-ref-ms") ms max $(percentile 100 "$work/ls-ref-ms") ms"
((unexpected == 0 && mismatches == 0 && ${#after[@]} == 0))
