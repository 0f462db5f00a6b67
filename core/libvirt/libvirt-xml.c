/* core/libvirt/libvirt-xml.c: see libvirt-xml.h. */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "cleanup.h"
#include "libvirt-xml.h"

static inline void
xml_doc_freep(xmlDocPtr *d)
{
    if (*d)
        xmlFreeDoc(*d);
}

static xmlDocPtr
parse(const char *xml)
{
    if (!xml)
        return NULL;
    return xmlReadMemory(xml, (int) strlen(xml), "domain.xml", NULL,
                         XML_PARSE_NONET | XML_PARSE_NOERROR |
                         XML_PARSE_NOWARNING);
}

static bool
is(const xmlNode *n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE &&
           strcmp((const char *) n->name, name) == 0;
}

static xmlNode *
child(const xmlNode *n, const char *name)
{
    for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if (is(c, name))
            return c;
    return NULL;
}

/* strdup of an attribute (NULL if absent) */
static char *
attr(const xmlNode *n, const char *name)
{
    xmlChar *v = n ? xmlGetProp(n, (const xmlChar *) name) : NULL;
    char *s = v ? strdup((const char *) v) : NULL;
    xmlFree(v);
    return s;
}

static char *
text(const xmlNode *n)
{
    xmlChar *v = n ? xmlNodeGetContent(n) : NULL;
    char *s = v ? strdup((const char *) v) : NULL;
    xmlFree(v);
    return s;
}

/* The path of a disk's <source>: file=, dev=, or pool/volume, or name=. */
static char *
source_of(const xmlNode *disk)
{
    xmlNode *src = child(disk, "source");
    char *s;

    if (!src)
        return NULL;
    if ((s = attr(src, "file")) || (s = attr(src, "dev")))
        return s;

    _cleanup_free_ char *pool = attr(src, "pool");
    _cleanup_free_ char *vol = attr(src, "volume");
    if (pool && vol) {
        size_t n = strlen(pool) + strlen(vol) + 2;
        s = malloc(n);
        if (s)
            snprintf(s, n, "%s/%s", pool, vol);
        return s;
    }
    return attr(src, "name");          /* network disks */
}

static int
parse_disk(const xmlNode *d, bool snapshot_disks, struct volume *v)
{
    _cleanup_free_ char *device = attr(d, "device");

    v->format = attr(child(d, "driver"), "type");
    v->source = source_of(d);
    if (snapshot_disks) {
        _cleanup_free_ char *mode = attr(d, "snapshot");
        v->name = attr(d, "name");
        if (mode && strcmp(mode, "no") == 0)
            v->flags |= VOLUME_NOT_SNAPSHOTTED;
        if (mode && strcmp(mode, "internal") == 0)
            v->flags |= VOLUME_INTERNAL;
    } else {
        v->name = attr(child(d, "target"), "dev");
        if (device && (strcmp(device, "cdrom") == 0 ||
                       strcmp(device, "floppy") == 0))
            v->flags |= VOLUME_CDROM;
        if (child(d, "readonly"))
            v->flags |= VOLUME_READONLY;
        if (child(d, "shareable"))
            v->flags |= VOLUME_SHAREABLE;
    }
    if (!v->format)
        v->format = strdup("");
    if (!v->name || !v->format)
        return -EINVAL;
    return 0;
}

static int
disks_of(const xmlNode *parent, bool snapshot_disks, struct volume **ret,
         size_t *ret_n)
{
    size_t n = 0, i = 0;
    int r;

    for (xmlNode *c = parent ? parent->children : NULL; c; c = c->next)
        n += is(c, "disk");

    struct volume *v = calloc(n ? n : 1, sizeof *v);
    if (!v)
        return -ENOMEM;
    for (xmlNode *c = parent ? parent->children : NULL; c; c = c->next) {
        if (!is(c, "disk"))
            continue;
        r = parse_disk(c, snapshot_disks, &v[i++]);
        if (r < 0) {
            for (size_t j = 0; j < i; j++)
                volume_clear(&v[j]);
            free(v);
            return r;
        }
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

int
lv_xml_disks(const char *domain_xml, struct volume **ret_vols, size_t *ret_n)
{
    _cleanup_(xml_doc_freep) xmlDocPtr doc = parse(domain_xml);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;

    if (!is(root, "domain"))
        return -EINVAL;
    return disks_of(child(root, "devices"), false, ret_vols, ret_n);
}

int
lv_xml_agent_connected(const char *domain_xml)
{
    _cleanup_(xml_doc_freep) xmlDocPtr doc = parse(domain_xml);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;

    if (!is(root, "domain"))
        return -EINVAL;
    xmlNode *devices = child(root, "devices");
    for (xmlNode *c = devices ? devices->children : NULL; c; c = c->next) {
        if (!is(c, "channel"))
            continue;
        xmlNode *t = child(c, "target");
        _cleanup_free_ char *name = attr(t, "name");
        _cleanup_free_ char *state = attr(t, "state");
        if (name && strcmp(name, "org.qemu.guest_agent.0") == 0)
            return state && strcmp(state, "connected") == 0;
    }
    return 0;
}

static char *
dump(xmlDocPtr doc, xmlNode *n)
{
    char *s = NULL;
    if (!n)
        return NULL;
    xmlBufferPtr buf = xmlBufferCreate();
    if (buf && xmlNodeDump(buf, doc, n, 0, 1) >= 0)
        s = strdup((const char *) xmlBufferContent(buf));
    xmlBufferFree(buf);
    return s;
}

int
lv_xml_snapshot_parse(const char *snapshot_xml, struct lv_xml_snapshot *ret)
{
    _cleanup_(xml_doc_freep) xmlDocPtr doc = parse(snapshot_xml);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    struct lv_xml_snapshot s = { 0 };
    int r;

    if (!is(root, "domainsnapshot"))
        return -EINVAL;

    s.name = text(child(root, "name"));
    s.state = text(child(root, "state"));
    s.description = text(child(root, "description"));
    _cleanup_free_ char *ct = text(child(root, "creationTime"));
    if (ct)
        s.created = (time_t) strtoll(ct, NULL, 10);

    _cleanup_free_ char *mem = attr(child(root, "memory"), "snapshot");
    s.memory_internal = mem && strcmp(mem, "internal") == 0;

    s.domain = dump(doc, child(root, "domain"));
    xmlNode *inactive = child(root, "inactiveDomain");
    if (inactive) {
        /* the same element under another name: rename it while dumped */
        const xmlChar *saved = inactive->name;
        inactive->name = (const xmlChar *) "domain";
        s.inactive_domain = dump(doc, inactive);
        inactive->name = saved;
    }

    r = disks_of(child(root, "disks"), true, &s.disks, &s.n_disks);
    if (r < 0 || !s.name) {
        lv_xml_snapshot_clear(&s);
        return r < 0 ? r : -EINVAL;
    }
    *ret = s;
    return 0;
}

void
lv_xml_snapshot_clear(struct lv_xml_snapshot *s)
{
    free(s->name);
    free(s->state);
    free(s->description);
    free(s->domain);
    free(s->inactive_domain);
    for (size_t i = 0; s->disks && i < s->n_disks; i++)
        volume_clear(&s->disks[i]);
    free(s->disks);
    *s = (struct lv_xml_snapshot) { 0 };
}

int
lv_xml_set_disk_source(const char *domain_xml, const char *target,
                       const char *old_src, const char *new_src,
                       const char *new_fmt, char **ret)
{
    _cleanup_(xml_doc_freep) xmlDocPtr doc = parse(domain_xml);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    xmlNode *devices = child(root, "devices");

    if (!is(root, "domain"))
        return -EINVAL;
    for (xmlNode *d = devices ? devices->children : NULL; d; d = d->next) {
        if (!is(d, "disk"))
            continue;
        _cleanup_free_ char *dev = attr(child(d, "target"), "dev");
        xmlNode *src = child(d, "source");
        _cleanup_free_ char *file = attr(src, "file");
        if (!dev || strcmp(dev, target) != 0 || !file || strcmp(file, old_src) != 0)
            continue;
        xmlSetProp(src, (const xmlChar *) "file", (const xmlChar *) new_src);
        xmlNode *drv = child(d, "driver");
        if (drv && new_fmt && *new_fmt)
            xmlSetProp(drv, (const xmlChar *) "type", (const xmlChar *) new_fmt);
        /* the old chain description no longer holds */
        xmlNode *bs = child(d, "backingStore");
        if (bs) {
            xmlUnlinkNode(bs);
            xmlFreeNode(bs);
        }
        xmlChar *out = NULL;
        int len = 0;
        xmlDocDumpMemoryEnc(doc, &out, &len, "UTF-8");  /* never the input's encoding */
        *ret = out ? strndup((const char *) out, (size_t) len) : NULL;
        xmlFree(out);
        return *ret ? 0 : -ENOMEM;
    }
    return -ENOENT;
}

int
lv_xml_macs(const char *domain_xml, char ***ret)
{
    _cleanup_(xml_doc_freep) xmlDocPtr doc = parse(domain_xml);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    xmlNode *devices = child(root, "devices");
    size_t n = 0;

    if (!is(root, "domain"))
        return -EINVAL;
    for (xmlNode *d = devices ? devices->children : NULL; d; d = d->next)
        n += is(d, "interface");
    char **v = calloc(n + 1, sizeof *v);
    if (!v)
        return -ENOMEM;
    n = 0;
    for (xmlNode *d = devices ? devices->children : NULL; d; d = d->next) {
        char *mac = is(d, "interface") ? attr(child(d, "mac"), "address") : NULL;
        if (mac)
            v[n++] = mac;
    }
    *ret = v;
    return 0;
}

static bool
in_strv(char *const *v, const char *s)
{
    for (size_t i = 0; v && v[i]; i++)
        if (strcasecmp(v[i], s) == 0)
            return true;
    return false;
}

static void
drop(xmlNode *n)
{
    xmlUnlinkNode(n);
    xmlFreeNode(n);
}

/* A file chardev's path naming the old VM names the new one: the first
 * occurrence of old in the file's name is replaced; a name without it
 * gets ".new" before its extension. */
static void
rename_path(xmlNode *src, const char *old, const char *new)
{
    _cleanup_free_ char *path = attr(src, "path");
    if (!path)
        return;
    char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *hit = strstr(base, old);
    _cleanup_free_ char *out = NULL;
    if (hit) {
        if (asprintf(&out, "%.*s%s%s", (int) (hit - path), path, new, hit + strlen(old)) < 0)
            return;
    } else {
        char *dot = strrchr(base, '.');
        int keep = dot ? (int) (dot - path) : (int) strlen(path);
        if (asprintf(&out, "%.*s.%s%s", keep, path, new, dot ? dot : "") < 0)
            return;
    }
    xmlSetProp(src, (const xmlChar *) "path", (const xmlChar *) out);
}

/* The VM's identity: its name, its UUID (dropped for a new VM: libvirt
 * makes one), the firmware's serial (the sysinfo uuid must match the
 * domain's, so it goes with it), its NVRAM file (a new VM gets its own). */
static int
edit_identity(xmlNode *root, const struct lv_xml_edit *e)
{
    if (e->name) {
        xmlNode *name = child(root, "name");
        if (!name)
            return -EINVAL;
        xmlNodeSetContent(name, NULL);
        xmlNodeAddContent(name, (const xmlChar *) e->name);
    }
    xmlNode *uuid = child(root, "uuid");
    if (e->drop_uuid && uuid)
        drop(uuid);
    xmlNode *sysinfo = child(root, "sysinfo");
    for (xmlNode *sec = sysinfo ? sysinfo->children : NULL; sec; sec = sec->next) {
        if (!is(sec, "system"))
            continue;
        xmlNode *next;
        for (xmlNode *en = sec->children; en; en = next) {
            next = en->next;
            _cleanup_free_ char *what = is(en, "entry") ? attr(en, "name") : NULL;
            if (!what)
                continue;
            if (e->drop_uuid && strcmp(what, "uuid") == 0) {
                drop(en);
            } else if (e->serial && strcmp(what, "serial") == 0) {
                xmlNodeSetContent(en, NULL);
                xmlNodeAddContent(en, (const xmlChar *) e->serial);
            }
        }
    }
    if (e->drop_uuid) {
        xmlNode *nvram = child(child(root, "os"), "nvram");
        if (nvram)
            drop(nvram);
    }
    return 0;
}

/* Disk d on its new source: a qcow2 file. */
static void
edit_disk_source(xmlNode *d, const char *source)
{
    xmlNode *src = child(d, "source");
    if (src)
        drop(src);
    xmlNode *bs = child(d, "backingStore");
    if (bs)
        drop(bs);
    src = xmlNewNode(NULL, (const xmlChar *) "source");
    xmlSetProp(src, (const xmlChar *) "file", (const xmlChar *) source);
    xmlNode *drv = child(d, "driver");
    if (drv) {
        xmlSetProp(drv, (const xmlChar *) "type", (const xmlChar *) "qcow2");
        xmlAddNextSibling(drv, src);
    } else {
        xmlAddChild(d, src);
    }
    xmlSetProp(d, (const xmlChar *) "type", (const xmlChar *) "file");
}

/* Disks on their new sources or dropped, MAC addresses dropped, a renamed
 * VM's log files renamed; -ENOENT if a disk to change is not there. */
static int
edit_devices(xmlNode *root, const struct lv_xml_edit *e)
{
    xmlNode *devices = child(root, "devices"), *next;
    size_t found = 0, wanted = 0;

    for (size_t i = 0; e->disk_targets && e->disk_targets[i]; i++)
        wanted++;
    for (xmlNode *d = devices ? devices->children : NULL; d; d = next) {
        next = d->next;
        if (is(d, "disk")) {
            _cleanup_free_ char *dev = attr(child(d, "target"), "dev");
            if (!dev)
                continue;
            if (in_strv(e->drop_disks, dev)) {
                drop(d);
                continue;
            }
            for (size_t i = 0; e->disk_targets && e->disk_targets[i]; i++) {
                if (strcmp(e->disk_targets[i], dev) == 0) {
                    found++;
                    edit_disk_source(d, e->disk_sources[i]);
                }
            }
        } else if (is(d, "interface")) {
            xmlNode *mac = child(d, "mac");
            _cleanup_free_ char *addr = attr(mac, "address");
            if (mac && (e->new_macs || (addr && in_strv(e->drop_macs, addr))))
                drop(mac);
        } else if (e->name && e->old_name &&
                   (is(d, "serial") || is(d, "console") || is(d, "channel") ||
                    is(d, "parallel"))) {
            _cleanup_free_ char *type = attr(d, "type");
            if (type && strcmp(type, "file") == 0 && child(d, "source"))
                rename_path(child(d, "source"), e->old_name, e->name);
        }
    }
    return found == wanted ? 0 : -ENOENT;
}

/* <vmsnapfs:restore id= snapshot=/> in the metadata: the restore's mark,
 * replacing an older one. */
static int
edit_restore_mark(xmlNode *root, const struct lv_xml_edit *e)
{
    xmlNode *meta = child(root, "metadata"), *next;

    if (!meta)
        meta = xmlNewChild(root, NULL, (const xmlChar *) "metadata", NULL);
    for (xmlNode *m = meta ? meta->children : NULL; m; m = next) {
        next = m->next;
        if (m->type == XML_ELEMENT_NODE && m->ns && m->ns->href &&
            strcmp((const char *) m->ns->href, LV_XML_RESTORE_NS) == 0)
            drop(m);
    }
    xmlNode *mark = meta ? xmlNewChild(meta, NULL, (const xmlChar *) "restore", NULL) : NULL;
    xmlNs *ns = mark ? xmlNewNs(mark, (const xmlChar *) LV_XML_RESTORE_NS,
                                (const xmlChar *) "vmsnapfs") : NULL;
    if (!ns)
        return -ENOMEM;
    xmlSetNs(mark, ns);
    xmlSetProp(mark, (const xmlChar *) "id", (const xmlChar *) e->restore_id);
    if (e->restore_snap)
        xmlSetProp(mark, (const xmlChar *) "snapshot", (const xmlChar *) e->restore_snap);
    return 0;
}

int
lv_xml_edit(const char *domain_xml, const struct lv_xml_edit *e, char **ret)
{
    _cleanup_(xml_doc_freep) xmlDocPtr doc = parse(domain_xml);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    int r;

    if (!is(root, "domain"))
        return -EINVAL;
    r = edit_identity(root, e);
    if (r >= 0)
        r = edit_devices(root, e);
    if (r >= 0 && e->restore_id)
        r = edit_restore_mark(root, e);
    if (r < 0)
        return r;

    xmlChar *out = NULL;
    int len = 0;
    xmlDocDumpMemoryEnc(doc, &out, &len, "UTF-8");  /* never the input's encoding */
    *ret = out ? strndup((const char *) out, (size_t) len) : NULL;
    xmlFree(out);
    return *ret ? 0 : -ENOMEM;
}

char *
lv_xml_restore_mark(const char *domain_xml)
{
    _cleanup_(xml_doc_freep) xmlDocPtr doc = parse(domain_xml);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    xmlNode *meta = is(root, "domain") ? child(root, "metadata") : NULL;

    for (xmlNode *m = meta ? meta->children : NULL; m; m = m->next)
        if (m->type == XML_ELEMENT_NODE && m->ns && m->ns->href &&
            strcmp((const char *) m->ns->href, LV_XML_RESTORE_NS) == 0 &&
            strcmp((const char *) m->name, "restore") == 0)
            return attr(m, "id");
    return NULL;
}
