/* tests/unit/test-layers.c: qcow2 backing names read from the header,
 * chains, the graph of who builds on whom, and reclaiming only files that
 * vmsnapfs made and nothing uses. Images are written byte by byte here
 * (a qcow2 header is 20 bytes that matter for this). */
#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "layers.h"

static char dir[256];

static char *
at(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
    return buf[i];
}

/* A qcow2 header naming backing (or none), padded to 1 KiB. */
static void
make_qcow2(const char *path, const char *backing)
{
    unsigned char img[1024] = { 0 };
    uint32_t magic = htobe32(0x514649fb), version = htobe32(3);
    uint64_t off = htobe64(backing ? 512 : 0);
    uint32_t len = htobe32(backing ? (uint32_t) strlen(backing) : 0);
    memcpy(img, &magic, 4);
    memcpy(img + 4, &version, 4);
    memcpy(img + 8, &off, 8);
    memcpy(img + 16, &len, 4);
    if (backing)
        memcpy(img + 512, backing, strlen(backing));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(img, 1, sizeof img, f), sizeof img);
    fclose(f);
}

static void
make_raw(const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("just some bytes of a raw disk image", f);
    fclose(f);
}

static int
setup(void **state)
{
    (void) state;
    snprintf(dir, sizeof dir, "/tmp/test-layers-XXXXXX");
    assert_non_null(mkdtemp(dir));
    setenv("VMSNAPFS_STATE_DIR", at("state"), 1);
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

static void
test_backing(void **state)
{
    char *b = NULL;
    (void) state;

    make_raw(at("base.raw"));
    make_qcow2(at("mid.qcow2"), "base.raw");            /* relative */
    make_qcow2(at("top.qcow2"), at("mid.qcow2"));       /* absolute */
    make_qcow2(at("alone.qcow2"), NULL);

    assert_int_equal(layer_backing(at("base.raw"), &b), 0);
    assert_null(b);
    assert_int_equal(layer_backing(at("alone.qcow2"), &b), 0);
    assert_null(b);
    assert_int_equal(layer_backing(at("mid.qcow2"), &b), 0);
    assert_string_equal(b, at("base.raw"));
    free(b);
    assert_int_equal(layer_backing(at("top.qcow2"), &b), 0);
    assert_string_equal(b, at("mid.qcow2"));
    free(b);
    assert_int_equal(layer_backing(at("nothing.qcow2"), &b), -ENOENT);

    /* protocol names are returned as written, not followed */
    make_qcow2(at("net.qcow2"), "nbd://server/export");
    assert_int_equal(layer_backing(at("net.qcow2"), &b), 0);
    assert_string_equal(b, "nbd://server/export");
    free(b);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    assert_int_equal(system(cmd), 0);
}

/* usage from the files: the virtual size, and an upper bound of the data
 * that qemu-img map never exceeds; only named formats are followed */
static void
test_chain_usage(void **state)
{
    uint64_t size = 0, alloc = 0;
    (void) state;

    if (system("qemu-img --version >/dev/null 2>&1") != 0)
        skip();
    sh("qemu-img create -q -f raw '%s' 64M && "
       "dd if=/dev/urandom of='%s' bs=1M count=1 seek=3 conv=notrunc status=none",
       at("u-base.raw"), at("u-base.raw"));
    sh("qemu-img create -q -f qcow2 -b '%s' -F raw '%s'", at("u-base.raw"), at("u-mid.qcow2"));
    sh("qemu-io -f qcow2 -c 'write -P 7 8M 2M' '%s' >/dev/null", at("u-mid.qcow2"));
    sh("qemu-img create -q -f qcow2 -b '%s' -F qcow2 '%s'", at("u-mid.qcow2"), at("u-top.qcow2"));

    assert_int_equal(layer_chain_usage(at("u-top.qcow2"), "qcow2", &size, &alloc), 0);
    assert_int_equal(size, 64 << 20);
    /* 3 MiB of data, plus qcow2 metadata; far from the 64 MiB */
    assert_true(alloc >= 3 << 20);
    assert_true(alloc < 8 << 20);

    /* the snapshot's data under an overlay: the chain without the top */
    uint64_t below = 0;
    assert_int_equal(layer_backing_usage(at("u-top.qcow2"), "qcow2", &size, &below), 0);
    assert_int_equal(size, 64 << 20);
    assert_true(below >= 3 << 20 && below <= alloc);
    assert_int_equal(layer_backing_usage(at("u-base.raw"), "raw", &size, &below), -ENOTSUP);

    /* a raw disk whose guest wrote a qcow2 header: not followed */
    make_qcow2(at("u-fake.raw"), at("u-base.raw"));
    assert_int_equal(layer_chain_usage(at("u-fake.raw"), "raw", &size, &alloc), 0);
    assert_int_equal(size, 1024);
    assert_true(alloc <= 1024);
    /* a qcow2 header that names no backing format: qemu-img must say */
    make_qcow2(at("u-noformat.qcow2"), at("u-base.raw"));
    assert_int_equal(layer_chain_usage(at("u-noformat.qcow2"), "qcow2", &size, &alloc),
                     -ENOTSUP);
    /* other formats: qemu-img must say */
    assert_int_equal(layer_chain_usage(at("u-base.raw"), "vmdk", &size, &alloc), -ENOTSUP);
}

static void
free_strv(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

static void
test_chain(void **state)
{
    char **c = NULL;
    (void) state;

    make_raw(at("base.raw"));
    make_qcow2(at("mid.qcow2"), "base.raw");
    make_qcow2(at("top.qcow2"), at("mid.qcow2"));
    assert_int_equal(layer_chain(at("top.qcow2"), &c), 0);
    assert_string_equal(c[0], at("top.qcow2"));
    assert_string_equal(c[1], at("mid.qcow2"));
    assert_string_equal(c[2], at("base.raw"));
    assert_null(c[3]);
    free_strv(c);

    /* a missing backing file: still listed, and said */
    make_qcow2(at("orphan.qcow2"), at("gone.raw"));
    assert_int_equal(layer_chain(at("orphan.qcow2"), &c), -ENOENT);
    assert_string_equal(c[0], at("orphan.qcow2"));
    assert_string_equal(c[1], at("gone.raw"));
    assert_null(c[2]);
    free_strv(c);

    /* a loop does not hang */
    make_qcow2(at("a.qcow2"), at("b.qcow2"));
    make_qcow2(at("b.qcow2"), at("a.qcow2"));
    assert_int_equal(layer_chain(at("a.qcow2"), &c), -ELOOP);
    assert_null(c[2]);
    free_strv(c);

    /* canonical: a path through ".." names the same file */
    char odd[600];
    snprintf(odd, sizeof odd, "%s/../%s/top.qcow2", dir, strrchr(dir, '/') + 1);
    assert_int_equal(layer_chain(odd, &c), 0);
    assert_string_equal(c[0], at("top.qcow2"));
    free_strv(c);
}

static void
test_refs(void **state)
{
    struct layer_refs *g = layer_refs_new();
    const char *one = NULL;
    (void) state;

    char *vm[] = { "/i/restored", "/i/base", NULL };
    char *snap[] = { "/i/ov", "/i/base", NULL };
    char *clone[] = { "/i/clone", "/i/ov", "/i/base", NULL };
    assert_non_null(g);
    assert_int_equal(layer_refs_add(g, vm), 0);
    assert_int_equal(layer_refs_add(g, snap), 0);
    assert_int_equal(layer_refs_add(g, snap), 0);        /* twice: once */
    assert_int_equal(layer_refs_children(g, "/i/base", &one), 2);
    assert_int_equal(layer_refs_children(g, "/i/ov", &one), 0);
    assert_int_equal(layer_refs_add(g, clone), 0);
    assert_int_equal(layer_refs_children(g, "/i/ov", &one), 1);
    assert_string_equal(one, "/i/clone");
    assert_int_equal(layer_refs_children(g, "/i/clone", &one), 0);
    assert_null(one);
    assert_true(layer_refs_used(g, "/i/base"));
    assert_true(layer_refs_used(g, "/i/clone"));
    assert_false(layer_refs_used(g, "/i/other"));
    layer_refs_free(g);
}

static void
test_reclaim(void **state)
{
    struct layer_refs *g = layer_refs_new();
    (void) state;

    make_raw(at("user.raw"));           /* the user's disk: never ours */
    make_qcow2(at("ours-used.qcow2"), at("user.raw"));
    make_qcow2(at("ours-free.qcow2"), at("ours-used.qcow2"));
    assert_int_equal(layer_mine_add(at("ours-used.qcow2")), 0);
    assert_int_equal(layer_mine_add(at("ours-free.qcow2")), 0);
    assert_true(layer_mine(at("ours-free.qcow2")));
    assert_false(layer_mine(at("user.raw")));

    char *used[] = { at("ours-used.qcow2"), at("user.raw"), NULL };
    assert_int_equal(layer_refs_add(g, used), 0);
    char *cand[] = { at("ours-free.qcow2"), at("ours-used.qcow2"), at("user.raw"), NULL };
    char *copy[4];
    for (int i = 0; i < 4; i++)
        copy[i] = cand[i] ? strdup(cand[i]) : NULL;
    assert_int_equal(layer_reclaim(g, copy), 1);
    assert_int_equal(access(copy[0], F_OK), -1);
    assert_int_equal(access(copy[1], F_OK), 0);
    assert_int_equal(access(copy[2], F_OK), 0);
    assert_false(layer_mine(copy[0]));
    assert_true(layer_mine(copy[1]));

    /* the same file through a symlinked directory is the same file: used */
    char linked[600];
    assert_int_equal(symlink(dir, at("link")), 0);
    snprintf(linked, sizeof linked, "%s/link/ours-used.qcow2", dir);
    char *via_link[] = { linked, NULL };
    assert_int_equal(layer_reclaim(g, via_link), 0);
    assert_int_equal(access(copy[1], F_OK), 0);
    assert_int_equal(layer_refs_children(g, at("user.raw"), NULL), 1);
    snprintf(linked, sizeof linked, "%s/link/user.raw", dir);
    assert_int_equal(layer_refs_children(g, linked, NULL), 1);

    /* nothing uses anything: only ours goes, the user's file stays */
    layer_refs_free(g);
    g = layer_refs_new();
    assert_int_equal(layer_reclaim(g, copy), 1);
    assert_int_equal(access(copy[1], F_OK), -1);
    assert_int_equal(access(copy[2], F_OK), 0);
    for (int i = 0; i < 3; i++)
        free(copy[i]);
    layer_refs_free(g);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backing),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_chain_usage),
        cmocka_unit_test(test_refs),
        cmocka_unit_test(test_reclaim),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
