/* core/util/subprocess.h: running helper programs (qemu-img, qemu-nbd) without a
 * shell, with a deadline, capturing their output. Thread-safe. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Runs argv[0] (searched in PATH) and waits for it, at most timeout_ms.
 * stdout in *ret_out (NUL-terminated, may be NULL if not wanted), at most
 * max_out bytes. 0 if it exited 0; otherwise -EIO, with the first line of
 * its stderr logged under module. */
int spawn_capture(const char *module, char *const argv[], int timeout_ms,
                  size_t max_out, char **ret_out);

/* The same with envp as the program's whole environment (NULL: ours):
 * what must not show in /proc/PID/cmdline goes here. */
int spawn_capture_env(const char *module, char *const argv[], char *const envp[],
                      int timeout_ms, size_t max_out, char **ret_out);

/* Starts argv in the background (stdin, stdout /dev/null; stderr to the
 * log file fd or /dev/null), in its own process group. */
int spawn_background(char *const argv[], int stderr_fd, pid_t *ret_pid);

/* Waits for it to exit by itself. */
void spawn_stop_wait(pid_t pid);

/* SIGTERM, then SIGKILL after grace_ms; reaps it. */
void spawn_stop(pid_t pid, int grace_ms);
