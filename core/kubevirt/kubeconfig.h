/* core/kubevirt/kubeconfig.h: where a cluster is and how to log in to it.
 *
 * - kubeconfig files (YAML, read with libyaml): $KUBECONFIG, a ':'-separated
 *   list merged as kubectl merges it (the first file that sets
 *   current-context, or that defines a cluster, user or context of a given
 *   name, wins; files that do not exist are skipped), else ~/.kube/config.
 *   Paths in a file are relative to that file's directory.
 * - in-cluster: the pod's service account (token, CA, namespace) and
 *   KUBERNETES_SERVICE_HOST / _PORT.
 *
 * Credentials (tokens, keys) stay in memory and are never part of a
 * message: `why` says which field of which entry is wrong, never its value.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* An exec credential plugin (client.authentication.k8s.io/v1). */
struct kube_exec {
    char *api_version;
    char *command;
    char **args;            /* NULL-terminated (may be empty) */
    char **env;             /* "NAME=value", NULL-terminated (may be empty) */
};

struct kube_config {
    char *context;          /* the context used ("in-cluster" for the pod's) */
    char *server;           /* https://HOST[:PORT][/PATH] */
    char *ca_pem;           /* the CAs to verify the server with, or NULL:
                               the system's */
    bool insecure;          /* insecure-skip-tls-verify: no verification */
    char *tls_server_name;  /* the name to verify instead of the host's */
    char *namespace;        /* the context's namespace, or NULL */
    /* how to log in: at most one of these kinds */
    char *token;            /* a bearer token */
    char *token_file;       /* a file holding one (read again when it changes) */
    char *cert_pem;         /* a client certificate (PEM) ... */
    char *key_pem;          /* ... and its key (PEM), in memory only */
    struct kube_exec *exec; /* a plugin that prints an ExecCredential */
};

/* The config for context (NULL: the current one) from $KUBECONFIG or
 * ~/.kube/config. -ENOENT (no file, no such context), -EINVAL (a field
 * this cannot use: an auth-provider, basic auth, a malformed file), -EIO
 * (a file it names cannot be read), -ENOMEM; why says what and where. */
int kubeconfig_load(const char *context, struct kube_config *ret, char *why, size_t size);
/* The same from files, a ':'-separated list as $KUBECONFIG. */
int kubeconfig_load_files(const char *files, const char *context, struct kube_config *ret,
                          char *why, size_t size);
/* The pod's service account in dir (NULL: the standard place,
 * /var/run/secrets/kubernetes.io/serviceaccount) and the service's address
 * from the environment. */
int kubeconfig_in_cluster(const char *dir, struct kube_config *ret, char *why, size_t size);
void kube_config_clear(struct kube_config *c);
