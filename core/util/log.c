/* core/util/log.c: see log.h. Thread-safe: each line is one write. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char *debug_spec;   /* NULL: none; "all" or "a,b,c" */
static bool use_syslog;

void
log_set_debug(const char *spec)
{
    free(debug_spec);
    debug_spec = spec && *spec ? strdup(spec) : NULL;
}

bool
log_debug_enabled(const char *module)
{
    if (!debug_spec)
        return false;
    if (strcmp(debug_spec, "all") == 0 || strcmp(debug_spec, "1") == 0)
        return true;

    size_t n = strlen(module);
    for (const char *p = debug_spec; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, module, n) == 0)
            return true;
        p += len;
        if (*p == ',')
            p++;
    }
    return false;
}

void
log_to_syslog(void)
{
    openlog("vmsnapfs", LOG_PID, LOG_DAEMON);
    use_syslog = true;
}

static const char *
level_name(int level)
{
    switch (level) {
    case LOG_ERR: return "error";
    case LOG_WARNING: return "warning";
    case LOG_INFO: return "info";
    case LOG_DEBUG: return "debug";
    default: return "notice";
    }
}

size_t
text_escape(char *dst, size_t size, const char *src, const char *also)
{
    size_t n = 0;

    if (size == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *) src; p && *p; p++) {
        bool esc = *p < 0x20 || *p == 0x7f || (also && strchr(also, *p));
        size_t need = esc ? 4 : 1;
        if (n + need >= size)
            break;
        if (esc)
            n += (size_t) snprintf(dst + n, size - n, "\\x%02x", *p);
        else
            dst[n++] = (char) *p;
    }
    dst[n] = '\0';
    return n;
}

int
log_emit(int level, const char *module, int err, const char *fmt, ...)
{
    int saved_errno = errno;
    char raw[2048], msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    /* one line each, whatever a name or a remote message holds */
    text_escape(msg, sizeof msg, raw, NULL);

    if (use_syslog) {
        syslog(level, "[%s]: %s: %s", module, level_name(level), msg);
    } else {
        char line[2200];
        int n = snprintf(line, sizeof line, "vmsnapfs[%s]: %s: %s\n",
                         module, level_name(level), msg);
        if (n > (int) sizeof line - 1)
            n = sizeof line - 1;
        (void) !write(STDERR_FILENO, line, (size_t) n);
    }
    errno = saved_errno;
    return err < 0 ? err : -err;
}

char *
uri_redact(const char *uri)
{
    const char *auth = strstr(uri, "://");
    char *out = strdup(uri);

    if (!out || !auth)
        return out;
    auth += 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = memrchr(auth, '@', alen);
    const char *colon = at ? memchr(auth, ':', (size_t) (at - auth)) : NULL;
    if (!colon)
        return out;
    free(out);
    if (asprintf(&out, "%.*s:***%s", (int) (colon - uri), uri, at) < 0)
        return NULL;
    return out;
}
