#!/usr/bin/env python3
"""tests/kube/fake-apiserver.py: a fake Kubernetes API server with KubeVirt,
for the KubeVirt backend's tests (no cluster runs here).

Faithful to Kubernetes and KubeVirt as they behave (the facts are the
project's kubevirt-api.md; the wire conventions are checked with the real
kubectl in tests/integration/kube-fake.sh), never shaped to vmsnapfs:

- HTTPS with a CA it makes (openssl), bearer-token and client-certificate
  auth; discovery (/api, /apis, /version); a kubeconfig written for tests.
- Objects with uid, resourceVersion (one counter), generation,
  creationTimestamp; list (limit/continue, labelSelector, fieldSelector),
  get, create (generateName), replace (resourceVersion required, 409 on a
  stale one), merge and JSON patches (test included; strategic merge 415),
  delete with finalizers (deletionTimestamp), status subresources; watch as
  a chunked stream of JSON events with bookmarks, timeoutSeconds and 410
  Expired for a resourceVersion older than the retained history.
- KubeVirt's controllers, simplified but with their observable sequence:
  VMs start and stop by runStrategy (a VMI, printableStatus, AgentConnected
  while the guest agent runs); the snapshot controller (finalizers, lock,
  content, freeze, VolumeSnapshots cut then ready: phase Succeeded comes
  before readyToUse; indications; failureDeadline; deletion); freeze and
  unfreeze subresources with the guest's auto-thaw; start/stop; the
  restore controller (VirtualMachineRestore: readiness policies, new
  claims from the VolumeSnapshots, the target VM replaced or created
  Halted with spec.patches applied); clone.kubevirt.io
  VirtualMachineClone (v1alpha1, v1beta1) and its controller (temporary
  snapshot and restore, generated patches, cleanup once the claims are
  Bound); KubeVirt's webhooks (CRD defaults and enums, the validating
  webhooks, the VM mutator's firmware uuid/serial on create);
  backup.kubevirt.io (kubevirt-api.md 12): changed block tracking for VMs
  labelled changedBlockTracking: "true" (or in a namespace so labelled),
  Initializing then Enabled from their next start, PendingRestart while a
  running VM waits for one; each disk's checkpoints and dirty clusters
  (64 KiB); VirtualMachineBackupTracker; VirtualMachineBackup in Pull mode
  (CEL rules, the webhook's gate and in-progress checks, prerequisites as
  Initializing messages, the finalizer, freeze unless skipQuiesce, the
  checkpoint, Quiesced, a VirtualMachineExport with backups links, the map
  endpoint with base:allocation merged with the dirty bitmap and paging,
  the data endpoint streamed without Content-Length, ExportReady; deletion
  or the TTL ends it as a success and moves the tracker). Not simulated:
  Push mode (such a backup fails), the utility volume hotplug on the VMI,
  checkpoint redefinition after a restart (a checkpoint a disk does not
  have makes the backup Full); --no-incremental-backup turns the gate off.
  Secrets fold stringData into data. Server-side
  tables for the printer columns; owner-reference garbage collection of
  what the restore and clone controllers make.
- Faults, per VM, by annotation: fake.vmsnapfs.io/agent: "absent";
  fake.vmsnapfs.io/freeze: "fail" | "hang:SECONDS" (the freeze call fails
  after 1 s, but the guest's freeze lands SECONDS later anyway and holds
  until unfreezeTimeout: upstream's frozen-guest race);
  fake.vmsnapfs.io/ready-delay: SECONDS (VolumeSnapshots ready late);
  fake.vmsnapfs.io/restore-delay: SECONDS (the claims a VirtualMachineRestore
  makes stay Pending that long, so the restore waits in "Waiting for new
  PVCs"; read from the restore's target VM, or from the VM captured in the
  snapshot when the target does not exist yet).

- RBAC as a namespace-limited user sees it (--team NS,...): a second token
  (context "team") bound by RoleBindings to those namespaces only: requests
  at the cluster scope or in another namespace get 403 Forbidden with
  Kubernetes' message; discovery stays open.

Usage: fake-apiserver.py --dir DIR [--port-file F] [--history N] [--team NS,...]
                         [--no-clone] [--no-incremental-backup]
  DIR gets ca.crt, token, admin.crt/key and kubeconfig (contexts "fake"
  with the token, "fake-cert" with the client certificate, "team" with the
  team token if --team).
  --no-clone: clone.kubevirt.io is not served at all (an older or trimmed
  cluster): not in discovery, its URLs answer 404 as for any unknown group,
  no clone controller.
"""

import argparse
import base64
import copy
import datetime
import http.server
import json
import os
import re
import secrets
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

# ---- resources -------------------------------------------------------------

class Res:
    def __init__(self, group, versions, plural, kind, namespaced=True, short=(),
                 status=True, storage=None, columns=None):
        self.group, self.versions, self.plural, self.kind = group, versions, plural, kind
        self.namespaced, self.short, self.status = namespaced, list(short), status
        self.singular = kind.lower()
        self.storage = storage or versions[-1]
        # the CRD's additionalPrinterColumns (name, type, JSONPath): the
        # server answers kubectl's Accept: ...;as=Table with them
        self.columns = columns


RESOURCES = [
    Res("", ["v1"], "namespaces", "Namespace", namespaced=False, short=["ns"]),
    Res("", ["v1"], "persistentvolumeclaims", "PersistentVolumeClaim", short=["pvc"]),
    Res("kubevirt.io", ["v1"], "virtualmachines", "VirtualMachine", short=["vm", "vms"]),
    Res("kubevirt.io", ["v1"], "virtualmachineinstances", "VirtualMachineInstance",
        short=["vmi", "vmis"]),
    Res("snapshot.kubevirt.io", ["v1alpha1", "v1beta1"], "virtualmachinesnapshots",
        "VirtualMachineSnapshot", short=["vmsnapshot", "vmsnapshots"],
        columns=[("SourceKind", "string", ".spec.source.kind"),
                 ("SourceName", "string", ".spec.source.name"),
                 ("Phase", "string", ".status.phase"),
                 ("ReadyToUse", "boolean", ".status.readyToUse"),
                 ("CreationTime", "date", ".status.creationTime"),
                 ("Error", "string", ".status.error.message")]),
    Res("snapshot.kubevirt.io", ["v1alpha1", "v1beta1"], "virtualmachinesnapshotcontents",
        "VirtualMachineSnapshotContent", short=["vmsnapshotcontent", "vmsnapshotcontents"],
        columns=[("ReadyToUse", "boolean", ".status.readyToUse"),
                 ("CreationTime", "date", ".status.creationTime"),
                 ("Error", "string", ".status.error.message")]),
    Res("snapshot.kubevirt.io", ["v1alpha1", "v1beta1"], "virtualmachinerestores",
        "VirtualMachineRestore", short=["vmrestore", "vmrestores"],
        columns=[("TargetKind", "string", ".spec.target.kind"),
                 ("TargetName", "string", ".spec.target.name"),
                 ("Complete", "boolean", ".status.complete"),
                 ("RestoreTime", "date", ".status.restoreTime")]),
    Res("", ["v1"], "secrets", "Secret", status=False),
    Res("export.kubevirt.io", ["v1beta1"], "virtualmachineexports", "VirtualMachineExport",
        short=["vmexport", "vmexports"],
        columns=[("SourceKind", "string", ".spec.source.kind"),
                 ("SourceName", "string", ".spec.source.name"),
                 ("Phase", "string", ".status.phase")]),
    # kubevirt-api.md 12.1: backup.kubevirt.io v1alpha1 (KubeVirt 1.8+)
    Res("backup.kubevirt.io", ["v1alpha1"], "virtualmachinebackups", "VirtualMachineBackup",
        short=["vmbackup", "vmbackups"],
        columns=[("SourceKind", "string", ".spec.source.kind"),
                 ("SourceName", "string", ".spec.source.name"),
                 ("Type", "string", ".status.type"),
                 ("CheckpointName", "string", ".status.checkpointName")]),
    Res("backup.kubevirt.io", ["v1alpha1"], "virtualmachinebackuptrackers",
        "VirtualMachineBackupTracker", short=["vmbackuptracker", "vmbackuptrackers"],
        columns=[("SourceKind", "string", ".spec.source.kind"),
                 ("SourceName", "string", ".spec.source.name"),
                 ("LatestCheckpoint", "string", ".status.latestCheckpoint.name"),
                 ("CheckpointTime", "date", ".status.latestCheckpoint.creationTime")]),
    # kubevirt-api.md 11.1: v1alpha1 served, v1beta1 served and stored
    Res("clone.kubevirt.io", ["v1alpha1", "v1beta1"], "virtualmachineclones",
        "VirtualMachineClone", short=["vmclone", "vmclones"],
        columns=[("Phase", "string", ".status.phase"),
                 ("SourceVirtualMachine", "string", ".spec.source.name"),
                 ("TargetVirtualMachine", "string", ".spec.target.name")]),
]
SUBRESOURCES = {  # subresources.kubevirt.io/v1
    ("virtualmachineinstances", "freeze"), ("virtualmachineinstances", "unfreeze"),
    ("virtualmachines", "start"), ("virtualmachines", "stop"),
}


def res_by(group, version, plural):
    for r in RESOURCES:
        if r.group == group and r.plural == plural and version in r.versions:
            return r
    return None


def api_version(group, version):
    return version if not group else group + "/" + version


def now_str():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(s):
    """Go duration ("5m0s", "1m", "90s", "0s") in seconds."""
    if s is None:
        return None
    total, pos = 0.0, 0
    for m in re.finditer(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", s):
        if m.start() != pos:
            raise ValueError(s)
        total += float(m.group(1)) * {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3,
                                       "s": 1, "m": 60, "h": 3600}[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        if s == "0":
            return 0.0
        raise ValueError(s)
    return total


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": self.message, "code": self.code}
        if self.reason:
            st["reason"] = self.reason
        if self.details:
            st["details"] = self.details
        return st


def not_found(r, name):
    res = r.plural + ("." + r.group if r.group else "")
    return ApiError(404, "NotFound", '%s "%s" not found' % (res, name),
                    {"name": name, "group": r.group, "kind": r.plural})


def invalid(r, name, field, msg, webhook=None, reason="FieldValueInvalid"):
    if webhook:
        return denied(webhook, [(reason, msg, field)])
    text = '%s.%s "%s" is invalid: %s: %s' % (r.kind, r.group, name, field, msg)
    return ApiError(422, "Invalid", text,
                    {"name": name, "group": r.group, "kind": r.kind,
                     "causes": [{"reason": reason, "message": msg, "field": field}]})


def denied(webhook, causes):
    """A KubeVirt validating webhook's refusal as kube-apiserver passes it on
    (webhooks.go ToAdmissionResponse, then apiserver ToStatusErr): 422
    Invalid, the causes' messages joined with ", ", details = the causes
    only. causes: [(reason, message, field)]."""
    msg = ", ".join(m for _, m, _ in causes)
    return ApiError(422, "Invalid", 'admission webhook "%s" denied the request: %s' % (webhook, msg),
                    {"causes": [dict({"reason": rs, "message": m}, **({"field": f} if f else {}))
                                for rs, m, f in causes]})


def schema_invalid(r, name, errs):
    """The CRD's OpenAPI validation failing (apiextensions-apiserver, field
    ErrorList): errs [(reason, field, detail)]; one error is printed alone,
    several as [a, b]."""
    parts = ["%s: %s" % (f, d) for _, f, d in errs]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(422, "Invalid", '%s.%s "%s" is invalid: %s' % (r.kind, r.group, name, text),
                    {"name": name, "group": r.group, "kind": r.kind,
                     "causes": [{"reason": rs, "message": d, "field": f} for rs, f, d in errs]})


NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# ---- the store ----------------------------------------------------------------

class Store:
    def __init__(self, history):
        self.lock = threading.Condition()
        self.rv = 1000
        self.objects = {}           # (group, plural, ns, name) -> object (storage form)
        self.events = []            # (rv, group, plural, ns, type, object)
        self.history = history
        self.oldest = self.rv       # watches from below this get 410
        self.closed = False

    def _record(self, r, ns, type_, obj):
        self.events.append((self.rv, r.group, r.plural, ns, type_, copy.deepcopy(obj)))
        if len(self.events) > self.history:
            drop = len(self.events) - self.history
            self.oldest = self.events[drop - 1][0]
            del self.events[:drop]
        self.lock.notify_all()

    def _bump(self, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def get(self, r, ns, name):
        with self.lock:
            o = self.objects.get((r.group, r.plural, ns, name))
            return copy.deepcopy(o) if o else None

    def list(self, r, ns):
        with self.lock:
            items = [copy.deepcopy(o) for (g, p, n, _), o in sorted(self.objects.items())
                     if g == r.group and p == r.plural and (ns is None or n == ns)]
            return items, self.rv

    def scan(self, r, ns=None):
        """The stored objects themselves, not copies, for reading only (a
        stored object is never changed in place: updates store a new one)."""
        with self.lock:
            return [o for (g, p, n, _), o in self.objects.items()
                    if g == r.group and p == r.plural and (ns is None or n == ns)]

    def create(self, r, ns, obj):
        with self.lock:
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            name = meta.get("name")
            if not name:
                raise invalid(r, "", "metadata.name", "Required value: name or generateName is required")
            if len(name) > 253 or not NAME_RE.match(name):
                raise invalid(r, name, "metadata.name", 'Invalid value: "%s": a lowercase RFC '
                              "1123 subdomain must consist of lower case alphanumeric "
                              "characters, '-' or '.'" % name)
            if r.namespaced:
                if ("", "namespaces", None, ns) not in self.objects:
                    raise ApiError(404, "NotFound", 'namespaces "%s" not found' % ns,
                                   {"name": ns, "kind": "namespaces"})
                meta["namespace"] = ns
            key = (r.group, r.plural, ns, name)
            if key in self.objects:
                res = r.plural + ("." + r.group if r.group else "")
                raise ApiError(409, "AlreadyExists", '%s "%s" already exists' % (res, name),
                               {"name": name, "group": r.group, "kind": r.plural})
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_str()
            meta["generation"] = 1
            meta.pop("resourceVersion", None)
            meta.pop("deletionTimestamp", None)
            obj["apiVersion"] = api_version(r.group, r.storage)
            obj["kind"] = r.kind
            self._bump(obj)
            self.objects[key] = obj
            self._record(r, ns, "ADDED", obj)
            return copy.deepcopy(obj)

    def update(self, r, ns, name, fn, rv=None, status_only=False, main_only=False):
        """fn(obj) changes a copy in place; the store writes it back."""
        with self.lock:
            key = (r.group, r.plural, ns, name)
            cur = self.objects.get(key)
            if cur is None:
                raise not_found(r, name)
            if rv is not None and rv != cur["metadata"]["resourceVersion"]:
                res = r.plural + ("." + r.group if r.group else "")
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the '
                               "object has been modified; please apply your changes to the "
                               "latest version and try again" % (res, name),
                               {"name": name, "group": r.group, "kind": r.plural})
            new = copy.deepcopy(cur)
            fn(new)
            if status_only:
                keep = copy.deepcopy(cur)
                keep["status"] = new.get("status", {})
                new = keep
            elif main_only and r.status:
                new["status"] = copy.deepcopy(cur.get("status"))
                if new["status"] is None:
                    del new["status"]
            meta, old = new["metadata"], cur["metadata"]
            for k in ("uid", "creationTimestamp", "namespace", "name"):
                if k in old:
                    meta[k] = old[k]
                else:
                    meta.pop(k, None)
            meta["generation"] = old.get("generation", 1)
            if old.get("deletionTimestamp"):
                meta["deletionTimestamp"] = old["deletionTimestamp"]
            if new.get("spec") != cur.get("spec"):
                meta["generation"] += 1
            new["apiVersion"], new["kind"] = cur["apiVersion"], cur["kind"]
            if new == cur:
                return copy.deepcopy(cur)       # no write, no new resourceVersion
            self._bump(new)
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                del self.objects[key]
                self._record(r, ns, "DELETED", new)
            else:
                self.objects[key] = new
                self._record(r, ns, "MODIFIED", new)
            return copy.deepcopy(new)

    def delete(self, r, ns, name):
        with self.lock:
            key = (r.group, r.plural, ns, name)
            cur = self.objects.get(key)
            if cur is None:
                raise not_found(r, name)
            if cur["metadata"].get("finalizers"):
                if not cur["metadata"].get("deletionTimestamp"):
                    cur = copy.deepcopy(cur)
                    cur["metadata"]["deletionTimestamp"] = now_str()
                    cur["metadata"]["deletionGracePeriodSeconds"] = 0
                    self._bump(cur)
                    self.objects[key] = cur
                    self._record(r, ns, "MODIFIED", cur)
                return copy.deepcopy(cur), False
            del self.objects[key]
            gone = copy.deepcopy(cur)
            self._bump(gone)
            self._record(r, ns, "DELETED", gone)
            return gone, True

# ---- patches ----------------------------------------------------------------------

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = copy.deepcopy(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError("bad path " + path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops, v4=False):
    """RFC 6902. v4: gopkg.in/evanphx/json-patch.v4 as KubeVirt's restore
    controller applies spec.patches: "replace" of a missing object key
    sets it, like "add" (its partialDoc.get never reports a missing key)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        parent, last = doc, None
        try:
            for p in parts[:-1]:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
            if not isinstance(parent, (dict, list)):
                raise TypeError(parent)
        except (KeyError, IndexError, ValueError, TypeError):
            raise ValueError("%s operation does not apply: %sis missing path: %s" % (
                kind, "" if kind == "test" else "doc ", op.get("path")))
        last = parts[-1] if parts else None

        def present():
            if isinstance(parent, list):
                return last == "-" or 0 <= int(last) < len(parent)
            return last in parent
        if kind == "test":
            if not present():
                raise ValueError("test operation does not apply: is missing path: " + op["path"])
            cur = parent[int(last)] if isinstance(parent, list) else parent[last]
            if cur != op.get("value"):
                raise ValueError("testing value %s failed" % op["path"])
        elif kind in ("add", "replace"):
            if kind == "replace" and not present() and not (v4 and isinstance(parent, dict)):
                raise ValueError("replace operation does not apply: doc is missing key: " + op["path"])
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if not present():
                raise ValueError("remove operation does not apply: doc is missing path: " + op["path"])
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                del parent[last]
        else:
            raise ValueError("unsupported operation " + str(kind))
    return doc

# ---- selectors ------------------------------------------------------------------------

def selector_matches(obj, labels, fields):
    meta = obj.get("metadata", {})
    for term in filter(None, (labels or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if meta.get("labels", {}).get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if meta.get("labels", {}).get(k.rstrip("=")) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in meta.get("labels", {}):
                return False
        elif term not in meta.get("labels", {}):
            return False
    for term in filter(None, (fields or "").split(",")):
        neg = "!=" in term
        k, v = term.split("!=" if neg else "=", 1)
        k = k.rstrip("=")
        cur = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}
        if k not in cur:
            raise ApiError(400, "BadRequest", 'field label not supported: %s' % k)
        if (cur[k] == v) == neg:
            return False
    return True

# ---- KubeVirt ---------------------------------------------------------------------------

R = {r.plural: r for r in RESOURCES}
# snapshot.go snapshotIndicationMessages
INDICATION_MESSAGES = {
    "Online": "Snapshot taken while the VM was running. Consistency depends on guest-agent "
              "quiescing.",
    "GuestAgent": "Guest agent was active and attempted to quiesce the filesystem for "
                  "application consistency.",
    "NoGuestAgent": "Guest agent was not available. Snapshot is crash-consistent and may not "
                    "be application-consistent.",
    "Paused": "Snapshot taken while the VM was paused. Snapshot is crash-consistent and may "
              "not be application-consistent.",
}
ANN = "fake.vmsnapfs.io/"


def annotation(obj, key, default=None):
    return (obj.get("metadata", {}).get("annotations") or {}).get(ANN + key, default)


def set_condition(conds, type_, status, reason=None):
    """Replaced only when status or reason change (util.go updateCondition)."""
    for c in conds:
        if c["type"] == type_:
            if c.get("status") != status or c.get("reason") != reason:
                c.update(status=status, lastTransitionTime=now_str())
                if reason is None:
                    c.pop("reason", None)
                else:
                    c["reason"] = reason
            return
    c = {"type": type_, "status": status, "lastProbeTime": None,
         "lastTransitionTime": now_str()}
    if reason is not None:
        c["reason"] = reason
    conds.append(c)


class Guest:
    """What runs inside a VMI: its agent and its filesystems."""
    def __init__(self):
        self.frozen = False
        self.thaw_at = None         # virt-launcher thaws by itself then
        self.pending = False        # a freeze that will land late
        self.late = 0               # freezes that landed after their call failed
        self.thawed_by = None       # "unfreeze" or "timer": how it last thawed


def quantity(q):
    """A Kubernetes quantity ("1Gi", "512Mi", "1G", "100") in bytes."""
    m = re.fullmatch(r"([0-9.]+)([KMGTPE]i?|k)?", str(q or "0"))
    if not m:
        raise ValueError(q)
    unit = m.group(2) or ""
    mult = {"": 1, "k": 1000, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4,
            "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4}[unit]
    return int(float(m.group(1)) * mult)


CBT_CLUSTER = 65536                 # libvirt's dirty-bitmap granularity


class Disks:
    """The bytes of PersistentVolumeClaims and VolumeSnapshots: sparse files
    under DIR/data (what CSI storage would hold). The tests write into a
    VM's disk as its guest would (/fake/disk) and compare exports with
    these files."""

    def __init__(self, d):
        self.d = d
        self.lock = threading.Lock()
        self.cbt = {}               # (ns, pvc) -> [(checkpoint, set of dirty clusters)]
        self.cbt_live = set()       # (ns, pvc) under a running VMI with CBT

    def path(self, ns, pvc):
        return os.path.join(self.d, ns, "pvc-%s.img" % pvc)

    def vs_path(self, ns, vs):
        return os.path.join(self.d, ns, "vs-%s.img" % vs)

    def make(self, ns, pvc, size):
        os.makedirs(os.path.join(self.d, ns), exist_ok=True)
        p = self.path(ns, pvc)
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.truncate(size)

    def cut(self, ns, pvc, vs):
        """A VolumeSnapshot of the claim: its bytes now."""
        with self.lock:
            if os.path.exists(self.path(ns, pvc)) and not os.path.exists(self.vs_path(ns, vs)):
                subprocess.run(["cp", "--sparse=always", self.path(ns, pvc), self.vs_path(ns, vs)],
                               check=True)

    def restore(self, ns, pvc, vs, size):
        """A claim made from a VolumeSnapshot (dataSource)."""
        os.makedirs(os.path.join(self.d, ns), exist_ok=True)
        with self.lock:
            if not os.path.exists(self.path(ns, pvc)):
                if os.path.exists(self.vs_path(ns, vs)):
                    subprocess.run(["cp", "--sparse=always", self.vs_path(ns, vs),
                                    self.path(ns, pvc)], check=True)
                with open(self.path(ns, pvc), "ab") as f:
                    if f.tell() < size:
                        f.truncate(size)

    def write(self, ns, pvc, offset, data):
        with self.lock, open(self.path(ns, pvc), "r+b") as f:
            f.seek(offset)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            self.dirty(ns, pvc, offset, len(data))

    def discard(self, ns, pvc, offset, length):
        """The guest discards (fstrim): the range becomes a hole."""
        with self.lock:
            subprocess.run(["fallocate", "--punch-hole", "--offset", str(offset), "--length",
                            str(length), self.path(ns, pvc)], check=True)
            self.dirty(ns, pvc, offset, length)

    # Changed block tracking (kubevirt-api.md 12.2): per disk of a VMI that
    # has it, libvirt's checkpoints, each with the bitmap of the clusters
    # written since it was made (the last one is the active bitmap).
    def tracking(self, ns, pvc, on=True):
        """A VMI with CBT starts (on) or stops on the disk: only its
        guest's writes reach the bitmaps (what reaches the disk while it is
        stopped, a restore or another tool, is not tracked)."""
        with self.lock:
            self.cbt.setdefault((ns, pvc), [])
            (self.cbt_live.add if on else self.cbt_live.discard)((ns, pvc))

    def dirty(self, ns, pvc, offset, length):
        cps = self.cbt.get((ns, pvc))
        if cps and length > 0 and (ns, pvc) in self.cbt_live:
            cps[-1][1].update(range(offset // CBT_CLUSTER, (offset + length - 1) // CBT_CLUSTER + 1))

    def checkpoints(self, ns, pvc):
        with self.lock:
            return [c for c, _ in self.cbt.get((ns, pvc)) or []]

    def backup_begin(self, ns, pvc, since, checkpoint, copy_path):
        """libvirt's BackupBegin for one disk: its point-in-time copy (what
        the NBD export serves), the clusters written since checkpoint since
        (None: a full backup), and the new checkpoint."""
        with self.lock:
            cps = self.cbt.setdefault((ns, pvc), [])
            dirty = None
            if since is not None:
                names = [c for c, _ in cps]
                dirty = set()
                for _, bits in cps[names.index(since):]:
                    dirty |= bits
            subprocess.run(["cp", "--sparse=always", self.path(ns, pvc), copy_path], check=True)
            cps.append((checkpoint, set()))
            return dirty

    def drop(self, ns, pvc):
        try:
            os.unlink(self.path(ns, pvc))
        except OSError:
            pass


class RestoreRetry(Exception):
    """An error of the restore controller's pass: its text becomes the
    reason of Progressing and Ready (doUpdateError), and it is retried."""


def run_strategy(vm):
    """VirtualMachine.RunStrategy(): runStrategy, or running true/false."""
    spec = vm.get("spec") or {}
    return spec.get("runStrategy") or ("Always" if spec.get("running") else "Halted")


def owner_ref(api, kind, obj):
    return {"apiVersion": api, "kind": kind, "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def age_seconds(obj):
    created = datetime.datetime.strptime(obj["metadata"]["creationTimestamp"],
                                         "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return (datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()


def disk_claim(v):
    """The claim of a VM volume that is a disk on a claim (PVC or
    DataVolume, whose PVC has its name), or None."""
    return (v.get("persistentVolumeClaim") or {}).get("claimName") or \
        (v.get("dataVolume") or {}).get("name")


def vm_volumes(vm):
    return (((vm.get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or []


def backend_storage(vm, cbt=False):
    """backendstorage.IsBackendStorageNeeded: persistent TPM or EFI; for a
    live VM also changed block tracking (kubevirt-api.md 11.7)."""
    dom = (((vm.get("spec") or {}).get("template") or {}).get("spec") or {}).get("domain") or {}
    if ((dom.get("devices") or {}).get("tpm") or {}).get("persistent"):
        return True
    if ((((dom.get("firmware") or {}).get("bootloader") or {}).get("efi")) or {}).get("persistent"):
        return True
    return bool(cbt and ((vm.get("status") or {}).get("changedBlockTracking") or {}).get("state")
                in ("Initializing", "Enabled"))


MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}$|"
                    r"^[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}$")


def mac_ok(mac):
    """Go net.ParseMAC, and no more than 6 octets (link.ValidateMacAddress)."""
    return MAC_RE.match(mac) is not None


def naming_get_name(base, suffix, max_len):
    """openshift library-go naming.GetName: <base>-<suffix>, shortened with
    an FNV-32a hash of the base when longer than max_len."""
    def fnv(s):
        h = 2166136261
        for b in s.encode():
            h = ((h ^ b) * 16777619) & 0xffffffff
        return "%08x" % h
    name = "%s-%s" % (base, suffix)
    if len(name) <= max_len:
        return name
    base_len = max_len - 10 - len(suffix)
    if base_len < 0:
        short = "%s-%s" % (base[:min(len(base), max(0, max_len - 9))], fnv(name))
        return short[:max_len]
    return "%s-%s-%s" % (base[:base_len], fnv(base), suffix)


def go_json(obj):
    """Go's json.Marshal of a small object: compact, HTML characters escaped."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).replace(
        "<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def clone_patches(vm, cspec):
    """vm-target.go generatePatches (kubevirt-api.md 11.6), as strings."""
    ops = []
    spec = vm.get("spec") or {}
    dom = (((spec.get("template") or {}).get("spec")) or {}).get("domain") or {}
    macs = cspec.get("newMacAddresses") if isinstance(cspec.get("newMacAddresses"), dict) else {}
    for i, iface in enumerate((dom.get("devices") or {}).get("interfaces") or []):
        ops.append({"op": "replace",
                    "path": "/spec/template/spec/domain/devices/interfaces/%d/macAddress" % i,
                    "value": macs.get(iface.get("name"), "")})
    fw = dom.get("firmware")
    if fw is not None:
        ops.append({"op": "replace", "path": "/spec/template/spec/domain/firmware/serial",
                    "value": cspec.get("newSMBiosSerial") or ""})

    def removals(m, filters, base):
        if filters is None:
            return
        regular, negation = [], []
        for f in filters:
            if f == "*":
                regular.append(".*")
            elif f.startswith("!"):
                negation.append(f[1:])
            else:
                regular.append(f)

        def match(rx, key):             # Go regexp.MatchString: unanchored
            try:
                return re.search(rx, key) is not None
            except re.error:
                return False
        for key in sorted(m or {}):
            if not (any(match(f, key) for f in regular) and
                    not any(match(f, key) for f in negation)):
                ops.append({"op": "remove",
                            "path": "%s/%s" % (base, key.replace("~", "~0").replace("/", "~1"))})
    meta = vm.get("metadata") or {}
    removals(meta.get("labels"), cspec.get("labelFilters"), "/metadata/labels")
    ann = dict(meta.get("annotations") or {})
    ann.pop("restore.kubevirt.io/lastRestoreUID", None)
    removals(ann, cspec.get("annotationFilters"), "/metadata/annotations")
    tmeta = (spec.get("template") or {}).get("metadata") or {}
    ctmpl = cspec.get("template") if isinstance(cspec.get("template"), dict) else {}
    removals(tmeta.get("labels"), ctmpl.get("labelFilters"), "/spec/template/metadata/labels")
    removals(tmeta.get("annotations"), ctmpl.get("annotationFilters"),
             "/spec/template/metadata/annotations")
    if fw is not None:
        ops.append({"op": "replace", "path": "/spec/template/spec/domain/firmware/uuid", "value": ""})
    return [go_json(o) for o in ops] + [str(p) for p in cspec.get("patches") or []]


def patch_vm(vm, patches):
    """restore.go patchVM: the patches joined into one JSON Patch document,
    applied with evanphx json-patch v4, the result decoded into the Go type
    again (empty omitempty strings vanish)."""
    if not patches:
        return vm
    name = vm["metadata"]["name"]
    doc = "[\n" + ",\n".join(patches) + "\n]"
    try:
        ops = json.loads(doc)
        if not all(isinstance(o, dict) for o in ops):
            raise ValueError("an operation is not an object")
    except ValueError as e:
        raise RestoreRetry("error patching VM %s: cannot decode vm patches %s: %s" % (name, doc, e))
    try:
        out = json_patch(vm, ops, v4=True)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise RestoreRetry("error patching VM %s: failed to apply patch for VM %s: %s" % (name, doc, e))
    dom = (((out.get("spec") or {}).get("template") or {}).get("spec") or {}).get("domain") or {}
    for iface in (dom.get("devices") or {}).get("interfaces") or []:
        if isinstance(iface, dict) and iface.get("macAddress") == "":
            del iface["macAddress"]
    fw = dom.get("firmware")
    if isinstance(fw, dict):
        for k in ("uuid", "serial"):
            if fw.get(k) == "":
                del fw[k]
    return out


class KubeVirt:
    def __init__(self, store, tick, data=None):
        self.s, self.tick = store, tick
        self.disks = Disks(data) if data else None
        self.export_base = None     # https://HOST:PORT of the export proxy (the fake)
        self.ca_pem = ""
        self.guests = {}            # (ns, vmi name) -> Guest
        self.glock = threading.Lock()
        self.snapshot_started = {}  # snapshot uid -> monotonic start
        self.pvc_hold = {}          # (ns, pvc) -> monotonic time before which it stays Pending
        self.clone_served = True    # --no-clone: no clone.kubevirt.io, no clone controller
        self.backup_gate = True     # feature gate IncrementalBackup (--no-incremental-backup)
        self.cbt_vmis = {}          # (ns, vmi) -> CBT state of a VMI started with it
        self.backup_jobs = {}       # backup uid -> its job (backup_start)
        self.passes = 0

    # -- VMs -------------------------------------------------------------------
    def should_run(self, vm):
        spec = vm.get("spec", {})
        strat = spec.get("runStrategy")
        if strat is None:
            strat = "Always" if spec.get("running") else "Halted"
        return strat in ("Always", "RerunOnFailure", "Once") or (
            strat == "Manual" and vm.get("status", {}).get("_manualRun"))

    def reconcile_vms(self):
        vms, _ = self.s.list(R["virtualmachines"], None)
        pvcs = {(p["metadata"]["namespace"], p["metadata"]["name"]): p
                for p in self.s.scan(R["persistentvolumeclaims"])} if vms else {}
        for vm in vms:
            ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
            vmi = self.s.get(R["virtualmachineinstances"], ns, name)
            run = self.should_run(vm) and not vm["metadata"].get("deletionTimestamp")
            if run and vmi is None:
                self.s.create(R["virtualmachineinstances"], ns, {
                    "metadata": {"name": name, "labels": {"kubevirt.io/vm": name},
                                 "annotations": vm["metadata"].get("annotations", {}),
                                 "ownerReferences": [{"apiVersion": "kubevirt.io/v1",
                                                      "kind": "VirtualMachine", "name": name,
                                                      "uid": vm["metadata"]["uid"],
                                                      "controller": True,
                                                      "blockOwnerDeletion": True}]},
                    "spec": copy.deepcopy(vm.get("spec", {}).get("template", {}).get("spec", {}))})
                with self.glock:
                    self.guests[(ns, name)] = Guest()
                if self.cbt_selected(vm):
                    # its disks get CBT overlays (kubevirt-api.md 12.2)
                    self.cbt_vmis[(ns, name)] = "Initializing" if self.backup_gate else \
                        "IncrementalBackupFeatureGateDisabled"
                    if self.disks and self.backup_gate:
                        self.cbt_disks(vm, True)
                vmi = self.s.get(R["virtualmachineinstances"], ns, name)
            elif not run and vmi is not None:
                self.s.delete(R["virtualmachineinstances"], ns, name)
                with self.glock:
                    self.guests.pop((ns, name), None)
                if self.cbt_vmis.pop((ns, name), None) and self.disks:
                    self.cbt_disks(vm, False)
                vmi = None
            if vmi is not None:
                self.reconcile_vmi(vm, vmi)
            self.vm_status(vm, vmi, self.volume_snapshot_statuses(vm, pvcs))

    def cbt_disks(self, vm, on):
        """The VM's disks are tracked from its start (on) to its stop."""
        for v in vm_volumes(vm):
            if disk_claim(v):
                self.disks.tracking(vm["metadata"]["namespace"], disk_claim(v), on=on)

    def cbt_selected(self, vm):
        """changedBlockTrackingLabelSelectors as the e2e suite sets them:
        matchLabels changedBlockTracking: "true" on the VM or its namespace."""
        ns = self.s.get(R["namespaces"], None, vm["metadata"]["namespace"]) or {}
        return any(((o.get("metadata") or {}).get("labels") or {}).get("changedBlockTracking")
                   == "true" for o in (vm, ns))

    def cbt_state(self, vm, vmi):
        """VM and VMI status.changedBlockTracking.state ("" : none)."""
        key = (vm["metadata"]["namespace"], vm["metadata"]["name"])
        if vmi is not None and key in self.cbt_vmis:
            return self.cbt_vmis[key]
        if vmi is not None and self.cbt_selected(vm):
            return "PendingRestart" if self.backup_gate else "IncrementalBackupFeatureGateDisabled"
        return ""

    @staticmethod
    def claim_of(v):
        """The claim of a VM volume that can be snapshotted: PVC, DataVolume
        (its PVC has its name) or memory dump; None for other kinds."""
        return (v.get("persistentVolumeClaim") or {}).get("claimName") or \
            (v.get("dataVolume") or {}).get("name") or \
            (v.get("memoryDump") or {}).get("claimName")

    def volume_snapshot_statuses(self, vm, pvcs):
        """VM status.volumeSnapshotStatuses as the snapshot controller keeps
        them (kubevirt-api.md 2.3): whether each volume can be snapshotted
        (here: a claim with a storage class, as the fake's snapshots take)."""
        ns, out = vm["metadata"]["namespace"], []
        for v in vm.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            claim = self.claim_of(v)
            e = {"name": v.get("name"), "enabled": False}
            if not claim:
                e["reason"] = "Snapshot is not supported for this volumeSource type [%s]" % v.get("name")
            elif (ns, claim) not in pvcs:
                e["reason"] = "PVC not found"
            elif not (pvcs[(ns, claim)].get("spec") or {}).get("storageClassName"):
                e["reason"] = ("No VolumeSnapshotClass: Volume snapshots are not configured for "
                               "this StorageClass [] [%s]" % v.get("name"))
            else:
                e["enabled"] = True
            out.append(e)
        return out

    def reconcile_vmi(self, vm, vmi):
        ns, name = vmi["metadata"]["namespace"], vmi["metadata"]["name"]
        agent = annotation(vm, "agent") != "absent"
        cbt = self.cbt_state(vm, vmi)
        if cbt == "Initializing" and (vmi.get("status") or {}).get("changedBlockTracking"):
            cbt = self.cbt_vmis[(ns, name)] = "Enabled"     # the overlays are in place
        with self.glock:
            g = self.guests.setdefault((ns, name), Guest())
            if g.frozen and g.thaw_at is not None and time.monotonic() >= g.thaw_at:
                g.frozen, g.thaw_at = False, None       # virt-launcher's safety thaw
                g.thawed_by = "timer"
            frozen = g.frozen

        def fix(o):
            st = o.setdefault("status", {})
            st["phase"] = "Running"
            conds = st.setdefault("conditions", [])
            set_condition(conds, "Ready", "True")
            have = [c for c in conds if c["type"] == "AgentConnected"]
            if agent and not have:
                conds.append({"type": "AgentConnected", "status": "True",
                              "lastProbeTime": now_str(), "lastTransitionTime": None})
            elif not agent and have:
                conds.remove(have[0])           # removed, never set False
            if frozen:
                st["fsFreezeStatus"] = "frozen"
            else:
                st.pop("fsFreezeStatus", None)
            if cbt:
                st.setdefault("changedBlockTracking", {})["state"] = cbt
            else:
                st.pop("changedBlockTracking", None)
            vols = []
            for v in o.get("spec", {}).get("volumes", []):
                claim = disk_claim(v)
                pvc = self.s.get(R["persistentvolumeclaims"], ns, claim) if claim else None
                entry = {"name": v["name"], "target": ""}
                if pvc:
                    cap = pvc.get("status", {}).get("capacity", {}).get("storage")
                    entry["persistentVolumeClaimInfo"] = {"claimName": claim,
                                                          "capacity": {"storage": cap}}
                vols.append(entry)
            st["volumeStatus"] = vols
        self.s.update(R["virtualmachineinstances"], ns, name, fix)

    def vm_status(self, vm, vmi, vss=None):
        ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        agent = vmi is not None and any(c["type"] == "AgentConnected"
                                        for c in vmi.get("status", {}).get("conditions", []))

        def fix(o):
            st = o.setdefault("status", {})
            if o["metadata"].get("deletionTimestamp"):
                st["printableStatus"] = "Terminating"
            elif vmi is not None:
                st["printableStatus"] = "Running"
            else:
                st["printableStatus"] = "Stopped"
            st["created"] = vmi is not None
            st["ready"] = vmi is not None
            conds = st.setdefault("conditions", [])
            set_condition(conds, "Ready", "True" if vmi is not None else "False",
                          None if vmi is not None else "VMINotExists")
            have = [c for c in conds if c["type"] == "AgentConnected"]
            if agent and not have:
                conds.append({"type": "AgentConnected", "status": "True",
                              "lastProbeTime": None, "lastTransitionTime": None})
            elif not agent and have:
                conds.remove(have[0])
            if vss:
                st["volumeSnapshotStatuses"] = vss
            else:
                st.pop("volumeSnapshotStatuses", None)
            if cbt:
                st["changedBlockTracking"] = {"state": cbt}
            else:
                st.pop("changedBlockTracking", None)
        cbt = self.cbt_state(vm, vmi)
        if vmi is not None:
            cbt = ((vmi.get("status") or {}).get("changedBlockTracking") or {}).get("state") or cbt
        self.s.update(R["virtualmachines"], ns, name, fix, status_only=True)

    def reconcile_pvcs(self):
        pvcs, _ = self.s.list(R["persistentvolumeclaims"], None)
        for p in pvcs:
            if p.get("status", {}).get("phase") != "Bound":
                req = p.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")

                def fix(o, req=req):
                    o["status"] = {"phase": "Bound", "capacity": {"storage": req}}
                ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
                hold = self.pvc_hold.get((ns, name))
                if hold is not None:
                    if time.monotonic() < hold:
                        continue                # fake.vmsnapfs.io/restore-delay
                    del self.pvc_hold[(ns, name)]
                if self.disks:
                    src = (p.get("spec", {}).get("dataSource") or {})
                    if src.get("kind") == "VolumeSnapshot":
                        self.disks.restore(ns, name, src.get("name"), quantity(req))
                    else:
                        self.disks.make(ns, name, quantity(req))
                self.s.update(R["persistentvolumeclaims"], ns, name, fix, status_only=True)

    # -- freeze / unfreeze (virt-api + virt-handler + the guest) ----------------
    def freeze(self, ns, name, body):
        vmi = self.s.get(R["virtualmachineinstances"], ns, name)
        if vmi is None:
            raise ApiError(404, "NotFound", 'virtualmachineinstance.kubevirt.io "%s" not found' % name)
        if vmi.get("status", {}).get("phase") != "Running":
            raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on '
                           'virtualmachineinstance.kubevirt.io "%s": VM is not running' % name)
        try:
            timeout = parse_duration((body or {}).get("unfreezeTimeout"))
        except ValueError:
            timeout = None
        if timeout is None:
            raise ApiError(400, None, "Unfreeze timeout is required")
        vm = self.s.get(R["virtualmachines"], ns, name) or vmi
        if annotation(vm, "agent") == "absent":
            raise ApiError(500, "InternalError", "Internal error occurred: server error. command "
                           "Freeze failed: \"LibvirtError(Code=86, Domain=10, Message='Guest "
                           "agent is not responding: QEMU guest agent is not connected')\"")
        mode = annotation(vm, "freeze", "ok")
        if mode == "fail":
            raise ApiError(500, "InternalError", "Internal error occurred: server error. command "
                           "Freeze failed: \"LibvirtError(Code=1, Domain=10, Message='internal "
                           "error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': "
                           "failed to freeze /data: Device or resource busy')\"")
        if mode.startswith("hang:"):
            # the agent does not answer: the call gives up, but the guest's
            # freeze goes on and lands later, after the caller has moved on
            with self.glock:
                g = self.guests.setdefault((ns, name), Guest())
                if not g.pending:
                    g.pending = True
                    t = threading.Timer(float(mode[5:]), self.land_freeze, (ns, name, timeout, True))
                    t.daemon = True
                    t.start()
            time.sleep(1)
            raise ApiError(500, "InternalError", "Internal error occurred: server error. command "
                           "Freeze failed: \"LibvirtError(Code=86, Domain=10, Message='Guest "
                           "agent is not responding: Guest agent not available for now')\"")
        self.land_freeze(ns, name, timeout)

    def land_freeze(self, ns, name, timeout, late=False):
        with self.glock:
            g = self.guests.setdefault((ns, name), Guest())
            g.frozen, g.pending = True, False
            g.late += late
            g.thaw_at = time.monotonic() + timeout if timeout > 0 else None
        try:
            self.s.update(R["virtualmachineinstances"], ns, name,
                          lambda o: o.setdefault("status", {}).update(fsFreezeStatus="frozen"))
        except ApiError:
            pass                        # the VMI went away meanwhile

    def unfreeze(self, ns, name):
        vmi = self.s.get(R["virtualmachineinstances"], ns, name)
        if vmi is None:
            raise ApiError(404, "NotFound", 'virtualmachineinstance.kubevirt.io "%s" not found' % name)
        if vmi.get("status", {}).get("phase") != "Running":
            raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on '
                           'virtualmachineinstance.kubevirt.io "%s": VMI is not running' % name)
        with self.glock:
            g = self.guests.setdefault((ns, name), Guest())
            if g.frozen:
                g.thawed_by = "unfreeze"
            g.frozen, g.thaw_at = False, None
        self.s.update(R["virtualmachineinstances"], ns, name,
                      lambda o: o.setdefault("status", {}).pop("fsFreezeStatus", None))

    def frozen(self, ns, name):
        with self.glock:
            g = self.guests.get((ns, name))
            return bool(g and g.frozen)

    def start_stop(self, ns, name, action):
        vm = self.s.get(R["virtualmachines"], ns, name)
        if vm is None:
            raise ApiError(404, "NotFound", 'virtualmachine.kubevirt.io "%s" not found' % name)
        strat = vm["spec"].get("runStrategy") or ("Always" if vm["spec"].get("running") else "Halted")
        vmi = self.s.get(R["virtualmachineinstances"], ns, name)
        if action == "start":
            if vmi is not None:
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on '
                               'virtualmachine.kubevirt.io "%s": VM is already running' % name)
            if strat in ("Always", "Once"):
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on '
                               'virtualmachine.kubevirt.io "%s": %s does not support manual '
                               'start requests' % (name, strat))
            want = "Always"
        else:
            if strat == "Halted":
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on '
                               'virtualmachine.kubevirt.io "%s": VM is not running' % name)
            want = "Halted"
        snap = vm.get("status", {}).get("snapshotInProgress")
        if snap:
            raise ApiError(500, "InternalError", 'Internal error occurred: admission webhook '
                           '"virtualmachine-validator.kubevirt.io" denied the request: Cannot '
                           'update vm running state until snapshot "%s" completes' % snap)
        rip = vm.get("status", {}).get("restoreInProgress")
        if rip:         # the patch of the run strategy refused (vm-storage-status.go)
            raise ApiError(500, "InternalError", 'Internal error occurred: admission webhook '
                           '"virtualmachine-validator.kubevirt.io" denied the request: Cannot '
                           'update VM runStrategy until restore "%s" completes' % rip)

        def fix(o):
            o["spec"].pop("running", None)
            o["spec"]["runStrategy"] = want
        self.s.update(R["virtualmachines"], ns, name, fix, main_only=True)

    # -- the snapshot controller --------------------------------------------------
    def reconcile_snapshots(self):
        snaps, _ = self.s.list(R["virtualmachinesnapshots"], None)
        for snap in snaps:
            try:
                self.snapshot_pass(snap)
            except ApiError:
                pass                    # retried on the next pass, as a controller does

    def snapshot_pass(self, snap):
        rs, rc = R["virtualmachinesnapshots"], R["virtualmachinesnapshotcontents"]
        meta = snap["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        st = snap.get("status") or {}
        vm_name = snap.get("spec", {}).get("source", {}).get("name")
        content_name = "vmsnapshot-content-" + uid
        content = self.s.get(rc, ns, content_name)
        vm = self.s.get(R["virtualmachines"], ns, vm_name)
        vmi = self.s.get(R["virtualmachineinstances"], ns, vm_name)

        if meta.get("deletionTimestamp"):
            self.snapshot_gone(snap, vm, content)
            return
        if "snapshot.kubevirt.io/vmsnapshot-protection" not in (meta.get("finalizers") or []):
            self.s.update(rs, ns, name, lambda o: o["metadata"].setdefault("finalizers", []).append(
                "snapshot.kubevirt.io/vmsnapshot-protection"))
            return
        phase = st.get("phase")
        if phase in ("Succeeded", "Failed"):
            if phase == "Succeeded" and content and not st.get("readyToUse"):
                self.snapshot_ready(snap, content)
            return

        cerr = (content or {}).get("status", {}).get("error")
        if cerr and st.get("error") != cerr:
            self.s.update(rs, ns, name, lambda o: o.setdefault("status", {}).update(error=cerr),
                          status_only=True)        # the last error, copied from the content
        deadline = parse_duration(snap["spec"].get("failureDeadline")) \
            if snap["spec"].get("failureDeadline") is not None else 300.0
        created = datetime.datetime.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ") \
            .replace(tzinfo=datetime.timezone.utc)
        age = (datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()
        if deadline and age > deadline:
            self.snapshot_failed(snap, vm, content)
            return

        online = vmi is not None
        paused = online and any(c["type"] == "Paused" and c["status"] == "True"
                                for c in vmi.get("status", {}).get("conditions", []))
        agent = online and any(c["type"] == "AgentConnected"
                               for c in vmi.get("status", {}).get("conditions", []))
        ind = []
        if online:
            ind = sorted(["Online", "Paused" if paused else "GuestAgent" if agent else "NoGuestAgent"])

        def first(o):
            s = o.setdefault("status", {})
            s.setdefault("readyToUse", False)
            if vm is not None:
                s["sourceUID"] = vm["metadata"]["uid"]
            s["phase"] = "InProgress"
            conds = s.setdefault("conditions", [])
            if vm is None:
                set_condition(conds, "Progressing", "False", "Source does not exist")
            elif content is None:
                set_condition(conds, "Progressing", "False", "Source not locked")
            else:
                set_condition(conds, "Progressing", "True", "Source locked and operation in progress")
            set_condition(conds, "Ready", "False", "Not ready")
            if ind:
                s["indications"] = ind
                s["sourceIndications"] = [{"indication": i, "message": INDICATION_MESSAGES[i]}
                                          for i in ind]
            else:
                s.pop("indications", None)
                s.pop("sourceIndications", None)
        self.s.update(rs, ns, name, first, status_only=True)
        if vm is None:
            return
        if content is None:
            self.snapshot_lock_and_content(snap, vm)
            return
        self.content_pass(snap, content, vm, vmi, agent and not paused, deadline)

    def snapshot_lock_and_content(self, snap, vm):
        ns, vm_name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        other = vm.get("status", {}).get("snapshotInProgress")
        if other and other != snap["metadata"]["name"]:
            return                      # "Source not locked ... snapshot in progress"

        def lock(o):
            o.setdefault("status", {})["snapshotInProgress"] = snap["metadata"]["name"]
        self.s.update(R["virtualmachines"], ns, vm_name, lock, status_only=True)
        self.s.update(R["virtualmachines"], ns, vm_name, lambda o: None if
                      "snapshot.kubevirt.io/snapshot-source-protection" in
                      (o["metadata"].get("finalizers") or []) else
                      o["metadata"].setdefault("finalizers", []).append(
                          "snapshot.kubevirt.io/snapshot-source-protection"), main_only=True)
        backups = []
        for v in vm["spec"].get("template", {}).get("spec", {}).get("volumes", []):
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName") or \
                    (v.get("dataVolume") or {}).get("name") or \
                    (v.get("memoryDump") or {}).get("claimName")
            pvc = self.s.get(R["persistentvolumeclaims"], ns, claim) if claim else None
            if pvc is None or pvc.get("status", {}).get("phase") != "Bound" or \
                    not pvc.get("spec", {}).get("storageClassName"):
                continue                # no class: silently skipped (excluded)
            backups.append({"volumeName": v["name"],
                            "persistentVolumeClaim": {
                                "metadata": {k: val for k, val in pvc["metadata"].items()
                                             if k != "managedFields"},
                                "spec": pvc["spec"]},
                            "volumeSnapshotName": "vmsnapshot-%s-volume-%s" %
                                                  (snap["metadata"]["uid"], v["name"])})
        captured = {"metadata": {k: v for k, v in vm["metadata"].items() if k != "managedFields"},
                    "spec": vm["spec"], "status": {}}
        self.s.create(R["virtualmachinesnapshotcontents"], ns, {
            "metadata": {"name": "vmsnapshot-content-" + snap["metadata"]["uid"],
                         "finalizers": ["snapshot.kubevirt.io/vmsnapshotcontent-protection"]},
            "spec": {"virtualMachineSnapshotName": snap["metadata"]["name"],
                     "source": {"virtualMachine": captured},
                     "volumeBackups": backups}})

    def content_pass(self, snap, content, vm, vmi, can_freeze, deadline):
        rc = R["virtualmachinesnapshotcontents"]
        ns = content["metadata"]["namespace"]
        cst = content.get("status") or {}
        if cst.get("creationTime"):
            self.snapshot_succeeded(snap, content, vm)
            return
        if vmi is not None and can_freeze and not self.frozen(ns, vmi["metadata"]["name"]):
            try:
                self.freeze(ns, vmi["metadata"]["name"],
                            {"unfreezeTimeout": "%ds" % int(deadline) if deadline else "0s"})
            except ApiError as e:
                self.s.update(rc, ns, content["metadata"]["name"], lambda o: o.setdefault(
                    "status", {}).update(readyToUse=False, error={"time": now_str(),
                                                                  "message": e.message}),
                    status_only=True)
                return                  # retried on a later pass
        # the VolumeSnapshots are cut: the point in time; then thaw at once
        if self.disks:
            for b in content["spec"].get("volumeBackups", []):
                self.disks.cut(ns, b["persistentVolumeClaim"]["metadata"]["name"],
                               b["volumeSnapshotName"])

        def cut(o):
            o.setdefault("status", {}).update(creationTime=now_str(), readyToUse=False)
            o["status"].pop("error", None)
        self.s.update(rc, ns, content["metadata"]["name"], cut, status_only=True)
        if vmi is not None and self.frozen(ns, vmi["metadata"]["name"]):
            self.unfreeze(ns, vmi["metadata"]["name"])
        self.snapshot_started[content["metadata"]["uid"]] = time.monotonic()

    def snapshot_succeeded(self, snap, content, vm):
        rs = R["virtualmachinesnapshots"]
        ns, name = snap["metadata"]["namespace"], snap["metadata"]["name"]
        included = [b["volumeName"] for b in content["spec"].get("volumeBackups", [])]
        all_vols = [v["name"] for v in content["spec"]["source"]["virtualMachine"]["spec"]
                    .get("template", {}).get("spec", {}).get("volumes", [])]

        def done(o):
            s = o.setdefault("status", {})
            s.update(phase="Succeeded", creationTime=content["status"]["creationTime"],
                     virtualMachineSnapshotContentName=content["metadata"]["name"],
                     readyToUse=False,
                     snapshotVolumes={"includedVolumes": included,
                                      "excludedVolumes": [v for v in all_vols if v not in included]})
            set_condition(s.setdefault("conditions", []), "Progressing", "False", "Operation complete")
        self.s.update(rs, ns, name, done, status_only=True)
        self.unlock(vm, name)

    def snapshot_ready(self, snap, content):
        rs, rc = R["virtualmachinesnapshots"], R["virtualmachinesnapshotcontents"]
        ns = snap["metadata"]["namespace"]
        vm = self.s.get(R["virtualmachines"], ns, snap["spec"]["source"]["name"]) or snap
        delay = float(annotation(vm, "ready-delay", "0.5"))
        started = self.snapshot_started.get(content["metadata"]["uid"])
        if started is not None and time.monotonic() - started < delay:
            return
        self.s.update(rc, ns, content["metadata"]["name"],
                      lambda o: o.setdefault("status", {}).update(readyToUse=True), status_only=True)

        def ready(o):
            s = o.setdefault("status", {})
            s["readyToUse"] = True
            set_condition(s.setdefault("conditions", []), "Ready", "True", "Ready")
        self.s.update(rs, ns, snap["metadata"]["name"], ready, status_only=True)

    def snapshot_failed(self, snap, vm, content):
        rs = R["virtualmachinesnapshots"]
        ns, name = snap["metadata"]["namespace"], snap["metadata"]["name"]
        if content is not None:
            self.drop_content(content)
        if vm is not None:
            vmi = self.s.get(R["virtualmachineinstances"], ns, vm["metadata"]["name"])
            if vmi is not None:
                try:
                    self.unfreeze(ns, vm["metadata"]["name"])
                except ApiError:
                    pass
            self.unlock(vm, name)

        def fail(o):
            s = o.setdefault("status", {})
            s["phase"] = "Failed"
            s["readyToUse"] = False
            conds = s.setdefault("conditions", [])
            set_condition(conds, "Progressing", "False",
                          "In error state" if s.get("error") else "Operation failed")
            set_condition(conds, "Ready", "False", "Not ready")
            set_condition(conds, "Failure", "True", "snapshot deadline exceeded")
        self.s.update(rs, ns, name, fail, status_only=True)

    def snapshot_gone(self, snap, vm, content):
        rs = R["virtualmachinesnapshots"]
        ns, name = snap["metadata"]["namespace"], snap["metadata"]["name"]
        policy = snap["spec"].get("deletionPolicy")
        if content is not None and (policy in (None, "Delete") or
                                    not (content.get("status") or {}).get("readyToUse")):
            self.drop_content(content)
        if vm is not None:
            try:
                self.unfreeze(ns, vm["metadata"]["name"])
            except ApiError:
                pass
            self.unlock(vm, name)

        def release(o):
            o["metadata"]["finalizers"] = [f for f in o["metadata"].get("finalizers", [])
                                           if f != "snapshot.kubevirt.io/vmsnapshot-protection"]
        self.s.update(rs, ns, name, release)

    def drop_content(self, content):
        rc = R["virtualmachinesnapshotcontents"]
        ns, cname = content["metadata"]["namespace"], content["metadata"]["name"]
        try:
            self.s.delete(rc, ns, cname)
            self.s.update(rc, ns, cname, lambda o: o["metadata"].update(finalizers=[]))
        except ApiError:
            pass

    def unlock(self, vm, snap_name):
        ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        cur = self.s.get(R["virtualmachines"], ns, name)
        if cur is None or cur.get("status", {}).get("snapshotInProgress") != snap_name:
            return
        self.s.update(R["virtualmachines"], ns, name, lambda o: o["metadata"].update(
            finalizers=[f for f in o["metadata"].get("finalizers", [])
                        if f != "snapshot.kubevirt.io/snapshot-source-protection"]), main_only=True)
        self.s.update(R["virtualmachines"], ns, name,
                      lambda o: o.setdefault("status", {}).pop("snapshotInProgress", None),
                      status_only=True)

    # -- VirtualMachineExport (kubevirt-api.md 5) ------------------------------------
    def reconcile_exports(self):
        rx = R["virtualmachineexports"]
        exports, _ = self.s.list(rx, None)
        alive = set()
        for x in exports:
            alive.add(x["metadata"]["uid"])
            try:
                self.export_pass(x)
            except ApiError:
                pass
        # garbage collection of what the exports owned (their PVCs, token Secrets)
        for r in (R["persistentvolumeclaims"], R["secrets"]):
            objs, _ = self.s.list(r, None)
            for o in objs:
                owners = o["metadata"].get("ownerReferences") or []
                if any(w.get("kind") == "VirtualMachineExport" for w in owners) and \
                        not any(w.get("uid") in alive for w in owners):
                    try:
                        self.s.delete(r, o["metadata"]["namespace"], o["metadata"]["name"])
                    except ApiError:
                        pass
                    if self.disks and r is R["persistentvolumeclaims"]:
                        self.disks.drop(o["metadata"]["namespace"], o["metadata"]["name"])

    def export_pass(self, x):
        rx = R["virtualmachineexports"]
        meta, spec = x["metadata"], x.get("spec", {})
        ns, name = meta["namespace"], meta["name"]
        created = datetime.datetime.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ") \
            .replace(tzinfo=datetime.timezone.utc)
        ttl = parse_duration(spec.get("ttlDuration") or "2h")
        expires = created + datetime.timedelta(seconds=ttl)
        if datetime.datetime.now(datetime.timezone.utc) >= expires:
            self.s.delete(rx, ns, name)         # the TTL: the export deletes itself
            return
        src = spec.get("source") or {}
        kind, sname = src.get("kind"), src.get("name")
        owner = [{"apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
                  "name": name, "uid": meta["uid"], "controller": True,
                  "blockOwnerDeletion": True}]
        phase, reason, message, vm_name = "Pending", "Initializing", "", None
        served = []                             # (link name, served PVC)
        backups = None                          # a backup's volume names
        if kind == "VirtualMachineSnapshot":
            snap = self.s.get(R["virtualmachinesnapshots"], ns, sname)
            content = self.s.get(R["virtualmachinesnapshotcontents"], ns,
                                 (snap or {}).get("status", {}).get(
                                     "virtualMachineSnapshotContentName") or "-")
            vm_name = (snap or {}).get("spec", {}).get("source", {}).get("name")
            if snap is None:
                phase, reason = "Skipped", "VMSnapshotNotFound"
            elif not snap.get("status", {}).get("readyToUse") or content is None:
                reason, message = "NotAllPVCsCreated", \
                    "VirtualMachineSnapshot %s/%s is not ready to use" % (ns, sname)
            elif not content["spec"].get("volumeBackups"):
                phase, reason = "Skipped", "VMSnapshotNoVolumes"
            else:
                for b in content["spec"]["volumeBackups"]:
                    orig = b["persistentVolumeClaim"]["metadata"]["name"]
                    pvc_name = "%s-%s" % (name, orig)
                    if self.s.get(R["persistentvolumeclaims"], ns, pvc_name) is None:
                        pspec = copy.deepcopy(b["persistentVolumeClaim"]["spec"])
                        pspec.pop("volumeName", None)
                        pspec["dataSource"] = {"apiGroup": "snapshot.storage.k8s.io",
                                               "kind": "VolumeSnapshot",
                                               "name": b["volumeSnapshotName"]}
                        self.s.create(R["persistentvolumeclaims"], ns, {
                            "metadata": {"name": pvc_name, "ownerReferences": owner,
                                         "annotations": {"cdi.kubevirt.io/storage.contentType":
                                                         "kubevirt"}},
                            "spec": pspec})
                    served.append((orig, pvc_name))
                bound = all((self.s.get(R["persistentvolumeclaims"], ns, pvc) or {}).get(
                    "status", {}).get("phase") == "Bound" for _, pvc in served)
                phase, reason = ("Ready", "PodReady") if bound else ("Pending", "PVCPending")
        elif kind == "VirtualMachine":
            vm = self.s.get(R["virtualmachines"], ns, sname)
            vm_name = sname
            if vm is None:
                reason = "VMNotFound"
            else:
                for v in vm["spec"].get("template", {}).get("spec", {}).get("volumes", []):
                    claim = disk_claim(v)
                    if claim:
                        served.append((claim, claim))
                vmi = self.s.get(R["virtualmachineinstances"], ns, sname)
                if not served:
                    phase, reason = "Skipped", "VMNoVolumes"
                elif vmi is not None:
                    reason, message = "InUse", "Virtual Machine %s/%s is running" % (ns, sname)
                else:
                    phase, reason = "Ready", "PodReady"
        elif kind == "VirtualMachineBackup":
            # kubevirt-api.md 12.7: no PVCs; the backup's disks come through
            # the tunnel from virt-launcher
            b = self.s.get(R["virtualmachinebackups"], ns, sname)
            job = self.backup_jobs.get((b or {}).get("metadata", {}).get("uid"))
            if b is None:
                reason = "BackupNotFound"
            elif job is None:
                reason = "BackupNotStarted"
            else:
                vm_name = job["vm"]
                backups = list(job["volumes"])
                phase, reason = "Ready", "PodReady"
        else:
            phase, reason = "Skipped", "Unknown"
        token_name = spec.get("tokenSecretRef")
        if phase == "Ready" and not token_name:
            token_name = "export-token-" + name
            if self.s.get(R["secrets"], ns, token_name) is None:
                tok = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
                                             "QRSTUVWXYZ") for _ in range(20))
                self.s.create(R["secrets"], ns, {
                    "metadata": {"name": token_name, "ownerReferences": owner},
                    "type": "Opaque", "data": {"token": base64.b64encode(tok.encode()).decode()}})
        links = {}
        if phase == "Ready":
            svc = "virt-export-" + name.replace(".", "-")
            ext = "%s/api/export.kubevirt.io/v1beta1/namespaces/%s/virtualmachineexports/%s" % (
                self.export_base, ns, name)
            if backups is not None:
                ext = ext.replace("/export.kubevirt.io/v1beta1/", "/export.kubevirt.io/v1/")
            for which, base in (("internal", "https://%s.%s.svc" % (svc, ns)), ("external", ext)):
                if backups is not None:
                    links[which] = {"cert": self.ca_pem, "backups": [
                        {"name": vol, "endpoints": [
                            {"endpoint": "data", "url": "%s/exports/%s/data" % (base, vol)},
                            {"endpoint": "map", "url": "%s/exports/%s/map" % (base, vol)}]}
                        for vol in backups]}
                    continue
                links[which] = {"cert": self.ca_pem, "volumes": [
                    {"name": link, "formats": [
                        {"format": "raw", "url": "%s/volumes/%s/disk.img" % (base, pvc)},
                        {"format": "gzip", "url": "%s/volumes/%s/disk.img.gz" % (base, pvc)}]}
                    for link, pvc in served]}

        def fix(o):
            st = o.setdefault("status", {})
            st.update(phase=phase, links=links, serviceName="virt-export-" + name.replace(".", "-"),
                      ttlExpirationTime=expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
            if token_name:
                st["tokenSecretRef"] = token_name
            if vm_name:
                st["virtualMachineName"] = vm_name
            set_condition(st.setdefault("conditions", []), "Ready",
                          "True" if phase == "Ready" else "False", reason)
            for c in st["conditions"]:
                if c["type"] == "Ready":
                    c["message"] = message
        self.s.update(rx, ns, name, fix, status_only=True)

    def export_volume(self, ns, name, pvc):
        """What the export server of ns/name serves as /volumes/PVC/disk.img:
        (file, None), or (None, (code, body))."""
        x = self.s.get(R["virtualmachineexports"], ns, name)
        if x is None:
            return None, (404, b"")
        st = x.get("status") or {}
        if st.get("phase") != "Ready":
            return None, (503, b"export not ready\n")
        for v in (st.get("links") or {}).get("external", {}).get("volumes", []):
            for f in v["formats"]:
                if f["format"] == "raw" and f["url"].endswith("/volumes/%s/disk.img" % pvc):
                    return self.disks.path(ns, pvc), None
        return None, (404, b"404 page not found\n")

    def export_token(self, ns, name):
        x = self.s.get(R["virtualmachineexports"], ns, name)
        ref = ((x or {}).get("status") or {}).get("tokenSecretRef")
        sec = self.s.get(R["secrets"], ns, ref) if ref else None
        tok = ((sec or {}).get("data") or {}).get("token")
        return base64.b64decode(tok) if tok else None

    # -- kube-apiserver's write path for these kinds (kubevirt-api.md 1.5, 11.3) -----
    def create_status(self, r, obj):
        """What a new object's status is before any controller ran: a
        PersistentVolumeClaim is Pending (core defaulting)."""
        if r.plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Pending"}

    def prepare(self, r, ns, obj, old, sub=None):
        """Before a create (old None) or an update is stored: the CRD's
        structural defaults, the mutating webhooks (CREATE), the CRD's
        OpenAPI validation, then the validating webhooks. The webhooks
        match the main resource only: a status write skips them."""
        if sub == "status":
            return obj
        if r.plural == "secrets" and isinstance(obj.get("stringData"), dict):
            # the API server folds stringData into data (write-only field)
            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(str(v).encode()).decode()
        self.default(r, obj)
        if old is None:
            self.mutate_create(r, obj)
            self.default(r, obj)
        self.validate_schema(r, obj)
        self.admit(r, ns, obj, old)
        return obj

    def api_create(self, r, ns, obj):
        """A create as a controller makes it, through the API (admission
        included: a webhook can refuse a controller too)."""
        obj = copy.deepcopy(obj)
        self.prepare(r, ns, obj, None)
        if r.status:
            obj.pop("status", None)
        self.create_status(r, obj)
        return self.s.create(r, ns, obj)

    def api_update(self, r, ns, obj):
        """A PUT of the main resource by a controller (resourceVersion checked)."""
        name = obj["metadata"]["name"]
        cur = self.s.get(r, ns, name)
        if cur is None:
            raise not_found(r, name)
        self.prepare(r, ns, obj, cur)

        def replace(o):
            o.clear()
            o.update(copy.deepcopy(obj))
        return self.s.update(r, ns, name, replace, rv=obj["metadata"].get("resourceVersion"),
                             main_only=True)

    @staticmethod
    def default(r, obj):
        """The CRDs' schema defaults: only the restore has one (validations_generated.go)."""
        spec = obj.get("spec")
        if r.plural == "virtualmachinerestores" and isinstance(spec, dict):
            spec.setdefault("targetReadinessPolicy", "WaitGracePeriod")

    @staticmethod
    def mutate_create(r, obj):
        """The mutating webhooks on CREATE."""
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        if r.plural == "virtualmachines":
            # vm-mutator.go setFirmwareDefaultsIfEmpty (v1.7+)
            tmpl = spec.get("template")
            if isinstance(tmpl, dict):
                tspec = tmpl.get("spec")
                if not isinstance(tspec, dict):
                    tspec = tmpl["spec"] = {}
                dom = tspec.get("domain")
                if not isinstance(dom, dict):
                    dom = tspec["domain"] = {}
                fw = dom.get("firmware")
                if not isinstance(fw, dict):
                    fw = dom["firmware"] = {}
                if not fw.get("uuid"):
                    fw["uuid"] = str(uuid.uuid4())
                if not fw.get("serial"):
                    fw["serial"] = str(uuid.uuid4())
        elif r.plural == "virtualmachineclones":
            # clone-create-mutator.go: the target's name, clone-<source>-<5 chars>
            src = spec.get("source") if isinstance(spec.get("source"), dict) else {}
            gen = "clone-%s-%s" % (src.get("name", ""),
                                   "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789")
                                           for _ in range(5)))
            tgt = spec.get("target")
            if tgt is None:
                spec["target"] = {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": gen}
            elif isinstance(tgt, dict) and not tgt.get("name"):
                tgt["name"] = gen
            else:
                return
            spec.setdefault("template", {})     # "replace /spec" of the Go struct

    @staticmethod
    def validate_schema(r, obj):
        """The parts of the CRDs' OpenAPI schemas that matter here:
        required fields and enums (422 "Required value", "Unsupported value")."""
        if r.plural not in ("virtualmachinerestores", "virtualmachineclones"):
            return
        errs = []

        def required(d, path, keys):
            for k in keys:
                if not isinstance(d, dict) or d.get(k) is None:
                    errs.append(("FieldValueRequired", (path + "." if path else "") + k,
                                 "Required value"))

        def enum(d, path, key, values):
            if isinstance(d, dict) and d.get(key) is not None and d[key] not in values:
                errs.append(("FieldValueNotSupported", path + "." + key,
                             "Unsupported value: %s: supported values: %s" % (
                                 json.dumps(d[key]), ", ".join('"%s"' % v for v in values))))
        spec = obj.get("spec")
        required(obj, "", ["spec"])
        if isinstance(spec, dict):
            if r.plural == "virtualmachinerestores":
                required(spec, "spec", ["target", "virtualMachineSnapshotName"])
                if isinstance(spec.get("target"), dict):
                    required(spec["target"], "spec.target", ["kind", "name"])
                enum(spec, "spec", "targetReadinessPolicy",
                     ["StopTarget", "WaitGracePeriod", "FailImmediate", "WaitEventually"])
            else:
                required(spec, "spec", ["source"])
                for k in ("source", "target"):
                    if isinstance(spec.get(k), dict):
                        required(spec[k], "spec." + k, ["kind", "name"])
                enum(spec, "spec", "volumeNamePolicy", ["RandomizeNames", "PrefixTargetName"])
        if errs:
            raise schema_invalid(r, obj.get("metadata", {}).get("name", ""), errs)

    def admit(self, r, ns, obj, old):
        """KubeVirt's validating webhooks (kubevirt-api.md 1.5, 11.3)."""
        name = obj.get("metadata", {}).get("name", "")
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        if r.plural == "virtualmachinesnapshots":
            hook = "virtualmachinesnapshot-validator.snapshot.kubevirt.io"
            if old is not None:
                if obj.get("spec") != old.get("spec"):
                    raise invalid(r, name, "spec", "spec in immutable after creation", hook)
                return
            ref = spec.get("source") or {}
            if ref.get("apiGroup") is None:
                raise invalid(r, name, "spec.source.apiGroup", "missing apiGroup", hook,
                              reason="FieldValueNotFound")
            if ref.get("apiGroup") != "kubevirt.io":
                raise invalid(r, name, "spec.source.apiGroup", "invalid apiGroup", hook)
            if ref.get("kind") != "VirtualMachine":
                raise invalid(r, name, "spec.source.kind", "invalid kind", hook)
            if "failureDeadline" in spec:
                try:
                    parse_duration(spec["failureDeadline"])
                except ValueError:
                    raise invalid(r, name, "spec.failureDeadline", "invalid duration")
        elif r.plural in ("virtualmachinebackups", "virtualmachinebackuptrackers"):
            self.admit_backup(r, ns, obj, old)
        elif r.plural == "virtualmachinerestores":
            self.admit_restore(ns, obj, old)
        elif r.plural == "virtualmachineclones":
            self.admit_clone(obj)
        elif r.plural == "virtualmachines" and old is not None:
            hook = "virtualmachine-validator.kubevirt.io"
            st = old.get("status") or {}
            snap, rip = st.get("snapshotInProgress"), st.get("restoreInProgress")
            os_, ns_ = old.get("spec", {}), obj.get("spec", {})
            if snap and os_.get("template", {}).get("spec", {}).get("volumes") != \
                    ns_.get("template", {}).get("spec", {}).get("volumes"):
                raise invalid(r, old["metadata"]["name"], "spec.template.spec.volumes",
                              'Cannot update vm disks or volumes until snapshot "%s" completes' % snap, hook)
            if snap and (os_.get("runStrategy") != ns_.get("runStrategy") or
                         os_.get("running") != ns_.get("running")):
                raise invalid(r, old["metadata"]["name"], "spec.runStrategy",
                              'Cannot update vm running state until snapshot "%s" completes' % snap, hook)
            if rip and os_ != ns_ and run_strategy(old) != run_strategy(obj):
                raise invalid(r, old["metadata"]["name"], "spec",
                              'Cannot update VM runStrategy until restore "%s" completes' % rip, hook,
                              reason="FieldValueNotSupported")

    def admit_backup(self, r, ns, obj, old):
        """The CRDs' CEL rules (422 Invalid) and the backup webhooks
        (kubevirt-api.md 12.3, 12.4)."""
        name = obj.get("metadata", {}).get("name", "")
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        backup = r.plural == "virtualmachinebackups"
        if old is not None:
            if spec != (old.get("spec") or {}):
                raise invalid(r, name, "spec", "spec is immutable after creation")
            return
        src = spec.get("source") if isinstance(spec.get("source"), dict) else {}
        errs = []
        if backup:
            group, kind = src.get("apiGroup"), src.get("kind")
            if not group:
                errs.append(("FieldValueInvalid", "spec.source", "apiGroup is required"))
            elif group not in ("kubevirt.io", "backup.kubevirt.io"):
                errs.append(("FieldValueInvalid", "spec.source",
                             "apiGroup must be kubevirt.io or backup.kubevirt.io"))
            elif (group, kind) not in (("kubevirt.io", "VirtualMachine"),
                                       ("backup.kubevirt.io", "VirtualMachineBackupTracker")):
                errs.append(("FieldValueInvalid", "spec.source",
                             "kind must be VirtualMachine for kubevirt.io or "
                             "VirtualMachineBackupTracker for backup.kubevirt.io"))
            if not src.get("name"):
                errs.append(("FieldValueInvalid", "spec.source", "name is required"))
            if spec.get("mode") not in (None, "Push", "Pull"):
                errs.append(("FieldValueNotSupported", "spec.mode",
                             'Unsupported value: "%s": supported values: "Push", "Pull"'
                             % spec.get("mode")))
            if not spec.get("pvcName"):
                errs.append(("FieldValueInvalid", "spec", "pvcName is required"))
            if spec.get("mode") == "Pull" and not spec.get("tokenSecretRef"):
                errs.append(("FieldValueInvalid", "spec",
                             "tokenSecretRef is required when mode is Pull"))
        else:
            if src.get("apiGroup") != "kubevirt.io":
                errs.append(("FieldValueInvalid", "spec.source", "apiGroup must be kubevirt.io"))
            if src.get("kind") != "VirtualMachine":
                errs.append(("FieldValueInvalid", "spec.source", "kind must be VirtualMachine"))
            if not src.get("name"):
                errs.append(("FieldValueInvalid", "spec.source", "name is required"))
        if errs:
            raise schema_invalid(r, name, errs)
        hook = "%s-validator.backup.kubevirt.io" % r.singular
        if not self.backup_gate:
            raise ApiError(400, "BadRequest", 'admission webhook "%s" denied the request: '
                           "IncrementalBackup feature gate not enabled" % hook)
        if backup:
            if self.s.get(r, ns, name) is not None:
                raise denied(hook, [("FieldValueInvalid",
                                     'VirtualMachineBackup "%s" already exists' % name,
                                     "metadata.name")])
            for other in self.s.scan(r, ns):
                if (other.get("spec") or {}).get("source") == spec.get("source") and \
                        not self.backup_terminal(other):
                    raise denied(hook, [("FieldValueInvalid",
                                         'VirtualMachineBackup "%s" in progress for source'
                                         % other["metadata"]["name"], "spec.source")])

    def admit_restore(self, ns, obj, old):
        """pkg/storage/admitters/vmrestore.go."""
        r, hook = R["virtualmachinerestores"], "virtualmachinerestore-validator.snapshot.kubevirt.io"
        name = obj.get("metadata", {}).get("name", "")
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        if old is not None:
            if obj.get("spec") != old.get("spec"):
                raise invalid(r, name, "spec", "spec in immutable after creation", hook)
            return
        tgt = spec.get("target") if isinstance(spec.get("target"), dict) else {}
        causes = []
        if tgt.get("apiGroup") is None:
            causes = [("FieldValueNotFound", "missing apiGroup", "spec.target.apiGroup")]
        elif tgt["apiGroup"] != "kubevirt.io":
            causes = [("FieldValueInvalid", "invalid apiGroup", "spec.target.apiGroup")]
        elif tgt.get("kind") != "VirtualMachine":
            causes = [("FieldValueInvalid", "invalid kind", "spec.target.kind")]
        else:
            # patches: split on "," then ":" (the trap: a value with ":" or ",")
            for patch in spec.get("patches") or []:
                for kv in str(patch).strip("{}").split(","):
                    parts = kv.split(":")
                    if len(parts) != 2:
                        causes.append(("FieldValueInvalid", 'patch format is not valid - one ":" '
                                       "expected in a single key-value json patch: %s" % kv,
                                       "spec.patches"))
                        continue
                    key, value = parts[0].strip(), parts[1].strip()
                    if key == '"path"' and not value.startswith(('"/metadata/labels/',
                                                                  '"/metadata/annotations/',
                                                                  '"/spec/')):
                        causes.append(("FieldValueInvalid", "patching is valid only for elements "
                                       "under /spec/ only: %s" % kv, "spec.patches"))
            snap = self.s.get(R["virtualmachinesnapshots"], ns,
                              spec.get("virtualMachineSnapshotName") or "")
            if snap is not None:
                target = self.s.get(R["virtualmachines"], ns, tgt.get("name") or "")
                src_uid = (snap.get("status") or {}).get("sourceUID")
                if target is None or (src_uid is not None and target["metadata"]["uid"] != src_uid):
                    cname = (snap.get("status") or {}).get("virtualMachineSnapshotContentName")
                    content = self.s.get(R["virtualmachinesnapshotcontents"], ns, cname) if cname else None
                    captured = ((content or {}).get("spec", {}).get("source") or {}).get("virtualMachine")
                    if captured and backend_storage(captured):
                        causes.append(("FieldValueInvalid", "Restore to a different VM is not "
                                       "supported when snapshotted VM has backend storage "
                                       "(persistent TPM or EFI)", "spec"))
            for i, o in enumerate(spec.get("volumeRestoreOverrides") or []):
                o = o if isinstance(o, dict) else {}
                if not o.get("volumeName"):
                    causes.append(("FieldValueRequired", "must provide a volume name",
                                   "spec.volumeRestoreOverrides[%d].volumeName" % i))
                if not o.get("restoreName") and o.get("annotations") is None and \
                        o.get("labels") is None:
                    causes.append(("FieldValueRequired", "must provide at least one overriden field",
                                   "spec.volumeRestoreOverrides[%d]" % i))
            vrp = spec.get("volumeRestorePolicy")
            if vrp is not None and vrp not in ("RandomizeNames", "InPlace", "PrefixTargetName"):
                causes.append(("FieldValueInvalid", "volume restore policy \"%s\" doesn't exist" % vrp,
                               "spec.volumeRestorePolicy"))
            vop = spec.get("volumeOwnershipPolicy")
            if vop is not None and vop not in ("Vm", "None"):
                causes.append(("FieldValueInvalid", "volume ownership policy \"%s\" doesn't exist" % vop,
                               "spec.volumeOwnershipPolicy"))
        for other in self.s.list(r, ns)[0]:
            if (other.get("spec") or {}).get("target") == spec.get("target") and \
                    not (other.get("status") or {}).get("complete"):
                causes.append(("FieldValueInvalid", 'VirtualMachineRestore "%s" in progress' %
                               other["metadata"]["name"], "spec.target"))
        if causes:
            raise denied(hook, causes)

    @staticmethod
    def admit_clone(obj):
        """vmclone-admitter.go (CREATE and UPDATE: no immutability)."""
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        causes = []

        def filters(fl, field):
            for f in fl or []:
                f = str(f)
                if len(f) == 1:
                    if f == "!":
                        causes.append(("FieldValueInvalid", "a negation character is not a valid "
                                       "filter", field))
                    continue
                pat = "%s filter %s is invalid: cannot contain a %s character (%s); FilterRules: %s"
                if "!" in f[1:]:
                    causes.append(("FieldValueInvalid", pat % (field, f, "negation", "!",
                                   "NegationChar can be only used at the beginning of the filter"),
                                   field))
                if "*" in f[:-1]:
                    causes.append(("FieldValueInvalid", pat % (field, f, "wildcard", "*",
                                   "WildcardChar can be only at the end of the filter"), field))
        tmpl = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        filters(spec.get("annotationFilters"), "spec.annotations")
        filters(spec.get("labelFilters"), "spec.labels")
        filters(tmpl.get("annotationFilters"), "spec.template.annotations")
        filters(tmpl.get("labelFilters"), "spec.template.labels")
        src = spec.get("source") if isinstance(spec.get("source"), dict) else None
        tgt = spec.get("target") if isinstance(spec.get("target"), dict) else None
        if (src or {}).get("kind") not in ("VirtualMachine", "VirtualMachineSnapshot"):
            causes.append(("FieldValueInvalid", "Source kind is not supported", "spec.Source.Kind"))
        if tgt is not None and tgt.get("kind") != "VirtualMachine":
            causes.append(("FieldValueInvalid", "Target kind is not supported", "spec.Target.Kind"))
        if src is None:
            causes.append(("FieldValueInvalid", "Source cannot be nil", "spec.Source"))
        else:
            if not src.get("apiGroup"):
                causes.append(("FieldValueInvalid", "Source's APIGroup cannot be empty",
                               "spec.Source.APIGroup"))
            if not src.get("kind"):
                causes.append(("FieldValueInvalid", "Source's Kind cannot be empty", "spec.Source"))
            if not src.get("name"):
                causes.append(("FieldValueInvalid", "Source's name cannot be empty",
                               "spec.Source.Name"))
        if src and tgt and src.get("kind") == "VirtualMachine" and \
                tgt.get("kind") == "VirtualMachine" and tgt.get("name") == src.get("name"):
            causes.append(("FieldValueInvalid", "Target name cannot be equal to source name when "
                           "both are VirtualMachines", "spec.target.name"))
        macs = spec.get("newMacAddresses") if isinstance(spec.get("newMacAddresses"), dict) else {}
        for iface in sorted(macs):
            if macs[iface] and not mac_ok(str(macs[iface])):
                causes.append(("FieldValueInvalid", "interface %s has malformed MAC address (%s)." %
                               (iface, macs[iface]), "spec.newMacAddresses." + iface))
        for i, p in enumerate(spec.get("patches") or []):
            try:
                json.loads(p, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            except (ValueError, TypeError):
                causes.append(("FieldValueInvalid", "patch is not valid JSON (%s)" % p,
                               "spec.patches[%d]" % i))
        if causes:
            raise denied("vm-clone-validator.kubevirt.io", causes)

    # -- the restore controller (kubevirt-api.md 3, restore.go) ----------------------
    RESTORE_FINALIZER = "snapshot.kubevirt.io/vmrestore-protection"
    WAIT_GRACE = ("Waiting for target VM to be powered off. Please stop the restore target to "
                  "proceed with restore, or the operation will fail after 5m0s")
    WAIT_EVENTUALLY = ("Waiting for target VM to be powered off. Please stop the restore target "
                       "to proceed with restore")
    GRACE_EXCEEDED = ("Restore target failed to be ready within 5m0s. Please power off the "
                      "target VM before attempting restore")
    STOPPING = "Automatically stopping restore target for restore operation"
    NOT_POWERED_OFF = "Restore target VMI must be powered off before restore operation"

    def reconcile_restores(self):
        for rst in self.s.list(R["virtualmachinerestores"], None)[0]:
            try:
                self.restore_pass(rst)
            except ApiError:
                pass                    # a conflict or a race: the next pass retries

    def restore_status(self, rst, status):
        """UpdateStatus, only when it changed (doUpdateStatus)."""
        if status == rst.get("status"):
            return rst
        m = rst["metadata"]
        return self.s.update(R["virtualmachinerestores"], m["namespace"], m["name"],
                             lambda o: o.update(status=status), rv=m["resourceVersion"],
                             status_only=True)

    def restore_error(self, rst, text, fail=False):
        """doUpdateError (retried) / doUpdateErrorWithFailure (terminal): the
        text is the reason of Progressing and Ready, both False."""
        out = copy.deepcopy(rst.get("status") or {})
        conds = out.setdefault("conditions", [])
        set_condition(conds, "Progressing", "False", text)
        set_condition(conds, "Ready", "False", text)
        if fail:
            set_condition(conds, "Failure", "True", text)
        self.restore_status(rst, out)

    @staticmethod
    def restored(rst, obj):
        """hasLastRestoreAnnotation: obj is what this restore made."""
        return (obj["metadata"].get("annotations") or {}).get("restore.kubevirt.io/lastRestoreUID") \
            == "%s-%s" % (rst["metadata"]["name"], rst["metadata"]["uid"])

    def restore_pass(self, rst):
        rr, rvm = R["virtualmachinerestores"], R["virtualmachines"]
        meta, spec = rst["metadata"], rst.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        st = rst.get("status")
        if st is None:
            out = {"complete": False, "conditions": []}
            set_condition(out["conditions"], "Progressing", "True", "Initializing VirtualMachineRestore")
            set_condition(out["conditions"], "Ready", "False", "Initializing VirtualMachineRestore")
            self.restore_status(rst, out)
            return
        tgt = spec.get("target") or {}
        if tgt.get("kind") != "VirtualMachine":
            self.restore_error(rst, "unknown source %s" % json.dumps(tgt, sort_keys=True))
            return
        vm = self.s.get(rvm, ns, tgt.get("name") or "")
        if meta.get("deletionTimestamp"):
            self.restore_deleting(rst, vm)
            return
        if st.get("complete") or any(c.get("type") == "Failure" for c in st.get("conditions") or []):
            return                      # done, or failed: never tried again
        fins = meta.get("finalizers") or []
        if self.RESTORE_FINALIZER not in fins or (vm is not None and not meta.get("ownerReferences")):
            def own(o):
                m = o["metadata"]
                if vm is not None and not m.get("ownerReferences"):
                    m["ownerReferences"] = [owner_ref("kubevirt.io/v1", "VirtualMachine", vm)]
                if self.RESTORE_FINALIZER not in (m.get("finalizers") or []):
                    m.setdefault("finalizers", []).append(self.RESTORE_FINALIZER)
            rst = self.s.update(rr, ns, name, own, rv=meta["resourceVersion"], main_only=True)
        if vm is not None and self.s.get(R["virtualmachineinstances"], ns, vm["metadata"]["name"]):
            self.restore_not_ready(rst, vm)
            return
        out = copy.deepcopy(rst["status"])
        out.setdefault("conditions", [])
        try:
            snap, content = self.restore_sources(rst)
            if vm is not None and not self.restored(rst, vm):
                src_uid = (snap.get("status") or {}).get("sourceUID")
                if src_uid is not None and src_uid != vm["metadata"]["uid"]:
                    raise RestoreRetry("restore source and restore target are different but "
                                       "restore target already exists")
                other = (vm.get("status") or {}).get("restoreInProgress")
                if other and other != name:
                    raise RestoreRetry("vm restore %s in progress" % other)
                if not other:
                    vm = self.s.update(rvm, ns, vm["metadata"]["name"], lambda o: o.setdefault(
                        "status", {}).update(restoreInProgress=name), status_only=True)
            if self.restore_volumes(rst, out, vm, content):
                set_condition(out["conditions"], "Progressing", "True", "Creating new PVCs")
                set_condition(out["conditions"], "Ready", "False", "Waiting for new PVCs")
                self.restore_status(rst, out)
                return
            if self.restore_target(rst, out, vm, content):
                set_condition(out["conditions"], "Progressing", "True", "Updating target spec")
                set_condition(out["conditions"], "Ready", "False", "Waiting for target update")
                self.restore_status(rst, out)
                return
            # deleteObsoleteVolumes: status.deletedDataVolumes name DataVolumes,
            # which the fake does not serve (no CDI): nothing to delete
            vm = self.s.get(rvm, ns, tgt.get("name") or "")
            if vm is None:
                raise RestoreRetry("At this point target should exist")
            if (vm.get("status") or {}).get("restoreInProgress") == name:
                self.restore_done(vm)
        except RestoreRetry as e:
            self.restore_error(rst, str(e))
            return
        out["complete"] = True
        out["restoreTime"] = now_str()
        set_condition(out["conditions"], "Progressing", "False", "Operation complete")
        set_condition(out["conditions"], "Ready", "True", "Operation complete")
        self.restore_status(rst, out)

    def restore_done(self, vm):
        """UpdateDoneRestore: the VM's restoreInProgress cleared."""
        def clear(o):
            o.setdefault("status", {}).pop("restoreInProgress", None)
            o["status"].pop("memoryDumpRequest", None)
        self.s.update(R["virtualmachines"], vm["metadata"]["namespace"], vm["metadata"]["name"],
                      clear, status_only=True)

    def restore_deleting(self, rst, vm):
        meta = rst["metadata"]
        if self.RESTORE_FINALIZER not in (meta.get("finalizers") or []):
            return
        if vm is not None and (vm.get("status") or {}).get("restoreInProgress") == meta["name"]:
            self.restore_done(vm)
        out = copy.deepcopy(rst.get("status") or {})
        set_condition(out.setdefault("conditions", []), "Progressing", "False", "VM restore is deleting")
        set_condition(out["conditions"], "Ready", "False", "VM restore is deleting")
        if out != rst.get("status"):
            self.restore_status(rst, out)
            return
        self.s.update(R["virtualmachinerestores"], meta["namespace"], meta["name"],
                      lambda o: o["metadata"].update(finalizers=[
                          f for f in o["metadata"].get("finalizers") or []
                          if f != self.RESTORE_FINALIZER]), rv=meta["resourceVersion"])

    def restore_not_ready(self, rst, vm):
        """handleVMRestoreTargetNotReady: the target's VMI exists."""
        policy = (rst.get("spec") or {}).get("targetReadinessPolicy") or "WaitGracePeriod"
        if policy == "StopTarget":
            out = copy.deepcopy(rst["status"])
            set_condition(out.setdefault("conditions", []), "Progressing", "False", self.STOPPING)
            set_condition(out["conditions"], "Ready", "False", self.STOPPING)
            try:
                self.start_stop(vm["metadata"]["namespace"], vm["metadata"]["name"], "stop")
            except ApiError as e:
                self.restore_error(rst, e.message)
                return
            self.restore_status(rst, out)
            return
        if policy == "FailImmediate":
            self.restore_error(rst, self.NOT_POWERED_OFF, fail=True)
            return
        if policy == "WaitGracePeriod":
            if age_seconds(rst) > 300:
                self.restore_error(rst, self.GRACE_EXCEEDED, fail=True)
                return
            reason = self.WAIT_GRACE
        elif policy == "WaitEventually":
            reason = self.WAIT_EVENTUALLY
        else:
            return                      # "unknown targetReadinessPolicy": logged, retried
        out = copy.deepcopy(rst["status"])
        set_condition(out.setdefault("conditions", []), "Progressing", "False", reason)
        set_condition(out["conditions"], "Ready", "False", reason)
        self.restore_status(rst, out)

    def restore_sources(self, rst):
        """getVMSnapshot + getSnapshotContent, with their error texts."""
        ns = rst["metadata"]["namespace"]
        key = "%s/%s" % (ns, (rst.get("spec") or {}).get("virtualMachineSnapshotName"))
        snap = self.s.get(R["virtualmachinesnapshots"], ns, key.split("/", 1)[1])
        if snap is None:
            raise RestoreRetry("VMSnapshot %s does not exist" % key)
        sst = snap.get("status") or {}
        if sst.get("phase") == "Failed":
            raise RestoreRetry("VMSnapshot %s failed and is invalid to use" % key)
        if not sst.get("readyToUse"):
            raise RestoreRetry("VMSnapshot %s not ready" % key)
        cname = sst.get("virtualMachineSnapshotContentName")
        if not cname:
            raise RestoreRetry("no snapshot content name in %s" % key)
        content = self.s.get(R["virtualmachinesnapshotcontents"], ns, cname)
        if content is None:
            raise RestoreRetry("VMSnapshotContent %s/%s does not exist" % (ns, cname))
        if not (content.get("status") or {}).get("readyToUse"):
            raise RestoreRetry("VMSnapshotContent %s/%s not ready" % (ns, cname))
        return snap, content

    def restore_claim_name(self, rst, volume, claim):
        """restoreVolumeName: override, InPlace, PrefixTargetName, RandomizeNames."""
        spec = rst.get("spec") or {}
        for o in spec.get("volumeRestoreOverrides") or []:
            if o.get("volumeName") == volume and o.get("restoreName"):
                return o["restoreName"]
        policy = spec.get("volumeRestorePolicy")
        if policy == "InPlace":
            return claim
        if policy == "PrefixTargetName":
            return naming_get_name((spec.get("target") or {}).get("name", ""), volume, 63)
        return "restore-%s-%s" % (rst["metadata"]["uid"], volume)

    def restore_volumes(self, rst, out, vm, content):
        """reconcileVolumeRestores: status.restores, then the claims made from
        the VolumeSnapshots; True while there is something to wait for."""
        ns, name = rst["metadata"]["namespace"], rst["metadata"]["name"]
        captured = content["spec"]["source"]["virtualMachine"]
        no_restore = {v.get("name") for v in vm_volumes(captured) if "memoryDump" in v}
        have = {r["volumeName"]: r for r in out.get("restores") or []}
        restores = []
        for vb in content["spec"].get("volumeBackups") or []:
            if vb["volumeName"] in no_restore:
                continue
            if vb["volumeName"] in have:
                restores.append(have[vb["volumeName"]])
                continue
            restores.append({"volumeName": vb["volumeName"],
                             "persistentVolumeClaim": self.restore_claim_name(
                                 rst, vb["volumeName"], vb["persistentVolumeClaim"]["metadata"]["name"]),
                             "volumeSnapshotName": vb["volumeSnapshotName"]})
        if (out.get("restores") or []) != restores:
            out["restores"] = restores
            return True
        rp = R["persistentvolumeclaims"]
        busy = False
        for r in restores:
            pvc = self.s.get(rp, ns, r["persistentVolumeClaim"])
            if pvc is None:
                vb = [b for b in content["spec"]["volumeBackups"] if b["volumeName"] == r["volumeName"]][0]
                self.restore_pvc(rst, vm, vb, r, captured)
                busy = True
            elif (rst.get("spec") or {}).get("volumeRestorePolicy") == "InPlace" and \
                    not self.restored(rst, pvc):
                self.s.delete(rp, ns, pvc["metadata"]["name"])      # replaced in place
                if self.disks:
                    self.disks.drop(ns, pvc["metadata"]["name"])
                busy = True
            elif (pvc.get("status") or {}).get("phase") in (None, "Pending"):
                busy = True             # Immediate binding: waited for
            elif pvc["status"]["phase"] != "Bound":
                raise RestoreRetry('PVC %s/%s in status "%s"' % (ns, pvc["metadata"]["name"],
                                                                 pvc["status"]["phase"]))
        return busy

    def restore_pvc(self, rst, vm, vb, r, captured):
        """CreateRestorePVCDefFromVMRestore + createRestorePVC."""
        ns, name = rst["metadata"]["namespace"], rst["metadata"]["name"]
        spec = rst.get("spec") or {}
        src = vb.get("persistentVolumeClaim") or {}
        smeta, sspec = src.get("metadata") or {}, src.get("spec") or {}
        labels = {k: v for k, v in (smeta.get("labels") or {}).items() if k != "persistent-state-for"}
        ann = {k: v for k, v in (smeta.get("annotations") or {}).items()
               if k == "cdi.kubevirt.io/storage.contentType" or
               not k.startswith(("pv.kubernetes.io", "volume.beta.kubernetes.io", "cdi.kubevirt.io",
                                 "volume.kubernetes.io", "k8s.io/CloneRequest", "k8s.io/CloneOf"))}
        labels["restore.kubevirt.io/source-vm-name"] = captured["metadata"].get("name")
        labels["restore.kubevirt.io/source-vm-namespace"] = captured["metadata"].get("namespace")
        ann["restore.kubevirt.io/name"] = name
        ann["restore.kubevirt.io/lastRestoreUID"] = "%s-%s" % (name, rst["metadata"]["uid"])
        for o in spec.get("volumeRestoreOverrides") or []:
            if o.get("volumeName") == vb["volumeName"]:
                labels.update(o.get("labels") or {})
                ann.update(o.get("annotations") or {})
                break
        pspec = {k: copy.deepcopy(sspec[k]) for k in ("accessModes", "resources", "storageClassName",
                                                      "volumeMode") if k in sspec}
        ds = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
              "name": vb["volumeSnapshotName"]}
        pspec["dataSource"], pspec["dataSourceRef"] = ds, dict(ds)
        pmeta = {"name": r["persistentVolumeClaim"], "labels": labels, "annotations": ann}
        if r.get("dataVolumeName"):
            ann["cdi.kubevirt.io/storage.populatedFor"] = r["dataVolumeName"]
        elif spec.get("volumeOwnershipPolicy") != "None":
            if vm is not None:
                pmeta["ownerReferences"] = [owner_ref("kubevirt.io/v1", "VirtualMachine", vm)]
            elif any(w.get("kind") == "VirtualMachine" and w.get("name") == captured["metadata"].get("name")
                     and w.get("uid") == captured["metadata"].get("uid")
                     for w in smeta.get("ownerReferences") or []):
                ann["restore.kubevirt.io/owned-by-vm"] = name
        try:
            delay = float(annotation(vm or captured, "restore-delay", "0"))
        except ValueError:
            delay = 0.0
        if delay > 0:
            self.pvc_hold[(ns, r["persistentVolumeClaim"])] = time.monotonic() + delay
        try:
            self.api_create(R["persistentvolumeclaims"], ns, {"metadata": pmeta, "spec": pspec})
        except ApiError as e:
            self.pvc_hold.pop((ns, r["persistentVolumeClaim"]), None)
            raise RestoreRetry(e.message)

    def restore_target(self, rst, out, vm, content):
        """vmRestoreTarget.Reconcile: True when something was written."""
        if vm is not None and self.restored(rst, vm):
            return False
        ns = rst["metadata"]["namespace"]
        rp = R["persistentvolumeclaims"]
        captured = content["spec"]["source"]["virtualMachine"]
        cspec = captured.get("spec") or {}
        tnames = [(t.get("metadata") or {}).get("name") for t in cspec.get("dataVolumeTemplates") or []]
        # updateVMRestoreRestores: a DataVolume from a template keeps its DataVolume form
        restores = copy.deepcopy(out.get("restores") or [])
        for r in restores:
            for v in vm_volumes(captured):
                if v.get("name") != r["volumeName"]:
                    continue
                dv = (v.get("dataVolume") or {}).get("name")
                if dv and dv in tnames:
                    dv_name = self.restore_claim_name(rst, r["volumeName"], dv)
                    pvc = self.s.get(rp, ns, r["persistentVolumeClaim"])
                    if pvc is None:
                        raise RestoreRetry("pvc %s/%s does not exist and should" %
                                           (ns, r["persistentVolumeClaim"]))
                    if (pvc["metadata"].get("annotations") or {}).get(
                            "cdi.kubevirt.io/storage.populatedFor") != dv_name:
                        def adopt(o, dv_name=dv_name):
                            o["metadata"].setdefault("annotations", {})[
                                "cdi.kubevirt.io/storage.populatedFor"] = dv_name
                            o["metadata"].pop("ownerReferences", None)
                        self.s.update(rp, ns, pvc["metadata"]["name"], adopt, main_only=True)
                    r["dataVolumeName"] = dv_name
                    break
        if restores != (out.get("restores") or []):
            out["restores"] = restores
            return True
        new = self.restored_vm(rst, out, vm, captured)
        # reconcileDataVolumes: CDI is not served by the fake, no DataVolume is
        # made for the renamed templates; the old ones no longer in the spec:
        if vm is not None:
            keep = [(t.get("metadata") or {}).get("name") for t in new["spec"].get("dataVolumeTemplates") or []]
            gone = [(t.get("metadata") or {}).get("name") for t in vm["spec"].get("dataVolumeTemplates") or []
                    if (t.get("metadata") or {}).get("name") not in keep]
            if (out.get("deletedDataVolumes") or []) != gone:
                out["deletedDataVolumes"] = gone
                return True
        rvm = R["virtualmachines"]
        try:
            if vm is None:
                new = patch_vm(new, (rst.get("spec") or {}).get("patches") or [])
                made = self.api_create(rvm, ns, new)
            else:
                made = self.api_update(rvm, ns, new)
            # updateRestorePVCOwnership: claims the VM did not exist for yet
            if (rst.get("spec") or {}).get("volumeOwnershipPolicy") != "None":
                for v in vm_volumes(made):
                    claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
                    if not claim:
                        continue
                    pvc = self.s.get(rp, ns, claim)
                    if pvc is None:
                        raise not_found(rp, claim)
                    if not pvc["metadata"].get("ownerReferences") and (pvc["metadata"].get(
                            "annotations") or {}).get("restore.kubevirt.io/owned-by-vm") == \
                            rst["metadata"]["name"]:
                        def own(o):
                            o["metadata"]["ownerReferences"] = [
                                owner_ref("kubevirt.io/v1", "VirtualMachine", made)]
                            o["metadata"]["annotations"].pop("restore.kubevirt.io/owned-by-vm", None)
                        self.s.update(rp, ns, claim, own, main_only=True)
        except ApiError as e:
            raise RestoreRetry(e.message)
        return True

    def restored_vm(self, rst, out, vm, captured):
        """generateRestoredVMSpec."""
        ns, tname = rst["metadata"]["namespace"], (rst["spec"].get("target") or {}).get("name")
        cspec = copy.deepcopy(captured.get("spec") or {})
        templates = cspec.get("dataVolumeTemplates") or []
        tnames = [(t.get("metadata") or {}).get("name") for t in templates]
        vols = []
        for v in vm_volumes(captured):
            nv = copy.deepcopy(v)
            if "dataVolume" in nv or "persistentVolumeClaim" in nv:
                for r in out.get("restores") or []:
                    if r["volumeName"] != nv.get("name"):
                        continue
                    if "dataVolume" not in nv:
                        nv["persistentVolumeClaim"]["claimName"] = r["persistentVolumeClaim"]
                        continue
                    dv = (v.get("dataVolume") or {}).get("name")
                    if dv in tnames:
                        if not r.get("dataVolumeName"):
                            raise RestoreRetry("DataVolumeName for dv %s should have been updated "
                                               "already" % dv)
                        i = tnames.index(dv)
                        t = copy.deepcopy(templates[i])
                        t.setdefault("metadata", {})["name"] = r["dataVolumeName"]
                        templates[i] = t
                        nv["dataVolume"]["name"] = r["dataVolumeName"]
                    else:               # a DataVolume without template: its claim
                        nv = {"name": nv.get("name"),
                              "persistentVolumeClaim": {"claimName": r["persistentVolumeClaim"]}}
            elif "memoryDump" in nv:
                continue                # not restored
            vols.append(nv)
        if vm is None:
            meta = {"name": tname, "namespace": ns}
            for k in ("labels", "annotations"):
                if captured["metadata"].get(k):
                    meta[k] = copy.deepcopy(captured["metadata"][k])
            new = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": meta,
                   "spec": cspec, "status": {}}
            if "running" in cspec:
                cspec["running"] = False
            else:
                cspec["runStrategy"] = "Halted"
        else:
            new = copy.deepcopy(vm)
            new["spec"] = cspec
            if "running" in (vm.get("spec") or {}):
                cspec["running"] = False
                cspec.pop("runStrategy", None)
            else:
                cspec["runStrategy"] = run_strategy(vm)   # an existing VM keeps its strategy
                cspec.pop("running", None)
        if templates:
            cspec["dataVolumeTemplates"] = templates
        else:
            cspec.pop("dataVolumeTemplates", None)
        tspec = cspec.setdefault("template", {}).setdefault("spec", {})
        if vols:
            tspec["volumes"] = vols
        else:
            tspec.pop("volumes", None)
        new["metadata"].setdefault("annotations", {})["restore.kubevirt.io/lastRestoreUID"] = \
            "%s-%s" % (rst["metadata"]["name"], rst["metadata"]["uid"])
        if captured["metadata"].get("name") == tname:
            # setLegacyFirmwareUUID: the guest keeps the SMBIOS UUID of its name
            fw = tspec.setdefault("domain", {}).setdefault("firmware", {})
            if not fw.get("uuid"):
                fw["uuid"] = str(uuid.uuid5(uuid.UUID("6a1a24a1-4061-4607-8bf4-a3963d0c5895"), tname))
        return new

    # -- the clone controller (kubevirt-api.md 11.4-11.7, clone.go) ------------------
    # -- backup.kubevirt.io (kubevirt-api.md 12): Pull mode ---------------------------
    # Push mode (a qcow2 written into the PVC) is not simulated: such a
    # backup starts, then fails with a libvirt-like message.
    def reconcile_backups(self):
        rb = R["virtualmachinebackups"]
        for b in self.s.list(rb, None)[0]:
            try:
                self.backup_pass(b)
            except ApiError:
                pass
        alive = {b["metadata"]["uid"] for b in self.s.scan(rb)}
        for uid in [u for u in self.backup_jobs if u not in alive]:
            self.backup_job_end(uid)

    def backup_status(self, b, fn):
        self.s.update(R["virtualmachinebackups"], b["metadata"]["namespace"],
                      b["metadata"]["name"], lambda o: fn(o.setdefault("status", {})),
                      status_only=True)

    @staticmethod
    def backup_condition(st, type_, status, reason, message):
        """metav1.Condition: lastTransitionTime changes only with status."""
        conds = st.setdefault("conditions", [])
        have = [c for c in conds if c["type"] == type_]
        if have:
            c = have[0]
            if c["status"] != status:
                c["lastTransitionTime"] = now_str()
            c.update(status=status, reason=reason, message=message)
        else:
            conds.append({"type": type_, "status": status, "lastTransitionTime": now_str(),
                          "reason": reason, "message": message})

    @staticmethod
    def backup_terminal(b):
        return any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
                   for c in (b.get("status") or {}).get("conditions", []))

    def backup_source_vm(self, b):
        """The VM a backup is of, and the tracker (or None); or an
        Initializing message."""
        ns, spec = b["metadata"]["namespace"], b.get("spec") or {}
        src = spec.get("source") or {}
        tracker = None
        if src.get("kind") == "VirtualMachineBackupTracker":
            tracker = self.s.get(R["virtualmachinebackuptrackers"], ns, src.get("name"))
            if tracker is None:
                return None, None, "BackupTracker %s does not exist" % src.get("name")
            vm_name = ((tracker.get("spec") or {}).get("source") or {}).get("name")
        else:
            vm_name = src.get("name")
        return vm_name, tracker, None

    def backup_pass(self, b):
        meta, spec = b["metadata"], b.get("spec") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        job = self.backup_jobs.get(uid)
        if meta.get("deletionTimestamp"):
            return self.backup_finish(b, job, deleted=True)
        if self.backup_terminal(b):
            return
        pull = spec.get("mode") == "Pull"
        if job is None:
            vm_name, tracker, wait = self.backup_source_vm(b)
            vm = self.s.get(R["virtualmachines"], ns, vm_name) if vm_name else None
            vmi = self.s.get(R["virtualmachineinstances"], ns, vm_name) if vm_name else None
            vols = [v for v in vm_volumes(vm or {}) if self.claim_of(v)]
            if wait:
                pass
            elif vm is None:
                wait = "VM %s/%s doesnt exist" % (ns, vm_name)
            elif vmi is None:
                wait = "vm %s is not running, cannot do backup" % vm_name
            elif not vols:
                wait = "vm %s has no volumes to backup" % vm_name
            elif self.cbt_vmis.get((ns, vm_name)) != "Enabled":
                wait = "vm %s has no ChangedBlockTracking, cannot start backup" % vm_name
            elif self.s.get(R["persistentvolumeclaims"], ns, spec.get("pvcName")) is None:
                wait = "PVC %s/%s doesnt exist" % (ns, spec.get("pvcName"))
            else:
                other = [j for j in self.backup_jobs.values()
                         if j["ns"] == ns and j["vm"] == vm_name]
                if other:
                    wait = "another backup %s is already in progress, cannot start backup %s" % (
                        other[0]["name"], name)
            if wait:
                return self.backup_status(b, lambda st: self.backup_condition(
                    st, "Progressing", "True", "Initializing", wait))
            return self.backup_start(b, vm, vols, tracker, pull)
        if not pull:
            return self.backup_finish(b, job, failed="Backup has failed: push mode is not "
                                      "simulated by the fake cluster")
        created = datetime.datetime.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ") \
            .replace(tzinfo=datetime.timezone.utc)
        ttl = parse_duration(spec.get("ttlDuration") or "2h")
        left = (created + datetime.timedelta(seconds=ttl) -
                datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        if left <= 0:
            return self.backup_finish(b, job, ttl=True)
        rx = R["virtualmachineexports"]
        x = self.s.get(rx, ns, name)
        if x is not None and not any(w.get("uid") == uid for w in
                                     x["metadata"].get("ownerReferences") or []):
            return self.backup_status(b, lambda st: self.backup_condition(
                st, "Progressing", "True", "PreparingExport",
                "VMExport %s already exists but is not owned by backup %s" % (name, name)))
        if x is None:
            self.api_create(rx, ns, {
                "metadata": {"name": name, "ownerReferences": [owner_ref(
                    "backup.kubevirt.io/v1alpha1", "VirtualMachineBackup", b)]},
                "spec": {"source": {"apiGroup": "backup.kubevirt.io",
                                    "kind": "VirtualMachineBackup", "name": name},
                         "tokenSecretRef": spec.get("tokenSecretRef"),
                         "ttlDuration": "%ds" % int(left)}})
            return self.backup_status(b, lambda st: self.backup_condition(
                st, "Progressing", "True", "PreparingExport", "Backup export is being initialized"))
        xst = x.get("status") or {}
        if xst.get("phase") != "Ready":
            return
        links = xst.get("links") or {}
        link = links.get("external") or links.get("internal") or {}
        by_vol = {e["name"]: {p["endpoint"]: p["url"] for p in e.get("endpoints", [])}
                  for e in link.get("backups", [])}

        def ready(st):
            st["includedVolumes"] = [dict({"volumeName": v},
                                          **({"dataEndpoint": by_vol[v]["data"],
                                              "mapEndpoint": by_vol[v]["map"]}
                                             if v in by_vol else {}))
                                     for v in job["volumes"]]
            st["endpointCert"] = link.get("cert", "")
            st["exportUID"] = x["metadata"]["uid"]
            self.backup_condition(st, "Progressing", "True", "ExportReady",
                                  "Backup export is ready to pull")
        self.backup_status(b, ready)

    def backup_start(self, b, vm, vols, tracker, pull):
        """Prerequisites met: the finalizer, the freeze (unless skipQuiesce),
        BackupBegin with a new checkpoint, the thaw."""
        meta, spec = b["metadata"], b.get("spec") or {}
        ns, name, uid, vm_name = meta["namespace"], meta["name"], meta["uid"], vm["metadata"]["name"]
        self.s.update(R["virtualmachinebackups"], ns, name, lambda o: o["metadata"].update(
            finalizers=list(dict.fromkeys((o["metadata"].get("finalizers") or []) +
                                          ["backup.kubevirt.io/vmbackup-protection"]))),
            main_only=True)
        stamp = datetime.datetime.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
        checkpoint = "%s-%s" % (name, stamp.strftime("%Y-%m-%d_%H-%M-%S"))
        since = ((((tracker or {}).get("status") or {}).get("latestCheckpoint")) or {}).get("name")
        if spec.get("forceFullBackup"):
            since = None
        claims = {v["name"]: self.claim_of(v) for v in vols}
        if since and any(since not in self.disks.checkpoints(ns, c) for c in claims.values()):
            since = None            # the checkpoint is gone (a new disk): full
        quiesce = "Skipped"
        if not spec.get("skipQuiesce"):
            try:
                self.freeze(ns, vm_name, {"unfreezeTimeout": "5m"})
                quiesce = "Succeeded"
            except ApiError:
                quiesce = "Failed"
        job = {"ns": ns, "vm": vm_name, "name": name, "checkpoint": checkpoint,
               "tracker": (tracker or {}).get("metadata", {}).get("name"),
               "volumes": {}, "incremental": since is not None, "created": meta["creationTimestamp"]}
        os.makedirs(os.path.join(self.disks.d, ns), exist_ok=True)
        for vol, claim in claims.items():
            path = os.path.join(self.disks.d, ns, "backup-%s-%s.img" % (uid, vol))
            dirty = self.disks.backup_begin(ns, claim, since, checkpoint, path)
            job["volumes"][vol] = {"path": path, "dirty": dirty}
        if quiesce == "Succeeded":
            try:
                self.unfreeze(ns, vm_name)
            except ApiError:
                pass
        self.backup_jobs[uid] = job

        def started(st):
            st["type"] = "Incremental" if since else "Full"
            st["checkpointName"] = checkpoint
            st["includedVolumes"] = [{"volumeName": v} for v in claims]
            self.backup_condition(st, "Quiesced", "True" if quiesce == "Succeeded" else "False",
                                  "Quiesce" + quiesce,
                                  {"Succeeded": "Guest filesystem was successfully quiesced",
                                   "Failed": "Guest filesystem quiesce failed",
                                   "Skipped": "Guest filesystem quiesce was skipped"}[quiesce])
            self.backup_condition(st, "Progressing", "True", "Initiated", "Backup is in progress")
        self.backup_status(b, started)

    def backup_finish(self, b, job, deleted=False, ttl=False, failed=None):
        """The end: a Pull backup deleted or past its TTL counts as done
        (the tracker gets the checkpoint); a deletion before it started
        fails it; then the export goes, and the finalizer."""
        meta = b["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if not self.backup_terminal(b):
            if job is None and deleted:
                failed = "Backup has failed: backup was deleted during initialization"
            if failed:
                self.backup_status(b, lambda st: (
                    self.backup_condition(st, "Failed", "True", "Failed" if job else
                                          "DeletedDuringInit", failed),
                    self.backup_condition(st, "Progressing", "False", "Failed" if job else
                                          "DeletedDuringInit", failed)))
            else:
                if job and job["tracker"]:
                    vols = [{"volumeName": v} for v in job["volumes"]]
                    cp = {"name": job["checkpoint"], "creationTime": job["created"],
                          "volumes": vols}
                    try:
                        self.s.update(R["virtualmachinebackuptrackers"], ns, job["tracker"],
                                      lambda o: o.setdefault("status", {}).update(
                                          latestCheckpoint=cp), status_only=True)
                    except ApiError:
                        pass
                msg = "Successfully completed VirtualMachineBackup"
                self.backup_status(b, lambda st: (
                    self.backup_condition(st, "Complete", "True", "Completed", msg),
                    self.backup_condition(st, "Progressing", "False", "Completed", msg)))
        if job is not None:
            self.backup_job_end(meta["uid"])
        try:
            self.s.delete(R["virtualmachineexports"], ns, name)
        except ApiError:
            pass
        if deleted:
            self.s.update(R["virtualmachinebackups"], ns, name, lambda o: o["metadata"].update(
                finalizers=[f for f in o["metadata"].get("finalizers") or []
                            if f != "backup.kubevirt.io/vmbackup-protection"]), main_only=True)

    def backup_job_end(self, uid):
        job = self.backup_jobs.pop(uid, None)
        for v in (job or {}).get("volumes", {}).values():
            try:
                os.unlink(v["path"])
            except OSError:
                pass

    def backup_volume(self, ns, name, vol):
        """The running job of the backup the export ns/name serves, and its
        volume vol: (job, volume) or (None, None)."""
        x = self.s.get(R["virtualmachineexports"], ns, name)
        src = ((x or {}).get("spec") or {}).get("source") or {}
        b = self.s.get(R["virtualmachinebackups"], ns, src.get("name")) \
            if src.get("kind") == "VirtualMachineBackup" else None
        job = self.backup_jobs.get((b or {}).get("metadata", {}).get("uid"))
        return (job, job["volumes"].get(vol)) if job else (None, None)

    @staticmethod
    def backup_extents(job, v, offset, length, page_size):
        """The map endpoint's extents (kubevirt-api.md 12.7): NBD
        base:allocation of the point-in-time image, merged with the dirty
        bitmap for an incremental backup; runs of one type joined."""
        path, dirty = v["path"], v["dirty"]
        size = os.path.getsize(path)
        end = size if length == 0 else min(size, offset + length)
        data = []                               # [start, end) holding data
        with open(path, "rb") as f:
            fd, at = f.fileno(), 0
            while at < size:
                try:
                    start = os.lseek(fd, at, os.SEEK_DATA)
                except OSError:
                    break
                stop = os.lseek(fd, start, os.SEEK_HOLE)
                data.append((start, stop))
                at = stop
        if job["incremental"]:
            names = {0: "clean", 1: "dirty", 2: "zero", 3: "dirty,zero"}
        else:
            names = {0: "data", 3: "hole,zero"}

        def zero_at(a, b):
            return not any(s < b and a < e for s, e in data)
        out, at = [], offset
        while at < end:
            # one step: to the next cluster boundary
            stop = min(end, (at // CBT_CLUSTER + 1) * CBT_CLUSTER)
            z = zero_at(at, stop)
            if job["incremental"]:
                t = (1 if at // CBT_CLUSTER in dirty else 0) | (2 if z else 0)
            else:
                t = 3 if z else 0
            if out and out[-1]["type"] == t and out[-1]["offset"] + out[-1]["length"] == at:
                out[-1]["length"] += stop - at
            else:
                if len(out) == page_size:
                    return out, at
                out.append({"offset": at, "length": stop - at, "type": t, "description": names[t]})
            at = stop
        return out, None

    def reconcile_clones(self):
        if not self.clone_served:
            return
        for cl in self.s.list(R["virtualmachineclones"], None)[0]:
            try:
                self.clone_pass(cl)
            except ApiError:
                pass

    def clone_pass(self, cl):
        rc = R["virtualmachineclones"]
        meta, spec = cl["metadata"], cl.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        st = cl.get("status") or {}
        phase = st.get("phase", "")
        if phase == "Succeeded" and st.get("targetName") and \
                self.s.get(R["virtualmachines"], ns, st["targetName"]) is None:
            if not meta.get("deletionTimestamp"):
                self.s.delete(rc, ns, name)     # its VM deleted: the clone goes too
            return
        if phase == "Failed":
            return
        src = spec.get("source") or {}
        kind, sname = src.get("kind"), src.get("name") or ""
        info = {"snapshot_name": "", "snapshot_ready": False, "restore_name": "",
                "restore_ready": False, "target_name": "", "target_created": False,
                "pvc_bound": False, "fail": None, "pending": None}
        if kind == "VirtualMachine":
            source = self.s.get(R["virtualmachines"], ns, sname)
        elif kind == "VirtualMachineSnapshot":
            source = self.s.get(R["virtualmachinesnapshots"], ns, sname)
        else:
            return                      # "unknown source type": an error, retried
        if source is None:
            if phase in ("", "SnapshotInProgress"):
                info["pending"] = "Source doesnt exist: %s %s/%s" % (kind, ns, sname)
                self.clone_status(cl, info)
            return
        if kind == "VirtualMachine":
            if backend_storage(source, cbt=True):
                info["fail"] = "Clone of source with backendstorage is not supported: VM %s/%s" % (ns, sname)
            elif phase in ("", "SnapshotInProgress") and not st.get("snapshotName"):
                statuses = {s.get("name"): s for s in
                            (source.get("status") or {}).get("volumeSnapshotStatuses") or []}
                bad = []
                for v in vm_volumes(source):
                    if "persistentVolumeClaim" not in v and "dataVolume" not in v:
                        continue
                    s = statuses.get(v.get("name"))
                    if s is None:
                        bad.append("Virtual Machine volume %s snapshot support unknown" % v.get("name"))
                    elif not s.get("enabled"):
                        bad.append("Virtual Machine volume %s does not support snapshots" % v.get("name"))
                if bad:
                    info["pending"] = "\n".join(bad)
        if not info["fail"] and not info["pending"]:
            self.clone_sync(cl, kind, info)
        self.clone_status(cl, info)

    def clone_sync(self, cl, kind, info):
        """syncTargetVM: as far as it gets in this pass."""
        meta, spec = cl["metadata"], cl.get("spec") or {}
        ns, uid = meta["namespace"], meta["uid"]
        st = cl.get("status") or {}
        phase = st.get("phase", "")
        rs_, rr = R["virtualmachinesnapshots"], R["virtualmachinerestores"]
        owner = [owner_ref("clone.kubevirt.io/v1beta1", "VirtualMachineClone", cl)]
        snap = None
        snap_name = st.get("snapshotName") or (spec["source"]["name"]
                                               if kind == "VirtualMachineSnapshot" else None)
        if phase in ("", "SnapshotInProgress"):
            if kind == "VirtualMachine" and not st.get("snapshotName"):
                tmp = "tmp-snapshot-" + uid
                try:
                    self.api_create(rs_, ns, {
                        "metadata": {"name": tmp, "ownerReferences": owner},
                        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine",
                                            "name": spec["source"]["name"]}}})
                except ApiError as e:
                    if e.reason != "AlreadyExists":
                        return
                info["snapshot_name"] = tmp
                return
            snap = self.s.get(rs_, ns, snap_name)
            if snap is None or not (snap.get("status") or {}).get("readyToUse"):
                return                  # not created yet / not ready to use yet
            info["snapshot_ready"] = True
            phase = "RestoreInProgress"
        if phase == "RestoreInProgress":
            if snap is None:
                snap = self.s.get(rs_, ns, snap_name or "")
                if snap is None:
                    info["fail"] = "snapshot %s does not exist anymore" % snap_name
                    return
            if not st.get("restoreName"):
                captured = self.clone_captured(snap, info)
                if captured is None:
                    return
                rspec = {"target": copy.deepcopy(spec.get("target")),
                         "virtualMachineSnapshotName": snap["metadata"]["name"]}
                patches = clone_patches(captured, spec)
                if patches:
                    rspec["patches"] = patches
                if spec.get("volumeNamePolicy"):
                    rspec["volumeRestorePolicy"] = spec["volumeNamePolicy"]
                tmp = "tmp-restore-" + uid
                try:
                    self.api_create(rr, ns, {"apiVersion": "snapshot.kubevirt.io/v1beta1",
                                             "kind": "VirtualMachineRestore",
                                             "metadata": {"name": tmp, "ownerReferences": owner},
                                             "spec": rspec})
                except ApiError as e:
                    if e.reason != "AlreadyExists":
                        return          # Warning RestoreCreationFailed; retried, forever
                info["restore_name"] = tmp
                return
            rst = self.s.get(rr, ns, st["restoreName"])
            if rst is None:
                return                  # "restore ... is not created yet": retried
            rsst = rst.get("status") or {}
            if not rsst.get("complete") and not any(c.get("type") == "Failure"
                                                    for c in rsst.get("conditions") or []):
                return                  # VmRestoreProgressing
            info["restore_ready"] = True
            info["target_name"] = (rst.get("spec") or {}).get("target", {}).get("name", "")
            phase = "CreatingTargetVM"
        if phase == "CreatingTargetVM":
            if self.s.get(R["virtualmachines"], ns, (spec.get("target") or {}).get("name") or "") is None:
                return                  # "target VM ... is not created yet": retried
            info["target_created"] = True
            phase = "Succeeded"
        if phase == "Succeeded" and st.get("restoreName"):
            rst = self.s.get(rr, ns, st["restoreName"])
            if rst is None:
                return
            for r in (rst.get("status") or {}).get("restores") or []:
                pvc = self.s.get(R["persistentvolumeclaims"], ns, r.get("persistentVolumeClaim") or "")
                if pvc is None or (pvc.get("status") or {}).get("phase") != "Bound":
                    return
            info["pvc_bound"] = True
            for r_, n in ((rr, st["restoreName"]),
                          (rs_, st.get("snapshotName") if kind == "VirtualMachine" else None)):
                if n:
                    try:
                        self.s.delete(r_, ns, n)
                    except ApiError as e:
                        if e.code != 404:
                            raise

    def clone_captured(self, snap, info):
        """The VM the snapshot captured, after the content checks."""
        ns, sname = snap["metadata"]["namespace"], snap["metadata"]["name"]
        cname = (snap.get("status") or {}).get("virtualMachineSnapshotContentName") or \
            "vmsnapshot-content-" + snap["metadata"]["uid"]
        content = self.s.get(R["virtualmachinesnapshotcontents"], ns, cname)
        if content is None:
            info["fail"] = "snapshot content %s in namespace %s does not exist" % (cname, ns)
            return None
        if not (content.get("spec") or {}).get("virtualMachineSnapshotName"):
            info["fail"] = "cannot get snapshot name from content %s" % cname
            return None
        captured = ((content["spec"].get("source") or {}).get("virtualMachine")) or {}
        if backend_storage(captured):
            info["fail"] = "Clone of source with backendstorage is not supported: snapshot %s/%s" % (ns, sname)
            return None
        backed = {b.get("volumeName") for b in content["spec"].get("volumeBackups") or []}
        for v in vm_volumes(captured):
            if ("persistentVolumeClaim" in v or "dataVolume" in v) and v.get("name") not in backed:
                info["fail"] = "volume %s is not backed up in snapshot %s" % (v.get("name"), sname)
                return None
        return captured

    def clone_status(self, cl, info):
        """updateStatus, the conditions of kubevirt-api.md 11.4."""
        st = cl.get("status") or {}
        out = copy.deepcopy(st)
        conds = out.setdefault("conditions", [])
        phase = out.get("phase", "")
        if info["fail"]:
            phase = "Failed"
            want = [("Progressing", "False", "Failed"), ("Ready", "False", info["fail"])]
        elif info["pending"]:
            want = [("Progressing", "False", "Pending"), ("Ready", "False", info["pending"])]
        else:
            want = [("Progressing", "True", "Still processing"), ("Ready", "False", "Still processing")]
            if phase == "":
                phase = "SnapshotInProgress"
            if phase == "SnapshotInProgress":
                if info["snapshot_name"]:
                    out["snapshotName"] = info["snapshot_name"]
                if info["snapshot_ready"]:
                    phase = "RestoreInProgress"
            if phase == "RestoreInProgress":
                if info["restore_name"]:
                    out["restoreName"] = info["restore_name"]
                if info["restore_ready"]:
                    phase = "CreatingTargetVM"
            if phase == "CreatingTargetVM":
                if info["target_name"]:
                    out["targetName"] = info["target_name"]
                if info["target_created"]:
                    phase = "Succeeded"
            if phase == "Succeeded":
                want = [("Progressing", "False", "Ready"), ("Ready", "True", "Ready")]
            if info["pvc_bound"]:
                out.pop("snapshotName", None)
                out.pop("restoreName", None)
        for t, s, reason in want:
            set_condition(conds, t, s, reason)
        if phase:
            out["phase"] = phase
        # Go field order: creationTime, phase, conditions, snapshotName, restoreName, targetName
        out = {k: out[k] for k in ("creationTime", "phase", "conditions", "snapshotName",
                                   "restoreName", "targetName") if k in out}
        if out != st:
            m = cl["metadata"]
            self.s.update(R["virtualmachineclones"], m["namespace"], m["name"],
                          lambda o: o.update(status=out), rv=m["resourceVersion"], status_only=True)

    # -- garbage collection of owned objects ---------------------------------------------
    def collect_garbage(self):
        """Kubernetes' garbage collector (background propagation) for what
        the restore and clone controllers make: an object whose owners
        (VirtualMachines, VirtualMachineClones) are all gone is deleted."""
        owners = {"VirtualMachine": R["virtualmachines"],
                  "VirtualMachineClone": R["virtualmachineclones"]}
        for r in (R["virtualmachinerestores"], R["virtualmachinesnapshots"],
                  R["persistentvolumeclaims"]):
            for o in self.s.scan(r):
                m = o["metadata"]
                refs = m.get("ownerReferences") or []
                if not refs or m.get("deletionTimestamp") or \
                        any(w.get("kind") not in owners for w in refs):
                    continue
                if any(any(x["metadata"].get("uid") == w.get("uid") and
                           x["metadata"].get("name") == w.get("name")
                           for x in self.s.scan(owners[w["kind"]], m["namespace"])) for w in refs):
                    continue
                try:
                    self.s.delete(r, m["namespace"], m["name"])
                except ApiError:
                    continue
                if r is R["persistentvolumeclaims"] and self.disks:
                    self.disks.drop(m["namespace"], m["name"])

    def run(self):
        while not self.s.closed:
            self.passes += 1
            steps = [self.reconcile_pvcs, self.reconcile_vms, self.reconcile_snapshots,
                     self.reconcile_exports, self.reconcile_restores, self.reconcile_clones,
                     self.reconcile_backups]
            if self.passes % 5 == 0:
                steps.append(self.collect_garbage)
            for step in steps:
                try:
                    step()
                except Exception as e:          # a controller logs and goes on
                    print("fake-apiserver: controller: %r" % e, file=sys.stderr)
            time.sleep(self.tick)

# ---- HTTP ----------------------------------------------------------------------------------

def resource_list(group, version):
    out = []
    for r in RESOURCES:
        if r.group != group or version not in r.versions:
            continue
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        e = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
             "kind": r.kind, "verbs": verbs, "storageVersionHash": ""}
        if r.short:
            e["shortNames"] = r.short
        if r.group in ("kubevirt.io", "snapshot.kubevirt.io", "clone.kubevirt.io",
                       "backup.kubevirt.io"):
            e["categories"] = ["all"]
        out.append(e)
        if r.status:
            out.append({"name": r.plural + "/status", "singularName": "", "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": ["get", "patch", "update"]})
    if group == "subresources.kubevirt.io":
        for plural, sub in sorted(SUBRESOURCES):
            out.append({"name": plural + "/" + sub, "singularName": "", "namespaced": True,
                        "kind": "", "verbs": ["update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": api_version(group, version), "resources": out}


def groups():
    gs = {}
    for r in RESOURCES:
        if r.group:
            gs.setdefault(r.group, [])
            for v in r.versions:
                if v not in gs[r.group]:
                    gs[r.group].append(v)
    gs["subresources.kubevirt.io"] = ["v1"]
    out = []
    for g, vs in sorted(gs.items()):
        pref = vs[-1]
        out.append({"name": g, "versions": [{"groupVersion": g + "/" + v, "version": v}
                                            for v in reversed(vs)],
                    "preferredVersion": {"groupVersion": g + "/" + pref, "version": pref}})
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-apiserver"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("fake-apiserver: %s %s\n" % (self.address_string(), fmt % args))

    # -- plumbing ---------------------------------------------------------------
    def send_json(self, code, obj):
        body = (json.dumps(obj) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.count(self.command, self.path, self.headers.get("Host"))

    def send_empty(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.count(self.command, self.path, self.headers.get("Host"))

    def read_body(self):
        """Every request's body is read, used or not (a DELETE's options):
        the connection is kept for the next request."""
        n = int(self.headers.get("Content-Length") or 0)
        if n == 0 and self.headers.get("Transfer-Encoding") == "chunked":
            raw = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        else:
            raw = self.rfile.read(n) if n else b""
        self.raw = raw

    def body(self):
        raw = self.raw
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")

    def authenticated(self):
        """The user: "admin" (token or client certificate), "team" (the
        namespace-limited token), or None."""
        auth = self.headers.get("Authorization", "")
        if auth == "Bearer " + self.server.token:
            return "admin"
        if self.server.team_token and auth == "Bearer " + self.server.team_token:
            return "team"
        try:
            cert = self.connection.getpeercert()
        except (AttributeError, ValueError):
            cert = None
        return "admin" if cert else None

    def authorize(self, group, plural, ns, name, q):
        """RBAC for the team user: Roles in its namespaces only."""
        if self.user != "team" or (ns is not None and ns in self.server.team_ns):
            return
        verb = {"GET": "get" if name else ("watch" if q.get("watch") in ("true", "1") else "list"),
                "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(self.command, "get")
        res = plural + ("." + group if group else "")
        where = 'in the namespace "%s"' % ns if ns is not None else "at the cluster scope"
        raise ApiError(403, "Forbidden",
                       '%s is forbidden: User "system:serviceaccount:%s:team" cannot %s resource '
                       '"%s" in API group "%s" %s' % (res, self.server.team_ns[0], verb, plural,
                                                      group, where),
                       {"group": group, "kind": plural, **({"name": name} if name else {})})

    # -- the export proxy and server (kubevirt-api.md 5.4-5.6) -------------------
    EXPORT_RE = re.compile(r"^/api/export\.kubevirt\.io/(v1beta1|v1)/namespaces/([^/]+)/"
                           r"virtualmachineexports/([^/]+)/(.*)$")

    def handle_export(self, url, q):
        """virt-exportproxy, then the export's server: 400 for a path it does
        not know, 404 for no such export, 503 while it is not Ready; then
        the token (header or query, exact bytes; 401 with no body); disk.img
        served as Go's http.ServeContent serves a file."""
        m = self.EXPORT_RE.match(url.path)
        if not m:
            return self.send_raw(400, b"invalid path\n", "text/plain; charset=utf-8")
        ns, name, rest = m.group(2), m.group(3), m.group(4)
        kv = self.server.kubevirt
        if rest == "exportready":
            return self.send_raw(200, b"OK", "text/plain; charset=utf-8")
        bm = re.fullmatch(r"exports/([^/]+)/(map|data)", rest)
        if bm:
            return self.handle_backup_export(kv, ns, name, bm.group(1), bm.group(2), q)
        vm = re.fullmatch(r"volumes/([^/]+)/disk\.img", rest)
        path, err = kv.export_volume(ns, name, vm.group(1) if vm else "")
        if err and err[0] in (404, 503) and (err[0] == 503 or
                                            self.server.store.get(R["virtualmachineexports"], ns,
                                                                  name) is None):
            return self.send_raw(err[0], err[1], "text/plain; charset=utf-8")
        if not self.export_token_ok(kv, ns, name, q):
            return self.send_raw(401, b"", None)
        if err:
            return self.send_raw(err[0], err[1], "text/plain; charset=utf-8")
        return self.serve_content(path)

    def export_token_ok(self, kv, ns, name, q):
        """The export's token, in the header or the query, exact bytes."""
        want = kv.export_token(ns, name)
        got = self.headers.get("x-kubevirt-export-token")
        if got is None:
            got = q.get("x-kubevirt-export-token")
        return want is not None and got is not None and secrets.compare_digest(got.encode(), want)

    def handle_backup_export(self, kv, ns, name, vol, what, q):
        """A pull-mode backup's map and data endpoints (kubevirt-api.md
        12.7): the token first, then 405 for other methods, 400 for bad
        parameters, 503 without the tunnel (no running job)."""
        x = self.server.store.get(R["virtualmachineexports"], ns, name)
        if x is None:
            return self.send_raw(404, b"", "text/plain; charset=utf-8")
        if (x.get("status") or {}).get("phase") != "Ready":
            return self.send_raw(503, b"export not ready\n", "text/plain; charset=utf-8")
        if not self.export_token_ok(kv, ns, name, q):
            return self.send_raw(401, b"", None)
        if self.command != "GET":
            return self.send_raw(405, b"", None)
        params = {}
        for key in ("offset", "length") + (("page_size",) if what == "map" else ()):
            raw = q.get(key)
            if raw is None:
                params[key] = 512 if key == "page_size" else 0
                continue
            try:
                params[key] = int(raw, 10)
                if params[key] < 0 or (key == "page_size" and params[key] == 0):
                    raise ValueError
            except ValueError:
                text = ('invalid page_size "%s"' % raw if key == "page_size" else
                        'invalid %s "%s": strconv.ParseUint: parsing "%s": invalid syntax'
                        % (key, raw, raw))
                return self.send_raw(400, text.encode() + b"\n", "text/plain; charset=utf-8")
        job, v = kv.backup_volume(ns, name, vol)
        if job is None:
            msg = b"Backup source (virt-launcher) not connected via tunnel\n" if what == "map" \
                else b"Backup source not connected\n"
            return self.send_raw(503, msg, "text/plain; charset=utf-8")
        if v is None:
            return self.send_raw(404, b"404 page not found\n", "text/plain; charset=utf-8")
        if what == "map":
            extents, nxt = kv.backup_extents(job, v, params["offset"], params["length"],
                                             params["page_size"])
            return self.send_json(200, {"extents": extents, "next_offset": nxt})
        # data: streamed, chunked, no Content-Length, no Range
        size = os.path.getsize(v["path"])
        start = params["offset"]
        end = size if params["length"] == 0 else min(size, start + params["length"])
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if start > size:
            self.close_connection = True        # the stream is aborted
            return
        with open(v["path"], "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                left -= len(chunk)
        self.wfile.write(b"0\r\n\r\n")

    def send_raw(self, code, body, ctype, headers=()):
        self.send_response(code)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    @staticmethod
    def parse_range(spec, size):
        """Go's net/http parseRange: [(start, length)], or "invalid" / "nooverlap"."""
        if not spec.startswith("bytes="):
            return "invalid"
        ranges, no_overlap = [], False
        for part in spec[len("bytes="):].split(","):
            part = part.strip()
            if not part:
                continue
            if "-" not in part:
                return "invalid"
            a, b = (x.strip() for x in part.split("-", 1))
            try:
                if a == "":
                    if not b.isdigit():
                        return "invalid"
                    n = min(int(b), size)
                    start, length = size - n, n
                else:
                    if not a.isdigit():
                        return "invalid"
                    start = int(a)
                    if start >= size:
                        no_overlap = True
                        continue
                    if b == "":
                        length = size - start
                    else:
                        if not b.isdigit():
                            return "invalid"
                        end = int(b)
                        if start > end:
                            return "invalid"
                        length = min(end, size - 1) - start + 1
            except ValueError:
                return "invalid"
            ranges.append((start, length))
        if no_overlap and not ranges:
            return "nooverlap"
        return ranges

    def serve_content(self, path):
        size = os.path.getsize(path)
        spec = self.headers.get("Range")
        if self.headers.get("If-Range") is not None:
            spec = None                 # no ETag, no modtime: If-Range never matches
        ranges = self.parse_range(spec, size) if spec else []
        if ranges in ("invalid", "nooverlap"):
            return self.send_raw(416, (b"invalid range: failed to overlap\n"
                                       if ranges == "nooverlap" else b"invalid range\n"),
                                 "text/plain; charset=utf-8",
                                 [("Content-Range", "bytes */%d" % size)])
        if sum(n for _, n in ranges) > size:
            ranges = []                 # more than the file: the file
        with open(path, "rb") as f:
            def copy_out(start, n):
                f.seek(start)
                while n > 0:
                    chunk = f.read(min(n, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    n -= len(chunk)
                    with self.server.count_lock:
                        self.server.export_bytes += len(chunk)
            if len(ranges) == 1:
                start, n = ranges[0]
                self.send_response(206)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, start + n - 1, size))
                self.send_header("Content-Length", str(n))
                self.end_headers()
                if self.command != "HEAD":
                    copy_out(start, n)
            elif ranges:
                boundary = secrets.token_hex(30)
                parts = [("--%s\r\nContent-Range: bytes %d-%d/%d\r\nContent-Type: "
                          "application/octet-stream\r\n\r\n" % (boundary, a, a + n - 1, size)).encode()
                         for a, n in ranges]
                end = ("\r\n--%s--\r\n" % boundary).encode()
                total = sum(len(h) + n for h, (_, n) in zip(parts, ranges)) + \
                    2 * (len(ranges) - 1) + len(end)
                self.send_response(206)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "multipart/byteranges; boundary=" + boundary)
                self.send_header("Content-Length", str(total))
                self.end_headers()
                if self.command != "HEAD":
                    for i, (h, (a, n)) in enumerate(zip(parts, ranges)):
                        if i:
                            self.wfile.write(b"\r\n")
                        self.wfile.write(h)
                        copy_out(a, n)
                    self.wfile.write(end)
            else:
                self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if self.command != "HEAD":
                    copy_out(0, size)

    def handle_one(self):
        if self.path.startswith("/api/export.kubevirt.io/"):
            url = urllib.parse.urlsplit(self.path)
            q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            return self.handle_export(url, q)
        if self.server.fail_next:
            code = self.server.fail_next.pop(0)
            raise ApiError(code, {429: "TooManyRequests", 500: "InternalError",
                                  503: "ServiceUnavailable"}.get(code),
                           "injected failure %d" % code)
        self.user = self.authenticated()
        if not self.user:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        if parts[:1] == ["fake"]:
            if self.user != "admin":
                raise ApiError(403, "Forbidden", "the fake's controls are the admin's")
            return self.control(parts[1:])
        if parts[:2] == ["openapi", "v3"]:
            return self.openapi(parts[2:])
        if parts == ["openapi", "v2"]:          # older kubectl: no schema, no client checks
            return self.send_json(200, {"swagger": "2.0", "info": {"title": "fake", "version": "v1"},
                                        "paths": {}, "definitions": {}})
        if parts == ["version"]:
            return self.send_json(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake",
                                        "platform": "linux/amd64"})
        if parts == ["api"]:
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                        "serverAddressByClientCIDRs": [
                                            {"clientCIDR": "0.0.0.0/0",
                                             "serverAddress": "127.0.0.1:%d" % self.server.server_port}]})
        if parts == ["apis"]:
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups()})
        if len(parts) == 2 and parts[0] == "apis":
            for g in groups():
                if g["name"] == parts[1]:
                    return self.send_json(200, dict(g, kind="APIGroup", apiVersion="v1"))
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            if version not in dict((g["name"], 1) for g in groups()).keys() and \
                    not any(group == r.group and version in r.versions for r in RESOURCES) and \
                    group != "subresources.kubevirt.io":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self.send_json(200, resource_list(group, version))
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (group == "" and rest[2] in ("status", "finalize")):
            ns, rest = rest[1], rest[2:]
        if group == "subresources.kubevirt.io":
            if len(rest) == 3:
                self.authorize(group, rest[0] + "/" + rest[2], ns, rest[1], q)
            return self.subresource(ns, rest)
        r = res_by(group, version, rest[0])
        if r is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if r.namespaced and ns is None and len(rest) > 1:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        self.authorize(group, r.plural, ns, name, q)
        sub = rest[2] if len(rest) > 2 else None
        if sub not in (None, "status") or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self.resource(r, version, ns, name, sub, q)

    def control(self, parts):
        """The test's handle on the fake (not Kubernetes): requests made,
        failures to inject, the guests' filesystems."""
        srv = self.server
        if parts == ["requests"] and self.command == "GET":
            with srv.count_lock:
                return self.send_json(200, {"requests": list(srv.requests),
                                            "hosts": list(srv.hosts)})
        if parts == ["requests"] and self.command == "DELETE":
            with srv.count_lock:
                srv.requests.clear()
                srv.hosts.clear()
            return self.send_empty(200)
        if parts == ["export-bytes"] and self.command == "GET":
            # disk bytes the export servers sent (Range reads of volumes)
            with srv.count_lock:
                return self.send_json(200, {"bytes": srv.export_bytes})
        if parts == ["outage"] and self.command == "POST":
            # the API server goes away for a while (a restart): connections
            # are cut, watches end mid-stream, new requests get no answer
            srv.down_until = time.monotonic() + float((self.body() or {}).get("seconds", 3))
            return self.send_empty(200)
        if parts == ["fail"] and self.command == "POST":
            srv.fail_next.extend((self.body() or {}).get("codes", []))
            return self.send_empty(200)
        if parts == ["disk"] and self.command == "POST":
            # a guest writes into its disk: {"namespace", "pvc", "offset", "data" (base64)},
            # or discards a range of it: {..., "discard": true, "length"}
            b = self.body() or {}
            disks = srv.kubevirt.disks
            path = disks.path(b.get("namespace", ""), b.get("pvc", ""))
            if not os.path.exists(path):
                raise ApiError(404, "NotFound", "no disk %s" % path)
            if b.get("discard"):
                disks.discard(b["namespace"], b["pvc"], int(b.get("offset", 0)),
                              int(b.get("length", 0)))
            else:
                disks.write(b["namespace"], b["pvc"], int(b.get("offset", 0)),
                            base64.b64decode(b.get("data", "")))
            return self.send_empty(200)
        if parts == ["guests"] and self.command == "GET":
            kv = srv.kubevirt
            with kv.glock:
                return self.send_json(200, {"%s/%s" % k: {"frozen": g.frozen, "late": g.late,
                                                          "thawed_by": g.thawed_by}
                                            for k, g in kv.guests.items()})
        raise ApiError(404, "NotFound", "no such control")

    def openapi(self, gv):
        """OpenAPI v3 enough for kubectl: each kind's PATCH takes the
        fieldValidation parameter, so kubectl validates on the server (as
        it does against kube-apiserver) instead of downloading schemas."""
        gvs = sorted({("api/" + v) if not r.group else ("apis/%s/%s" % (r.group, v))
                      for r in RESOURCES for v in r.versions})
        if not gv:
            return self.send_json(200, {"paths": {p: {"serverRelativeURL": "/openapi/v3/%s?hash=0" % p}
                                                  for p in gvs}})
        path = "/".join(gv)
        if path not in gvs:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, version = ("", gv[1]) if gv[0] == "api" else (gv[1], gv[2])
        paths, schemas = {}, {}
        for r in RESOURCES:
            if r.group != group or version not in r.versions:
                continue
            gvk = {"group": group, "version": version, "kind": r.kind}
            item = "/%s/namespaces/{namespace}/%s/{name}" % (path, r.plural) if r.namespaced \
                else "/%s/%s/{name}" % (path, r.plural)
            op = {"x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}},
                  "parameters": [{"name": "fieldValidation", "in": "query",
                                  "schema": {"type": "string"}}]}
            paths[item] = {"patch": dict(op, operationId="patch" + r.kind),
                           "put": dict(op, operationId="replace" + r.kind)}
            schemas["%s.%s.%s" % (group or "core", version, r.kind)] = {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True,
                "x-kubernetes-group-version-kind": [gvk]}
        return self.send_json(200, {"openapi": "3.0.0", "info": {"title": "fake", "version": "v1"},
                                    "paths": paths, "components": {"schemas": schemas}})

    def served(self, r, version, obj):
        obj["apiVersion"] = api_version(r.group, version)
        return obj

    # -- server-side printing (kubectl get: Accept ...;as=Table) -------------------
    def table_version(self, r):
        """meta.k8s.io/v1 or v1beta1 when the client asks for a Table first
        and the resource has printer columns; None for plain JSON."""
        if not r.columns:
            return None
        for part in (self.headers.get("Accept") or "").split(","):
            fields = [f.strip() for f in part.split(";")]
            params = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
            if fields[0] not in ("application/json", "*/*", "application/*"):
                continue
            if params.get("as") == "Table":
                if params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
                    return params["v"]
                continue
            return None
        return None

    NAME_DESCRIPTION = ("Name must be unique within a namespace. Is required when creating "
                        "resources, although some resources may allow a client to request the "
                        "generation of an appropriate name automatically. Name is primarily "
                        "intended for creation idempotence and configuration definition. Cannot "
                        "be updated. More info: https://kubernetes.io/docs/concepts/overview/"
                        "working-with-objects/names#names")

    @staticmethod
    def human_duration(secs):
        """apimachinery duration.HumanDuration."""
        s = int(secs)
        if s < -1:
            return "<invalid>"
        if s < 0:
            return "0s"
        if s < 120:
            return "%ds" % s
        m = s // 60
        if m < 10:
            return "%dm" % m if s % 60 == 0 else "%dm%ds" % (m, s % 60)
        if m < 180:
            return "%dm" % m
        h = s // 3600
        if h < 8:
            return "%dh" % h if m % 60 == 0 else "%dh%dm" % (h, m % 60)
        if h < 48:
            return "%dh" % h
        if h < 24 * 8:
            return "%dd" % (h // 24) if h % 24 == 0 else "%dd%dh" % (h // 24, h % 24)
        if h < 24 * 365 * 2:
            return "%dd" % (h // 24)
        if h < 24 * 365 * 8:
            y, d = h // 24 // 365, (h // 24) % 365
            return "%dy" % y if d == 0 else "%dy%dd" % (y, d)
        return "%dy" % (h // 24 // 365)

    def table_cell(self, type_, value):
        """apiextensions-apiserver tableconvertor: a CRD column's cell."""
        if value is None:
            return None
        if type_ == "string":
            if isinstance(value, str):
                return value
            return json.dumps(value) if not isinstance(value, bool) else str(value).lower()
        if type_ == "boolean":
            return value if isinstance(value, bool) else None
        if type_ == "date":
            if not isinstance(value, str):
                return None
            try:
                t = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=datetime.timezone.utc)
            except ValueError:
                return "<invalid>"
            return self.human_duration((datetime.datetime.now(datetime.timezone.utc) - t)
                                       .total_seconds())
        return value

    def table(self, r, tv, objs, meta, q):
        cols = [{"name": "Name", "type": "string", "format": "name",
                 "description": self.NAME_DESCRIPTION, "priority": 0}]
        for name, type_, path in r.columns:
            cols.append({"name": name, "type": type_, "format": "",
                         "description": "Custom resource definition column (in JSONPath "
                                        "format): %s" % path, "priority": 0})
        include = q.get("includeObject") or "Metadata"
        rows = []
        for o in objs:
            cells = [o["metadata"].get("name")]
            for _, type_, path in r.columns:
                v = o
                for k in path.strip(".").split("."):
                    v = v.get(k) if isinstance(v, dict) else None
                cells.append(self.table_cell(type_, v))
            row = {"cells": cells}
            if include == "Object":
                row["object"] = o
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata",
                                 "apiVersion": "meta.k8s.io/" + tv, "metadata": o["metadata"]}
            rows.append(row)
        return {"kind": "Table", "apiVersion": "meta.k8s.io/" + tv, "metadata": meta,
                "columnDefinitions": cols, "rows": rows}

    # -- resources --------------------------------------------------------------
    def resource(self, r, version, ns, name, sub, q):
        s = self.server.store
        m = self.command
        if name is None:
            if m == "GET" and q.get("watch") in ("true", "1"):
                return self.watch(r, version, ns, q)
            if m == "GET":
                items, rv = s.list(r, ns)
                items = [self.served(r, version, o) for o in items
                         if selector_matches(o, q.get("labelSelector"), q.get("fieldSelector"))]
                meta = {"resourceVersion": str(rv)}
                limit = int(q.get("limit") or 0)
                start = 0
                if q.get("continue"):
                    try:
                        start = int(base64.b64decode(q["continue"]).decode())
                    except (ValueError, UnicodeDecodeError):
                        raise ApiError(400, "BadRequest", "invalid continue token")
                if limit:
                    if start + limit < len(items):
                        meta["continue"] = base64.b64encode(str(start + limit).encode()).decode()
                        meta["remainingItemCount"] = len(items) - start - limit
                    items = items[start:start + limit]
                tv = self.table_version(r)
                if tv:
                    return self.send_json(200, self.table(r, tv, items, meta, q))
                return self.send_json(200, {"apiVersion": api_version(r.group, version),
                                            "kind": r.kind + "List", "metadata": meta, "items": items})
            if m == "POST":
                obj = self.body()
                if not isinstance(obj, dict):
                    raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
                kv = self.server.kubevirt
                kv.prepare(r, ns, obj, None)
                if r.status:
                    obj.pop("status", None)
                kv.create_status(r, obj)
                if q.get("dryRun") == "All":
                    return self.send_json(201, self.served(r, version, obj))
                return self.send_json(201, self.served(r, version, s.create(r, ns, obj)))
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if m == "GET":
            o = s.get(r, ns, name)
            if o is None:
                raise not_found(r, name)
            tv = self.table_version(r)
            if tv:
                return self.send_json(200, self.table(
                    r, tv, [self.served(r, version, o)],
                    {"resourceVersion": o["metadata"]["resourceVersion"]}, q))
            return self.send_json(200, self.served(r, version, o))
        if m == "DELETE":
            o, gone = s.delete(r, ns, name)
            if gone:
                return self.send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                            "status": "Success",
                                            "details": {"name": name, "group": r.group,
                                                        "kind": r.plural, "uid": o["metadata"]["uid"]}})
            return self.send_json(200, self.served(r, version, o))
        if m == "PUT":
            obj = self.body()
            if not isinstance(obj, dict):
                raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
            rv = obj.get("metadata", {}).get("resourceVersion")
            if not rv:
                raise invalid(r, name, "metadata.resourceVersion",
                              "Invalid value: 0x0: must be specified for an update")
            cur = s.get(r, ns, name)
            if cur is None:
                raise not_found(r, name)
            self.server.kubevirt.prepare(r, ns, obj, cur, sub)

            def replace(o):
                o.clear()
                o.update(copy.deepcopy(obj))
            return self.send_json(200, self.served(r, version, s.update(
                r, ns, name, replace, rv=rv, status_only=sub == "status",
                main_only=sub is None)))
        if m == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            patch = self.body()
            if ctype == "application/strategic-merge-patch+json" and r.group:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                               "unknown format - accepted media types include: "
                               "application/json-patch+json, application/merge-patch+json, "
                               "application/apply-patch+yaml")
            cur = s.get(r, ns, name)
            if cur is None:
                raise not_found(r, name)
            try:
                if ctype == "application/json-patch+json":
                    new = json_patch(cur, patch or [])
                elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    new = merge_patch(cur, patch or {})
                else:
                    raise ApiError(415, "UnsupportedMediaType", "unsupported media type " + ctype)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise ApiError(422, "Invalid", str(e))
            self.server.kubevirt.prepare(r, ns, new, cur, sub)

            def apply(o):
                o.clear()
                o.update(new)
            return self.send_json(200, self.served(r, version, s.update(
                r, ns, name, apply, status_only=sub == "status", main_only=sub is None)))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def subresource(self, ns, rest):
        if self.command != "PUT" or len(rest) != 3 or (rest[0], rest[2]) not in SUBRESOURCES:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        plural, name, sub = rest
        kv = self.server.kubevirt
        body = self.body()
        if sub == "freeze":
            kv.freeze(ns, name, body)
            return self.send_empty(200)
        if sub == "unfreeze":
            kv.unfreeze(ns, name)
            return self.send_empty(200)
        kv.start_stop(ns, name, sub)
        return self.send_empty(202)

    # -- watch ------------------------------------------------------------------
    def watch(self, r, version, ns, q):
        s = self.server.store
        rv = q.get("resourceVersion")
        timeout = float(q.get("timeoutSeconds") or self.server.watch_max)
        timeout = min(timeout, self.server.watch_max)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        labels, fields = q.get("labelSelector"), q.get("fieldSelector")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.server.count("WATCH", self.path, self.headers.get("Host"))

        tv = self.table_version(r)

        def send(type_, obj):
            if tv and type_ in ("ADDED", "MODIFIED", "DELETED"):
                obj = self.table(r, tv, [obj], {"resourceVersion": obj["metadata"].get(
                    "resourceVersion", "")}, q)
            data = (json.dumps({"type": type_, "object": obj}) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        end = time.monotonic() + timeout
        try:
            with s.lock:
                if rv in (None, "", "0"):
                    last = s.rv
                    initial = [o for (g, p, n, _), o in sorted(s.objects.items())
                               if g == r.group and p == r.plural and (ns is None or n == ns)]
                    initial = [copy.deepcopy(o) for o in initial]
                else:
                    last = int(rv)
                    initial = []
                    if last < s.oldest:
                        err = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Failure", "message": "too old resource version: %d (%d)"
                               % (last, s.oldest + 1), "reason": "Expired", "code": 410}
                        initial = None
            if initial is None:
                send("ERROR", err)
            else:
                for o in initial:
                    if selector_matches(o, labels, fields):
                        send("ADDED", self.served(r, version, o))
                next_bookmark = time.monotonic() + self.server.bookmark_interval
                while not s.closed:
                    if time.monotonic() < self.server.down_until:
                        return self.cut()       # mid-stream, no end chunk
                    with s.lock:
                        pending = [e for e in s.events if e[0] > last]
                        if not pending:
                            wait = min(end, next_bookmark) - time.monotonic()
                            if wait > 0:
                                s.lock.wait(min(wait, 0.5))
                            pending = [e for e in s.events if e[0] > last]
                        if pending and pending[0][0] > last + 1 and last < s.oldest:
                            pending = None      # fell out of the history meanwhile
                        current = s.rv
                    if pending is None:
                        send("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                       "status": "Failure", "message": "too old resource version",
                                       "reason": "Expired", "code": 410})
                        break
                    for (erv, g, p, n, type_, obj) in pending:
                        last = erv
                        if g == r.group and p == r.plural and (ns is None or n == ns) and \
                                selector_matches(obj, labels, fields):
                            send(type_, self.served(r, version, copy.deepcopy(obj)))
                    if time.monotonic() >= end:
                        break
                    if bookmarks and time.monotonic() >= next_bookmark:
                        last = max(last, current)
                        send("BOOKMARK", {"kind": r.kind, "apiVersion": api_version(r.group, version),
                                          "metadata": {"resourceVersion": str(last)}})
                        next_bookmark = time.monotonic() + self.server.bookmark_interval
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    # -- verbs --------------------------------------------------------------------
    def cut(self):
        """No answer: the connection just ends, as when the server dies."""
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def dispatch(self):
        try:
            self.raw = b""
            self.read_body()
            if time.monotonic() < self.server.down_until and not self.path.startswith("/fake/"):
                return self.cut()
            self.handle_one()
        except ApiError as e:
            if e.code == 401:
                self.server.count("DENIED", self.path)
            self.send_json(e.code, e.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = dispatch


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def count(self, method, path, host=None):
        if path.startswith("/fake/"):
            return
        with self.count_lock:
            self.requests.append("%s %s" % (method, path))
            self.hosts.append(host or "")


def make_certs(d):
    """A CA, a server certificate for 127.0.0.1/localhost, a client one."""
    def run(*args):
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if os.path.exists(os.path.join(d, "admin.crt")):
        return
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=fake-apiserver-ca", "-keyout", d + "/ca.key", "-out", d + "/ca.crt")
    with open(d + "/san.ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
                "extendedKeyUsage=serverAuth\n")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
        "-keyout", d + "/server.key", "-out", d + "/server.csr")
    run("openssl", "x509", "-req", "-in", d + "/server.csr", "-CA", d + "/ca.crt", "-CAkey",
        d + "/ca.key", "-CAcreateserial", "-days", "2", "-extfile", d + "/san.ext",
        "-out", d + "/server.crt")
    with open(d + "/client.ext", "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/O=system:masters/CN=admin",
        "-keyout", d + "/admin.key", "-out", d + "/admin.csr")
    run("openssl", "x509", "-req", "-in", d + "/admin.csr", "-CA", d + "/ca.crt", "-CAkey",
        d + "/ca.key", "-CAcreateserial", "-days", "2", "-extfile", d + "/client.ext",
        "-out", d + "/admin.crt")
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o600)


def write_kubeconfig(d, port, token, team_token=None, team_ns=()):
    ca = base64.b64encode(open(d + "/ca.crt", "rb").read()).decode()
    cfg = """apiVersion: v1
kind: Config
current-context: fake
clusters:
- name: fake
  cluster:
    server: https://127.0.0.1:%d
    certificate-authority-data: %s
contexts:
- name: fake
  context: {cluster: fake, user: token, namespace: default}
- name: fake-cert
  context: {cluster: fake, user: cert}
users:
- name: token
  user:
    token: %s
- name: cert
  user:
    client-certificate: admin.crt
    client-key: admin.key
""" % (port, ca, token)
    if team_token:
        cfg = cfg.replace("users:\n", "- name: team\n  context: {cluster: fake, user: team, "
                          "namespace: %s}\nusers:\n" % team_ns[0], 1)
        cfg += "- name: team\n  user:\n    token: %s\n" % team_token
    path = d + "/kubeconfig"
    with open(path + ".tmp", "w") as f:
        f.write(cfg)
    os.chmod(path + ".tmp", 0o600)
    os.rename(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--history", type=int, default=10000,
                    help="events kept for watches; older resourceVersions get 410")
    ap.add_argument("--tick", type=float, default=0.1, help="controller pass interval (s)")
    ap.add_argument("--bookmark-interval", type=float, default=5.0)
    ap.add_argument("--watch-max", type=float, default=300.0)
    ap.add_argument("--populate", metavar="VMS:NAMESPACES",
                    help="make that many stopped VMs (with a PVC each) in that many namespaces")
    ap.add_argument("--team", metavar="NS,...",
                    help="a second token, allowed in these namespaces only (context team)")
    ap.add_argument("--no-clone", action="store_true",
                    help="do not serve clone.kubevirt.io (not in discovery, 404, no controller)")
    ap.add_argument("--no-incremental-backup", action="store_true",
                    help="feature gate IncrementalBackup off: no changed block tracking, "
                         "backup.kubevirt.io objects are refused (400)")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    if a.no_clone:
        RESOURCES[:] = [r for r in RESOURCES if r.group != "clone.kubevirt.io"]

    os.makedirs(a.dir, mode=0o700, exist_ok=True)
    make_certs(a.dir)
    token_path = a.dir + "/token"
    if not os.path.exists(token_path):
        with open(token_path, "w") as f:
            f.write(secrets.token_urlsafe(24))
        os.chmod(token_path, 0o600)
    token = open(token_path).read().strip()
    team_token, team_ns = None, [n for n in (a.team or "").split(",") if n]
    if team_ns:
        with open(a.dir + "/team-token", "w") as f:
            f.write(secrets.token_urlsafe(24))
        os.chmod(a.dir + "/team-token", 0o600)
        team_token = open(a.dir + "/team-token").read().strip()

    store = Store(a.history)
    srv = Server(("127.0.0.1", a.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.dir + "/server.crt", a.dir + "/server.key")
    ctx.load_verify_locations(a.dir + "/ca.crt")
    ctx.verify_mode = ssl.CERT_OPTIONAL
    # the handshake happens in each request's thread, not in accept()
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    srv.store, srv.token, srv.verbose = store, token, a.verbose
    srv.team_token, srv.team_ns = team_token, team_ns
    srv.bookmark_interval, srv.watch_max = a.bookmark_interval, a.watch_max
    srv.requests, srv.hosts, srv.count_lock, srv.fail_next = [], [], threading.Lock(), []
    srv.export_bytes = 0
    srv.down_until = 0.0
    srv.kubevirt = KubeVirt(store, a.tick, os.path.join(a.dir, "data"))
    srv.kubevirt.ca_pem = open(a.dir + "/ca.crt").read()
    srv.kubevirt.clone_served = not a.no_clone
    srv.kubevirt.backup_gate = not a.no_incremental_backup
    store.create(R["namespaces"], None, {"metadata": {"name": "default"}})
    store.create(R["namespaces"], None, {"metadata": {"name": "kube-system"}})
    if a.populate:
        vms, nss = (int(x) for x in a.populate.split(":"))
        for n in range(nss):
            store.create(R["namespaces"], None, {"metadata": {"name": "ns%02d" % n}})
        for i in range(vms):
            ns, name = "ns%02d" % (i % nss), "vm%04d" % i
            store.create(R["persistentvolumeclaims"], ns, {
                "metadata": {"name": name + "-root"},
                "spec": {"storageClassName": "fake", "accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "2Gi"}}}})
            store.create(R["virtualmachines"], ns, {
                "metadata": {"name": name, "labels": {"app": "bench"}},
                "spec": {"runStrategy": "Halted", "template": {"spec": {
                    "domain": {"devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}},
                    "volumes": [{"name": "root",
                                 "persistentVolumeClaim": {"claimName": name + "-root"}}]}}}})
    port = srv.server_address[1]
    srv.kubevirt.export_base = "https://127.0.0.1:%d" % port
    threading.Thread(target=srv.kubevirt.run, daemon=True).start()
    write_kubeconfig(a.dir, port, token, team_token, team_ns)
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.rename(a.port_file + ".tmp", a.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        store.closed = True


if __name__ == "__main__":
    main()
