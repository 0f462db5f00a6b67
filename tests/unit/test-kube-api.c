/* tests/unit/test-kube-api.c: an API server's answers as vmsnapfs takes
 * them: HTTP status and Status objects to the SPEC's errnos (what is tried
 * again, what means "list again"), and watch streams cut at object
 * boundaries, however the bytes arrive. Bodies are shaped as kube-apiserver
 * writes them (kubevirt-api.md §6.2, §6.3). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <json-c/json.h>

#include "kube-status.h"
#include "kube-watch.h"

static int
status(long code, const char *body, enum kube_retry *retry, char *why, size_t size)
{
    return kube_status_errno(code, body, body ? strlen(body) : 0, retry, why, size);
}

static void
test_status(void **state)
{
    enum kube_retry retry;
    char why[512];
    (void) state;

    assert_int_equal(status(200, "{}", &retry, why, sizeof why), 0);
    assert_int_equal(status(201, NULL, &retry, why, sizeof why), 0);
    assert_int_equal(
        status(404, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":"
                    "\"Failure\",\"message\":\"virtualmachinesnapshots.snapshot.kubevirt.io "
                    "\\\"s1\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"s1\","
                    "\"group\":\"snapshot.kubevirt.io\",\"kind\":\"virtualmachinesnapshots\"},"
                    "\"code\":404}\n", &retry, why, sizeof why), -ENOENT);
    assert_int_equal(retry, KUBE_FINAL);
    assert_string_equal(why, "HTTP 404 NotFound: virtualmachinesnapshots.snapshot.kubevirt.io "
                             "\"s1\" not found");
    assert_int_equal(
        status(409, "{\"kind\":\"Status\",\"status\":\"Failure\",\"reason\":\"AlreadyExists\","
                    "\"message\":\"virtualmachinesnapshots.snapshot.kubevirt.io \\\"s1\\\" "
                    "already exists\",\"code\":409}", &retry, why, sizeof why), -EEXIST);
    assert_int_equal(retry, KUBE_FINAL);
    assert_int_equal(
        status(409, "{\"kind\":\"Status\",\"status\":\"Failure\",\"reason\":\"Conflict\","
                    "\"message\":\"Operation cannot be fulfilled on virtualmachines.kubevirt.io "
                    "\\\"vm1\\\": the object has been modified; please apply your changes to the "
                    "latest version and try again\",\"code\":409}", &retry, why, sizeof why),
        -EAGAIN);
    assert_int_equal(retry, KUBE_RETRY);
    /* the admission webhook's refusal: EINVAL with its message for events */
    assert_int_equal(
        status(422, "{\"kind\":\"Status\",\"status\":\"Failure\",\"reason\":\"Invalid\","
                    "\"message\":\"admission webhook \\\"virtualmachinesnapshot-validator."
                    "snapshot.kubevirt.io\\\" denied the request: VirtualMachine \\\"nope\\\" "
                    "does not exist\",\"code\":422}", &retry, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "HTTP 422 Invalid: admission webhook"));
    assert_int_equal(status(400, "not json", &retry, why, sizeof why), -EINVAL);
    assert_string_equal(why, "HTTP 400");
    assert_int_equal(status(401, "{\"kind\":\"Status\",\"reason\":\"Unauthorized\",\"code\":401}",
                            &retry, why, sizeof why), -EACCES);
    assert_int_equal(status(403, NULL, &retry, why, sizeof why), -EACCES);
    assert_int_equal(status(410, "{\"kind\":\"Status\",\"reason\":\"Expired\",\"code\":410}",
                            &retry, why, sizeof why), -EAGAIN);
    assert_int_equal(retry, KUBE_RELIST);
    for (long c = 500; c <= 504; c++) {
        assert_int_equal(status(c, NULL, &retry, why, sizeof why), -EIO);
        assert_int_equal(retry, KUBE_RETRY);
    }
    assert_int_equal(status(429, NULL, &retry, why, sizeof why), -EIO);
    assert_int_equal(retry, KUBE_RETRY);
    assert_int_equal(status(418, NULL, &retry, why, sizeof why), -EINVAL);
    assert_int_equal(status(301, NULL, &retry, why, sizeof why), -EIO);
    /* a JSON body that is not a Status says nothing */
    assert_int_equal(status(404, "{\"kind\":\"VirtualMachine\",\"message\":\"x\"}", &retry, why,
                            sizeof why), -ENOENT);
    assert_string_equal(why, "HTTP 404");
}

/* ---- watch streams -------------------------------------------------------- */

static const char *stream =
    "{\"type\":\"ADDED\",\"object\":{\"kind\":\"VirtualMachine\",\"metadata\":{\"name\":\"a\","
    "\"resourceVersion\":\"10\",\"annotations\":{\"note\":\"{\\\"not\\\": \\\"an event\\\"}\\n\"}}}}\n"
    "{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"VirtualMachine\",\"metadata\":{\"name\":\"a b\","
    "\"resourceVersion\":\"11\"}}}\n"
    "{\"type\":\"FUTURE\",\"object\":{\"kind\":\"VirtualMachine\"}}\n"
    "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"VirtualMachine\",\"apiVersion\":\"kubevirt.io/v1\","
    "\"metadata\":{\"resourceVersion\":\"12\"}}}\n"
    "{\"type\":\"DELETED\",\"object\":{\"kind\":\"VirtualMachine\",\"metadata\":{\"name\":\"a\","
    "\"resourceVersion\":\"13\"}}}\n"
    "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},"
    "\"status\":\"Failure\",\"message\":\"too old resource version: 1 (12340)\",\"reason\":"
    "\"Expired\",\"code\":410}}\n";

struct seen {
    char log[1024];
    int n;
};

static int
on_event(void *opaque, enum kube_event type, struct json_object *o)
{
    static const char *names[] = { "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR" };
    struct seen *s = opaque;
    struct json_object *meta, *v;
    const char *what = "?";

    if (type == KUBE_ERROR) {
        enum kube_retry retry;
        char why[256];
        int r = kube_status_object_errno(o, &retry, why, sizeof why);
        what = r == -EAGAIN && retry == KUBE_RELIST ? "relist" : "error";
    } else if (json_object_object_get_ex(o, "metadata", &meta) &&
               json_object_object_get_ex(meta, "resourceVersion", &v)) {
        what = json_object_get_string(v);
    }
    snprintf(s->log + strlen(s->log), sizeof s->log - strlen(s->log), "%s%s:%s",
             s->n++ ? " " : "", names[type], what);
    return 0;
}

#define EXPECTED "ADDED:10 MODIFIED:11 BOOKMARK:12 DELETED:13 ERROR:relist"

static void
test_watch_whole(void **state)
{
    struct seen s = { "", 0 };
    struct kube_watch *w = kube_watch_new(on_event, &s);
    (void) state;

    assert_int_equal(kube_watch_feed(w, stream, strlen(stream)), 0);
    assert_string_equal(s.log, EXPECTED);
    kube_watch_free(w);
}

/* cut at every byte: inside strings, escapes, between events */
static void
test_watch_every_cut(void **state)
{
    size_t n = strlen(stream);
    (void) state;

    for (size_t cut = 1; cut < n; cut++) {
        struct seen s = { "", 0 };
        struct kube_watch *w = kube_watch_new(on_event, &s);
        assert_int_equal(kube_watch_feed(w, stream, cut), 0);
        assert_int_equal(kube_watch_feed(w, stream + cut, n - cut), 0);
        assert_string_equal(s.log, EXPECTED);
        kube_watch_free(w);
    }
    /* one byte at a time */
    struct seen s = { "", 0 };
    struct kube_watch *w = kube_watch_new(on_event, &s);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(kube_watch_feed(w, stream + i, 1), 0);
    assert_string_equal(s.log, EXPECTED);
    kube_watch_free(w);
}

static int
stop_at_second(void *opaque, enum kube_event type, struct json_object *o)
{
    int *n = opaque;
    (void) type;
    (void) o;
    return ++*n == 2 ? -ECANCELED : 0;
}

static void
test_watch_bad(void **state)
{
    struct seen s = { "", 0 };
    int n = 0;
    (void) state;

    struct kube_watch *w = kube_watch_new(on_event, &s);
    assert_int_equal(kube_watch_feed(w, "<html>502 Bad Gateway</html>", 28), -EPROTO);
    kube_watch_free(w);
    w = kube_watch_new(on_event, &s);
    assert_int_equal(kube_watch_feed(w, "{\"type\":\"ADDED\"}\n", 17), -EPROTO);   /* no object */
    kube_watch_free(w);
    w = kube_watch_new(on_event, &s);
    assert_int_equal(kube_watch_feed(w, "[1,2]\n", 6), -EPROTO);
    kube_watch_free(w);
    /* nesting past any real object's depth */
    char deep[400];
    memset(deep, '[', sizeof deep);
    w = kube_watch_new(on_event, &s);
    assert_int_equal(kube_watch_feed(w, deep, sizeof deep), -EPROTO);
    kube_watch_free(w);
    assert_int_equal(s.n, 0);
    /* the callback stops the feed */
    w = kube_watch_new(stop_at_second, &n);
    assert_int_equal(kube_watch_feed(w, stream, strlen(stream)), -ECANCELED);
    assert_int_equal(n, 2);
    kube_watch_free(w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_watch_whole),
        cmocka_unit_test(test_watch_every_cut),
        cmocka_unit_test(test_watch_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
