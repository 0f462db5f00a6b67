#!/usr/bin/env bash
# kube-client.sh: the KubeVirt backend's HTTP client (core/kubevirt/
# kube-http.c, through tests/kube/kube-probe) against the fake API server:
# TLS verified (a wrong CA or name is refused; insecure-skip-tls-verify and
# tls-server-name work), token, token file (read again when it changes),
# client certificate and exec-plugin credentials (cached, run again when
# expired or on a 401), Status errors as the SPEC's errnos with the
# server's message, 5xx and 429 tried again, watches. No credential ever
# shows in what the client says.
. "${0%/*}/lib.sh"
requires curl
[ -x "${KUBE_PROBE:-}" ] || skip "no kube-probe (built without the KubeVirt backend)"
use_fake_cluster
wd=$(workdir)
token=$(cat "$KUBE_DIR/token")
port=$(cat "$KUBE_DIR/port")
probe() { timeout 60 "$KUBE_PROBE" "$@" 2>"$wd/probe.err"; }
# expect ERRNO CODE -- probe args: the first line says errno and code
expect() {
    local want=$1 code=$2 out
    shift 2
    out=$(probe "$@") || true
    [[ $(head -n 1 <<<"$out") == "errno $want $code"* ]] ||
        fail "kube-probe $*: wanted errno $want, HTTP $code: $(head -n 3 <<<"$out")"
    if grep -q -- "$token" <<<"$out" || grep -q -- "$token" "$wd/probe.err"; then
        fail "kube-probe $*: the token shows in what it says"
    fi
    printf '%s\n' "$out"
}
# says PATTERN WHAT ERRNO CODE -- probe args: expect, and what the client
# says (the first line of what the probe prints) holds PATTERN
says() {
    local pat=$1 what=$2 out
    shift 2
    out=$(expect "$@")
    head -n 1 <<<"$out" | grep -qi -- "$pat" || fail "$what: $(head -c 800 <<<"$out")"
}
# answers PATTERN WHAT ERRNO CODE -- probe args: the same for the answer's body
answers() {
    local pat=$1 what=$2 out
    shift 2
    out=$(expect "$@")
    tail -n +2 <<<"$out" | grep -q -- "$pat" || fail "$what: $(head -c 800 <<<"$out")"
}
# a kubeconfig like the fake's, with the cluster's and user's fields given
kubeconfig() {
    local cluster=$1 user=$2
    cat >"$wd/config" <<Y
apiVersion: v1
kind: Config
current-context: t
clusters:
- name: c
  cluster:
$cluster
contexts:
- name: t
  context: {cluster: c, user: u}
users:
- name: u
  user:
$user
Y
    export KUBECONFIG=$wd/config
}
ca_file="    certificate-authority: $KUBE_DIR/ca.crt"
server="    server: https://127.0.0.1:$port"

answers v1.30.0-fake version 0 200 GET /version
answers '"default"' "client certificate" 0 200 -c fake-cert GET /api/v1/namespaces
says 'virtualmachines.kubevirt.io "nope" not found' "404 reason" \
    ENOENT 404 GET /apis/kubevirt.io/v1/namespaces/default/virtualmachines/nope

# Status errors: EEXIST, EINVAL with the webhook's message
snap='{"apiVersion":"snapshot.kubevirt.io/v1beta1","kind":"VirtualMachineSnapshot","metadata":{"name":"s1"},"spec":{"source":{"apiGroup":"kubevirt.io","kind":"VirtualMachine","name":"larry"}}}'
expect 0 201 POST /apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots "$snap" >/dev/null
expect EEXIST 409 POST /apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots "$snap" >/dev/null
says 'denied the request: invalid kind' "422 message" \
    EINVAL 422 POST /apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots \
    "${snap/VirtualMachine\"/VirtualMachineInstance\"}"

# 503 twice, then the answer: tried again; a 429 too
kube_api DELETE /fake/requests >/dev/null
kube_api POST /fake/fail '{"codes":[503,503,429]}' >/dev/null
expect 0 200 GET /api/v1/namespaces/default >/dev/null
[ "$(kube_api GET /fake/requests | grep -o 'GET /api/v1/namespaces/default' | wc -l)" = 4 ] ||
    fail "not tried again as often as failed: $(kube_api GET /fake/requests)"

# a watch: the events of the collection, cut where they end
out=$(probe -w "/apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots?watch=true" 1)
grep -qx "ADDED s1" <<<"$out" || fail "watch: $out"
out=$(probe -w "/apis/snapshot.kubevirt.io/v1beta1/virtualmachinesnapshots?watch=true&resourceVersion=1&timeoutSeconds=5" 1)
grep -qx "ERROR -" <<<"$out" || fail "an expired watch: $out"

# HTTP/2 where the server offers it: nghttpx in front of the fake (which
# speaks HTTP/1.1 only) offers h2 in TLS's ALPN; requests, a Status error
# and a watch's stream go over it
command -v nghttpx >/dev/null || fail "no nghttpx (tools/install-deps.sh installs nghttp2-proxy)"
h2port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nghttpx --conf=/dev/null -f"127.0.0.1,$h2port" -b"127.0.0.1,$port;;tls" --insecure --workers=1 \
    --no-ocsp --accesslog-file="$wd/h2.log" --errorlog-file="$wd/h2.err" \
    "$KUBE_DIR/server.key" "$KUBE_DIR/server.crt" 2>"$wd/h2.out" &
h2pid=$!
at_exit "kill $h2pid 2>/dev/null; wait $h2pid 2>/dev/null || true"
wait_until 10 curl -s --cacert "$KUBE_DIR/ca.crt" -o /dev/null "https://127.0.0.1:$h2port/version" ||
    fail "nghttpx did not start: $(cat "$wd/h2.err")"
kubeconfig "    server: https://127.0.0.1:$h2port
$ca_file" "    token: $token"
answers v1.30.0-fake "version over HTTP/2" 0 200 GET /version
says 'virtualmachines.kubevirt.io "nope" not found' "a 404 over HTTP/2" \
    ENOENT 404 GET /apis/kubevirt.io/v1/namespaces/default/virtualmachines/nope
out=$(probe -w "/apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots?watch=true" 1)
grep -qx "ADDED s1" <<<"$out" || fail "a watch over HTTP/2: $out"
# (nghttpx logs a stream when it closes: a moment after the client's end)
for r in "GET /version" "GET /apis/kubevirt.io/v1/namespaces/default/virtualmachines/nope" \
         "GET /apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots?watch=true"; do
    wait_until 5 grep -qF "\"$r HTTP/2\"" "$wd/h2.log" ||
        fail "not over HTTP/2: $r: $(cat "$wd/h2.log")"
done

# TLS: another CA is refused; insecure-skip-tls-verify reads anyway
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other -keyout "$wd/other.key" \
    -out "$wd/other.crt" 2>/dev/null
kubeconfig "$server
    certificate-authority: $wd/other.crt" "    token: $token"
says certificate "a wrong CA: no reason" EIO 0 GET /version
kubeconfig "$server
    insecure-skip-tls-verify: true" "    token: $token"
expect 0 200 GET /version >/dev/null
# the name verified is tls-server-name's (in the server's certificate or
# not); the request still names the server (Host), as kubectl's does
kubeconfig "$server
$ca_file
    tls-server-name: kubernetes.default.svc" "    token: $token"
kube_api DELETE /fake/requests >/dev/null
expect 0 200 GET /version >/dev/null
host=$(kube_api GET /fake/requests | python3 -c 'import json,sys; print(json.load(sys.stdin)["hosts"][0])')
[ "$host" = "127.0.0.1:$port" ] || fail "Host with tls-server-name: $host"
kubeconfig "$server
$ca_file
    tls-server-name: wrong.example" "    token: $token"
expect EIO 0 GET /version >/dev/null

# a token file, read again when it changes
echo wrong-token >"$wd/tok"
kubeconfig "$server
$ca_file" "    tokenFile: $wd/tok"
expect EACCES 401 GET /version >/dev/null
# (a later mtime: some file systems keep whole seconds)
printf '%s\n' "$token" >"$wd/tok"
touch -d '+2 seconds' "$wd/tok"
expect 0 200 GET /version >/dev/null

# an exec plugin: its ExecCredential; a failed or empty one is EACCES
cat >"$wd/plugin" <<P
#!/bin/sh
echo run >>"$wd/runs"
[ "\$KUBERNETES_EXEC_INFO" ] || exit 3
[ "\$REGION" = eu ] || exit 4
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"%s"}}\n' "$token" "\$(cat "$wd/expiry")"
P
chmod +x "$wd/plugin"
date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ >"$wd/expiry"
kubeconfig "$server
$ca_file" "    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: $wd/plugin
      env: [{name: REGION, value: eu}]"
expect 0 200 GET /version >/dev/null
[ "$(wc -l <"$wd/runs")" = 1 ] || fail "the plugin ran $(wc -l <"$wd/runs") times"
kubeconfig "$server
$ca_file" "    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: $wd/plugin"
says 'credential plugin' "a failing plugin" EACCES 0 GET /version
echo "PASS: $testname"
