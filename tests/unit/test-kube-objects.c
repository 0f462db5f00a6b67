/* tests/unit/test-kube-objects.c: KubeVirt objects (upstream-shaped
 * fixtures in tests/data/kubevirt, after kubevirt-api.md §1.2, §1.3, §7) as
 * the tree shows them: state, agent, volumes and sizes, vm.json without
 * managedFields; a snapshot's phase (Succeeded only once readyToUse),
 * indications old and new, error, times, volumes; quantities and times. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <json-c/json.h>

#include "kube-objects.h"

static struct json_object *
fixture(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/kubevirt/%s", getenv("TEST_DATA_DIR"), name);
    struct json_object *o = json_object_from_file(path);
    if (!o)
        fail_msg("cannot read %s", path);
    return o;
}

static void
test_quantity(void **state)
{
    uint64_t b = 0;
    (void) state;

    static const struct { const char *s; uint64_t bytes; } ok[] = {
        { "512", 512 }, { "10Gi", 10ULL << 30 }, { "1.5Gi", 3ULL << 29 }, { "1G", 1000000000 },
        { "2Ti", 2ULL << 40 }, { "1e9", 1000000000 }, { "1E3", 1000 }, { "100k", 100000 },
        { "1500m", 2 }, { "0.5", 1 }, { "+3Ki", 3072 }, { "1Ei", 1ULL << 60 },
        /* many fractional digits once wrapped 128 bits */
        { "1000000000000000.0000000000000000000000000", 1000000000000000ULL },
        { "1.00000000000000000000000000000000000001Gi", (1ULL << 30) + 1 },
        { "123e-30", 1 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        assert_int_equal(kube_quantity_bytes(ok[i].s, &b), 0);
        if (b != ok[i].bytes)
            fail_msg("%s: %llu, not %llu", ok[i].s, (unsigned long long) b,
                     (unsigned long long) ok[i].bytes);
    }
    static const char *bad[] = { "", "Gi", "10 Gi", "10gi", "-1", "1.2.3", "10Gib", "0x10", NULL };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(kube_quantity_bytes(bad[i], &b), -EINVAL);
    assert_int_equal(kube_quantity_bytes("100Ei", &b), -ERANGE);
    assert_int_equal(kube_quantity_bytes("1e40", &b), -ERANGE);
}

static void
test_time(void **state)
{
    time_t t = 0;
    (void) state;

    assert_int_equal(kube_time("2026-12-06T07:39:04Z", &t), 0);
    assert_int_equal(t, 1796542744);
    assert_int_equal(kube_time("2026-12-06T07:39:04.123456Z", &t), 0);
    assert_int_equal(t, 1796542744);
    assert_int_equal(kube_time("2026-12-06T09:39:04+02:00", &t), 0);
    assert_int_equal(t, 1796542744);
    assert_int_equal(kube_time("2026-12-06T07:39:04", &t), -EINVAL);
    assert_int_equal(kube_time("yesterday", &t), -EINVAL);
    assert_int_equal(kube_time(NULL, &t), -EINVAL);
}

static const struct volume *
vol(const struct volume *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return &v[i];
    return NULL;
}

static void
test_vm_running(void **state)
{
    struct json_object *vm = fixture("vm-running.json"), *vmi = fixture("vmi-running.json");
    struct vm_info *info = NULL;
    (void) state;

    assert_int_equal(kube_vm_info(vm, vmi, &info), 0);
    assert_string_equal(info->ns, "prod");
    assert_string_equal(info->name, "larry");
    assert_string_equal(info->uid, "3b7f0c1e-5d0a-4c65-9b1e-2f3b9a7c1d01");
    assert_string_equal(info->state, "Running");
    assert_true(info->running);
    assert_true(info->agent);
    /* vm.json: the object, without the server's managedFields */
    assert_non_null(strstr(info->definition, "\"runStrategy\""));
    assert_null(strstr(info->definition, "managedFields"));
    /* cloud-init's data (passwords, keys) never shows */
    assert_null(strstr(info->definition, "#cloud-config"));
    assert_non_null(strstr(info->definition, "\"userData\": \"(hidden)\""));
    struct json_object *back = json_tokener_parse(info->definition);
    assert_non_null(back);
    assert_string_equal(kube_get_str(back, "metadata", "name", (char *) NULL), "larry");
    json_object_put(back);
    /* the PVC, DataVolume volumes; cloud-init is no disk to export */
    assert_int_equal(info->n_volumes, 4);
    const struct volume *root = vol(info->volumes, info->n_volumes, "root");
    assert_non_null(root);
    assert_string_equal(root->source, "larry-root");
    assert_string_equal(root->format, "raw");
    assert_int_equal(root->size, 10737418240ULL);
    assert_int_equal(root->flags, 0);
    assert_int_equal(vol(info->volumes, info->n_volumes, "data")->size, 2ULL << 30);
    assert_int_equal(vol(info->volumes, info->n_volumes, "install")->flags,
                     VOLUME_CDROM | VOLUME_READONLY);
    assert_int_equal(vol(info->volumes, info->n_volumes, "scratch")->flags, VOLUME_HOTPLUG);
    assert_int_equal(vol(info->volumes, info->n_volumes, "scratch")->size, 3ULL << 29);
    assert_null(vol(info->volumes, info->n_volumes, "cloudinit"));
    vm_info_free(info);

    /* stopped: no VMI; the size from the DataVolume template */
    json_object_object_del(json_object_object_get(vm, "status"), "printableStatus");
    assert_int_equal(kube_vm_info(vm, NULL, &info), 0);
    assert_string_equal(info->state, "Stopped");
    assert_false(info->running);
    assert_false(info->agent);
    assert_int_equal(vol(info->volumes, info->n_volumes, "root")->size, 10ULL << 30);
    assert_int_equal(vol(info->volumes, info->n_volumes, "data")->size, 0);   /* unknown */
    vm_info_free(info);

    /* the agent went away: KubeVirt removes the condition */
    struct json_object *conds = kube_get(vmi, "status", "conditions", (char *) NULL);
    json_object_array_del_idx(conds, 1, 1);
    assert_int_equal(kube_vm_info(vm, vmi, &info), 0);
    assert_true(info->running);
    assert_false(info->agent);
    vm_info_free(info);
    json_object_put(vm);
    json_object_put(vmi);
}

static struct snapshot_info *
snapshot_of_json(const char *text)
{
    struct json_object *o = json_tokener_parse(text);
    struct snapshot_info *s = NULL;
    assert_non_null(o);
    assert_int_equal(kube_snapshot_info(o, NULL, &s), 0);
    json_object_put(o);
    return s;
}

static void
test_snapshot_succeeded(void **state)
{
    struct json_object *snap = fixture("snapshot-succeeded.json");
    struct json_object *content = fixture("snapshot-content.json");
    struct snapshot_info *s = NULL;
    (void) state;

    assert_true(kube_snapshot_of(snap, "larry"));
    assert_false(kube_snapshot_of(snap, "moe"));
    assert_int_equal(kube_snapshot_info(snap, content, &s), 0);
    assert_string_equal(s->name, "before-upgrade");
    assert_int_equal(s->phase, SNAPSHOT_SUCCEEDED);
    assert_int_equal(s->indications, (1u << INDICATION_ONLINE) | (1u << INDICATION_GUEST_AGENT));
    assert_null(s->error);
    assert_int_equal(s->created, 1796542744);     /* creationTime, not the object's */
    assert_non_null(strstr(s->definition, "\"larry-data\""));
    assert_int_equal(s->n_volumes, 2);
    assert_string_equal(s->volumes[0].name, "root");
    assert_string_equal(s->volumes[0].source, "larry-root");
    assert_int_equal(s->volumes[0].size, 10ULL << 30);
    assert_string_equal(s->excluded[0], "install");
    assert_string_equal(s->excluded[1], "cloudinit");
    assert_null(s->excluded[2]);
    /* the captured object graph: the VM first, each object once */
    static const char *const graph[] = {
        "kubevirt.io VirtualMachine prod larry",
        "instancetype.kubevirt.io VirtualMachineInstancetype prod u1.small",
        "apps ControllerRevision prod before-upgrade-u1.small-1-7f8c2",
        "instancetype.kubevirt.io VirtualMachineClusterPreference - fedora",
        "apps ControllerRevision prod larry-fedora-v1beta1-3c1a",
        "cdi.kubevirt.io DataVolume prod larry-root",
        "core PersistentVolumeClaim prod larry-root",
        "core PersistentVolumeClaim prod larry-data",
        "core Secret prod larry-userdata",
        "core Secret prod larry-netdata",
        "core ConfigMap prod larry-config",
        "core Secret prod larry-tls",
        "core ServiceAccount prod larry-sa",
        "core PersistentVolumeClaim prod larry-dump",
        "core Secret prod larry-ssh",
        "core Secret prod larry-pass",
        NULL,
    };
    for (size_t i = 0; graph[i]; i++) {
        assert_non_null(s->resources[i]);
        assert_string_equal(s->resources[i], graph[i]);
    }
    assert_null(s->resources[sizeof graph / sizeof *graph - 1]);
    snapshot_info_free(s);

    /* Succeeded before readyToUse: still in progress for us */
    json_object_object_add(json_object_object_get(snap, "status"), "readyToUse",
                           json_object_new_boolean(0));
    assert_int_equal(kube_snapshot_info(snap, NULL, &s), 0);
    assert_int_equal(s->phase, SNAPSHOT_IN_PROGRESS);
    assert_null(s->definition);                     /* no content yet */
    assert_string_equal(s->volumes[0].source, "");
    snapshot_info_free(s);
    json_object_put(snap);
    json_object_put(content);
}

static void
test_snapshot_states(void **state)
{
    struct snapshot_info *s;
    (void) state;

    /* just created: no status at all */
    s = snapshot_of_json("{\"metadata\":{\"name\":\"s\",\"creationTimestamp\":"
                         "\"2026-12-06T07:39:00Z\"},\"spec\":{\"source\":{}}}");
    assert_int_equal(s->phase, SNAPSHOT_IN_PROGRESS);
    assert_int_equal(s->created, 1796542740);
    assert_int_equal(s->indications, 0);
    assert_non_null(s->excluded);
    assert_null(s->excluded[0]);
    snapshot_info_free(s);
    /* failed at its deadline, v1.6 indications (QuiesceFailed, no
     * sourceIndications), and one this build does not know */
    s = snapshot_of_json("{\"metadata\":{\"name\":\"s\"},\"status\":{\"phase\":\"Failed\","
                         "\"readyToUse\":false,\"error\":{\"time\":\"2026-12-06T07:44:04Z\","
                         "\"message\":\"snapshot deadline exceeded\"},\"indications\":"
                         "[\"GuestAgent\",\"Online\",\"QuiesceFailed\",\"SomethingNew\"]}}");
    assert_int_equal(s->phase, SNAPSHOT_FAILED);
    assert_string_equal(s->error, "snapshot deadline exceeded");
    assert_int_equal(s->indications, (1u << INDICATION_ONLINE) | (1u << INDICATION_GUEST_AGENT) |
                                         (1u << INDICATION_QUIESCE_FAILED));
    snapshot_info_free(s);
    /* v1.9: only in sourceIndications (PartialSnapshot appended), Paused */
    s = snapshot_of_json("{\"metadata\":{\"name\":\"s\"},\"status\":{\"phase\":\"Succeeded\","
                         "\"readyToUse\":true,\"sourceIndications\":[{\"indication\":\"Online\","
                         "\"message\":\"m\"},{\"indication\":\"Paused\",\"message\":\"m\"},"
                         "{\"indication\":\"PartialSnapshot\",\"message\":\"m\"}]}}");
    assert_int_equal(s->phase, SNAPSHOT_SUCCEEDED);
    assert_int_equal(s->indications, (1u << INDICATION_ONLINE) | (1u << INDICATION_PAUSED) |
                                         (1u << INDICATION_PARTIAL_SNAPSHOT));
    snapshot_info_free(s);
    /* Deleting and phases never set: in progress, never a crash */
    s = snapshot_of_json("{\"metadata\":{\"name\":\"s\"},\"status\":{\"phase\":\"Deleting\","
                         "\"indications\":\"not a list\",\"snapshotVolumes\":7}}");
    assert_int_equal(s->phase, SNAPSHOT_IN_PROGRESS);
    assert_int_equal(s->indications, 0);
    snapshot_info_free(s);
    /* no name: not an object we can show */
    struct json_object *o = json_tokener_parse("{\"metadata\":{}}");
    assert_int_equal(kube_snapshot_info(o, NULL, &s), -EINVAL);
    struct vm_info *vm;
    assert_int_equal(kube_vm_info(o, NULL, &vm), -EINVAL);
    json_object_put(o);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantity),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_vm_running),
        cmocka_unit_test(test_snapshot_succeeded),
        cmocka_unit_test(test_snapshot_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
