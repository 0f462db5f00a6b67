/* tests/unit/test-libvirt-xml.c: domain XML -> volumes, agent state,
 * snapshot XML. Reads the documents in tests/data/. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "libvirt-xml.h"

static char *
slurp(const char *name)
{
    char path[4096];
    const char *dir = getenv("TEST_DATA_DIR");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/data", name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 20);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    assert_true(n > 0);
    fclose(f);
    return buf;
}

static void
test_disks(void **state)
{
    char *xml = slurp("domain-disks.xml");
    struct volume *v = NULL;
    size_t n = 0;
    (void) state;

    assert_int_equal(lv_xml_disks(xml, &v, &n), 0);
    assert_int_equal(n, 5);
    assert_string_equal(v[0].name, "vda");
    assert_string_equal(v[0].format, "qcow2");
    /* the top image, not the backing file */
    assert_string_equal(v[0].source, "/var/lib/vmsnapfs-test/root.qcow2");
    assert_int_equal(v[0].flags, 0);

    assert_string_equal(v[1].name, "vdb");
    assert_string_equal(v[1].source, "/dev/vg0/data");
    assert_int_equal(v[1].flags, VOLUME_SHAREABLE);

    assert_string_equal(v[2].name, "sda");
    assert_int_equal(v[2].flags, VOLUME_CDROM | VOLUME_READONLY);

    assert_string_equal(v[3].name, "vdc");
    assert_string_equal(v[3].source, "default/extra.img");
    assert_int_equal(v[3].flags, VOLUME_READONLY);

    /* no driver, no source: still a disk, format unknown */
    assert_string_equal(v[4].name, "vdd");
    assert_string_equal(v[4].format, "");
    assert_null(v[4].source);

    for (size_t i = 0; i < n; i++)
        volume_clear(&v[i]);
    free(v);
    free(xml);
}

static void
test_agent(void **state)
{
    char *xml = slurp("domain-disks.xml");
    (void) state;

    assert_int_equal(lv_xml_agent_connected(xml), 1);
    char *p = strstr(xml, "state='connected'");
    assert_non_null(p);
    memcpy(p, "state='unplugged'", strlen("state='unplugged'"));
    assert_int_equal(lv_xml_agent_connected(xml), 0);
    assert_int_equal(lv_xml_agent_connected("<domain><devices/></domain>"), 0);
    assert_int_equal(lv_xml_agent_connected("<domain"), -EINVAL);
    assert_int_equal(lv_xml_agent_connected("<other/>"), -EINVAL);
    free(xml);
}

static void
test_bad_xml(void **state)
{
    struct volume *v = NULL;
    size_t n = 0;
    (void) state;
    assert_int_equal(lv_xml_disks("not xml", &v, &n), -EINVAL);
    assert_int_equal(lv_xml_disks(NULL, &v, &n), -EINVAL);
    /* a disk without a target is unusable */
    assert_int_equal(lv_xml_disks("<domain><devices><disk device='disk'/>"
                                  "</devices></domain>", &v, &n), -EINVAL);
    assert_int_equal(lv_xml_disks("<domain/>", &v, &n), 0);
    assert_int_equal(n, 0);
    free(v);
}

static void
test_snapshot(void **state)
{
    char *xml = slurp("snapshot.xml");
    struct lv_xml_snapshot s;
    (void) state;

    assert_int_equal(lv_xml_snapshot_parse(xml, &s), 0);
    assert_string_equal(s.name, "before-upgrade");
    assert_string_equal(s.state, "disk-snapshot");
    assert_string_equal(s.description, "made by hand");
    assert_int_equal(s.created, 1763786400);
    assert_non_null(s.domain);
    assert_non_null(strstr(s.domain, "<domain type=\"qemu\">"));
    assert_non_null(strstr(s.domain, "/var/lib/vmsnapfs-test/root.raw"));
    assert_null(strstr(s.domain, "domainsnapshot"));
    assert_int_equal(s.n_disks, 2);
    assert_string_equal(s.disks[0].name, "vda");
    assert_string_equal(s.disks[0].source, "/var/lib/vmsnapfs-test/root.before-upgrade");
    assert_int_equal(s.disks[0].flags, 0);
    assert_string_equal(s.disks[1].name, "sda");
    assert_int_equal(s.disks[1].flags, VOLUME_NOT_SNAPSHOTTED);
    lv_xml_snapshot_clear(&s);

    assert_int_equal(lv_xml_snapshot_parse("<domain/>", &s), -EINVAL);
    assert_int_equal(lv_xml_snapshot_parse("<domainsnapshot/>", &s), -EINVAL);
    free(xml);
}

/* A running VM's snapshot, as libvirt 9 writes it: the live <domain> and
 * the saved <inactiveDomain> (made by virsh snapshot-create-as
 * --disk-only; an interface, sysinfo and nvram added). */
static void
test_snapshot_inactive(void **state)
{
    char *xml = slurp("snapshot-running.xml");
    struct lv_xml_snapshot s;
    (void) state;

    assert_int_equal(lv_xml_snapshot_parse(xml, &s), 0);
    assert_non_null(s.domain);
    assert_non_null(s.inactive_domain);
    assert_true(strncmp(s.inactive_domain, "<domain", 7) == 0);
    assert_null(strstr(s.inactive_domain, "inactiveDomain"));
    assert_non_null(strstr(s.inactive_domain, "</domain>"));
    /* the saved definition has no runtime aliases */
    assert_null(strstr(s.inactive_domain, "<alias"));

    struct volume *v = NULL;
    size_t n = 0;
    assert_int_equal(lv_xml_disks(s.inactive_domain, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].source, "/var/lib/vmsnapfs-test/d.qcow2");
    volume_clear(&v[0]);
    free(v);

    char **macs = NULL;
    assert_int_equal(lv_xml_macs(s.inactive_domain, &macs), 0);
    assert_non_null(macs[0]);
    assert_string_equal(macs[0], "52:54:00:aa:bb:cc");
    assert_null(macs[1]);
    for (char **m = macs; *m; m++)
        free(*m);
    free(macs);
    lv_xml_snapshot_clear(&s);
    free(xml);
}

static void
test_edit_clone(void **state)
{
    char *xml = slurp("snapshot-running.xml");
    struct lv_xml_snapshot s;
    char *out = NULL;
    (void) state;

    assert_int_equal(lv_xml_snapshot_parse(xml, &s), 0);
    char *targets[] = { "vda", NULL };
    char *sources[] = { "/var/lib/vmsnapfs-test/moe.vda.clone.qcow2", NULL };
    struct lv_xml_edit e = {
        .name = "moe", .drop_uuid = true, .new_macs = true,
        .disk_targets = targets, .disk_sources = sources,
        .serial = "00112233", .old_name = "larry",
    };
    assert_int_equal(lv_xml_edit(s.inactive_domain, &e, &out), 0);
    assert_non_null(strstr(out, "<name>moe</name>"));
    assert_null(strstr(out, "<uuid>"));
    assert_null(strstr(out, "fa6b9d5c"));               /* sysinfo uuid too */
    assert_null(strstr(out, "52:54:00:aa:bb:cc"));
    assert_non_null(strstr(out, "<interface type=\"user\">"));
    assert_null(strstr(out, "larry"));                  /* nvram, console log */
    assert_null(strstr(out, "<nvram>"));
    assert_non_null(strstr(out, "/var/lib/vmsnapfs-test/logs/moe.console.log"));
    assert_non_null(strstr(out, "<entry name=\"serial\">00112233</entry>"));

    struct volume *v = NULL;
    size_t n = 0;
    assert_int_equal(lv_xml_disks(out, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].source, "/var/lib/vmsnapfs-test/moe.vda.clone.qcow2");
    assert_string_equal(v[0].format, "qcow2");
    volume_clear(&v[0]);
    free(v);
    free(out);

    /* a disk it does not have */
    char *nope[] = { "vdz", NULL };
    e.disk_targets = nope;
    assert_int_equal(lv_xml_edit(s.inactive_domain, &e, &out), -ENOENT);
    lv_xml_snapshot_clear(&s);
    free(xml);
}

static void
test_edit_restore(void **state)
{
    char *xml = slurp("snapshot-running.xml");
    struct lv_xml_snapshot s;
    char *out = NULL;
    (void) state;

    assert_int_equal(lv_xml_snapshot_parse(xml, &s), 0);
    char *targets[] = { "vda", NULL };
    char *sources[] = { "/var/lib/vmsnapfs-test/larry.vda.restore-s1.qcow2", NULL };
    char *macs[] = { "52:54:00:AA:BB:CC", NULL };     /* any case */
    struct lv_xml_edit e = {
        .disk_targets = targets, .disk_sources = sources, .drop_macs = macs,
    };
    assert_int_equal(lv_xml_edit(s.inactive_domain, &e, &out), 0);
    /* the same VM: name, UUID, serial, NVRAM and console stay */
    assert_non_null(strstr(out, "<name>larry</name>"));
    assert_non_null(strstr(out, "<uuid>fa6b9d5c-7c43-431a-8872-e0ec83c1f2fa</uuid>"));
    assert_non_null(strstr(out, "ABC123"));
    assert_non_null(strstr(out, "larry_VARS.fd"));
    assert_non_null(strstr(out, "logs/larry.console.log"));
    assert_null(strstr(out, "52:54:00:aa:bb:cc"));
    assert_non_null(strstr(out, "larry.vda.restore-s1.qcow2"));
    assert_null(lv_xml_restore_mark(out));
    free(out);

    /* the mark a restarted daemon looks for: one, the newest */
    e.restore_id = "0123abcd";
    e.restore_snap = "s1";
    assert_int_equal(lv_xml_edit(s.inactive_domain, &e, &out), 0);
    char *mark = lv_xml_restore_mark(out);
    assert_non_null(mark);
    assert_string_equal(mark, "0123abcd");
    free(mark);
    char *again = NULL;
    e.restore_id = "ffff0000";
    assert_int_equal(lv_xml_edit(out, &e, &again), 0);
    mark = lv_xml_restore_mark(again);
    assert_string_equal(mark, "ffff0000");
    assert_null(strstr(again, "0123abcd"));
    assert_non_null(strstr(again, LV_XML_RESTORE_NS));
    free(mark);
    free(again);
    free(out);

    /* BestEffort drops a device */
    char *drop[] = { "vda", NULL };
    struct lv_xml_edit d = { .drop_disks = drop };
    assert_int_equal(lv_xml_edit(s.inactive_domain, &d, &out), 0);
    struct volume *v = NULL;
    size_t n = 9;
    assert_int_equal(lv_xml_disks(out, &v, &n), 0);
    assert_int_equal(n, 0);
    free(v);
    free(out);
    assert_int_equal(lv_xml_edit("<nodomain/>", &d, &out), -EINVAL);
    lv_xml_snapshot_clear(&s);
    free(xml);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disks),
        cmocka_unit_test(test_agent),
        cmocka_unit_test(test_bad_xml),
        cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_snapshot_inactive),
        cmocka_unit_test(test_edit_clone),
        cmocka_unit_test(test_edit_restore),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
