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

expect 0 200 GET /version | grep -q v1.30.0-fake || fail "version"
expect 0 200 -c fake-cert GET /api/v1/namespaces | grep -q '"default"' || fail "client certificate"
expect ENOENT 404 GET /apis/kubevirt.io/v1/namespaces/default/virtualmachines/nope |
    grep -q 'virtualmachines.kubevirt.io "nope" not found' || fail "404 reason"

# Status errors: EEXIST, EINVAL with the webhook's message
snap='{"apiVersion":"snapshot.kubevirt.io/v1beta1","kind":"VirtualMachineSnapshot","metadata":{"name":"s1"},"spec":{"source":{"apiGroup":"kubevirt.io","kind":"VirtualMachine","name":"larry"}}}'
expect 0 201 POST /apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots "$snap" >/dev/null
expect EEXIST 409 POST /apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots "$snap" >/dev/null
expect EINVAL 422 POST /apis/snapshot.kubevirt.io/v1beta1/namespaces/default/virtualmachinesnapshots \
    "${snap/VirtualMachine\"/VirtualMachineInstance\"}" | head -n 1 |
    grep -q 'denied the request: invalid kind' || fail "422 message"

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

# TLS: another CA is refused; insecure-skip-tls-verify reads anyway
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other -keyout "$wd/other.key" \
    -out "$wd/other.crt" 2>/dev/null
kubeconfig "$server
    certificate-authority: $wd/other.crt" "    token: $token"
expect EIO 0 GET /version | head -n 1 | grep -qi 'certificate' || fail "a wrong CA: no reason"
kubeconfig "$server
    insecure-skip-tls-verify: true" "    token: $token"
expect 0 200 GET /version >/dev/null
# the name verified is tls-server-name's (in the server's certificate or not)
kubeconfig "$server
$ca_file
    tls-server-name: kubernetes.default.svc" "    token: $token"
expect 0 200 GET /version >/dev/null
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
expect EACCES 0 GET /version | head -n 1 | grep -q 'credential plugin' || fail "a failing plugin"
echo "PASS: $testname"
