#!/usr/bin/env bash
# bench/faults.sh [N] [SEED]: N (10) seeded random fault trials against
# vmsnapfs, and what each leaves behind once a new daemon has recovered.
#
# Two small running guests with agent (qcow2, 64 MiB, named
# vmsnapfs-b-PID-a and -b). Each trial picks a VM, an operation (mkdir of
# a snapshot; rmdir of a fresh snapshot with 8 MiB written after it, so the
# merge has work; restore policy=StopTarget to a snapshot of the VM; clone
# of a snapshot of the VM) and a fault:
#   point:NAME  the daemon SIGKILLs itself at a crash point of that
#               operation (VMSNAPFS_FAULT=NAME; mkdir has none)
#   kill:MS     kill -9 of the daemon MS (0-500) ms after the operation began
#   libvirtd:MS libvirtd is stopped (pkill -x) MS ms after the operation
#               began and started again (as tests/guest/guest.sh does); the
#               daemon lives on
# Then a fresh daemon (after a kill), a bounded wait until recovery is done
# (no *.json under $VMSNAPFS_STATE_DIR/{restore,merge,clone,snapshot}, 300 s) and
# until both VMs run with their agent, and the checks, each counted once
# per object:
#   frozen             a guest whose agent does not say "thawed" (30 s)
#   wrong state        a VM not running (a restored or clone's source VM
#                      included), a clone not shut off or half made, a
#                      restore whose data does not match its definition
#                      (killed before the define: old data and old disks;
#                      after: the snapshot's data on new overlays), an
#                      operation that succeeded without its effect or did
#                      not return within 300 s, a listed snapshot whose
#                      phase is not Succeeded, a daemon that died across a
#                      libvirtd restart
#   changed snapshots  a listed snapshot whose vda.img (sha256, read through
#                      the mount) differs from when it was taken (or first
#                      seen, for safety snapshots), or whose /marker is not
#                      the one written before its mkdir; a snapshot that
#                      disappeared, unless its own rmdir was in flight
#   broken images      qemu-img check -U fails, or a file a chain names is
#                      missing
#   stray files        a qcow2 in the guests' disk directory that no chain
#                      names: the chains are those of every VM's disks
#                      (virsh domblklist) and of every snapshot's disks (the
#                      overlay in its <disks>, whose backing file is the
#                      snapshot's layer), with qemu-img's backing chains
#   jobs left          a block job on a running VM (virsh blockjob, 10 s),
#                      or a record still there after the recovery wait
# One line per trial: VM, operation, fault, what the daemon did, the
# outcome (ok or the problems), seconds. Last, exactly:
#   faults: N trials, seed S: 0 frozen, 0 wrong state, 0 changed snapshots, 0 broken images, 0 stray files, 0 jobs left
# and the exit status is non-zero if any count is (or the run itself
# failed). The same seed gives the same sequence of trials. Snapshots
# beyond 4 per VM are removed (plain rmdir) after a trial, so chains stay
# short. As root, with libvirtd; KINDS="point kill" leaves libvirtd alone
# (libvirtd restarts disturb other users of this host); KEEP_LOGS=DIR keeps
# the daemons' logs. VMSNAPFS=path of the daemon (build/fs/vmsnapfs).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib-faults.sh

n=${1:-10}
seed=${2:-$(od -An -N3 -tu4 /dev/urandom | tr -d ' ')}
kinds=${KINDS:-point kill libvirtd}
echo "seed=$seed"
bench_init faults
rng_seed "$seed"
export GUEST_EXEC_TIMEOUT=60

declare -A points=(
    [mkdir]=""
    [rmdir]="merge-recorded merge-started"
    [restore]="restore-stopped restore-safety restore-overlays restore-defined restore-define-written restore-started"
    [clone]="clone-recorded clone-overlays"
)
ops=(mkdir rmdir restore clone)
vms=(a b)

# the whole sequence first, so that it depends on the seed alone
declare -a t_vm t_op t_kind t_point t_delay t_pick
for ((i = 1; i <= n; i++)); do
    rnd ${#vms[@]}; t_vm[i]=${vms[R]}
    rnd ${#ops[@]}; t_op[i]=${ops[R]}
    read -ra pts <<<"${points[${t_op[i]}]}"
    avail=()
    for k in $kinds; do
        [ "$k" = point ] && [ ${#pts[@]} = 0 ] && continue
        avail+=("$k")
    done
    ((${#avail[@]})) || avail=(kill)
    rnd ${#avail[@]}; t_kind[i]=${avail[R]}
    t_point[i]=
    if [ "${t_kind[i]}" = point ]; then rnd ${#pts[@]}; t_point[i]=${pts[R]}; fi
    rnd 501; t_delay[i]=$R
    rnd 1000; t_pick[i]=$R
done

for v in "${vms[@]}"; do bench_guest "$v" 64M; done
for v in "${vms[@]}"; do guest_wait_agent "$prefix$v"; done
daemon_start

declare -A hash marker          # VM/SNAP -> sha256 of its vda.img, its /marker
declare -A seen                 # problems counted already (files)
frozen=0 wrong=0 changed=0 broken=0 stray=0 jobs=0
notes=()
problem() {     # COUNTER TEXT
    case $1 in
        frozen) frozen=$((frozen + 1)) ;;
        wrong) wrong=$((wrong + 1)) ;;
        changed) changed=$((changed + 1)) ;;
        broken) broken=$((broken + 1)) ;;
        stray) stray=$((stray + 1)) ;;
        jobs) jobs=$((jobs + 1)) ;;
    esac
    notes+=("$1: $2")
}

gexec() { guest_exec "$prefix$1" "$2"; }
set_marker() { gexec "$1" "echo $2 >/data/marker && sync"; }
disk_of() { guest_virsh domblklist "$1" | awk '$1 == "vda" { print $2 }'; }
snapshots() { ls "$mnt/$prefix$1/snapshots" 2>/dev/null; }
# the mount answers for every VM (after a libvirtd restart: once reconnected)
answers() {
    local v
    for v in "${vms[@]}"; do snapshots "$v" >/dev/null || return 1; done
}

# record VM SNAP: its hash and marker as they are now
record() {
    hash[$1/$2]=$(snap_hash "$prefix$1" "$2") || return 1
    marker[$1/$2]=$(snap_marker "$prefix$1" "$2")
}

# take VM SNAP: a snapshot with the normal daemon, its marker written first
take() {
    set_marker "$1" "$2" || return 1
    mkdir "$mnt/$prefix$1/snapshots/$2" || return 1
    record "$1" "$2" || return 1
    [ "${marker[$1/$2]}" = "$2" ] ||
        problem changed "$1/$2: /marker is '${marker[$1/$2]}' right after mkdir, not '$2'"
}

no_records() {
    ! ls "$VMSNAPFS_STATE_DIR"/{restore,merge,clone,snapshot}/*.json >/dev/null 2>&1
}
no_libvirtd() { ! pgrep -x libvirtd >/dev/null; }
restart_libvirtd() {
    pkill -x libvirtd || true
    wait_until 15 no_libvirtd || echo "libvirtd did not stop within 15 s" >&2
    libvirt_ensure_running
}

# the files the chains name: every domain's disks, every snapshot's <disks>
chain_of() {
    echo "$1"
    qemu-img info -U --backing-chain "$1" 2>/dev/null | sed -n 's/^image: //p'
}
referenced() {
    local d f s
    for d in $(guest_virsh list --all --name | grep "^$prefix"); do
        for f in $(guest_virsh domblklist "$d" | awk 'NR > 2 && $2 ~ /^\// { print $2 }'); do
            chain_of "$f"
        done
        for s in $(guest_virsh snapshot-list "$d" --name); do
            for f in $(guest_virsh snapshot-dumpxml "$d" "$s" | awk '
                /<disks>/ { in_disks = 1 } /<\/disks>/ { in_disks = 0 }
                in_disks && /<disk / { want = 1 }
                in_disks && want && /<source file=/ {
                    sub(/.*<source file=\x27/, ""); sub(/\x27.*/, ""); print; want = 0 }'); do
                chain_of "$f"
            done
        done
    done | while read -r f; do realpath -m "$f"; done | sort -u
}

check_files() {
    local f ref
    for f in "$disks"/*.qcow2; do
        [ -e "$f" ] || continue
        if ! qemu-img check -U -q "$f" >/dev/null 2>&1 && [ -z "${seen[broken:$f]:-}" ]; then
            seen[broken:$f]=1
            problem broken "qemu-img check: ${f##*/}"
        fi
    done
    ref=$(referenced)
    for f in "$disks"/*.qcow2; do
        [ -e "$f" ] || continue
        f=$(realpath "$f")
        if ! grep -qxF "$f" <<<"$ref" && [ -z "${seen[stray:$f]:-}" ]; then
            seen[stray:$f]=1
            problem stray "${f##*/}"
        fi
    done
    while read -r f; do
        [ -n "$f" ] && [ "${f%/*}" = "$(realpath "$disks")" ] && [ ! -e "$f" ] || continue
        if [ -z "${seen[missing:$f]:-}" ]; then
            seen[missing:$f]=1
            problem broken "missing: ${f##*/}"
        fi
    done <<<"$ref"
}

# (grep -q on a pipe may end it early: with pipefail, read everything first)
no_job() { [[ "$(guest_virsh blockjob "$1" vda 2>&1)" == *"No current block job"* ]]; }
check_jobs() {
    local d
    for d in $(guest_virsh list --name | grep "^$prefix"); do
        wait_until 10 no_job "$d" || problem jobs "$d: $(guest_virsh blockjob "$d" vda 2>&1 | tr -s ' \n' ' ')"
    done
}

# every snapshot recorded: still listed, same content; new ones recorded
check_snapshots() {     # in-flight rmdir target (VM/SNAP) or ""
    local inflight=$1 v s key listed phase h
    for v in "${vms[@]}"; do
        listed=$(snapshots "$v") || { problem wrong "$v: cannot list snapshots"; continue; }
        for key in "${!hash[@]}"; do
            [ "${key%%/*}" = "$v" ] || continue
            s=${key#*/}
            if ! grep -qxF "$s" <<<"$listed"; then
                [ "$key" = "$inflight" ] || problem changed "$key disappeared"
                unset "hash[$key]" "marker[$key]"
            fi
        done
        for s in $listed; do
            phase=$(cat "$mnt/$prefix$v/snapshots/$s/phase" 2>/dev/null) || phase='?'
            [ "$phase" = Succeeded ] || problem wrong "$v/$s: phase $phase"
            if [ -z "${hash[$v/$s]:-}" ]; then
                record "$v" "$s" || problem changed "$v/$s: cannot read its volume"
                continue
            fi
            h=$(snap_hash "$prefix$v" "$s") || h="unreadable"
            if [ "$h" != "${hash[$v/$s]}" ]; then
                problem changed "$v/$s: content changed"
                hash[$v/$s]=$h      # counted once
            fi
        done
    done
}

# trim VM: at most 4 snapshots (the oldest go), with the normal daemon
trim() {
    local v=$1 s left
    left=$(for s in $(snapshots "$v"); do
        echo "$(cat "$mnt/$prefix$v/snapshots/$s/created" 2>/dev/null) $s"
    done | sort | awk '{ print $2 }')
    while [ "$(wc -w <<<"$left")" -gt 4 ]; do
        s=$(head -n 1 <<<"$left")
        left=$(tail -n +2 <<<"$left")
        if rmdir "$mnt/$prefix$v/snapshots/$s" 2>"$work/trim.err"; then
            unset "hash[$v/$s]" "marker[$v/$s]"
            trimmed+=("$s")
        else
            notes+=("trim: rmdir $v/$s: $(errno_name "$(cat "$work/trim.err")") (not counted)")
        fi
    done
}

do_op() {
    case $op in
        mkdir) mkdir "$V/snapshots/$target" ;;
        rmdir) rmdir "$V/snapshots/$target" ;;
        restore) echo "$target policy=StopTarget" >"$V/restore" ;;
        clone) echo "$clone" >"$V/snapshots/$target/clone" ;;
    esac
}
op_start() {
    rm -f "$work/op.rc" "$work/op.err"
    (
        set +e
        do_op 2>"$work/op.err"
        echo $? >"$work/op.rc"
    ) &
    op_pid=$!
}
op_wait() {     # SECONDS: the op's result in op_rc (0, an errno name, "hung")
    if wait_until "$1" test -s "$work/op.rc"; then
        wait "$op_pid" 2>/dev/null || true
        if [ "$(cat "$work/op.rc")" = 0 ]; then op_rc=0; else op_rc=$(errno_name "$(tail -n 1 "$work/op.err")"); fi
    else
        op_rc=hung
    fi
}
sleep_ms() { sleep "$(awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }')"; }

# the object of trial i's operation, made with the normal daemon; sets target
prepare() {
    case $op in
        mkdir)
            target=t$i
            set_marker "$vm" "$target" || return 1 ;;
        rmdir)
            target=p$i
            take "$vm" "$target" 2>>"$work/prep.err" || return 1
            gexec "$vm" "dd if=/dev/urandom of=/data/fill bs=1M count=8 2>/dev/null && echo after-$target >/data/marker && sync" || return 1
            inflight=$vm/$target ;;
        restore | clone)
            mapfile -t list < <(snapshots "$vm")
            if [ ${#list[@]} = 0 ]; then
                take "$vm" "p$i" 2>>"$work/prep.err" || return 1
                list=("p$i")
            fi
            target=${list[pick % ${#list[@]}]}
            [ -n "${marker[$vm/$target]:-}" ] || record "$vm" "$target" || return 1
            if [ "$op" = restore ]; then
                set_marker "$vm" "old-$i" || return 1
                disk_before=$(disk_of "$dom")
            fi ;;
    esac
}

trial() {
    local i=$1 vm=${t_vm[$1]} kind=${t_kind[$1]} point=${t_point[$1]} delay=${t_delay[$1]}
    local pick=${t_pick[$1]} t0 dom fault did list inflight="" disk_before="" want_restored="" \
        restored got want v log0
    op=${t_op[$1]}
    dom=$prefix$vm
    V=$mnt/$dom
    clone=${prefix}c$i
    notes=()
    trimmed=()
    t0=$(ms_now)
    log0=$_bench_daemon_n

    # the operation's object, made with the normal daemon
    if ! prepare; then
        notes+=("preparation failed: $(tail -n 1 "$work/prep.err" 2>/dev/null)")
        printf 'trial %d/%d: %s %s: preparation failed; %s\n' "$i" "$n" "$vm" "$op" "${notes[*]}"
        prep_failed=$((prep_failed + 1))
        return 0
    fi

    # the fault
    case $kind in
        point)
            fault="point:$point"
            daemon_stop
            daemon_start VMSNAPFS_FAULT="$point"
            op_start
            op_wait 300
            if [ "$op_rc" = hung ]; then
                problem wrong "the operation did not return within 300 s: daemon killed"
                kill -9 "$DAEMON_PID" 2>/dev/null || true
            fi
            wait_until 10 daemon_dead || true
            if daemon_alive; then
                did="point not reached"
                daemon_stop
            elif grep -q "VMSNAPFS_FAULT=$point" "$DAEMON_LOG"; then
                did="killed at $point"
            else
                did="died: $(grep -E ': (error|warning): ' "$DAEMON_LOG" | tail -n 1)"
            fi
            daemon_reap ;;
        kill)
            fault="kill:${delay}ms"
            op_start
            sleep_ms "$delay"
            if [ -s "$work/op.rc" ]; then did="killed after the op"; else did="killed during the op"; fi
            kill -9 "$DAEMON_PID" 2>/dev/null || true
            daemon_reap
            op_wait 60 ;;
        libvirtd)
            fault="libvirtd:${delay}ms"
            op_start
            sleep_ms "$delay"
            if [ -s "$work/op.rc" ]; then did="restarted after the op"; else did="restarted during the op"; fi
            restart_libvirtd
            op_wait 300
            if [ "$op_rc" = hung ]; then
                problem wrong "the operation did not return within 300 s of the libvirtd restart: daemon killed"
                kill -9 "$DAEMON_PID" 2>/dev/null || true
                op_wait 30
            fi
            if ! daemon_alive; then
                problem wrong "the daemon died across the libvirtd restart: $(grep -E ': (error|warning): ' "$DAEMON_LOG" | tail -n 1)"
                daemon_reap
            fi ;;
    esac
    daemon_alive || daemon_start

    # recovery, and the VMs back as promised
    wait_until 60 answers || problem wrong "the mount does not answer 60 s after the fault"
    wait_until 300 no_records ||
        problem jobs "records left after 300 s: $(cd "$VMSNAPFS_STATE_DIR" && ls {restore,merge,clone,snapshot}/*.json 2>/dev/null | tr '\n' ' ')"
    for v in "${vms[@]}"; do
        if ! wait_until 180 vm_running "$prefix$v"; then
            problem wrong "$v is '$(guest_state "$prefix$v")', not running"
            guest_start "$prefix$v" || true
        fi
    done
    for v in "${vms[@]}"; do
        guest_wait_agent "$prefix$v" 120 2>/dev/null || { problem wrong "$v: no agent"; continue; }
        wait_until 30 thawed "$prefix$v" || problem frozen "$v stays frozen"
    done

    # what the operation promised
    case $op in
        mkdir)
            if [ -d "$V/snapshots/$target" ]; then
                record "$vm" "$target" || problem changed "$vm/$target: cannot read its volume"
                [ "${marker[$vm/$target]:-}" = "$target" ] ||
                    problem changed "$vm/$target: /marker '${marker[$vm/$target]:-}', not '$target'"
            elif [ "$op_rc" = 0 ]; then
                problem wrong "mkdir succeeded but $target is not listed"
            fi ;;
        rmdir)
            [ "$op_rc" != 0 ] || [ ! -e "$V/snapshots/$target" ] ||
                problem wrong "rmdir succeeded but $target is still listed" ;;
        restore)
            # restored: a new overlay of this restore; not: the old disk, or
            # the safety snapshot's overlay on it
            disk_after=$(disk_of "$dom")
            restored=no
            if [ "$disk_after" != "$disk_before" ] && [[ "$disk_after" == *".vda.restore-$target-"* ]]; then
                restored=yes
            elif ! grep -qxF "$disk_before" <<<"$(chain_of "$disk_after")"; then
                problem wrong "$vm: disk changed to ${disk_after##*/}, neither a restore overlay nor on the old disk"
            fi
            case "$did" in
                "killed at restore-defined" | "killed at restore-define-written" | \
                    "killed at restore-started") want_restored=yes ;;
                "killed at "*) want_restored=no ;;
            esac
            [ "$op_rc" = 0 ] && want_restored=yes
            [ -z "$want_restored" ] || [ "$restored" = "$want_restored" ] ||
                problem wrong "$vm: restored=$restored after '$did' (op $op_rc), expected $want_restored"
            if [ "$restored" = yes ]; then want=${marker[$vm/$target]:-}; else want=old-$i; fi
            got=$(gexec "$vm" 'cat /data/marker' 2>/dev/null | tr -d '\r\n') || got="?"
            [ "$got" = "$want" ] ||
                problem wrong "$vm: restored=$restored but the guest sees '$got', not '$want'"
            did+=", restored=$restored" ;;
        clone)
            if guest_virsh dominfo "$clone" >/dev/null 2>&1; then
                did+=", clone defined"
                [ "$(guest_state "$clone")" = "shut off" ] ||
                    problem wrong "clone ${clone#"$prefix"} is '$(guest_state "$clone")'"
                case "$did" in "killed at clone-"*)
                    problem wrong "clone ${clone#"$prefix"} exists after '$did'" ;;
                esac
            else
                [ "$op_rc" != 0 ] || problem wrong "clone succeeded but ${clone#"$prefix"} does not exist"
            fi ;;
    esac

    check_snapshots "$inflight"
    check_files
    check_jobs
    for v in "${vms[@]}"; do trim "$v"; done
    [ ${#trimmed[@]} = 0 ] || notes+=("trimmed ${trimmed[*]}")

    local outcome=ok x
    for x in "${notes[@]+"${notes[@]}"}"; do
        case $x in trim*) ;; *) outcome=FAIL ;; esac
    done
    printf 'trial %d/%d: %s %s %s, %s: %s (op %s); %s%s (%d s)\n' "$i" "$n" "$vm" "$op" \
        "$target" "$fault" "$did" "$op_rc" "$outcome" \
        "$( ((${#notes[@]})) && printf '; %s' "${notes[@]}")" $((($(ms_now) - t0) / 1000))
    if [ "$outcome" = FAIL ]; then     # the daemons' complaints during this trial
        for ((x = log0; x <= _bench_daemon_n; x++)); do
            grep -hE ': (error|warning): ' "$logs/vmsnapfs-$x.log" || true
        done | tail -n 5 | sed 's/^/    log: /' >&2
    fi
}

prep_failed=0
for ((i = 1; i <= n; i++)); do trial "$i"; done

echo "faults: $n trials, seed $seed: $frozen frozen, $wrong wrong state, $changed changed snapshots, $broken broken images, $stray stray files, $jobs jobs left"
[ "$prep_failed" = 0 ] || echo "faults: $prep_failed trial(s) could not prepare their operation (see above)"
[ $((frozen + wrong + changed + broken + stray + jobs + prep_failed)) = 0 ]
