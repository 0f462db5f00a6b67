/* tests/unit/test-sums.c: SHA256SUMS (core/sums.c) through the model in
 * front of a fake backend: the sums are the sha256 of what the views
 * serve, computed once, kept with the snapshot (set_sums) and taken from
 * there by the next model without reading a byte; a reader that reads a
 * disk in order feeds them (the worker reads nothing more); the record is
 * checked before it is trusted; a failing disk fails them with a reason. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "backend.h"
#include "model.h"
#include "sums.h"
#include "volume.h"

#define DISK_SIZE ((3u << 20) + 12345)     /* not a multiple of the chunk */

static struct {
    pthread_mutex_t lock;
    char *record;               /* kept with s1 */
    unsigned set_calls;
    uint64_t bytes_read;        /* by every view */
    int read_error;             /* views fail with it (0: no) */
    unsigned fail_reads;        /* ... this many reads more (0: every one) */
} fake = { .lock = PTHREAD_MUTEX_INITIALIZER };

static unsigned char
byte_at(uint64_t off)
{
    return (unsigned char) ((off * 2654435761u) >> 13);
}

struct mem_view {
    struct volume_view v;
};

static int
mem_pread(struct volume_view *v, void *buf, size_t count, uint64_t off, const char **ret_reason)
{
    pthread_mutex_lock(&fake.lock);
    int err = fake.read_error;
    if (err && fake.fail_reads && --fake.fail_reads == 0)
        fake.read_error = 0;       /* the last one that fails */
    fake.bytes_read += count;
    pthread_mutex_unlock(&fake.lock);
    if (err) {
        *ret_reason = "the fake disk fails";
        return -err;
    }
    for (size_t i = 0; i < count; i++)
        ((unsigned char *) buf)[i] = byte_at(off + i);
    return 0;
}

static int
mem_seek(struct volume_view *v, uint64_t off, int whence, uint64_t *ret)
{
    *ret = off;
    return 0;
}

static void
mem_close(struct volume_view *v)
{
    free(v);
}

static const struct volume_view_ops mem_ops = {
    .name = "mem", .pread = mem_pread, .seek = mem_seek, .close = mem_close,
};

static int
fake_open(const char *source, const struct vmsnapfs_opts *o, const struct backend_events *ev,
          void **ret_h)
{
    *ret_h = &fake;
    return 0;
}

static void
fake_close(void *h)
{
}

static int
fake_list_vms(void *h, const char *ns, char ***ret)
{
    char **v = calloc(2, sizeof *v);
    v[0] = strdup("a");
    *ret = v;
    return 0;
}

static int
fake_snapshot_list(void *h, const struct vm_ref *vm, struct snapshot_info ***ret, size_t *ret_n)
{
    struct snapshot_info **v = calloc(1, sizeof *v);
    struct snapshot_info *s = calloc(1, sizeof *s);
    s->name = strdup("s1");
    s->phase = SNAPSHOT_SUCCEEDED;
    s->created = 1000;
    s->volumes = calloc(1, sizeof *s->volumes);
    s->volumes[0] = (struct volume) { strdup("vda"), strdup("/x"), strdup("raw"), DISK_SIZE, 0 };
    s->n_volumes = 1;
    pthread_mutex_lock(&fake.lock);
    s->sums = fake.record ? strdup(fake.record) : NULL;
    pthread_mutex_unlock(&fake.lock);
    v[0] = s;
    *ret = v;
    *ret_n = 1;
    return 0;
}

static int
fake_volume_open(void *h, const struct vm_ref *vm, const char *snap, const char *vol,
                 struct volume_view **ret)
{
    struct mem_view *m = calloc(1, sizeof *m);
    m->v = (struct volume_view) { .ops = &mem_ops, .size = DISK_SIZE, .allocated = DISK_SIZE };
    *ret = &m->v;
    return 0;
}

static int
fake_set_sums(void *h, const struct vm_ref *vm, const char *snap, const char *record)
{
    pthread_mutex_lock(&fake.lock);
    free(fake.record);
    fake.record = strdup(record);
    fake.set_calls++;
    pthread_mutex_unlock(&fake.lock);
    return 0;
}

static const struct backend_ops fake_ops = {
    .name = "fake",
    .notifies_snapshots = true,
    .open = fake_open,
    .close = fake_close,
    .list_vms = fake_list_vms,
    .snapshot_list = fake_snapshot_list,
    .volume_open = fake_volume_open,
    .snapshot_set_sums = fake_set_sums,
};

/* the sha256 of the fake disk, as sha256sum prints it */
static void
expected_hex(char hex[65])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char md[32], buf[4096];
    unsigned n;
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    for (uint64_t off = 0; off < DISK_SIZE; off += sizeof buf) {
        size_t len = DISK_SIZE - off < sizeof buf ? DISK_SIZE - off : sizeof buf;
        for (size_t i = 0; i < len; i++)
            buf[i] = byte_at(off + i);
        EVP_DigestUpdate(c, buf, len);
    }
    EVP_DigestFinal_ex(c, md, &n);
    EVP_MD_CTX_free(c);
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
}

/* sums_wait's answer, waited for */
struct answer {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int r;
    char text[512];
};

static void
on_done(void *opaque, int r, const char *text, size_t len)
{
    struct answer *a = opaque;
    pthread_mutex_lock(&a->lock);
    a->r = r;
    snprintf(a->text, sizeof a->text, "%.*s", (int) len, text ? text : "");
    a->done = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

static int
wait_sums(struct model *m, char *text, size_t size)
{
    struct answer a = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, "" };
    assert_int_equal(sums_wait(model_sums(m), "", "a", "s1", on_done, &a), 0);
    pthread_mutex_lock(&a.lock);
    while (!a.done)
        pthread_cond_wait(&a.cond, &a.lock);
    pthread_mutex_unlock(&a.lock);
    snprintf(text, size, "%s", a.text);
    return a.r;
}

static struct model *
open_model(void)
{
    struct vmsnapfs_opts o;
    struct model *m = NULL;
    opts_init(&o);
    assert_int_equal(model_open_ops(&fake_ops, "fake://", &o, &m), 0);
    opts_clear(&o);
    assert_non_null(model_sums(m));
    return m;
}

static void
reset(void)
{
    pthread_mutex_lock(&fake.lock);
    free(fake.record);
    fake.record = NULL;
    fake.set_calls = 0;
    fake.bytes_read = 0;
    fake.read_error = 0;
    fake.fail_reads = 0;
    pthread_mutex_unlock(&fake.lock);
}

static void
test_computed_once_and_kept(void **state)
{
    char hex[65], want[200], text[512];
    reset();
    expected_hex(hex);
    snprintf(want, sizeof want, "%s  volumes/vda.img\n", hex);

    struct model *m = open_model();
    assert_int_equal(sums_size(model_sums(m), "", "a", "s1"), (int64_t) strlen(want));
    assert_int_equal(wait_sums(m, text, sizeof text), 0);
    assert_string_equal(text, want);
    /* kept with the snapshot (once), each byte read once */
    for (int i = 0; i < 200 && fake.set_calls == 0; i++)
        usleep(10 * 1000);
    assert_int_equal(fake.set_calls, 1);
    assert_int_equal(fake.bytes_read, DISK_SIZE);
    struct sums_status st;
    assert_int_equal(sums_status(model_sums(m), "", "a", "s1", &st), 0);
    assert_int_equal(st.state, SUMS_STATE_DONE);
    assert_true(st.stored);
    assert_int_equal(st.done, DISK_SIZE);
    model_close(m);

    /* the next model takes them as kept: not a byte read, nothing written */
    fake.bytes_read = 0;
    m = open_model();
    assert_int_equal(wait_sums(m, text, sizeof text), 0);
    assert_string_equal(text, want);
    assert_int_equal(fake.bytes_read, 0);
    assert_int_equal(fake.set_calls, 1);
    model_close(m);
}

static void
test_record_checked(void **state)
{
    char text[512], hex[65];
    reset();
    expected_hex(hex);
    /* a record that is not one: computed, not trusted */
    fake.record = strdup("{\"volumes\":{\"vda\":\"not a hash\"}}");
    struct model *m = open_model();
    assert_int_equal(wait_sums(m, text, sizeof text), 0);
    assert_memory_equal(text, hex, 64);
    assert_int_equal(fake.bytes_read, DISK_SIZE);
    model_close(m);
    /* the parser itself */
    char out[65];
    assert_int_equal(sums_record_parse("{\"volumes\":{\"vda\":\"" "0123456789abcdef0123456789abcdef"
                                       "0123456789abcdef0123456789abcdef\"}}", "vda", false,
                                       NULL, out), 0);
    assert_int_equal(sums_record_parse("[1]", "vda", false, NULL, out), -ENOENT);
    assert_int_equal(sums_record_parse("{\"volumes\":{\"vda\":7}}", "vda", false, NULL, out),
                     -ENOENT);
    /* changes count only for the base they were computed against */
    const char *ch = "{\"volumes\":{},\"changes\":{\"base\":\"s0\",\"files\":{\"vda\":\""
                     "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}}}";
    assert_int_equal(sums_record_parse(ch, "vda", true, "s0", out), 0);
    assert_int_equal(sums_record_parse(ch, "vda", true, "s9", out), -ENOENT);
    assert_int_equal(sums_record_parse(ch, "vda", true, NULL, out), -ENOENT);
}

/* a reader copying the disk in order: its reads are the sums' */
static void
test_reader_feeds(void **state)
{
    char text[512], hex[65];
    reset();
    expected_hex(hex);
    struct model *m = open_model();
    struct volume_view *v = NULL;
    assert_int_equal(model_volume_open(m, "", "a", "s1", "vda", &v), 0);
    static char buf[1 << 16];
    const char *reason = NULL;
    for (uint64_t off = 0; off < DISK_SIZE; off += sizeof buf) {
        size_t n = DISK_SIZE - off < sizeof buf ? DISK_SIZE - off : sizeof buf;
        assert_int_equal(volume_view_pread(v, buf, n, off, &reason), 0);
    }
    volume_view_close(v);
    assert_int_equal(wait_sums(m, text, sizeof text), 0);
    assert_memory_equal(text, hex, 64);
    /* the worker may have started on the first chunk before the reader
     * fed it, never more */
    assert_true(fake.bytes_read <= DISK_SIZE + (1u << 20));
    model_close(m);
}

static void
test_failure_has_reason(void **state)
{
    char text[512];
    reset();
    fake.read_error = EIO;
    struct model *m = open_model();
    assert_int_equal(wait_sums(m, text, sizeof text), -EIO);
    struct sums_status st;
    assert_int_equal(sums_status(model_sums(m), "", "a", "s1", &st), 0);
    assert_int_equal(st.state, SUMS_STATE_FAILED);
    assert_non_null(strstr(st.error, "the fake disk fails"));
    assert_int_equal(fake.set_calls, 0);
    model_close(m);
    fake.read_error = 0;
}

/* a disk that fails once (a backend restarting) is read again later */
static void
test_transient_failure(void **state)
{
    char text[512], hex[65];
    reset();
    expected_hex(hex);
    fake.read_error = EIO;
    fake.fail_reads = 1;
    struct model *m = open_model();
    assert_int_equal(wait_sums(m, text, sizeof text), 0);
    assert_memory_equal(text, hex, 64);
    model_close(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_computed_once_and_kept),
        cmocka_unit_test(test_record_checked),
        cmocka_unit_test(test_reader_feeds),
        cmocka_unit_test(test_failure_has_reason),
        cmocka_unit_test(test_transient_failure),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    reset();
    return r;
}
