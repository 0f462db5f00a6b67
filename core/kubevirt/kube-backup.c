/* core/kubevirt/kube-backup.c: see kube-backup.h. */
#define LOG_MODULE "kubevirt"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "change-map.h"
#include "cleanup.h"
#include "clock.h"
#include "kube-backup.h"

#define MAX_PAGE (UINT64_C(16) << 20)   /* bytes of one page's answer */
#define MAX_PAGES 1000000

__attribute__((format(printf, 3, 4))) static int
bad(char *why, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int
get_u64(json_object *o, const char *key, uint64_t *ret)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return -EINVAL;
    errno = 0;
    int64_t n = json_object_get_int64(v);
    if (n < 0 || n == INT64_MAX || errno == ERANGE)
        return -EINVAL;
    *ret = (uint64_t) n;
    return 0;
}

int
kube_backup_map_page(const char *text, size_t len, uint64_t at, struct change_map *m,
                     uint64_t *ret_next, char *why, size_t size)
{
    json_tokener *tok = json_tokener_new();
    json_object *root = tok ? json_tokener_parse_ex(tok, text, (int) len) : NULL, *exts, *next;
    int r = 0;

    if (!tok)
        return -ENOMEM;
    if (!root || json_tokener_get_error(tok) != json_tokener_success ||
        !json_object_is_type(root, json_type_object) ||
        !json_object_object_get_ex(root, "extents", &exts) ||
        !json_object_is_type(exts, json_type_array)) {
        r = bad(why, size, "the map is not JSON with \"extents\"");
        goto out;
    }
    for (size_t i = 0; r >= 0 && i < json_object_array_length(exts); i++) {
        json_object *e = json_object_array_get_idx(exts, i);
        uint64_t off, length, type;
        if (!json_object_is_type(e, json_type_object) || get_u64(e, "offset", &off) < 0 ||
            get_u64(e, "length", &length) < 0 || get_u64(e, "type", &type) < 0) {
            r = bad(why, size, "extent %zu of the map lacks a whole offset, length or type", i);
            break;
        }
        if (off != at || length == 0 || length > UINT64_MAX - off) {
            r = bad(why, size, "extent %zu of the map is at %" PRIu64 ", not %" PRIu64
                    " (the extents must follow each other)", i, off, at);
            break;
        }
        if (type > 3) {
            r = bad(why, size, "extent %zu of the map has unknown type %" PRIu64, i, type);
            break;
        }
        m->size = off + length;
        if (type & 1)           /* dirty; dirty,zero: discarded */
            r = change_map_append(m, off, length, type & 2);
        at = off + length;
    }
    if (r < 0)
        goto out;
    m->size = at;
    *ret_next = UINT64_MAX;
    if (json_object_object_get_ex(root, "next_offset", &next) && next) {
        uint64_t n = 0;
        if (get_u64(root, "next_offset", &n) < 0 || n != at) {
            r = bad(why, size, "the map's next_offset is not where its extents end");
            goto out;
        }
        if (json_object_array_length(exts) == 0) {
            r = bad(why, size, "a page of the map has no extents but a next_offset");
            goto out;
        }
        *ret_next = n;
    }
out:
    json_object_put(root);
    json_tokener_free(tok);
    return r;
}

struct body {
    char *data;
    size_t len;
};

static size_t
on_body(char *data, size_t one, size_t n, void *opaque)
{
    struct body *b = opaque;
    size_t add = one * n;
    if (b->len + add > MAX_PAGE)
        return 0;                       /* too big: fail the transfer */
    char *p = realloc(b->data, b->len + add + 1);
    if (!p)
        return 0;
    memcpy(p + b->len, data, add);
    b->data = p;
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

static int
get_page(CURL *h, const char *url, uint64_t offset, struct curl_slist *headers,
         const char *ca_pem, long timeout_s, struct body *b, char *why, size_t size)
{
    _cleanup_free_ char *full = NULL;
    char err[CURL_ERROR_SIZE] = "";
    long code = 0;

    if (asprintf(&full, "%s%soffset=%" PRIu64, url, strchr(url, '?') ? "&" : "?", offset) < 0)
        return -ENOMEM;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    if (ca_pem && *ca_pem) {
        struct curl_blob ca = { (void *) ca_pem, strlen(ca_pem), CURL_BLOB_COPY };
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca);
    }
    CURLcode c = curl_easy_perform(h);
    if (c != CURLE_OK) {
        snprintf(why, size, "the map endpoint: %s", err[0] ? err : curl_easy_strerror(c));
        return -EIO;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    if (code == 401) {
        snprintf(why, size, "the map endpoint refused the backup's token (401)");
        return -EACCES;
    }
    if (code != 200) {
        snprintf(why, size, "the map endpoint answered %ld: %.200s", code,
                 b->data ? b->data : "");
        return code == 503 ? -EAGAIN : -EIO;
    }
    return 0;
}

int
kube_backup_map_fetch(const char *url, const char *ca_pem, const char *token,
                      uint64_t deadline_ns, size_t max_extents, struct change_map **ret,
                      char *why, size_t size)
{
    struct change_map *m = calloc(1, sizeof *m);
    struct curl_slist *headers = NULL;
    char *header = NULL;
    CURL *h = curl_easy_init();
    uint64_t at = 0;
    int r = 0;

    if (!m || !h || asprintf(&header, "x-kubevirt-export-token: %s", token) < 0 ||
        !(headers = curl_slist_append(NULL, header))) {
        r = -ENOMEM;
        goto out;
    }
    m->size = UINT64_MAX;               /* until the pages say */
    for (unsigned pages = 0; r >= 0 && at != UINT64_MAX; pages++) {
        struct body b = { NULL, 0 };
        uint64_t next = UINT64_MAX;
        if (pages == MAX_PAGES) {
            r = bad(why, size, "the map has more than %u pages", MAX_PAGES);
            break;
        }
        uint64_t now = now_monotonic_ns();
        if (now >= deadline_ns) {
            snprintf(why, size, "the map did not come in time (%u pages)", pages);
            r = -ETIMEDOUT;
            break;
        }
        long left = (long) ((deadline_ns - now + NSEC_PER_SEC - 1) / NSEC_PER_SEC);
        m->size = UINT64_MAX;
        r = get_page(h, url, at, headers, ca_pem, left, &b, why, size);
        if (r >= 0)
            r = kube_backup_map_page(b.data ? b.data : "", b.len, at, m, &next, why, size);
        free(b.data);
        if (r >= 0 && m->n > 2 * max_extents)
            change_map_coarsen(m, max_extents);
        if (r >= 0 && next == UINT64_MAX)
            break;
        at = next;
    }
    if (r == -EINVAL)
        r = -EIO;
out:
    if (headers)
        explicit_bzero(headers->data, strlen(headers->data));  /* the list's copy */
    curl_slist_free_all(headers);
    wipe_free(header);
    curl_easy_cleanup(h);
    if (r < 0) {
        change_map_free(m);
        return r;
    }
    *ret = m;
    return 0;
}
