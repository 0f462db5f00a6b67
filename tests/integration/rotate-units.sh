#!/usr/bin/env bash
# rotate-units.sh: vmsnapfs-snapshot@.service and .timer, as meson installs
# them (into a DESTDIR), pass systemd-analyze verify for an instance (a VM
# directory's escaped path), with a drop-in too, with the installed
# vmsnap-rotate as ExecStart's binary; the timer is hourly by default and
# persistent; the service sets up no mount namespace (the mount must stay in
# sight); its ExecStart, as systemd would expand it with the default policy,
# takes a snapshot. No systemd runs here: verify works offline on files.
. "${0%/*}/lib.sh"
requires systemd-analyze
requires meson
requires systemd-escape
[ -n "${VMSNAPFS_BUILDDIR:-}" ] || VMSNAPFS_BUILDDIR=$srcdir/build
[ -f "$VMSNAPFS_BUILDDIR/build.ninja" ] || fail "no build in $VMSNAPFS_BUILDDIR"

w=$(workdir)
dest=$w/dest
meson install -C "$VMSNAPFS_BUILDDIR" --no-rebuild --quiet --destdir "$dest" \
    --tags systemd,runtime >"$w/install.log" 2>&1 || { cat "$w/install.log" >&2; fail "meson install"; }
unitdir=$(dirname "$(find "$dest" -path '*/lib/systemd/system/vmsnapfs-snapshot@.service')")
[ -d "$unitdir" ] || fail "vmsnapfs-snapshot@.service was not installed: $(find "$dest")"
service=$unitdir/vmsnapfs-snapshot@.service
timer=$unitdir/vmsnapfs-snapshot@.timer
[ -f "$timer" ] || fail "vmsnapfs-snapshot@.timer was not installed"

# the service: oneshot, the mount required, no namespace, nothing left unsubstituted
grep -q '^Type=oneshot$' "$service" || fail "not Type=oneshot"
grep -q '^RequiresMountsFor=%f$' "$service" || fail "no RequiresMountsFor=%f"
if grep -n '@[a-z]*@' "$service" "$timer"; then fail "unsubstituted variables"; fi
ns_opts='^(PrivateTmp|PrivateDevices|PrivateMounts|PrivateUsers|ProtectHome|ProtectSystem|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectHostname|ProtectClock|ProtectProc|ProcSubset|ReadOnlyPaths|ReadWritePaths|InaccessiblePaths|ExecPaths|NoExecPaths|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|MountFlags|RootDirectory|RootImage|DynamicUser)='
if grep -Eq "$ns_opts" "$service"; then
    fail "the service sets up a mount namespace: $(grep -E "$ns_opts" "$service")"
fi
exec_start=$(sed -n 's/^ExecStart=//p' "$service")
read -r -a argv <<<"$exec_start"
[ "${#argv[@]}" = 3 ] && [ "${argv[1]}" = %f ] && [ "${argv[2]}" = '$VMSNAP_ROTATE_OPTIONS' ] ||
    fail "ExecStart: $exec_start"
bin=${argv[0]}
[ "${bin##*/}" = vmsnap-rotate ] || fail "ExecStart runs $bin"
[ -x "$dest$bin" ] || fail "ExecStart's $bin is not what meson installs ($(find "$dest" -name vmsnap-rotate))"
grep -q "^EnvironmentFile=-/.*/vmsnapfs/rotate.conf$" "$service" || fail "no optional rotate.conf"

# the timer: hourly, persistent, randomized a little, enabled by timers.target
[ "$(grep -c '^OnCalendar=' "$timer")" = 1 ] || fail "not one OnCalendar="
grep -q '^OnCalendar=hourly$' "$timer" || fail "the timer is not hourly: $(grep OnCalendar "$timer")"
systemd-analyze calendar hourly | grep -q 'Normalized form: \*-\*-\* \*:00:00' ||
    fail "hourly is not *-*-* *:00:00 here"
grep -q '^Persistent=true$' "$timer" || fail "the timer is not Persistent=true"
delay=$(sed -n 's/^RandomizedDelaySec=//p' "$timer")
[ -n "$delay" ] || fail "no RandomizedDelaySec="
secs=$(systemd-analyze timespan "$delay" | sed -n 's/^ *μs: //p')
[ -n "$secs" ] && [ "$secs" -gt 0 ] && [ "$secs" -le 900000000 ] ||
    fail "RandomizedDelaySec=$delay is not small (0 to 15 min)"
grep -q '^WantedBy=timers.target$' "$timer" || fail "not WantedBy=timers.target"

# verify, offline: the units in a directory of their own (with systemd's
# own after it, for timers.target), ExecStart pointing at the installed
# binary in DESTDIR; an instance for a VM directory that exists
units=$w/units
mkdir -p "$units"
sed "s|^ExecStart=$bin |ExecStart=$dest$bin |" "$service" >"$units/vmsnapfs-snapshot@.service"
cp "$timer" "$units/"
vmdir=$w/mnt/vms/web1
mkdir -p "$vmdir/snapshots"
inst=$(systemd-escape --path "$vmdir")
verify() {
    local out status=0
    out=$(SYSTEMD_UNIT_PATH=$units: systemd-analyze verify --man=no "$@" 2>&1) || status=$?
    # a warning (an unknown key, a bad value) is a failure too
    [ "$status" = 0 ] && [ -z "$out" ] || fail "systemd-analyze verify $*: exit $status: $out"
}
verify "vmsnapfs-snapshot@$inst.service" "vmsnapfs-snapshot@$inst.timer"

# a drop-in with another schedule (as the README shows) verifies too
mkdir -p "$units/vmsnapfs-snapshot@$inst.timer.d" "$units/vmsnapfs-snapshot@$inst.service.d"
printf '[Timer]\nOnCalendar=\nOnCalendar=*-*-* 02:30:00\n' \
    >"$units/vmsnapfs-snapshot@$inst.timer.d/schedule.conf"
printf '[Service]\nEnvironment="VMSNAP_ROTATE_OPTIONS=--keep-daily 14 --keep-weekly 8"\n' \
    >"$units/vmsnapfs-snapshot@$inst.service.d/policy.conf"
verify "vmsnapfs-snapshot@$inst.service" "vmsnapfs-snapshot@$inst.timer"
# and verify does see a mistake (so a pass above means something)
printf '[Timer]\nOnCalender=daily\n' >"$units/vmsnapfs-snapshot@$inst.timer.d/typo.conf"
out=$(SYSTEMD_UNIT_PATH=$units: systemd-analyze verify --man=no "vmsnapfs-snapshot@$inst.timer" 2>&1) || true
grep -q "OnCalender" <<<"$out" || fail "verify missed a typo in a drop-in: $out"
rm "$units/vmsnapfs-snapshot@$inst.timer.d/typo.conf"

# ExecStart as systemd runs it: %f the unescaped path, $VMSNAP_ROTATE_OPTIONS
# the default policy split into words
[ "$(systemd-escape --unescape --path "$inst")" = "$vmdir" ] || fail "escaping"
policy=$(sed -n 's/^Environment="VMSNAP_ROTATE_OPTIONS=\(.*\)"$/\1/p' "$service")
[ -n "$policy" ] || fail "no default VMSNAP_ROTATE_OPTIONS"
read -r -a opts <<<"$policy"
for t in 2026-01-01T00:05:00Z 2026-01-01T01:05:00Z; do
    out=$(VMSNAP_ROTATE_NOW=$t "$dest$bin" "$vmdir" "${opts[@]}") || fail "ExecStart with the default policy: exit $?"
done
tail -n 1 <<<"$out" | grep -qx "vmsnap-rotate: $vmdir: took auto-20260101-010500, kept 2, removed 0, busy 0" ||
    fail "ExecStart with the default policy: $out"
echo "PASS: $testname"
