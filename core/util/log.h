/* core/util/log.h: one-line, prefixed logging: "vmsnapfs[module]: level: text".
 *
 * Every .c file that logs defines LOG_MODULE before including this header.
 * log_emit() returns -|err| so that "return log_error_errno(r, ...)" works.
 * Lines go to stderr, or to syslog once log_to_syslog() was called (daemon
 * in the background). Never pass credentials to these functions.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

/* Copies src to dst (size bytes, always terminated) with control characters
 * and those in also (may be NULL) written as \xNN, so that a name cannot
 * forge lines or fields; returns the length written. */
size_t text_escape(char *dst, size_t size, const char *src, const char *also);

/* A copy of a SOURCE URI fit to show: a password in it ("user:pw@host")
 * replaced by "***". NULL only when out of memory. */
char *uri_redact(const char *uri);

int log_emit(int level, const char *module, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "all", or a comma-separated list of modules ("inode,libvirt"). */
void log_set_debug(const char *spec);
bool log_debug_enabled(const char *module);
void log_to_syslog(void);

#define log_error_errno(err, ...) log_emit(LOG_ERR, LOG_MODULE, (err), __VA_ARGS__)
#define log_error(...) log_emit(LOG_ERR, LOG_MODULE, 0, __VA_ARGS__)
#define log_warning(...) log_emit(LOG_WARNING, LOG_MODULE, 0, __VA_ARGS__)
#define log_info(...) log_emit(LOG_INFO, LOG_MODULE, 0, __VA_ARGS__)
#define log_debug(...)                                                         \
    do {                                                                       \
        if (log_debug_enabled(LOG_MODULE))                                     \
            log_emit(LOG_DEBUG, LOG_MODULE, 0, __VA_ARGS__);                   \
    } while (0)
