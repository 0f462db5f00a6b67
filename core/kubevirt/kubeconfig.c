/* core/kubevirt/kubeconfig.c: see kubeconfig.h. libyaml loads each file
 * as a document; the lookups walk the documents in $KUBECONFIG's order. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <yaml.h>

#include "cleanup.h"
#include "kube-objects.h"
#include "kubeconfig.h"

#define MAX_FILE_SIZE (16u << 20)
#define MAX_FILES 32
#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

static int say(char *why, size_t size, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
say(char *why, size_t size, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return r;
}

/* The whole of a (small) file, NUL-terminated; -errno. */
static int
read_all(const char *path, char **ret, size_t *ret_len)
{
    /* O_NONBLOCK: a FIFO planted in its place does not hang us */
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;

    if (fd < 0 || fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || (uint64_t) st.st_size > MAX_FILE_SIZE)
        return -EINVAL;
    char *buf = malloc((size_t) st.st_size + 1);
    size_t n = 0;
    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t k = read(fd, buf + n, (size_t) st.st_size - n);
        if (k < 0) {
            int r = -errno;
            free(buf);
            return r;
        }
        if (k == 0 || (n += (size_t) k) == (size_t) st.st_size)
            break;
    }
    buf[n] = '\0';
    *ret = buf;
    if (ret_len)
        *ret_len = n;
    return 0;
}

/* ---- the files, as YAML documents ------------------------------------------ */

struct kfile {
    char *path;
    char *dir;              /* relative paths in the file start here */
    yaml_document_t doc;
};

struct kfiles {
    struct kfile f[MAX_FILES];
    size_t n;
};

static void
kfiles_clear(struct kfiles *k)
{
    for (size_t i = 0; i < k->n; i++) {
        yaml_document_delete(&k->f[i].doc);
        free(k->f[i].path);
        free(k->f[i].dir);
    }
    k->n = 0;
}

static int
kfile_load(struct kfiles *k, const char *path, char *why, size_t size)
{
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int r = read_all(path, &text, &len);

    if (r == -ENOENT)
        return 0;                   /* kubectl skips files that are not there */
    if (r < 0)
        return say(why, size, r == -EINVAL ? -EINVAL : -EIO, "cannot read kubeconfig '%s': %s",
                   path, strerror(-r));
    if (k->n == MAX_FILES)
        return say(why, size, -EINVAL, "more than %d kubeconfig files", MAX_FILES);

    struct kfile *f = &k->f[k->n];
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return -ENOMEM;
    yaml_parser_set_input_string(&p, (const unsigned char *) text, len);
    int ok = yaml_parser_load(&p, &f->doc);
    if (!ok) {
        r = say(why, size, -EINVAL, "kubeconfig '%s' is not YAML: %s (line %zu)", path,
                p.problem ? p.problem : "parse error", p.problem_mark.line + 1);
        yaml_parser_delete(&p);
        return r;
    }
    yaml_parser_delete(&p);
    /* paths in it are relative to its directory, made absolute now: the
     * daemon runs in / (and reads a token file again later) */
    const char *slash = strrchr(path, '/');
    _cleanup_free_ char *dir = slash ? strndup(path, slash == path ? 1 : (size_t) (slash - path))
                                     : strdup(".");
    f->path = strdup(path);
    f->dir = dir ? realpath(dir, NULL) : NULL;
    if (dir && !f->dir)
        f->dir = strdup(dir);
    k->n++;
    if (!f->path || !f->dir)
        return -ENOMEM;
    yaml_node_t *root = yaml_document_get_root_node(&f->doc);
    if (root && root->type != YAML_MAPPING_NODE)
        return say(why, size, -EINVAL, "kubeconfig '%s' is not a mapping", path);
    return 0;
}

/* The value of key in mapping node m, or NULL. */
static yaml_node_t *
map_get(yaml_document_t *d, yaml_node_t *m, const char *key)
{
    if (!m || m->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(d, p->key);
        if (k && k->type == YAML_SCALAR_NODE &&
            strlen(key) == k->data.scalar.length &&
            memcmp(k->data.scalar.value, key, k->data.scalar.length) == 0)
            return yaml_document_get_node(d, p->value);
    }
    return NULL;
}

/* A scalar's text (NUL-terminated by libyaml), or NULL (absent, not a
 * scalar, or "null"/"~" as YAML means them). */
static const char *
scalar(yaml_node_t *n)
{
    if (!n || n->type != YAML_SCALAR_NODE)
        return NULL;
    const char *s = (const char *) n->data.scalar.value;
    if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        (strcmp(s, "null") == 0 || strcmp(s, "~") == 0 || !*s))
        return NULL;
    return s;
}

static const char *
map_str(yaml_document_t *d, yaml_node_t *m, const char *key)
{
    return scalar(map_get(d, m, key));
}

/* The inner mapping (section "clusters", item key "cluster") of the entry
 * called name, from the first file that has one; *ret_file its file. */
static yaml_node_t *
named_entry(struct kfiles *k, const char *section, const char *inner, const char *name,
            struct kfile **ret_file)
{
    for (size_t i = 0; i < k->n; i++) {
        yaml_document_t *d = &k->f[i].doc;
        yaml_node_t *list = map_get(d, yaml_document_get_root_node(d), section);
        if (!list || list->type != YAML_SEQUENCE_NODE)
            continue;
        for (yaml_node_item_t *it = list->data.sequence.items.start;
             it < list->data.sequence.items.top; it++) {
            yaml_node_t *e = yaml_document_get_node(d, *it);
            const char *n = map_str(d, e, "name");
            if (n && strcmp(n, name) == 0) {
                *ret_file = &k->f[i];
                yaml_node_t *m = map_get(d, e, inner);
                return m && m->type == YAML_MAPPING_NODE ? m : NULL;
            }
        }
    }
    return NULL;
}

/* ---- values ---------------------------------------------------------------- */

static char *
resolve(const struct kfile *f, const char *path)
{
    char *p = NULL;
    if (path[0] == '/')
        return strdup(path);
    return asprintf(&p, "%s/%s", f->dir, path) < 0 ? NULL : p;
}

/* A PEM (or token) given as KEY-data (base64) or KEY (a file) in map m of
 * file f: 0 and *ret (NULL if neither is set). */
static int
data_or_file(struct kfile *f, yaml_node_t *m, const char *key, const char *entry, char **ret,
             char *why, size_t size)
{
    char data_key[64];
    snprintf(data_key, sizeof data_key, "%s-data", key);
    const char *data = map_str(&f->doc, m, data_key);
    const char *file = map_str(&f->doc, m, key);
    int r;

    *ret = NULL;
    if (data && file)
        return say(why, size, -EINVAL, "%s: both %s and %s are set (%s)", entry, data_key, key,
                   f->path);
    if (data) {
        r = kube_base64_text(data, ret);
        if (r < 0)
            return say(why, size, r, "%s: %s is not valid base64 (%s)", entry, data_key,
                       f->path);
        return 0;
    }
    if (!file)
        return 0;
    _cleanup_free_ char *path = resolve(f, file);
    if (!path)
        return -ENOMEM;
    r = read_all(path, ret, NULL);
    if (r < 0)
        return say(why, size, r == -ENOMEM ? r : -EIO, "%s: cannot read %s '%s': %s", entry,
                   key, path, strerror(-r));
    return 0;
}

static int
dup_opt(const char *s, char **ret)
{
    *ret = NULL;
    return s && !(*ret = strdup(s)) ? -ENOMEM : 0;
}

/* A sequence of scalars, NULL-terminated (empty if absent). */
static int
strv_of(yaml_document_t *d, yaml_node_t *seq, char ***ret)
{
    size_t n = seq && seq->type == YAML_SEQUENCE_NODE
                   ? (size_t) (seq->data.sequence.items.top - seq->data.sequence.items.start)
                   : 0;
    char **v = calloc(n + 1, sizeof *v);
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *s = scalar(yaml_document_get_node(d, seq->data.sequence.items.start[i]));
        if (!(v[i] = strdup(s ? s : ""))) {
            strv_free(v);
            return -ENOMEM;
        }
    }
    *ret = v;
    return 0;
}

static void
exec_free(struct kube_exec *e)
{
    if (!e)
        return;
    free(e->api_version);
    free(e->command);
    strv_free(e->args);
    strv_free(e->env);
    free(e);
}

static char *resolve(const struct kfile *f, const char *path);

static int
parse_exec(struct kfile *f, yaml_node_t *m, const char *entry, struct kube_exec **ret,
           char *why, size_t size)
{
    yaml_document_t *d = &f->doc;
    const char *api = map_str(d, m, "apiVersion"), *cmd = map_str(d, m, "command");
    yaml_node_t *env = map_get(d, m, "env");
    struct kube_exec *e;

    if (!cmd)
        return say(why, size, -EINVAL, "%s: exec has no command", entry);
    if (!api || (strcmp(api, "client.authentication.k8s.io/v1") != 0 &&
                 strcmp(api, "client.authentication.k8s.io/v1beta1") != 0))
        return say(why, size, -EINVAL, "%s: exec apiVersion '%s' is not supported "
                   "(client.authentication.k8s.io/v1 is)", entry, api ? api : "");
    if (!(e = calloc(1, sizeof *e)))
        return -ENOMEM;
    int r = dup_opt(api, &e->api_version);
    /* a command with a '/' is relative to the kubeconfig (as client-go
     * has it); a bare name is looked for in PATH */
    if (r >= 0)
        r = strchr(cmd, '/') ? ((e->command = resolve(f, cmd)) ? 0 : -ENOMEM)
                             : dup_opt(cmd, &e->command);
    if (r >= 0)
        r = strv_of(d, map_get(d, m, "args"), &e->args);
    size_t n = env && env->type == YAML_SEQUENCE_NODE
                   ? (size_t) (env->data.sequence.items.top - env->data.sequence.items.start)
                   : 0;
    if (r >= 0 && !(e->env = calloc(n + 1, sizeof *e->env)))
        r = -ENOMEM;
    for (size_t i = 0; r >= 0 && i < n; i++) {
        yaml_node_t *kv = yaml_document_get_node(d, env->data.sequence.items.start[i]);
        const char *name = map_str(d, kv, "name"), *value = map_str(d, kv, "value");
        if (!name || strchr(name, '=')) {
            r = say(why, size, -EINVAL, "%s: exec env entry %zu has no valid name", entry, i);
            break;
        }
        if (asprintf(&e->env[i], "%s=%s", name, value ? value : "") < 0) {
            e->env[i] = NULL;
            r = -ENOMEM;
        }
    }
    if (r < 0) {
        exec_free(e);
        return r;
    }
    *ret = e;
    return 0;
}

/* ---- the three entries of a context ---------------------------------------- */

static int
load_cluster(struct kfiles *k, const char *name, struct kube_config *c, char *why, size_t size)
{
    struct kfile *f = NULL;
    yaml_node_t *m = named_entry(k, "clusters", "cluster", name, &f);
    char entry[320];
    int r;

    snprintf(entry, sizeof entry, "cluster '%s'", name);
    if (!m)
        return say(why, size, -ENOENT, "no %s in the kubeconfig", entry);
    const char *server = map_str(&f->doc, m, "server");
    const char *insecure = map_str(&f->doc, m, "insecure-skip-tls-verify");
    if (!server || strncmp(server, "https://", 8) != 0)
        return say(why, size, -EINVAL, "%s: server must be an https:// URL (%s)", entry,
                   f->path);
    if (map_get(&f->doc, m, "proxy-url"))
        return say(why, size, -EINVAL, "%s: proxy-url is not supported", entry);
    c->insecure = insecure && (strcmp(insecure, "true") == 0 || strcmp(insecure, "True") == 0);
    if (c->insecure && (map_get(&f->doc, m, "certificate-authority") ||
                        map_get(&f->doc, m, "certificate-authority-data")))
        return say(why, size, -EINVAL, "%s: a certificate authority together with "
                   "insecure-skip-tls-verify (kubectl refuses it too)", entry);
    r = dup_opt(server, &c->server);
    if (r >= 0)
        r = dup_opt(map_str(&f->doc, m, "tls-server-name"), &c->tls_server_name);
    if (r >= 0)
        r = data_or_file(f, m, "certificate-authority", entry, &c->ca_pem, why, size);
    return r;
}

static int
load_user(struct kfiles *k, const char *name, struct kube_config *c, char *why, size_t size)
{
    struct kfile *f = NULL;
    yaml_node_t *m = named_entry(k, "users", "user", name, &f);
    char entry[320];
    int r;

    snprintf(entry, sizeof entry, "user '%s'", name);
    if (!m)
        return say(why, size, -ENOENT, "no %s in the kubeconfig", entry);
    if (map_get(&f->doc, m, "auth-provider"))
        return say(why, size, -EINVAL, "%s: auth-provider is not supported (kubectl "
                   "dropped it too: use an exec plugin)", entry);
    if (map_get(&f->doc, m, "username") || map_get(&f->doc, m, "password"))
        return say(why, size, -EINVAL, "%s: basic authentication is not supported", entry);
    if (map_get(&f->doc, m, "as") || map_get(&f->doc, m, "as-groups"))
        return say(why, size, -EINVAL, "%s: impersonation (as) is not supported", entry);
    r = dup_opt(map_str(&f->doc, m, "token"), &c->token);
    if (r >= 0 && map_str(&f->doc, m, "tokenFile")) {
        c->token_file = resolve(f, map_str(&f->doc, m, "tokenFile"));
        r = c->token_file ? 0 : -ENOMEM;
    }
    if (r >= 0)
        r = data_or_file(f, m, "client-certificate", entry, &c->cert_pem, why, size);
    if (r >= 0)
        r = data_or_file(f, m, "client-key", entry, &c->key_pem, why, size);
    if (r >= 0 && !c->cert_pem != !c->key_pem)
        r = say(why, size, -EINVAL, "%s: a client certificate needs its key, and a key "
                "its certificate", entry);
    yaml_node_t *exec = map_get(&f->doc, m, "exec");
    if (r >= 0 && exec)
        r = parse_exec(f, exec, entry, &c->exec, why, size);
    return r;
}

int
kubeconfig_load_files(const char *files, const char *context, struct kube_config *ret,
                      char *why, size_t size)
{
    struct kfiles k = { .n = 0 };
    _cleanup_free_ char *list = strdup(files ? files : "");
    struct kube_config c = { 0 };
    char *save = NULL;
    int r = list ? 0 : -ENOMEM;

    why[0] = '\0';
    *ret = (struct kube_config) { 0 };
    for (char *p = list ? strtok_r(list, ":", &save) : NULL; r >= 0 && p;
         p = strtok_r(NULL, ":", &save))
        r = kfile_load(&k, p, why, size);
    if (r >= 0 && k.n == 0)
        r = say(why, size, -ENOENT, "no kubeconfig file: '%s'", files ? files : "");

    /* the context: asked for, or the first current-context set */
    const char *ctx = context;
    for (size_t i = 0; r >= 0 && !ctx && i < k.n; i++)
        ctx = map_str(&k.f[i].doc, yaml_document_get_root_node(&k.f[i].doc),
                      "current-context");
    if (r >= 0 && !ctx)
        r = say(why, size, -ENOENT, "the kubeconfig has no current-context: name one "
                "(kubevirt://CONTEXT)");
    struct kfile *f = NULL;
    yaml_node_t *m = r >= 0 ? named_entry(&k, "contexts", "context", ctx, &f) : NULL;
    if (r >= 0 && !m)
        r = say(why, size, -ENOENT, "no context '%s' in the kubeconfig", ctx);
    const char *cluster = m ? map_str(&f->doc, m, "cluster") : NULL;
    const char *user = m ? map_str(&f->doc, m, "user") : NULL;
    if (r >= 0 && !cluster)
        r = say(why, size, -EINVAL, "context '%s' names no cluster", ctx);
    if (r >= 0)
        r = dup_opt(ctx, &c.context);
    if (r >= 0)
        r = dup_opt(map_str(&f->doc, m, "namespace"), &c.namespace);
    if (r >= 0)
        r = load_cluster(&k, cluster, &c, why, size);
    if (r >= 0 && user)
        r = load_user(&k, user, &c, why, size);
    kfiles_clear(&k);
    if (r < 0) {
        kube_config_clear(&c);
        if (!why[0])
            say(why, size, r, "cannot load the kubeconfig: %s", strerror(-r));
        return r;
    }
    *ret = c;
    return 0;
}

int
kubeconfig_load(const char *context, struct kube_config *ret, char *why, size_t size)
{
    const char *env = getenv("KUBECONFIG");
    _cleanup_free_ char *home = NULL;

    if (env && *env)
        return kubeconfig_load_files(env, context, ret, why, size);
    const char *h = getenv("HOME");
    if (!h || !*h || asprintf(&home, "%s/.kube/config", h) < 0)
        return say(why, size, -ENOENT, "no KUBECONFIG and no home directory");
    return kubeconfig_load_files(home, context, ret, why, size);
}

int
kubeconfig_in_cluster(const char *dir, struct kube_config *ret, char *why, size_t size)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    struct kube_config c = { 0 };
    _cleanup_free_ char *ca = NULL, *ns = NULL;
    int r;

    *ret = (struct kube_config) { 0 };
    dir = dir ? dir : SA_DIR;
    if (!host || !*host || !port || !*port)
        return say(why, size, -ENOENT, "not in a pod: KUBERNETES_SERVICE_HOST and "
                   "KUBERNETES_SERVICE_PORT are not set");
    if (asprintf(&c.server, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host,
                 port) < 0 || asprintf(&c.token_file, "%s/token", dir) < 0 ||
        asprintf(&ca, "%s/ca.crt", dir) < 0 || asprintf(&ns, "%s/namespace", dir) < 0 ||
        !(c.context = strdup("in-cluster"))) {
        kube_config_clear(&c);
        return -ENOMEM;
    }
    if (access(c.token_file, R_OK) < 0) {
        r = say(why, size, -ENOENT, "no service account token at '%s'", c.token_file);
    } else if ((r = read_all(ca, &c.ca_pem, NULL)) < 0) {
        r = say(why, size, -EIO, "cannot read the service account's CA '%s': %s", ca,
                strerror(-r));
    } else if (read_all(ns, &c.namespace, NULL) == 0) {
        c.namespace[strcspn(c.namespace, "\r\n")] = '\0';
    }
    if (r < 0) {
        kube_config_clear(&c);
        return r;
    }
    *ret = c;
    return 0;
}

void
kube_config_clear(struct kube_config *c)
{
    free(c->context);
    free(c->server);
    free(c->ca_pem);
    free(c->tls_server_name);
    free(c->namespace);
    if (c->token)
        explicit_bzero(c->token, strlen(c->token));
    free(c->token);
    free(c->token_file);
    free(c->cert_pem);
    if (c->key_pem)
        explicit_bzero(c->key_pem, strlen(c->key_pem));
    free(c->key_pem);
    exec_free(c->exec);
    *c = (struct kube_config) { 0 };
}
