#!/usr/bin/env bash
# man-help.sh: --help and the man page name the same options.
. "${0%/*}/lib.sh"
requires scdoc
requires man

page=$(workdir)/vmsnapfs.8
scdoc <"$srcdir/fs/vmsnapfs.8.scd" >"$page"
text=$(MANWIDTH=200 man -l "$page" 2>/dev/null)

# command-line flags and -o mount options named in --help
help=$("$VMSNAPFS" --help)
flags=$(grep -oE '^ +-[a-zA-Z]( |,)|--[a-z-]+' <<<"$help" | tr -d ' ,' | sort -u)
opts=$(grep -oE '^  [a-z_]+(=| )' <<<"$help" | tr -d ' =' | sort -u)
[ -n "$flags" ] && [ -n "$opts" ] || fail "could not read --help"

for f in $flags; do
    grep -qE -- "(^|[ ,])$f([ ,]|$)" <<<"$text" || fail "man page lacks $f"
done
for o in $opts; do
    grep -qE "(^| )$o(=| |$)" <<<"$text" || fail "man page lacks option $o"
done

# and the other way: every MOUNT OPTIONS entry of the page is in --help
man_opts=$(sed -n '/^MOUNT OPTIONS/,/^THE TREE/p' <<<"$text" |
    grep -oE '^ {7}[a-z_]+' | tr -d ' ' | sort -u)
[ -n "$man_opts" ] || fail "could not read the page's MOUNT OPTIONS"
for o in $man_opts; do
    grep -qE "^  $o(=| )" <<<"$help" || fail "--help lacks option $o"
done

# vmsnap-apply: every option of --help is in its page, and the other way
: "${VMSNAP_APPLY:=$srcdir/build/tools/vmsnap-apply}"
if [ -x "$VMSNAP_APPLY" ]; then
    page=$(workdir)/vmsnap-apply.1
    scdoc <"$srcdir/tools/vmsnap-apply.1.scd" >"$page"
    text=$(MANWIDTH=200 man -l "$page" 2>/dev/null)
    help=$("$VMSNAP_APPLY" --help)
    flags=$(grep -oE -- '--[a-z-]+' <<<"$help" | sort -u)
    [ -n "$flags" ] || fail "could not read vmsnap-apply --help"
    for f in $flags; do
        grep -q -- "$f" <<<"$text" || fail "vmsnap-apply's page lacks $f"
    done
    man_flags=$(sed -n '/^OPTIONS/,/^EXIT STATUS/p' <<<"$text" | grep -oE -- '--[a-z-]+' | sort -u)
    [ -n "$man_flags" ] || fail "could not read vmsnap-apply's OPTIONS"
    for f in $man_flags; do
        grep -q -- "$f" <<<"$help" || fail "vmsnap-apply --help lacks $f"
    done
fi

# vmsnap-rotate: the same, both ways
: "${VMSNAP_ROTATE:=$srcdir/build/tools/vmsnap-rotate}"
[ -x "$VMSNAP_ROTATE" ] || fail "no vmsnap-rotate at $VMSNAP_ROTATE"
page=$(workdir)/vmsnap-rotate.1
scdoc <"$srcdir/tools/vmsnap-rotate.1.scd" >"$page"
text=$(MANWIDTH=200 man -l "$page" 2>/dev/null)
help=$("$VMSNAP_ROTATE" --help)
flags=$(sed -n '/^Options:/,/^$/p' <<<"$help" | grep -oE -- '(^| )-[a-zA-Z],|--[a-z-]+' | tr -d ' ,' | sort -u)
[ "$(wc -l <<<"$flags")" -ge 14 ] || fail "could not read vmsnap-rotate --help: $flags"
for f in $flags; do
    grep -qE -- "(^|[ ,])$f([ ,]|$)" <<<"$text" || fail "vmsnap-rotate's page lacks $f"
done
man_flags=$(sed -n '/^OPTIONS/,/^PRUNE RULES/p' <<<"$text" | grep -oE -- '(^ +|, )-[a-zA-Z]\b|--[a-z-]+' |
    tr -d ' ,' | sort -u)
[ "$(wc -l <<<"$man_flags")" -ge 14 ] || fail "could not read vmsnap-rotate's OPTIONS: $man_flags"
for f in $man_flags; do
    grep -qE -- "(^|[ ,])$f([ ,=]|$)" <<<"$help" || fail "vmsnap-rotate --help lacks $f"
done
echo "PASS: $testname"
