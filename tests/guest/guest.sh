# shellcheck shell=bash
# guest.sh — real-guest test rig for vmsnapfs integration tests.
#
#   source tests/guest/guest.sh
#
# Sourcing only defines functions (and _GUEST_RIG_DIR); it is `set -u` safe and
# does not change the caller's shell options. All functions return non-zero
# and print a "guest: ..." message on stderr on failure.
#
# Environment:
#   VMSNAPFS_GUEST_CACHE  where the guest kernel/initrd are built
#                         (default /var/tmp/vmsnapfs-guest)
#   VMSNAPFS_GUEST_LOGDIR where serial console logs go
#                         (default $VMSNAPFS_GUEST_CACHE/logs)
#   VMSNAPFS_TEST_URI     libvirt URI (default qemu:///system)
#   GUEST_EXEC_TIMEOUT    seconds guest_exec waits for a command (default 120)
#
# Functions:
#   guest_build                      build/reuse kernel+initrd; sets
#                                    GUEST_KERNEL GUEST_INITRD GUEST_KVER
#   libvirt_ensure_running           start virtlogd/libvirtd if needed
#   guest_virsh ARGS...              virsh -c <the test URI> ARGS...
#   guest_make_disk PATH SIZE [FORMAT [SRCDIR]]
#                                    ext4 disk image, raw (default) or qcow2
#   guest_define NAME [--disk PATH[:FORMAT[:TARGET]]]... [--noagent]
#                [--nochannel] [--cmdline EXTRA] [--memory MIB]
#   guest_start NAME
#   guest_wait_agent NAME [TIMEOUT]  default 120 s
#   guest_exec NAME 'shell command'  stdout -> stdout, stderr -> stderr,
#                                    returns the command's exit code
#   guest_exec_input NAME 'shell command' < INPUT   same, with stdin (small)
#   guest_agent NAME JSON            raw qemu-agent-command
#   guest_state NAME                 prints e.g. "running", "shut off"
#   guest_shutdown NAME [TIMEOUT]    clean power off through the agent
#   guest_destroy NAME               hard stop (ok if not running)
#   guest_undefine NAME              destroy if running, then undefine
#   guest_cleanup_prefix PREFIX      destroy+undefine every NAME starting
#                                    with PREFIX
#   guest_cleanup_stale [BASE]       undefine BASE<pid>-* domains of dead
#                                    pids (BASE default "vmsnapfs-t-")
#   guest_wait_console NAME PATTERN [TIMEOUT]
#                                    wait for a console line (grep -E)
#   guest_console_log NAME           prints the serial console log's path
#   guest_console_tail NAME [LINES]  prints the end of the console log

# Directory of this file (for build-guest.sh).
_GUEST_RIG_DIR=$(CDPATH="" cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)

_guest_err() { echo "guest: $*" >&2; }

_guest_uri() { echo "${VMSNAPFS_TEST_URI:-qemu:///system}"; }

_guest_cache() { echo "${VMSNAPFS_GUEST_CACHE:-/var/tmp/vmsnapfs-guest}"; }

_guest_logdir() { echo "${VMSNAPFS_GUEST_LOGDIR:-$(_guest_cache)/logs}"; }

# Monotonic-ish time in milliseconds (for deadlines and timings).
_guest_now_ms() {
    local t
    t=$(date +%s%N)
    echo $((t / 1000000))
}

# guest_virsh ARGS... — virsh on the test URI, never hanging forever.
guest_virsh() {
    timeout 300 virsh -c "$(_guest_uri)" "$@"
}

# XML-escape $1 for use in text and attribute values.
_guest_xml_escape() {
    local s=$1
    # replacements quoted: bash 5.2 (patsub_replacement) expands a bare &
    s=${s//&/"&amp;"}
    s=${s//</"&lt;"}
    s=${s//>/"&gt;"}
    s=${s//\'/"&apos;"}
    s=${s//\"/"&quot;"}
    printf '%s' "$s"
}

# JSON-escape $1 (without the surrounding quotes).
_guest_json_escape() {
    local s=$1 out="" c code i
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/\\t}
    s=${s//$'\r'/\\r}
    if [[ "$s" == *[[:cntrl:]]* ]]; then
        # rare: other control characters become \u00XX
        for ((i = 0; i < ${#s}; i++)); do
            c=${s:i:1}
            if [[ "$c" == [[:cntrl:]] ]]; then
                printf -v code '%d' "'$c"
                printf -v c '\\u%04x' "$code"
            fi
            out+=$c
        done
        s=$out
    fi
    printf '%s' "$s"
}

# guest_build — build (or reuse) the guest kernel and initramfs in the cache.
guest_build() {
    local cache
    cache=$(_guest_cache)
    # libvirt-qemu must be able to walk into the cache (kernel, logs).
    mkdir -p "$cache" || return 1
    chmod 0755 "$cache" || return 1
    "$_GUEST_RIG_DIR/build-guest.sh" "$cache" || {
        _guest_err "build-guest.sh failed"
        return 1
    }
    GUEST_KERNEL=$cache/vmlinuz
    GUEST_INITRD=$cache/initrd.img
    GUEST_KVER=$(cat "$cache/kver")
    export GUEST_KERNEL GUEST_INITRD GUEST_KVER
}

# libvirt_ensure_running — make sure libvirtd answers on the test URI.
# Without systemd, as root: start virtlogd and libvirtd ourselves.
libvirt_ensure_running() {
    local uri deadline
    uri=$(_guest_uri)
    if timeout 20 virsh -c "$uri" version >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$uri" != "qemu:///system" ]]; then
        # e.g. qemu:///session starts its own daemon; nothing else to do
        _guest_err "libvirt does not answer on $uri"
        return 1
    fi
    if [[ $EUID -ne 0 ]]; then
        _guest_err "libvirtd is not running and starting it needs root"
        return 1
    fi
    mkdir -p /var/log/libvirt /var/log/libvirt/qemu /run/libvirt || return 1
    # Daemons are started detached from our stdio so that test runners
    # waiting for output to close are not held up.
    if ! pgrep -x virtlogd >/dev/null; then
        virtlogd -d </dev/null >/dev/null 2>&1 || {
            _guest_err "virtlogd -d failed"
            return 1
        }
    fi
    if ! pgrep -x libvirtd >/dev/null; then
        libvirtd -d </dev/null >>/var/log/libvirt/libvirtd-stderr.log 2>&1 || {
            _guest_err "libvirtd -d failed"
            return 1
        }
    fi
    deadline=$(($(_guest_now_ms) + 60000))
    until timeout 20 virsh -c "$uri" version >/dev/null 2>&1; do
        if (($(_guest_now_ms) > deadline)); then
            _guest_err "libvirtd did not answer on $uri within 60 s"
            return 1
        fi
        sleep 0.2
    done
}

# guest_make_disk PATH SIZE [FORMAT [SRCDIR]] — an ext4 disk image.
# SIZE as for truncate (e.g. 64M); FORMAT raw (default) or qcow2; SRCDIR
# optionally populates the filesystem (mkfs.ext4 -d).
guest_make_disk() {
    if (($# < 2 || $# > 4)); then
        _guest_err "usage: guest_make_disk PATH SIZE [raw|qcow2 [SRCDIR]]"
        return 2
    fi
    local path=$1 size=$2 format=${3:-raw} src=${4:-} raw
    local -a mkfs_opts=(-q -F -t ext4 -L vmsnapfs
        -E "lazy_itable_init=0,lazy_journal_init=0")
    [[ -n "$src" ]] && mkfs_opts+=(-d "$src")
    case "$format" in
        raw) raw=$path ;;
        qcow2) raw=$path.tmp-raw ;;
        *) _guest_err "unknown disk format '$format' (raw or qcow2)"; return 2 ;;
    esac
    rm -f "$raw" || return 1
    truncate -s "$size" "$raw" || return 1
    # lazy init off: no ext4lazyinit writes in the guest after mount
    if ! mkfs.ext4 "${mkfs_opts[@]}" "$raw" >/dev/null; then
        _guest_err "mkfs.ext4 failed on $raw"
        rm -f "$raw"
        return 1
    fi
    if [[ "$format" == qcow2 ]]; then
        if ! qemu-img convert -f raw -O qcow2 "$raw" "$path"; then
            _guest_err "qemu-img convert failed for $path"
            rm -f "$raw"
            return 1
        fi
        rm -f "$raw"
    fi
}

# Check that the libvirt-qemu user can reach PATH (every parent directory
# searchable by "others"); dynamic_ownership only chowns the file itself.
_guest_check_reachable() {
    local p=$1 d mode
    d=$(dirname "$p")
    while [[ "$d" != / ]]; do
        mode=$(stat -L -c %a "$d" 2>/dev/null) || mode=755
        if ! ((8#$mode & 1)); then
            _guest_err "$p: directory $d is not searchable by others (chmod o+x); QEMU runs as libvirt-qemu"
            return 1
        fi
        d=$(dirname "$d")
    done
}

# guest_define NAME [--disk PATH[:FORMAT[:TARGET]]]... [--noagent]
#              [--nochannel] [--cmdline EXTRA] [--memory MIB] [--discard]
# (--discard: the guest's discards reach the images: discard='unmap')
# Writes the domain XML and defines it (persistent, not started). An existing
# domain of that name is redefined (its UUID kept; a running one gets the new
# config at its next start).
guest_define() {
    if (($# < 1)); then
        _guest_err "usage: guest_define NAME [--disk PATH[:FORMAT[:TARGET]]]... [--noagent] [--nochannel] [--nic MAC] [--cmdline EXTRA]"
        return 2
    fi
    local name=$1
    shift
    local -a disks=()
    local noagent=0 channel=1 extra="" memory=256 nic_xml="" discard=""
    while (($#)); do
        case "$1" in
            --disk) (($# >= 2)) || { _guest_err "--disk needs a value"; return 2; }
                    disks+=("$2"); shift 2 ;;
            --noagent) noagent=1; shift ;;
            --discard) discard=" discard='unmap'"; shift ;;
            --nochannel) channel=0; shift ;;
            --nic) (($# >= 2)) || { _guest_err "--nic needs a MAC address"; return 2; }
                   nic_xml+="    <interface type='user'>
      <mac address='$(_guest_xml_escape "$2")'/>
      <model type='virtio'/>
    </interface>
"
                   shift 2 ;;
            --cmdline) (($# >= 2)) || { _guest_err "--cmdline needs a value"; return 2; }
                       extra+=" $2"; shift 2 ;;
            --memory) (($# >= 2)) || { _guest_err "--memory needs a value"; return 2; }
                      memory=$2; shift 2 ;;
            *) _guest_err "guest_define: unknown option '$1'"; return 2 ;;
        esac
    done
    if [[ -z "${GUEST_KERNEL:-}" || -z "${GUEST_INITRD:-}" ]]; then
        guest_build || return 1
    fi
    local logdir cmdline="console=ttyS0 quiet"
    logdir=$(_guest_logdir)
    mkdir -p "$logdir" && chmod 0755 "$logdir" || return 1
    ((noagent)) && cmdline+=" noagent"
    cmdline+=$extra

    local disk_xml="" spec path format target letters=abcdefghijklmnopqrstuvwxyz
    local i=0
    for spec in "${disks[@]}"; do
        IFS=: read -r path format target <<<"$spec"
        format=${format:-raw}
        target=${target:-vd${letters:i:1}}
        i=$((i + 1))
        [[ "$path" == /* ]] || path=$(realpath -m "$path")
        if [[ ! -f "$path" ]]; then
            _guest_err "disk image $path does not exist"
            return 1
        fi
        _guest_check_reachable "$path" || return 1
        disk_xml+="    <disk type='file' device='disk'>
      <driver name='qemu' type='$(_guest_xml_escape "$format")'${discard}/>
      <source file='$(_guest_xml_escape "$path")'/>
      <target dev='$(_guest_xml_escape "$target")' bus='virtio'/>
    </disk>
"
    done
    local channel_xml=""
    if ((channel)); then
        channel_xml="    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
"
    fi
    # Redefining an existing domain (to change its config) needs its UUID.
    local log xml uuid_xml="" uuid
    if uuid=$(guest_virsh domuuid "$name" 2>/dev/null) && [[ -n "$uuid" ]]; then
        uuid_xml="
  <uuid>$(_guest_xml_escape "$uuid")</uuid>"
    fi
    log=$logdir/$name.console.log
    xml="<domain type='qemu'>
  <name>$(_guest_xml_escape "$name")</name>${uuid_xml}
  <memory unit='MiB'>$(_guest_xml_escape "$memory")</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$(_guest_xml_escape "$GUEST_KERNEL")</kernel>
    <initrd>$(_guest_xml_escape "$GUEST_INITRD")</initrd>
    <cmdline>$(_guest_xml_escape "$cmdline")</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
${disk_xml}${nic_xml}${channel_xml}    <serial type='file'>
      <source path='$(_guest_xml_escape "$log")'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$(_guest_xml_escape "$log")'/>
      <target type='serial' port='0'/>
    </console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"
    local tmp out
    tmp=$(mktemp "${TMPDIR:-/tmp}/guest-define.XXXXXX.xml") || return 1
    printf '%s' "$xml" >"$tmp"
    if ! out=$(guest_virsh define "$tmp" 2>&1); then
        _guest_err "virsh define $name failed: $out"
        rm -f "$tmp"
        return 1
    fi
    rm -f "$tmp"
}

# guest_state NAME — prints the domain state ("running", "shut off", ...).
guest_state() {
    guest_virsh domstate "$1" 2>/dev/null | sed '/^$/d'
}

# guest_start NAME — starts the domain; sets GUEST_START_MS (start time in
# ms since the epoch, for boot timings).
guest_start() {
    local out
    rm -f "$(_guest_logdir)/$1.console.log"
    GUEST_START_MS=$(_guest_now_ms)
    export GUEST_START_MS
    if ! out=$(guest_virsh start "$1" 2>&1); then
        _guest_err "virsh start $1 failed: $out"
        return 1
    fi
}

# guest_agent NAME JSON [VIRSH-TIMEOUT] — one raw agent command; prints the
# JSON reply.
guest_agent() {
    guest_virsh qemu-agent-command "$1" --timeout "${3:-30}" "$2"
}

# guest_wait_agent NAME [TIMEOUT] — wait until the guest agent answers.
guest_wait_agent() {
    local name=$1 timeout=${2:-120} deadline state
    deadline=$(($(_guest_now_ms) + timeout * 1000))
    while :; do
        if guest_virsh qemu-agent-command "$name" --timeout 5 \
            '{"execute":"guest-ping"}' >/dev/null 2>&1; then
            return 0
        fi
        state=$(guest_state "$name")
        if [[ "$state" != running ]]; then
            _guest_err "$name is '$state', not running, while waiting for its agent"
            guest_console_tail "$name" >&2
            return 1
        fi
        if (($(_guest_now_ms) > deadline)); then
            _guest_err "no answer from the guest agent of $name within $timeout s"
            guest_console_tail "$name" >&2
            return 1
        fi
        sleep 0.5
    done
}

# Print a JSON string member's value (no escapes expected: base64, numbers).
_guest_json_field() {
    local json=$1 key=$2
    if [[ "$json" =~ \"$key\":[[:space:]]*\"([^\"]*)\" ]]; then
        printf '%s' "${BASH_REMATCH[1]}"
    elif [[ "$json" =~ \"$key\":[[:space:]]*([-0-9a-z]+) ]]; then
        printf '%s' "${BASH_REMATCH[1]}"
    else
        return 1
    fi
}

# _guest_exec NAME CMD INPUT_B64 — see guest_exec.
_guest_exec() {
    local name=$1 cmd=$2 input=$3 req reply pid deadline status exited code sig data
    req='{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","'
    req+=$(_guest_json_escape "$cmd")
    req+='"],"capture-output":true'
    [[ -n "$input" ]] && req+=',"input-data":"'$input'"'
    req+='}}'
    if ! reply=$(guest_agent "$name" "$req" 2>&1); then
        _guest_err "guest-exec on $name failed: $reply"
        return 125
    fi
    if ! pid=$(_guest_json_field "$reply" pid); then
        _guest_err "guest-exec on $name: unexpected reply: $reply"
        return 125
    fi
    deadline=$(($(_guest_now_ms) + ${GUEST_EXEC_TIMEOUT:-120} * 1000))
    while :; do
        if ! status=$(guest_agent "$name" \
            '{"execute":"guest-exec-status","arguments":{"pid":'"$pid"'}}' 2>&1); then
            _guest_err "guest-exec-status on $name failed: $status"
            return 125
        fi
        exited=$(_guest_json_field "$status" exited) || exited=""
        [[ "$exited" == true ]] && break
        if (($(_guest_now_ms) > deadline)); then
            _guest_err "command on $name still running after ${GUEST_EXEC_TIMEOUT:-120} s: $cmd"
            return 124
        fi
        sleep 0.1
    done
    if data=$(_guest_json_field "$status" out-data); then
        printf '%s' "$data" | base64 -d
    fi
    if data=$(_guest_json_field "$status" err-data); then
        printf '%s' "$data" | base64 -d >&2
    fi
    if code=$(_guest_json_field "$status" exitcode); then
        return "$code"
    fi
    if sig=$(_guest_json_field "$status" signal); then
        return $((128 + sig))
    fi
    return 125
}

# guest_exec NAME 'shell command' — run the command with /bin/sh -c in the
# guest through the agent; its stdout goes to our stdout, its stderr to our
# stderr; returns its exit code (124: still running after
# $GUEST_EXEC_TIMEOUT s, 125: agent error). Output is buffered by qemu-ga
# (a few MiB at most).
guest_exec() {
    if (($# != 2)); then
        _guest_err "usage: guest_exec NAME 'shell command'"
        return 2
    fi
    _guest_exec "$1" "$2" ""
}

# guest_exec_input NAME 'shell command' < INPUT — as guest_exec, with our
# stdin as the command's stdin (small inputs only: it travels base64 on
# virsh's command line, which is limited to about 96 KiB of input).
guest_exec_input() {
    if (($# != 2)); then
        _guest_err "usage: guest_exec_input NAME 'shell command' < INPUT"
        return 2
    fi
    local b64
    b64=$(base64 -w 0) || return 1
    _guest_exec "$1" "$2" "$b64"
}

# guest_shutdown NAME [TIMEOUT] — clean power off through the agent
# (the guest syncs and unmounts its disks); waits until it is shut off.
guest_shutdown() {
    local name=$1 timeout=${2:-60} deadline out
    if ! out=$(guest_virsh shutdown "$name" --mode agent 2>&1); then
        _guest_err "virsh shutdown $name failed: $out"
        return 1
    fi
    deadline=$(($(_guest_now_ms) + timeout * 1000))
    until [[ "$(guest_state "$name")" == "shut off" ]]; do
        if (($(_guest_now_ms) > deadline)); then
            _guest_err "$name did not shut off within $timeout s"
            return 1
        fi
        sleep 0.2
    done
}

# guest_destroy NAME — hard stop; fine if the domain is not running.
guest_destroy() {
    local name=$1 out
    case "$(guest_state "$name")" in
        "shut off" | "") return 0 ;;
    esac
    if ! out=$(guest_virsh destroy "$name" 2>&1); then
        # it may have stopped meanwhile
        [[ "$(guest_state "$name")" == "shut off" ]] && return 0
        _guest_err "virsh destroy $name failed: $out"
        return 1
    fi
}

# guest_undefine NAME — destroy if running, then undefine (with snapshot
# and checkpoint metadata, and the nvram file if there is one). Disk images are left for the caller to remove;
# the console log and libvirt's own log of the domain are removed.
guest_undefine() {
    local name=$1 out
    guest_destroy "$name" || return 1
    if ! out=$(guest_virsh undefine "$name" --snapshots-metadata \
        --checkpoints-metadata --nvram 2>&1); then
        # already gone is fine
        if guest_virsh dominfo "$name" >/dev/null 2>&1; then
            _guest_err "virsh undefine $name failed: $out"
            return 1
        fi
    fi
    rm -f "$(_guest_logdir)/$name.console.log"
    if [[ "$(_guest_uri)" == qemu:///system ]]; then
        rm -f "/var/log/libvirt/qemu/$name.log"
    fi
}

# guest_cleanup_prefix PREFIX — destroy and undefine every domain whose
# name starts with PREFIX (which must not be empty).
guest_cleanup_prefix() {
    local prefix=${1:-} names n rc=0
    if [[ -z "$prefix" ]]; then
        _guest_err "guest_cleanup_prefix: refusing an empty prefix"
        return 2
    fi
    names=$(guest_virsh list --all --name 2>/dev/null) || return 1
    while read -r n; do
        [[ -n "$n" && "$n" == "$prefix"* ]] || continue
        guest_undefine "$n" || rc=1
    done <<<"$names"
    return "$rc"
}

# guest_wait_console NAME PATTERN [TIMEOUT] — wait until a line of the
# console log matches the grep -E PATTERN (e.g. 'vmsnapfs-guest: ready' for a
# guest without agent); default timeout 120 s.
guest_wait_console() {
    local name=$1 pattern=$2 timeout=${3:-120} deadline log
    log=$(guest_console_log "$name")
    deadline=$(($(_guest_now_ms) + timeout * 1000))
    until grep -qE -- "$pattern" "$log" 2>/dev/null; do
        if (($(_guest_now_ms) > deadline)); then
            _guest_err "'$pattern' not seen on the console of $name within $timeout s"
            guest_console_tail "$name" >&2
            return 1
        fi
        sleep 0.2
    done
}

# guest_cleanup_stale [BASE] — for test domains named BASE<pid>-... (default
# BASE "vmsnapfs-t-", i.e. names made as "vmsnapfs-t-$$-what"): destroy and
# undefine those whose <pid> is no longer a running process (left behind by
# a test run that was killed).
guest_cleanup_stale() {
    local base=${1:-vmsnapfs-t-} names n rest pid rc=0
    names=$(guest_virsh list --all --name 2>/dev/null) || return 1
    while read -r n; do
        [[ -n "$n" && "$n" == "$base"* ]] || continue
        rest=${n#"$base"}
        pid=${rest%%-*}
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        if ! kill -0 "$pid" 2>/dev/null; then
            guest_undefine "$n" || rc=1
        fi
    done <<<"$names"
    return "$rc"
}

# guest_console_log NAME — path of the domain's serial console log.
guest_console_log() {
    echo "$(_guest_logdir)/$1.console.log"
}

# guest_console_tail NAME [LINES] — the end of the console log.
guest_console_tail() {
    local log
    log=$(guest_console_log "$1")
    echo "--- console of $1 ($log) ---"
    tail -n "${2:-30}" "$log" 2>/dev/null || echo "(no console log)"
    echo "--- end of console ---"
}
