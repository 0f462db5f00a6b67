#!/usr/bin/env bash
# systemd-unit.sh: the unit's ExecStart line, as systemd would run it,
# mounts, signals READY=1 only once the mount is up (Type=notify), and stops
# cleanly on SIGTERM (the unit's stop). No systemd runs here: the test plays
# its part with a notify socket of its own.
. "${0%/*}/lib.sh"
requires_fuse
requires_root
requires python3

unit=$VMSNAPFS_BUILDDIR/systemd/vmsnapfs@.service
[ -f "$unit" ] || fail "no generated unit at $unit"
grep -q '^Type=notify$' "$unit" || fail "unit is not Type=notify"
# a private mount namespace would hide the mount from the host
ns_opts='^(PrivateTmp|PrivateDevices|PrivateMounts|ProtectHome|ProtectSystem|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectHostname|ProtectClock|ProtectProc|ReadOnlyPaths|ReadWritePaths|InaccessiblePaths|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|MountFlags|RootDirectory|RootImage)='
if grep -Eq "$ns_opts" "$unit"; then
    fail "the unit sets up a mount namespace: $(grep -E "$ns_opts" "$unit")"
fi
grep -q '^ExecStartPre=-/bin/fusermount3 -uz %f$' "$unit" ||
    fail "no clean-up of a dead mount before start"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[ -n "$exec_start" ] || fail "no ExecStart"
case "$exec_start" in *@*) fail "unsubstituted variable in ExecStart: $exec_start" ;; esac

# systemd's substitutions: %f, ${VMSNAPFS_OPTIONS}, ${VMSNAPFS_SOURCE}; the
# binary under test instead of the installed path
mnt=$(workdir)/mnt
mkdir -p "$mnt"
cmd=${exec_start//%f/$mnt}
cmd=${cmd//'${VMSNAPFS_OPTIONS}'/failure_deadline=5m}
cmd=${cmd//'${VMSNAPFS_SOURCE}'/test:///default}
read -r -a argv <<<"$cmd"
argv[0]=$VMSNAPFS

sock=$(workdir)/notify.sock
msgs=$(workdir)/notify.txt
python3 - "$sock" "$msgs" "$mnt" <<'PY' &
import socket, sys
sock, out_path, mnt = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sock)
s.settimeout(30)
with open(out_path, "w") as out:
    try:
        while True:
            msg = s.recv(4096).decode()
            with open("/proc/mounts") as m:
                mounted = any(l.split()[1] == mnt and l.split()[2] == "fuse.vmsnapfs"
                              for l in m)
            # what was mounted at the moment the message arrived
            out.write("%s mounted=%s\n" % (msg.strip(), mounted))
            out.flush()
            if "STOPPING=1" in msg:
                break
    except socket.timeout:
        pass
PY
listener=$!
at_exit "kill $listener 2>/dev/null || true"
wait_until 5 test -S "$sock" || fail "notify socket not ready"

NOTIFY_SOCKET=$sock "${argv[@]}" 2>"$(workdir)/unit.log" &
pid=$!
at_exit "is_mounted '$mnt' && fusermount3 -u '$mnt'; true"
wait_until 10 grep -q READY=1 "$msgs" || fail "no READY=1 from the daemon"
grep -q "READY=1 mounted=True" "$msgs" || fail "READY=1 before the mount: $(cat "$msgs")"
[ "$(cat "$mnt/test/state")" = running ] || fail "tree not served"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" = 0 ] || fail "exit status $status after SIGTERM"
is_mounted "$mnt" && fail "still mounted after SIGTERM"
wait_until 5 grep -q STOPPING=1 "$msgs" || fail "no STOPPING=1"
echo "PASS: $testname"
