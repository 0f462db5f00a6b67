/* tests/unit/test-snapshot-meta.c: what vmsnapfs keeps in a snapshot's
 * description, status.json, and the disk-source edit of a definition */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cleanup.h"
#include "libvirt-xml.h"
#include "snapshot-json.h"

static void
test_round_trip(void **state)
{
    char *excluded[] = { (char *) "sda", (char *) "vdz", NULL };
    struct snapshot_meta in = {
        .indications = (1u << INDICATION_ONLINE) | (1u << INDICATION_GUEST_AGENT),
        .excluded = excluded, .freeze_ms = 42, .have_freeze = true,
    }, out;
    (void) state;

    char *text = snapshot_meta_encode(&in);
    assert_non_null(text);
    assert_memory_equal(text, "vmsnapfs {", 10);
    assert_int_equal(snapshot_meta_decode(text, &out), 0);
    assert_int_equal(out.indications, in.indications);
    assert_true(out.have_freeze && out.freeze_ms == 42);
    assert_string_equal(out.excluded[0], "sda");
    assert_string_equal(out.excluded[1], "vdz");
    assert_null(out.excluded[2]);
    strv_free(out.excluded);
    free(text);
}

static void
test_foreign_and_damaged(void **state)
{
    struct snapshot_meta out;
    (void) state;
    assert_int_equal(snapshot_meta_decode(NULL, &out), -ENOENT);
    assert_int_equal(snapshot_meta_decode("made by hand", &out), -ENOENT);
    assert_int_equal(snapshot_meta_decode("vmsnapfs {not json", &out), -EINVAL);
    assert_int_equal(snapshot_meta_decode("vmsnapfs [1]", &out), -EINVAL);
    /* wrong types inside are skipped, never crash */
    assert_int_equal(snapshot_meta_decode("vmsnapfs {\"excluded\":[null, 3, \"vdb\"],"
                                          "\"indications\":[null, \"Online\", \"Nope\"]}",
                                          &out), 0);
    assert_string_equal(out.excluded[0], "vdb");
    assert_null(out.excluded[1]);
    assert_int_equal(out.indications, 1u << INDICATION_ONLINE);
    assert_false(out.have_freeze);
    strv_free(out.excluded);
}

static void
test_status_json(void **state)
{
    char *excluded[] = { (char *) "sda", NULL };
    struct volume vol = { .name = (char *) "vda", .format = (char *) "qcow2", .size = 1024 };
    struct snapshot_info s = {
        .name = (char *) "s1", .phase = SNAPSHOT_SUCCEEDED,
        .indications = 1u << INDICATION_ONLINE, .created = 1763786400,
        .volumes = &vol, .n_volumes = 1, .excluded = excluded,
        .freeze_window_ms = 25, .has_freeze_window = true,
    };
    (void) state;
    char *j = snapshot_status_json("", "larry", &s, "s0", NULL, NULL);
    assert_non_null(j);
    /* compare without white space (the layout is json-c's) */
    char *p = j, *q = j;
    for (; *p; p++)
        if (*p != ' ' && *p != '\n')
            *q++ = *p;
    *q = '\0';
    assert_non_null(strstr(j, "\"phase\":\"Succeeded\""));
    assert_non_null(strstr(j, "\"created\":\"2025-11-22T04:40:00Z\""));
    assert_non_null(strstr(j, "\"excludedVolumes\":[\"sda\"]"));
    assert_non_null(strstr(j, "\"freezeWindowMs\":25"));
    assert_non_null(strstr(j, "\"indications\":[\"Online\"]"));
    assert_non_null(strstr(j, "\"volumes\":[{\"name\":\"vda\",\"size\":1024"));
    assert_null(strstr(j, "namespace"));
    assert_non_null(strstr(j, "\"changes\":{\"base\":\"s0\"}"));
    free(j);
    j = snapshot_status_json("ns", "larry", &s, NULL, "no older snapshot", NULL);
    assert_non_null(strstr(j, "\"base\": null"));
    assert_non_null(strstr(j, "\"why\": \"no older snapshot\""));
    free(j);
}

static void
test_set_disk_source(void **state)
{
    const char *xml =
        "<domain type='qemu'><name>x</name><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='/d/x.vda.s1.qcow2'/><backingStore type='file'>"
        "<format type='raw'/><source file='/d/base.raw'/></backingStore>"
        "<target dev='vda' bus='virtio'/></disk>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        "<source file='/d/other.raw'/><target dev='vdb' bus='virtio'/></disk>"
        "</devices></domain>";
    char *out = NULL;
    struct volume *v = NULL;
    size_t n = 0;
    (void) state;

    assert_int_equal(lv_xml_set_disk_source(xml, "vda", "/d/x.vda.s1.qcow2",
                                            "/d/base.raw", "raw", &out), 0);
    assert_null(strstr(out, "backingStore"));
    assert_int_equal(lv_xml_disks(out, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].source, "/d/base.raw");
    assert_string_equal(v[0].format, "raw");
    assert_string_equal(v[1].source, "/d/other.raw");   /* untouched */
    for (size_t i = 0; i < n; i++)
        volume_clear(&v[i]);
    free(v);
    free(out);
    /* only where the source is the one expected */
    assert_int_equal(lv_xml_set_disk_source(xml, "vda", "/d/elsewhere", "/d/b", "raw", &out),
                     -ENOENT);
    assert_int_equal(lv_xml_set_disk_source(xml, "vdq", "/d/x.vda.s1.qcow2", "/d/b", "raw",
                                            &out), -ENOENT);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_foreign_and_damaged),
        cmocka_unit_test(test_status_json),
        cmocka_unit_test(test_set_disk_source),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
