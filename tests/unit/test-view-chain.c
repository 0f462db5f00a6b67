/* tests/unit/test-view-chain.c: the chain view's segments (where a range
 * of the disk lies in the layer files, which the export path splices) hold
 * exactly what pread of the view returns, in order and complete; ranges
 * that are not wholly in files are refused (-EAGAIN), and a layer changed
 * under the view is refused (-EIO). Images are made with qemu-img. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "change-map.h"
#include "volume.h"

static char dir[256];
static bool have_qemu;

static char *
at(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
    return buf[i];
}

__attribute__((format(printf, 1, 2))) static void
sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    assert_int_equal(system(cmd), 0);
}

static int
setup(void **state)
{
    (void) state;
    snprintf(dir, sizeof dir, "/tmp/test-view-chain-XXXXXX");
    assert_non_null(mkdtemp(dir));
    setenv("VMSNAPFS_STATE_DIR", at("state"), 1);
    have_qemu = system("qemu-img --version >/dev/null 2>&1 && "
                       "qemu-io --version >/dev/null 2>&1") == 0;
    if (!have_qemu)
        return 0;
    /* base: raw, 8 MiB and 100 bytes (a partial last sector), a pattern
     * all over; mid: qcow2 clusters written at 1 MiB and 3 MiB; top: a
     * zero write over 2 MiB, data at 5 MiB */
    sh("cd '%s' && head -c 8388708 /dev/urandom >base.raw && "
       "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 && "
       "qemu-io -f qcow2 -c 'write -P 0x11 1M 64k' -c 'write -P 0x22 3M 192k' mid.qcow2 >/dev/null && "
       "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && "
       "qemu-io -f qcow2 -c 'write -z 2M 128k' -c 'write -P 0x33 5M 64k' top.qcow2 >/dev/null",
       dir);
    /* changes: pbase.raw <- p.qcow2 (the base snapshot's layer) <-
     * l1.qcow2 <- s.qcow2; l1 and s write data, zeros, a discard and
     * over each other */
    sh("cd '%s' && head -c 8388608 /dev/urandom >pbase.raw && "
       "qemu-img create -q -f qcow2 -b pbase.raw -F raw p.qcow2 && "
       "qemu-io -f qcow2 -c 'write -P 0x44 0 64k' p.qcow2 >/dev/null && "
       "qemu-img create -q -f qcow2 -b p.qcow2 -F qcow2 l1.qcow2 && "
       "qemu-io -f qcow2 -c 'write -P 0x55 1M 100k' -c 'write -z 3M 64k' "
       "-c 'discard 5M 128k' -c 'write -P 0x56 6M 64k' l1.qcow2 >/dev/null && "
       "qemu-img create -q -f qcow2 -b l1.qcow2 -F qcow2 s.qcow2 && "
       "qemu-io -f qcow2 -c 'write -P 0x66 1M 4k' -c 'write -P 0x67 7M 64k' "
       "-c 'write -P 0 6M 64k' s.qcow2 >/dev/null && "
       "qemu-img convert -O raw p.qcow2 p.raw && qemu-img convert -O raw s.qcow2 s.raw",
       dir);
    return 0;
}

static int
teardown(void **state)
{
    char cmd[600];
    (void) state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* What the segments describe, read from their files. */
static void
read_segments(const struct volume_segment *seg, int n, char *buf)
{
    for (int i = 0; i < n; i++) {
        if (seg[i].fd < 0)
            memset(buf, 0, seg[i].length);
        else
            assert_int_equal(pread(seg[i].fd, buf, seg[i].length, (off_t) seg[i].offset),
                             (ssize_t) seg[i].length);
        buf += seg[i].length;
    }
}

static void
test_segments_match_pread(void **state)
{
    (void) state;
    if (!have_qemu)
        skip();
    struct volume_view *v = NULL;
    const char *reason = NULL;
    assert_int_equal(volume_view_open_chain(at("top.qcow2"), "qcow2", NULL, NULL, NULL, &v), 0);
    assert_int_equal(v->size, 8389120);     /* QEMU rounds up to a sector */

    static char want[1 << 20], got[1 << 20];
    struct volume_segment seg[64];
    /* across layer boundaries, zeros, odd offsets and lengths */
    const struct { uint64_t off; size_t len; } cases[] = {
        { 0, 1 << 20 }, { (1 << 20) - 4096, 8192 }, { (1 << 20) + 1, 65535 },
        { (2 << 20) - 100, 131072 + 200 }, { 3 << 20, 1 << 20 }, { (5 << 20) - 7, 70000 },
        { 123457, 999999 }, { (8 << 20) - 4096, 4096 },
        /* base's partial last sector, and past it (zeros) */
        { 8388608, 512 }, { (8 << 20) - 4096, 4608 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint64_t off = cases[c].off;
        size_t len = cases[c].len;
        assert_int_equal(volume_view_pread(v, want, len, off, &reason), 0);
        int n = volume_view_segments(v, len, off, seg, 64, &reason);
        assert_true(n > 0);
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            assert_true(seg[i].length > 0);
            total += seg[i].length;
            /* neighbours that could be one are one */
            if (i > 0 && seg[i].fd == seg[i - 1].fd)
                assert_true(seg[i].fd >= 0 &&
                            seg[i - 1].offset + seg[i - 1].length != seg[i].offset);
        }
        assert_int_equal(total, len);
        read_segments(seg, n, got);
        assert_memory_equal(got, want, len);
    }
    /* the zero write of top is a zero segment, not base's data */
    int n = volume_view_segments(v, 65536, 2 << 20, seg, 64, &reason);
    assert_int_equal(n, 1);
    assert_int_equal(seg[0].fd, -1);
    /* too many segments for the room given: refused, not cut */
    assert_int_equal(volume_view_segments(v, 4 << 20, 0, seg, 1, &reason), -EAGAIN);
    /* past the end of base's file: zeros */
    assert_int_equal(volume_view_pread(v, want, 512, 8388608, &reason), 0);
    for (int i = 100; i < 512; i++)
        assert_int_equal(want[i], 0);
    volume_view_close(v);
}

static void
test_segments_refuse_changed_layer(void **state)
{
    (void) state;
    if (!have_qemu)
        skip();
    struct volume_view *v = NULL;
    struct volume_segment seg[64];
    const char *reason = NULL;
    assert_int_equal(volume_view_open_chain(at("top.qcow2"), "qcow2", NULL, NULL, NULL, &v), 0);
    assert_true(volume_view_segments(v, 65536, 0, seg, 64, &reason) > 0);
    sh("touch -d '+1 minute' '%s'", at("mid.qcow2"));
    assert_int_equal(volume_view_segments(v, 65536, 0, seg, 64, &reason), -EIO);
    assert_non_null(reason);
    /* and it stays so, as the after-send check the export path makes */
    assert_int_equal(volume_view_check(v, &reason), -EIO);
    volume_view_close(v);
}

static char *
slurp(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t) n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t) n, f), (size_t) n);
    fclose(f);
    *ret_len = (size_t) n;
    return buf;
}

/* The base's export with the changes applied as vmsnap-apply does is the
 * newer export; unchanged ranges are holes of the view; every changed
 * byte is in the map, whose ranges are whole clusters. */
static void
test_changes(void **state)
{
    (void) state;
    if (!have_qemu)
        skip();
    struct volume_view *v = NULL;
    struct change_map *m = NULL;
    size_t plen, slen;
    char *img = slurp(at("p.raw"), &plen), *want = slurp(at("s.raw"), &slen);
    const char *reason = NULL;
    assert_int_equal(plen, slen);

    assert_int_equal(volume_view_open_changes(at("s.qcow2"), "qcow2", at("p.qcow2"), NULL, NULL,
                                              &v, &m), 0);
    assert_non_null(m);
    assert_null(m->base);
    assert_int_equal(m->size, slen);
    assert_int_equal(v->size, slen);
    char *buf = malloc(slen);
    assert_non_null(buf);
    assert_int_equal(volume_view_pread(v, buf, slen, 0, &reason), 0);
    uint64_t data = 0, at_ = 0;
    for (size_t i = 0; i < m->n; i++) {
        const struct change_extent *e = &m->v[i];
        assert_true(e->offset % 65536 == 0 && e->length % 65536 == 0);
        /* outside the changes the view is a hole that reads as zeros */
        for (uint64_t o = at_; o < e->offset; o++)
            assert_int_equal(buf[o], 0);
        if (e->zero)
            memset(img + e->offset, 0, e->length);
        else
            memcpy(img + e->offset, buf + e->offset, e->length);
        data += e->zero ? 0 : e->length;
        at_ = e->offset + e->length;
        uint64_t pos;
        assert_int_equal(volume_view_seek(v, e->offset, e->zero ? SEEK_HOLE : SEEK_DATA, &pos), 0);
        assert_true(pos == e->offset);
    }
    assert_memory_equal(img, want, slen);
    assert_true(v->allocated == data);
    /* what was written: data at 1M (l1, then s over it), zeros at 3M, the
     * discard at 5M, 6M written twice (the last time zeros), 7M */
    const uint64_t changed[] = { 1 << 20, 3 << 20, 5 << 20, 6 << 20, 7 << 20 };
    for (size_t c = 0; c < sizeof changed / sizeof changed[0]; c++) {
        bool found = false;
        for (size_t i = 0; i < m->n; i++)
            found |= m->v[i].offset <= changed[c] && changed[c] < m->v[i].offset + m->v[i].length;
        assert_true(found);
    }
    /* the base snapshot's own write (0) is not a change */
    assert_true(m->n == 0 || m->v[0].offset > 0);
    free(buf);
    change_map_free(m);
    volume_view_close(v);

    /* a base that is not below the top */
    assert_int_equal(volume_view_open_changes(at("s.qcow2"), "qcow2", at("s.qcow2"), NULL, NULL,
                                              &v, &m), -ENOENT);
    assert_null(m);
    assert_int_equal(volume_view_open_changes(at("s.qcow2"), "qcow2", at("top.qcow2"), NULL, NULL,
                                              &v, &m), -ENOENT);
    /* the base itself as the changes' base of its child: l1's changes */
    assert_int_equal(volume_view_open_changes(at("l1.qcow2"), "qcow2", at("pbase.raw"), NULL, NULL,
                                              &v, &m), 0);
    assert_true(m->n > 0 && m->v[0].offset == 0);     /* p's write is a change now */
    change_map_free(m);
    volume_view_close(v);
    free(img);
    free(want);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segments_match_pread),
        cmocka_unit_test(test_segments_refuse_changed_layer),
        cmocka_unit_test(test_changes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
