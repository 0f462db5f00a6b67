/* tests/kube/kube-probe.c: the KubeVirt backend's HTTP client from the
 * shell, for tests against the fake API server (kube-client.sh):
 *
 *   kube-probe [-c CONTEXT] METHOD PATH [BODY]   one request
 *   kube-probe [-c CONTEXT] -w PATH N            a watch: its first N events
 *
 * Prints "errno NAME" (0 for none), the HTTP code, and the reason on the
 * first line; then the body (one request) or "TYPE NAME" per event. The
 * kubeconfig is $KUBECONFIG's, as the daemon reads it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "kube-http.h"
#include "kube-objects.h"
#include "kube-watch.h"
#include "kubeconfig.h"

static const char *
errno_name(int r)
{
    switch (-r) {
    case 0: return "0";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EAGAIN: return "EAGAIN";
    case EIO: return "EIO";
    case ECANCELED: return "ECANCELED";
    case EPROTO: return "EPROTO";
    default: return "other";
    }
}

struct events {
    int left;
};

static int
on_event(void *opaque, enum kube_event type, struct json_object *o)
{
    static const char *names[] = { "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR" };
    struct events *e = opaque;
    const char *name = kube_get_str(o, "metadata", "name", (char *) NULL);
    printf("%s %s\n", names[type], name ? name : "-");
    fflush(stdout);
    return --e->left <= 0 ? -ECANCELED : 0;
}

static int
on_data(void *opaque, const char *data, size_t len)
{
    return kube_watch_feed(opaque, data, len);
}

int
main(int argc, char **argv)
{
    const char *context = NULL;
    char why[1024] = "";
    struct kube_config cfg;
    struct kube_client *c = NULL;
    bool watch = false;
    int opt, r;

    while ((opt = getopt(argc, argv, "c:w")) != -1) {
        if (opt == 'c')
            context = optarg;
        else if (opt == 'w')
            watch = true;
        else
            return 2;
    }
    if (argc - optind < 2)
        return fprintf(stderr, "usage: kube-probe [-c CONTEXT] METHOD PATH [BODY] | -w PATH N\n"), 2;
    r = kubeconfig_load(context, &cfg, why, sizeof why);
    if (r >= 0) {
        r = kube_client_new(&cfg, &c, why, sizeof why);
        kube_config_clear(&cfg);
    }
    if (r < 0) {
        printf("errno %s 0 %s\n", errno_name(r), why);
        return 1;
    }
    if (watch) {
        struct events e = { atoi(argv[optind + 1]) };
        struct kube_watch *w = kube_watch_new(on_event, &e);
        if (!w)
            return 1;
        r = kube_stream(c, argv[optind], on_data, w, NULL, why, sizeof why);
        kube_watch_free(w);
        printf("errno %s - %s\n", errno_name(r == -ECANCELED ? 0 : r), why);
    } else {
        struct kube_response resp;
        r = kube_request(c, argv[optind], argv[optind + 1],
                         argc - optind > 2 ? argv[optind + 2] : NULL, NULL,
                         UINT64_C(10) * 1000000000, &resp, why, sizeof why);
        printf("errno %s %ld %s\n%s", errno_name(r), resp.code, why, resp.body ? resp.body : "");
        kube_response_clear(&resp);
    }
    kube_client_free(c);
    return r < 0 && r != -ECANCELED ? 1 : 0;
}
