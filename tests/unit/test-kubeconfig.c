/* tests/unit/test-kubeconfig.c: kubeconfig files as kubectl reads them:
 * the current context or a named one, KUBECONFIG lists merged (first file
 * wins, missing files skipped), *-data in base64 and paths relative to
 * their file, exec plugins, the service account in a pod, and clear
 * errors that never show a credential. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "kubeconfig.h"

#define SECRET "s3cr3t-t0ken-value"
/* base64 of "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n" */
#define CA_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkNBCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K"
#define CA_PEM "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"

static char dir[64];

static const char *
at(const char *name)
{
    static __thread char buf[4][128];
    static __thread int i;
    char *b = buf[i++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", dir, name);
    return b;
}

static void
put(const char *name, const char *text)
{
    FILE *f = fopen(at(name), "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int
setup(void **state)
{
    (void) state;
    strcpy(dir, "/tmp/vmsnapfs-test-kubeconfig-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
    char cmd[128];
    (void) state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *basic =
    "apiVersion: v1\n"
    "kind: Config\n"
    "current-context: admin@lab\n"
    "clusters:\n"
    "- name: lab\n"
    "  cluster:\n"
    "    server: https://10.0.0.1:6443\n"
    "    certificate-authority-data: " CA_B64 "\n"
    "    tls-server-name: api.lab\n"
    "- name: other\n"
    "  cluster:\n"
    "    server: https://other:6443\n"
    "    insecure-skip-tls-verify: true\n"
    "contexts:\n"
    "- name: admin@lab\n"
    "  context: {cluster: lab, user: admin, namespace: vms}\n"
    "- name: other\n"
    "  context:\n"
    "    cluster: other\n"
    "    user: certs\n"
    "users:\n"
    "- name: admin\n"
    "  user:\n"
    "    token: " SECRET "\n"
    "- name: certs\n"
    "  user:\n"
    "    client-certificate: sub/client.crt\n"
    "    client-key: sub/client.key\n";

static void
test_current_context(void **state)
{
    struct kube_config c;
    char why[256];
    (void) state;

    put("config", basic);
    assert_int_equal(kubeconfig_load_files(at("config"), NULL, &c, why, sizeof why), 0);
    assert_string_equal(c.context, "admin@lab");
    assert_string_equal(c.server, "https://10.0.0.1:6443");
    assert_string_equal(c.ca_pem, CA_PEM);
    assert_string_equal(c.tls_server_name, "api.lab");
    assert_false(c.insecure);
    assert_string_equal(c.namespace, "vms");
    assert_string_equal(c.token, SECRET);
    assert_null(c.cert_pem);
    assert_null(c.exec);
    kube_config_clear(&c);
}

static void
test_named_context_relative_paths(void **state)
{
    struct kube_config c;
    char why[256];
    (void) state;

    put("config", basic);
    assert_int_equal(mkdir(at("sub"), 0700), 0);
    put("sub/client.crt", "CERT\n");
    put("sub/client.key", "KEY\n");
    assert_int_equal(kubeconfig_load_files(at("config"), "other", &c, why, sizeof why), 0);
    assert_string_equal(c.server, "https://other:6443");
    assert_true(c.insecure);
    assert_null(c.ca_pem);
    assert_null(c.namespace);
    assert_null(c.token);
    assert_string_equal(c.cert_pem, "CERT\n");
    assert_string_equal(c.key_pem, "KEY\n");
    kube_config_clear(&c);
}

static void
test_merged_files(void **state)
{
    struct kube_config c;
    char why[256], list[512];
    (void) state;

    /* a: the current context and cluster "lab"; b: another "lab" (a's
     * wins), the user (only b has it), another current-context (a's wins) */
    put("a", "current-context: x\n"
             "clusters:\n- name: lab\n  cluster: {server: 'https://a:6443'}\n"
             "contexts:\n- name: x\n  context: {cluster: lab, user: u}\n");
    put("b", "current-context: other\n"
             "clusters:\n- name: lab\n  cluster: {server: 'https://b:6443'}\n"
             "contexts:\n- name: x\n  context: {cluster: nope, user: nope}\n"
             "users:\n- name: u\n  user:\n    tokenFile: tok\n");
    snprintf(list, sizeof list, "%s:%s:%s", at("missing"), at("a"), at("b"));
    assert_int_equal(kubeconfig_load_files(list, NULL, &c, why, sizeof why), 0);
    assert_string_equal(c.context, "x");
    assert_string_equal(c.server, "https://a:6443");
    assert_string_equal(c.token_file, at("tok"));
    kube_config_clear(&c);
}

static void
test_exec_plugin(void **state)
{
    struct kube_config c;
    char why[256];
    (void) state;

    put("config", "current-context: e\n"
                  "clusters:\n- name: c\n  cluster: {server: 'https://c'}\n"
                  "contexts:\n- name: e\n  context: {cluster: c, user: e}\n"
                  "users:\n- name: e\n  user:\n    exec:\n"
                  "      apiVersion: client.authentication.k8s.io/v1\n"
                  "      command: /usr/bin/get-token\n"
                  "      args: [--cluster, lab]\n"
                  "      env:\n      - {name: REGION, value: eu}\n"
                  "      interactiveMode: Never\n");
    assert_int_equal(kubeconfig_load_files(at("config"), NULL, &c, why, sizeof why), 0);
    assert_non_null(c.exec);
    assert_string_equal(c.exec->command, "/usr/bin/get-token");
    assert_string_equal(c.exec->args[0], "--cluster");
    assert_string_equal(c.exec->args[1], "lab");
    assert_null(c.exec->args[2]);
    assert_string_equal(c.exec->env[0], "REGION=eu");
    assert_null(c.exec->env[1]);
    kube_config_clear(&c);
}

/* an error: the errno, a reason naming the entry, never the secret */
static void
refused(const char *config, const char *context, int want, const char *reason)
{
    struct kube_config c;
    char why[512];

    put("config", config);
    assert_int_equal(kubeconfig_load_files(at("config"), context, &c, why, sizeof why), want);
    if (!strstr(why, reason))
        fail_msg("reason '%s' does not say '%s'", why, reason);
    assert_null(strstr(why, SECRET));
    assert_null(c.server);
}

static void
test_errors(void **state)
{
    (void) state;
    const char *head = "current-context: x\n"
                       "clusters:\n- name: c\n  cluster: {server: 'https://c'}\n"
                       "contexts:\n- name: x\n  context: {cluster: c, user: u}\n";
    char buf[1024];

    snprintf(buf, sizeof buf, "%susers:\n- name: u\n  user:\n    token: %s\n"
             "    auth-provider: {name: oidc}\n", head, SECRET);
    refused(buf, NULL, -EINVAL, "user 'u': auth-provider is not supported");
    snprintf(buf, sizeof buf, "%susers:\n- name: u\n  user: {username: a, password: %s}\n",
             head, SECRET);
    refused(buf, NULL, -EINVAL, "basic authentication is not supported");
    snprintf(buf, sizeof buf, "%susers:\n- name: u\n  user: {client-certificate-data: %s}\n",
             head, CA_B64);
    refused(buf, NULL, -EINVAL, "needs its key");
    snprintf(buf, sizeof buf, "%susers:\n- name: u\n  user:\n    client-key-data: '%s'\n",
             head, SECRET "!");
    refused(buf, NULL, -EINVAL, "client-key-data is not valid base64");
    /* padding only where base64 has it (once wrote before its buffer) */
    static const char *bad64[] = { "====", "AAAA====", "A===", "=AAA", "AA=A" };
    for (size_t i = 0; i < sizeof bad64 / sizeof *bad64; i++) {
        snprintf(buf, sizeof buf, "current-context: x\nclusters:\n- name: c\n  cluster: "
                 "{server: 'https://c', certificate-authority-data: '%s'}\ncontexts:\n- name: x\n"
                 "  context: {cluster: c}\n", bad64[i]);
        refused(buf, NULL, -EINVAL, "certificate-authority-data is not valid base64");
    }
    refused("current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://c', "
            "insecure-skip-tls-verify: true, certificate-authority-data: " CA_B64 "}\n"
            "contexts:\n- name: x\n  context: {cluster: c}\n", NULL, -EINVAL,
            "insecure-skip-tls-verify");
    snprintf(buf, sizeof buf, "%susers:\n- name: u\n  user:\n    exec: {command: x, "
             "apiVersion: client.authentication.k8s.io/v1alpha1}\n", head);
    refused(buf, NULL, -EINVAL, "exec apiVersion");
    refused(head, NULL, -ENOENT, "no user 'u'");
    refused(head, "nope", -ENOENT, "no context 'nope'");
    refused("clusters: []\n", NULL, -ENOENT, "no current-context");
    refused("current-context: x\nclusters:\n- name: c\n  cluster: {server: 'http://c'}\n"
            "contexts:\n- name: x\n  context: {cluster: c}\n", NULL, -EINVAL, "https://");
    refused("current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://c', "
            "certificate-authority: ca.pem, certificate-authority-data: " CA_B64 "}\n"
            "contexts:\n- name: x\n  context: {cluster: c}\n", NULL, -EINVAL, "both");
    refused("current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://c', "
            "certificate-authority: gone.pem}\ncontexts:\n- name: x\n  context: {cluster: c}\n",
            NULL, -EIO, "gone.pem");
    refused("current-context: [x\n", NULL, -EINVAL, "is not YAML");
    refused("- a\n- b\n", NULL, -EINVAL, "not a mapping");
}

static void
test_environment(void **state)
{
    struct kube_config c;
    char why[256];
    (void) state;

    put("config", basic);
    setenv("KUBECONFIG", at("config"), 1);
    assert_int_equal(kubeconfig_load(NULL, &c, why, sizeof why), 0);
    assert_string_equal(c.context, "admin@lab");
    kube_config_clear(&c);
    /* no KUBECONFIG: ~/.kube/config */
    unsetenv("KUBECONFIG");
    setenv("HOME", dir, 1);
    assert_int_equal(kubeconfig_load(NULL, &c, why, sizeof why), -ENOENT);
    assert_int_equal(mkdir(at(".kube"), 0700), 0);
    put(".kube/config", basic);
    assert_int_equal(kubeconfig_load(NULL, &c, why, sizeof why), 0);
    assert_string_equal(c.server, "https://10.0.0.1:6443");
    kube_config_clear(&c);
    /* its client certificate is relative to ~/.kube, where there is none */
    assert_int_equal(kubeconfig_load("other", &c, why, sizeof why), -EIO);
    assert_non_null(strstr(why, ".kube/sub/client.crt"));
    kube_config_clear(&c);
}

static void
test_in_cluster(void **state)
{
    struct kube_config c;
    char why[256];
    (void) state;

    unsetenv("KUBERNETES_SERVICE_HOST");
    assert_int_equal(kubeconfig_in_cluster(dir, &c, why, sizeof why), -ENOENT);
    assert_non_null(strstr(why, "KUBERNETES_SERVICE_HOST"));
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    assert_int_equal(kubeconfig_in_cluster(dir, &c, why, sizeof why), -ENOENT);  /* no token */
    put("token", SECRET);
    put("ca.crt", CA_PEM);
    put("namespace", "kubevirt-vms\n");
    assert_int_equal(kubeconfig_in_cluster(dir, &c, why, sizeof why), 0);
    assert_string_equal(c.server, "https://[fd00::1]:443");
    assert_string_equal(c.context, "in-cluster");
    assert_string_equal(c.token_file, at("token"));
    assert_null(c.token);           /* read when used, again when it changes */
    assert_string_equal(c.ca_pem, CA_PEM);
    assert_string_equal(c.namespace, "kubevirt-vms");
    kube_config_clear(&c);
    setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
    assert_int_equal(kubeconfig_in_cluster(dir, &c, why, sizeof why), 0);
    assert_string_equal(c.server, "https://10.96.0.1:443");
    kube_config_clear(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_current_context, setup, teardown),
        cmocka_unit_test_setup_teardown(test_named_context_relative_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merged_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_plugin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_cluster, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
