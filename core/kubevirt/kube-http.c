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

#define MAX_BODY (256u << 20)
#define EXEC_TIMEOUT_MS 60000
#define CONNECT_TIMEOUT_S 10L

struct kube_client {
    struct kube_config cfg;
    char *base;             /* the URL requests go to (tls-server-name's host) */
    char *connect_to;       /* "NAME:PORT:HOST:PORT" when tls-server-name is set */
    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

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

static void
wipe_free(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
    free(s);
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
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_locks[i], NULL);
    c->cfg.context = dup_or_null(cfg->context);
    c->cfg.server = dup_or_null(cfg->server);
    c->cfg.ca_pem = dup_or_null(cfg->ca_pem);
    c->cfg.insecure = cfg->insecure;
    c->cfg.tls_server_name = dup_or_null(cfg->tls_server_name);
    c->cfg.namespace = dup_or_null(cfg->namespace);
    c->cfg.token = dup_or_null(cfg->token);
    c->cfg.token_file = dup_or_null(cfg->token_file);
    c->cfg.cert_pem = dup_or_null(cfg->cert_pem);
    c->cfg.key_pem = dup_or_null(cfg->key_pem);
    if (cfg->exec) {
        struct kube_exec *e = calloc(1, sizeof *e);
        size_t na = 0, ne = 0;
        while (cfg->exec->args && cfg->exec->args[na])
            na++;
        while (cfg->exec->env && cfg->exec->env[ne])
            ne++;
        if (e) {
            e->api_version = dup_or_null(cfg->exec->api_version);
            e->command = dup_or_null(cfg->exec->command);
            e->args = calloc(na + 1, sizeof *e->args);
            e->env = calloc(ne + 1, sizeof *e->env);
            for (size_t i = 0; e->args && i < na; i++)
                e->args[i] = strdup(cfg->exec->args[i]);
            for (size_t i = 0; e->env && i < ne; i++)
                e->env[i] = strdup(cfg->exec->env[i]);
        }
        c->cfg.exec = e;
    }
    r = set_base(c, why, size);
    if (r >= 0 && !(c->share = curl_share_init()))
        r = -ENOMEM;
    if (r >= 0) {
        curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
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
    if (c->share)
        curl_share_cleanup(c->share);
    kube_config_clear(&c->cfg);
    free(c->base);
    free(c->connect_to);
    wipe_free(c->token);
    free(c->exec_cert);
    wipe_free(c->exec_key);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_locks[i]);
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
    _cleanup_free_ char **argv = calloc(na + ne + 4, sizeof *argv);
    size_t k = 0;
    if (!argv)
        return -ENOMEM;
    argv[k++] = (char *) "env";
    argv[k++] = info;
    for (size_t i = 0; i < ne; i++)
        argv[k++] = e->env[i];
    argv[k++] = e->command;
    for (size_t i = 0; i < na; i++)
        argv[k++] = e->args[i];
    argv[k] = NULL;

    _cleanup_free_ char *out = NULL;
    int r = spawn_capture(LOG_MODULE, argv, EXEC_TIMEOUT_MS, 1 << 20, &out);
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
};

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

/* One attempt. 0 with *code set, or -EIO (a connection that failed, why). */
static int
attempt(struct kube_client *c, const char *method, const char *path, const char *body,
        const char *content_type, bool refresh, bool stream, struct sink *s, char *why,
        size_t size)
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
    CURL *h = curl_easy_init();
    if (!h)
        return -ENOMEM;
    s->h = h;
    headers = curl_slist_append(headers, "Accept: application/json");
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
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    } else {
        /* a watch may be quiet for a while: bookmarks or the server's end */
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 600L);
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
    if (c->cfg.insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (c->cfg.ca_pem) {
        struct curl_blob ca = { c->cfg.ca_pem, strlen(c->cfg.ca_pem), CURL_BLOB_COPY };
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca);
    }
    if (cert && key) {
        struct curl_blob cb = { cert, strlen(cert), CURL_BLOB_COPY };
        struct curl_blob kb = { key, strlen(key), CURL_BLOB_COPY };
        curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &cb);
        curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &kb);
        curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    }

    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &s->code);
    curl_easy_cleanup(h);
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
    for (int tries = 1;; tries++) {
        struct sink s = { 0 };
        enum kube_retry retry = KUBE_FINAL;
        r = attempt(c, method, path, body, content_type, refresh, false, &s, why, size);
        if (r >= 0)
            r = kube_status_errno(s.code, s.buf, s.len, &retry, why, size);
        else
            retry = r == -EIO ? KUBE_RETRY : KUBE_FINAL;
        /* an exec credential may have expired early: one more run */
        if (r == -EACCES && s.code == 401 && c->cfg.exec && !refresh) {
            refresh = true;
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
            int (*fn)(void *opaque, const char *data, size_t len), void *opaque, char *why,
            size_t size)
{
    struct sink s = { .fn = fn, .opaque = opaque };
    enum kube_retry retry;
    int r = attempt(c, "GET", path, NULL, NULL, false, true, &s, why, size);

    if (r >= 0)
        r = kube_status_errno(s.code, s.buf, s.len, &retry, why, size);
    free(s.buf);
    return r;
}
