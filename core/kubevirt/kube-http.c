/* core/kubevirt/kube-http.c: see kube-http.h. */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "cleanup.h"
#include "clock.h"
#include "kube-http.h"
#include "kube-objects.h"
#include "log.h"
#include "subprocess.h"

extern char **environ;

#define POOL_SIZE 8
#define MAX_BODY (256u << 20)
#define EXEC_TIMEOUT_MS 60000
#define CONNECT_TIMEOUT_S 10L

struct kube_client {
    struct kube_config cfg;
    char *base;             /* the URL requests go to (tls-server-name's host) */
    char *connect_to;       /* "NAME:PORT:HOST:PORT" when tls-server-name is set */
    char *host_header;      /* then "Host: HOST[:PORT]": the server's, as kubectl sends */
    CURLSH *share;          /* TLS sessions and DNS, across threads */
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    /* idle handles, each with its own connections (libcurl does not share
     * connections between threads at once): one is taken per request */
    pthread_mutex_t pool_lock;
    CURL *pool[POOL_SIZE];
    size_t n_pool;

    pthread_mutex_t lock;   /* the credentials below */
    char *token;            /* from the token file or the exec plugin */
    struct timespec token_mtime;
    time_t token_expires;   /* exec: 0 for never */
    char *exec_cert, *exec_key;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void
curl_init(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void
share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *opaque)
{
    struct kube_client *c = opaque;
    (void) h;
    (void) access;
    pthread_mutex_lock(&c->share_locks[data]);
}

static void
share_unlock(CURL *h, curl_lock_data data, void *opaque)
{
    struct kube_client *c = opaque;
    (void) h;
    pthread_mutex_unlock(&c->share_locks[data]);
}

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* ---- the client ---------------------------------------------------------------- */

/* base URL and --connect-to for tls-server-name: the URL names the host
 * to verify, the connection goes to the server's own address */
static int
set_base(struct kube_client *c, char *why, size_t size)
{
    const char *server = c->cfg.server;
    const char *host = server + strlen("https://");
    size_t hlen = strcspn(host, "/");
    const char *path = host + hlen;
    _cleanup_free_ char *hostport = strndup(host, hlen);
    const char *port = "443";
    int n;

    if (!hostport)
        return -ENOMEM;
    char *colon = strrchr(hostport, ':');
    if (colon && !strchr(colon, ']')) {
        *colon = '\0';
        port = colon + 1;
    }
    if (!c->cfg.tls_server_name) {
        n = asprintf(&c->base, "%s", server);
    } else if (strpbrk(c->cfg.tls_server_name, ":/@[] ")) {
        return snprintf(why, size, "tls-server-name '%s' is not a host name",
                        c->cfg.tls_server_name), -EINVAL;
    } else {
        n = asprintf(&c->base, "https://%s:%s%s", c->cfg.tls_server_name, port, path);
        if (n >= 0)
            n = asprintf(&c->connect_to, "%s:%s:%s:%s", c->cfg.tls_server_name, port,
                         hostport, port);
        /* the name is for TLS only (SNI, verification): the request goes
         * to the server by its own name, as client-go's ServerName does */
        if (n >= 0)
            n = asprintf(&c->host_header, "Host: %.*s", (int) hlen, host);
    }
    if (n < 0)
        return -ENOMEM;
    for (size_t l = strlen(c->base); l > 8 && c->base[l - 1] == '/'; l--)
        c->base[l - 1] = '\0';     /* paths are appended with their '/' */
    return 0;
}

int
kube_client_new(const struct kube_config *cfg, struct kube_client **ret, char *why, size_t size)
{
    struct kube_client *c;
    int r;

    why[0] = '\0';
    pthread_once(&curl_once, curl_init);
    if (curl_init_result != CURLE_OK)
        return snprintf(why, size, "libcurl: %s", curl_easy_strerror(curl_init_result)), -EIO;
    if (!cfg->server || strncmp(cfg->server, "https://", 8) != 0)
        return snprintf(why, size, "the server must be an https:// URL"), -EINVAL;
    if (!(c = calloc(1, sizeof *c)))
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->pool_lock, NULL);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_locks[i], NULL);
    bool oom = false;
#define COPY(field) ((c->cfg.field = dup_or_null(cfg->field)) || !cfg->field || (oom = true))
    (void) (COPY(context) && COPY(server) && COPY(ca_pem) && COPY(tls_server_name) &&
            COPY(namespace) && COPY(token) && COPY(token_file) && COPY(cert_pem) && COPY(key_pem));
#undef COPY
    c->cfg.insecure = cfg->insecure;
    if (cfg->exec && !oom) {
        struct kube_exec *e = calloc(1, sizeof *e);
        size_t na = 0, ne = 0;
        while (cfg->exec->args && cfg->exec->args[na])
            na++;
        while (cfg->exec->env && cfg->exec->env[ne])
            ne++;
        c->cfg.exec = e;
        if (!e || !(e->api_version = dup_or_null(cfg->exec->api_version)) ||
            !(e->command = dup_or_null(cfg->exec->command)) ||
            !(e->args = calloc(na + 1, sizeof *e->args)) ||
            !(e->env = calloc(ne + 1, sizeof *e->env)))
            oom = true;
        for (size_t i = 0; !oom && i < na; i++)
            oom = !(e->args[i] = strdup(cfg->exec->args[i]));
        for (size_t i = 0; !oom && i < ne; i++)
            oom = !(e->env[i] = strdup(cfg->exec->env[i]));
    }
    r = oom ? -ENOMEM : set_base(c, why, size);
    if (r >= 0 && !(c->share = curl_share_init()))
        r = -ENOMEM;
    if (r >= 0) {
        curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    }
    if (r < 0) {
        kube_client_free(c);
        return r;
    }
    *ret = c;
    return 0;
}

void
kube_client_free(struct kube_client *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_pool; i++)
        curl_easy_cleanup(c->pool[i]);
    if (c->share)
        curl_share_cleanup(c->share);
    kube_config_clear(&c->cfg);
    free(c->base);
    free(c->connect_to);
    free(c->host_header);
    wipe_free(c->token);
    free(c->exec_cert);
    wipe_free(c->exec_key);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_locks[i]);
    pthread_mutex_destroy(&c->pool_lock);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

const char *
kube_client_server(const struct kube_client *c)
{
    return c->cfg.server;
}

/* ---- credentials ------------------------------------------------------------------ */

/* The token file, read again when it changed (a projected token rotates). */
static int
token_from_file(struct kube_client *c, char *why, size_t size)
{
    struct stat st;
    if (stat(c->cfg.token_file, &st) < 0)
        return snprintf(why, size, "cannot read the token file '%s': %s", c->cfg.token_file,
                        strerror(errno)), -EACCES;
    if (c->token && st.st_mtim.tv_sec == c->token_mtime.tv_sec &&
        st.st_mtim.tv_nsec == c->token_mtime.tv_nsec)
        return 0;
    FILE *f = fopen(c->cfg.token_file, "re");
    char buf[16384];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    if (!f || n == 0)
        return snprintf(why, size, "the token file '%s' is empty or unreadable",
                        c->cfg.token_file), -EACCES;
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    wipe_free(c->token);
    c->token = strdup(buf);
    explicit_bzero(buf, sizeof buf);
    c->token_mtime = st.st_mtim;
    return c->token ? 0 : -ENOMEM;
}

/* Runs the exec plugin: ExecCredential status.token or a certificate. */
static int
token_from_exec(struct kube_client *c, char *why, size_t size)
{
    const struct kube_exec *e = c->cfg.exec;
    size_t na = 0, ne = 0;
    while (e->args[na])
        na++;
    while (e->env[ne])
        ne++;
    _cleanup_free_ char *info = NULL;
    if (asprintf(&info, "KUBERNETES_EXEC_INFO={\"apiVersion\":\"%s\",\"kind\":"
                        "\"ExecCredential\",\"spec\":{\"interactive\":false}}",
                 e->api_version) < 0)
        return -ENOMEM;
    /* the plugin's environment: ours, its env entries, the exec info (in
     * the environment, never on a command line others can read) */
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    _cleanup_free_ char **envp = calloc(nenv + ne + 2, sizeof *envp);
    _cleanup_free_ char **argv = calloc(na + 2, sizeof *argv);
    size_t k = 0;
    if (!argv || !envp)
        return -ENOMEM;
    for (size_t i = 0; i < nenv; i++) {
        bool replaced = strncmp(environ[i], "KUBERNETES_EXEC_INFO=", 21) == 0;
        for (size_t j = 0; j < ne && !replaced; j++) {
            size_t l = strcspn(e->env[j], "=");
            replaced = strncmp(environ[i], e->env[j], l + 1) == 0;
        }
        if (!replaced)
            envp[k++] = environ[i];
    }
    for (size_t i = 0; i < ne; i++)
        envp[k++] = e->env[i];
    envp[k++] = info;
    envp[k] = NULL;
    argv[0] = e->command;
    for (size_t i = 0; i < na; i++)
        argv[i + 1] = e->args[i];

    _cleanup_free_ char *out = NULL;
    int r = spawn_capture_env(LOG_MODULE, argv, envp, EXEC_TIMEOUT_MS, 1 << 20, &out);
    if (r < 0)
        return snprintf(why, size, "the credential plugin '%s' failed (see the log)",
                        e->command), -EACCES;
    struct json_object *o = out ? json_tokener_parse(out) : NULL;
    if (out)
        explicit_bzero(out, strlen(out));
    const char *token = kube_get_str(o, "status", "token", (char *) NULL);
    const char *cert = kube_get_str(o, "status", "clientCertificateData", (char *) NULL);
    const char *key = kube_get_str(o, "status", "clientKeyData", (char *) NULL);
    const char *exp = kube_get_str(o, "status", "expirationTimestamp", (char *) NULL);
    if (!token && !(cert && key)) {
        json_object_put(o);
        return snprintf(why, size, "the credential plugin '%s' printed no ExecCredential with "
                        "a token or a client certificate", e->command), -EACCES;
    }
    wipe_free(c->token);
    free(c->exec_cert);
    wipe_free(c->exec_key);
    c->token = dup_or_null(token);
    c->exec_cert = dup_or_null(cert);
    c->exec_key = dup_or_null(key);
    c->token_expires = 0;
    if (exp)
        (void) kube_time(exp, &c->token_expires);
    /* json-c's copy of the secret goes with the object */
    struct json_object *st = kube_get(o, "status", (char *) NULL);
    if (st && token)
        explicit_bzero((char *) token, strlen(token));
    if (st && key)
        explicit_bzero((char *) key, strlen(key));
    json_object_put(o);
    return (token && !c->token) || (cert && !c->exec_cert) ? -ENOMEM : 0;
}

/* What to send with a request: a header (allocated) and/or cert and key
 * (copies); refresh: the last answer was 401. */
static int
credentials(struct kube_client *c, bool refresh, char **ret_header, char **ret_cert,
            char **ret_key, char *why, size_t size)
{
    int r = 0;

    *ret_header = *ret_cert = *ret_key = NULL;
    LOCK_FOR_SCOPE(&c->lock);
    if (c->cfg.token_file && !c->cfg.token) {
        r = token_from_file(c, why, size);
    } else if (c->cfg.exec) {
        if (refresh || (!c->token && !c->exec_cert) ||
            (c->token_expires && time(NULL) + 10 >= c->token_expires))
            r = token_from_exec(c, why, size);
    }
    if (r < 0)
        return r;
    const char *token = c->cfg.token ? c->cfg.token : c->token;
    if (token && asprintf(ret_header, "Authorization: Bearer %s", token) < 0) {
        *ret_header = NULL;
        return -ENOMEM;
    }
    const char *cert = c->cfg.cert_pem ? c->cfg.cert_pem : c->exec_cert;
    const char *key = c->cfg.key_pem ? c->cfg.key_pem : c->exec_key;
    if (cert && key) {
        *ret_cert = strdup(cert);
        *ret_key = strdup(key);
        if (!*ret_cert || !*ret_key)
            return -ENOMEM;
    }
    return 0;
}

/* ---- requests --------------------------------------------------------------------- */

struct sink {
    char *buf;
    size_t len, cap;
    bool too_big;
    int (*fn)(void *opaque, const char *data, size_t len);  /* streams */
    void *opaque;
    int fn_result;
    long code;
    CURL *h;
    const bool *stop;
};

static int
on_progress(void *opaque, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
            curl_off_t ulnow)
{
    struct sink *s = opaque;
    (void) dltotal;
    (void) dlnow;
    (void) ultotal;
    (void) ulnow;
    if (s->stop && __atomic_load_n(s->stop, __ATOMIC_ACQUIRE)) {
        s->fn_result = -ECANCELED;
        return 1;                       /* aborts the transfer */
    }
    return 0;
}

static size_t
on_data(char *data, size_t one, size_t n, void *opaque)
{
    struct sink *s = opaque;
    size_t len = one * n;

    if (s->fn) {
        if (!s->code)
            curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &s->code);
        if (s->code >= 200 && s->code < 300) {
            int r = s->fn(s->opaque, data, len);
            if (r < 0) {
                s->fn_result = r;
                return 0;               /* ends the transfer */
            }
            return len;
        }
    }
    if (s->len + len + 1 > MAX_BODY) {
        s->too_big = true;
        return 0;
    }
    if (s->len + len + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16384;
        while (cap < s->len + len + 1)
            cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b)
            return 0;
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    s->buf[s->len] = '\0';
    return len;
}

static CURL *
take_handle(struct kube_client *c)
{
    pthread_mutex_lock(&c->pool_lock);
    CURL *h = c->n_pool ? c->pool[--c->n_pool] : NULL;
    pthread_mutex_unlock(&c->pool_lock);
    if (h)
        curl_easy_reset(h);         /* options go, connections stay */
    return h ? h : curl_easy_init();
}

static void
give_back(struct kube_client *c, CURL *h)
{
    pthread_mutex_lock(&c->pool_lock);
    if (c->n_pool < POOL_SIZE) {
        c->pool[c->n_pool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->pool_lock);
    if (h)
        curl_easy_cleanup(h);
}

bool
kube_transient_failure(int curl_code, bool idempotent)
{
    switch ((CURLcode) curl_code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        return true;
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return idempotent;
    default:
        return false;               /* TLS, a bad key, ...: it stays so */
    }
}

/* One attempt. 0 with s->code set, or -EIO (a connection that failed,
 * why; *ret_transient if trying again may help). */
static int
attempt(struct kube_client *c, const char *method, const char *path, const char *body,
        const char *content_type, bool refresh, bool stream, uint64_t timeout_ns,
        struct sink *s, bool *ret_transient, char *why, size_t size)
{
    _cleanup_free_ char *url = NULL, *auth = NULL, *cert = NULL, *key = NULL, *ctype = NULL;
    struct curl_slist *headers = NULL, *connect_to = NULL;
    char err[CURL_ERROR_SIZE] = "";
    int r = credentials(c, refresh, &auth, &cert, &key, why, size);

    if (r < 0)
        return r;
    if (asprintf(&url, "%s%s", c->base, path) < 0 ||
        asprintf(&ctype, "Content-Type: %s", content_type ? content_type : "application/json") < 0)
        return -ENOMEM;
    CURL *h = take_handle(c);
    if (!h)
        return -ENOMEM;
    s->h = h;
    headers = curl_slist_append(headers, "Accept: application/json");
    if (c->host_header)
        headers = curl_slist_append(headers, c->host_header);
    if (body)
        headers = curl_slist_append(headers, ctype);
    if (auth)
        headers = curl_slist_append(headers, auth);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_SHARE, c->share);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "vmsnapfs/" PACKAGE_VERSION);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    if (!stream) {
        uint64_t ms = timeout_ns / NSEC_PER_MSEC;
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) (ms < 1000 ? 1000 : ms > 60000 ? 60000 : ms));
    } else {
        /* a watch may be quiet for a while: bookmarks or the server's end */
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 600L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, s);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    }
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
    }
    if (c->connect_to) {
        connect_to = curl_slist_append(NULL, c->connect_to);
        curl_easy_setopt(h, CURLOPT_CONNECT_TO, connect_to);
    }
    /* a TLS option this libcurl cannot take must not fall back to less:
     * the system's CAs instead of the kubeconfig's, or no client key */
    CURLcode tls = CURLE_OK;
    if (c->cfg.insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (c->cfg.ca_pem) {
        struct curl_blob ca = { c->cfg.ca_pem, strlen(c->cfg.ca_pem), CURL_BLOB_COPY };
        tls = curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca);
    }
    if (cert && key && tls == CURLE_OK) {
        struct curl_blob cb = { cert, strlen(cert), CURL_BLOB_COPY };
        struct curl_blob kb = { key, strlen(key), CURL_BLOB_COPY };
        tls = curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &cb);
        if (tls == CURLE_OK)
            tls = curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &kb);
        curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    }

    CURLcode rc = tls != CURLE_OK ? tls : curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &s->code);
    give_back(c, h);
    for (struct curl_slist *l = headers; l; l = l->next)
        explicit_bzero(l->data, strlen(l->data));      /* the Authorization header's copy */
    curl_slist_free_all(headers);
    curl_slist_free_all(connect_to);
    if (auth)
        explicit_bzero(auth, strlen(auth));
    if (key)
        explicit_bzero(key, strlen(key));
    if (s->fn_result < 0)
        return s->fn_result;
    if (s->too_big)
        return snprintf(why, size, "the answer to %s %s is over %u MiB", method, path,
                        MAX_BODY >> 20), -EIO;
    if (rc != CURLE_OK) {
        if (stream && rc == CURLE_PARTIAL_FILE && s->code)
            return 0;                   /* the server ended the stream */
        *ret_transient = kube_transient_failure(rc, strcmp(method, "GET") == 0);
        return snprintf(why, size, "%s %s: %s", method, path, err[0] ? err : curl_easy_strerror(rc)),
               -EIO;
    }
    return 0;
}

void
kube_response_clear(struct kube_response *r)
{
    free(r->body);
    *r = (struct kube_response) { 0 };
}

int
kube_request(struct kube_client *c, const char *method, const char *path, const char *body,
             const char *content_type, uint64_t timeout_ns, struct kube_response *resp,
             char *why, size_t size)
{
    uint64_t end = now_monotonic_ns() + timeout_ns, pause = 100 * NSEC_PER_MSEC;
    bool refresh = false;
    int r;

    *resp = (struct kube_response) { 0 };
    why[0] = '\0';
    bool get = strcmp(method, "GET") == 0, refreshed = false;
    for (int tries = 1;; tries++) {
        struct sink s = { 0 };
        enum kube_retry retry = KUBE_FINAL;
        bool again = false;
        uint64_t left = end > now_monotonic_ns() ? end - now_monotonic_ns() : 0;
        r = attempt(c, method, path, body, content_type, refresh, false, left, &s, &again,
                    why, size);
        refresh = false;
        if (r >= 0) {
            r = kube_status_errno(s.code, s.buf, s.len, &retry, why, size);
            /* a 5xx after a write may have been applied: only 429 and 503
             * say for sure it was not; a 409 Conflict is final for a write
             * (the same body meets the same state: the caller reads again) */
            if (retry == KUBE_RETRY && !get && s.code != 429 && s.code != 503)
                retry = KUBE_FINAL;
        } else {
            retry = again ? KUBE_RETRY : KUBE_FINAL;
        }
        /* an exec credential may have expired early: one more run */
        if (r == -EACCES && s.code == 401 && c->cfg.exec && !refreshed) {
            refresh = refreshed = true;
            free(s.buf);
            continue;
        }
        if (retry == KUBE_RETRY && now_monotonic_ns() + pause < end) {
            log_debug("%s %s: %s; trying again (%d)", method, path, why, tries);
            free(s.buf);
            sleep_ns(pause);
            pause = pause * 2 > NSEC_PER_SEC ? NSEC_PER_SEC : pause * 2;
            continue;
        }
        resp->code = s.code;
        resp->body = s.buf;
        resp->len = s.len;
        return r;
    }
}

int
kube_stream(struct kube_client *c, const char *path,
            int (*fn)(void *opaque, const char *data, size_t len), void *opaque,
            const bool *stop, char *why, size_t size)
{
    struct sink s = { .fn = fn, .opaque = opaque, .stop = stop };
    enum kube_retry retry;
    bool again;
    int r = attempt(c, "GET", path, NULL, NULL, false, true, 0, &s, &again, why, size);

    if (r >= 0)
        r = kube_status_errno(s.code, s.buf, s.len, &retry, why, size);
    free(s.buf);
    return r;
}
