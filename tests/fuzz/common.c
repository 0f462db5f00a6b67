/* tests/fuzz/common.c: helpers of the fuzz targets (fuzz.h), and the checks
 * of the parsers that more than one target reaches: a snapshot's XML holds
 * a domain's XML and, in its description, vmsnapfs's metadata. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "fuzz.h"
#include "libvirt-xml.h"
#include "snapshot-json.h"

void
fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    abort();
}

char *
fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    FUZZ_CHECK(s);
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

static void
volumes_free(struct volume *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        volume_clear(&v[i]);
    free(v);
}

/* Edited XML is for libvirt: it must read back as a domain whose disks
 * parse where the original's did, and say the restore mark it was given. */
static void
check_edited(const char *out, int disks_r, const char *restore_id)
{
    struct volume *v = NULL;
    size_t n = 0;

    FUZZ_CHECK(out);
    FUZZ_CHECK(lv_xml_agent_connected(out) >= 0);
    if (disks_r == 0) {
        FUZZ_CHECK(lv_xml_disks(out, &v, &n) == 0);
        volumes_free(v, n);
    }
    if (restore_id) {
        _cleanup_free_ char *mark = lv_xml_restore_mark(out);
        FUZZ_CHECK(mark && strcmp(mark, restore_id) == 0);
    }
}

static void
edit(const char *xml, const struct lv_xml_edit *e, int disks_r)
{
    _cleanup_free_ char *out = NULL;

    if (lv_xml_edit(xml, e, &out) == 0)
        check_edited(out, disks_r, e->restore_id);
}

void
fuzz_domain_xml(const char *xml)
{
    struct volume *vols = NULL;
    size_t n = 0;
    int disks_r = lv_xml_disks(xml, &vols, &n);

    FUZZ_CHECK(disks_r == 0 || disks_r == -EINVAL);
    for (size_t i = 0; disks_r == 0 && i < n; i++)
        FUZZ_CHECK(vols[i].name && vols[i].format);

    int agent = lv_xml_agent_connected(xml);
    FUZZ_CHECK(agent == 0 || agent == 1 || agent == -EINVAL);

    _cleanup_strv_ char **macs = NULL;
    if (lv_xml_macs(xml, &macs) == 0)
        FUZZ_CHECK(macs);
    free(lv_xml_restore_mark(xml));

    /* what a snapshot does when a disk's layer moved */
    _cleanup_free_ char *moved = NULL;
    if (disks_r == 0 && n > 0 && vols[0].source &&
        lv_xml_set_disk_source(xml, vols[0].name, vols[0].source,
                               "/var/lib/vmsnapfs/moved.qcow2", "qcow2",
                               &moved) == 0)
        check_edited(moved, disks_r, NULL);

    /* what a clone does (libvirt-clone.c): a new name, UUID, MACs and
     * serial; disks on new overlays (the first two), one dropped (a third) */
    char *targets[3] = { NULL }, *sources[3] = { NULL }, *drop[2] = { NULL };
    char *const paths[2] = { "/var/lib/vmsnapfs/a.qcow2", "/var/lib/vmsnapfs/b.qcow2" };
    for (size_t i = 0; disks_r == 0 && i < n && i < 2; i++) {
        targets[i] = vols[i].name;
        sources[i] = paths[i];
    }
    if (disks_r == 0 && n > 2)
        drop[0] = vols[n - 1].name;
    struct lv_xml_edit clone_edit = {
        .name = "moe",
        .drop_uuid = true,
        .new_macs = true,
        .disk_targets = targets,
        .disk_sources = sources,
        .drop_disks = drop,
        .serial = "0123456789abcdef",
        .old_name = "larry",
    };
    edit(xml, &clone_edit, disks_r);

    /* what a restore does (libvirt-restore.c): new overlays, the MACs
     * other VMs use now dropped, and the mark */
    struct lv_xml_edit restore_edit = {
        .disk_targets = targets,
        .disk_sources = sources,
        .drop_disks = drop,
        .drop_macs = macs,
        .restore_id = "0f1e2d3c4b5a6978",
        .restore_snap = "before-upgrade",
    };
    edit(xml, &restore_edit, disks_r);

    volumes_free(vols, n);
}

static bool
strv_equal(char *const *a, char *const *b)
{
    size_t i = 0;

    /* NULL and empty are the same list */
    for (; a && a[i] && b && b[i]; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return !(a && a[i]) && !(b && b[i]);
}

void
fuzz_snapshot_meta(const char *text)
{
    struct snapshot_meta m, again;
    int r = snapshot_meta_decode(text, &m);

    FUZZ_CHECK(r == 0 || r == -ENOENT || r == -EINVAL);
    if (r < 0)
        return;
    FUZZ_CHECK(m.indications < 1u << _INDICATION_MAX);

    /* what is kept reads back the same */
    _cleanup_free_ char *enc = snapshot_meta_encode(&m);
    FUZZ_CHECK(enc);
    FUZZ_CHECK(snapshot_meta_decode(enc, &again) == 0);
    FUZZ_CHECK(again.indications == m.indications);
    FUZZ_CHECK(again.have_freeze == m.have_freeze);
    FUZZ_CHECK(!m.have_freeze || again.freeze_ms == m.freeze_ms);
    FUZZ_CHECK(strv_equal(again.excluded, m.excluded));
    FUZZ_CHECK(!m.sums == !again.sums && (!m.sums || strcmp(m.sums, again.sums) == 0));
    snapshot_meta_clear(&m);
    snapshot_meta_clear(&again);
}
