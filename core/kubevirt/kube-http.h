/* core/kubevirt/kube-http.h: requests to a Kubernetes API server (libcurl
 * built on OpenSSL).
 *
 * - TLS verified against the kubeconfig's CAs (from memory) or the
 *   system's, by the name tls-server-name gives where it is set; not at all
 *   only with insecure-skip-tls-verify. HTTP/2 where the server offers it.
 * - Credentials from memory: a bearer token, a token file (read again when
 *   it changes), a client certificate and key (never written to a file), or
 *   an exec plugin's ExecCredential (cached until its expirationTimestamp,
 *   run again on a 401).
 * - Connections and TLS sessions are shared by all requests of a client.
 * - Answers the API says to try again (409 Conflict, 429, 5xx) and failed
 *   connections are retried until the request's deadline.
 *
 * Thread model: a client serves any number of threads at once.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kube-status.h"
#include "kubeconfig.h"

struct kube_client;

/* cfg is copied. -EINVAL (why) for a config it cannot use. */
int kube_client_new(const struct kube_config *cfg, struct kube_client **ret, char *why,
                    size_t size);
void kube_client_free(struct kube_client *c);
/* The server's URL (for messages: it holds no credential). */
const char *kube_client_server(const struct kube_client *c);

struct kube_response {
    long code;              /* HTTP status, 0 if none came */
    char *body;             /* NUL-terminated, may be empty; free() it */
    size_t len;
};

/* One request: method, a path with its query ("/apis/...?..."), a body
 * (NULL for none) of content_type (NULL: application/json). Tries again
 * what may be tried again until timeout_ns has passed. Returns the SPEC's
 * errno for the answer (kube_status_errno(); -EIO for a connection that
 * failed), and the answer in *resp in every case (body NULL if none). */
int kube_request(struct kube_client *c, const char *method, const char *path,
                 const char *body, const char *content_type, uint64_t timeout_ns,
                 struct kube_response *resp, char *why, size_t size);
void kube_response_clear(struct kube_response *r);

/* Is a failed connection (a CURLcode) worth another try: for any request
 * failures before it was sent, for an idempotent one (GET) also after. */
bool kube_transient_failure(int curl_code, bool idempotent);

/* A GET whose body streams (a watch): fn gets each piece as it comes,
 * until the server ends the body or fn returns < 0 (then that value is
 * returned), or *stop becomes true (looked at about once a second, even
 * while nothing comes: -ECANCELED). A non-2xx answer is returned as
 * kube_request() does, its body not passed to fn. No retries: the caller
 * lists again and watches anew. */
int kube_stream(struct kube_client *c, const char *path,
                int (*fn)(void *opaque, const char *data, size_t len), void *opaque,
                const bool *stop, char *why, size_t size);
