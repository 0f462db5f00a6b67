/* core/kubevirt/kube-owner.c: see kube-owner.h. */
#define LOG_MODULE "kubevirt"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kube-objects.h"
#include "kube-owner.h"

/* A process's start time (clock ticks since boot): with its PID it names
 * one process, never a later one that got the same PID. 0 if gone. */
static unsigned long long
process_start(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "re");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');        /* the name may hold spaces */
    unsigned long long start = 0;
    /* fields after the name: state ppid ... starttime is the 20th */
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d "
                           "%*d %*d %*d %*d %llu", &start) != 1)
        start = 0;
    return start;
}

void
kube_owner_init(char *buf, size_t size)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    snprintf(buf, size, "%s/%ld/%llu", host, (long) getpid(), process_start((long) getpid()));
}

bool
kube_owner_gone(const char *self, struct json_object *o)
{
    const char *by = kube_get_str(o, "metadata", "labels", KUBE_MADE_BY_LABEL, (char *) NULL);
    const char *owner = kube_get_str(o, "metadata", "annotations", KUBE_OWNER_ANNOTATION,
                                     (char *) NULL);
    char host[256] = "";
    long pid = 0;
    unsigned long long start = 0;

    if (!by || !owner || sscanf(owner, "%255[^/]/%ld/%llu", host, &pid, &start) != 3)
        return false;
    size_t hl = strcspn(self, "/");
    if (strlen(host) != hl || strncmp(host, self, hl) != 0)
        return false;                   /* another host's: not ours to judge */
    return pid <= 0 || process_start(pid) != start;
}
