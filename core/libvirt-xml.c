/* core/libvirt-xml.c: see libvirt-xml.h. */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

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

    xmlNode *dom = child(root, "domain");
    if (dom) {
        xmlBufferPtr buf = xmlBufferCreate();
        if (buf && xmlNodeDump(buf, doc, dom, 0, 1) >= 0)
            s.domain = strdup((const char *) xmlBufferContent(buf));
        xmlBufferFree(buf);
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
        xmlDocDumpMemory(doc, &out, &len);
        *ret = out ? strndup((const char *) out, (size_t) len) : NULL;
        xmlFree(out);
        return *ret ? 0 : -ENOMEM;
    }
    return -ENOENT;
}
