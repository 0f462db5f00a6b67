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
  unfreeze subresources with the guest's auto-thaw; start/stop.
- Faults, per VM, by annotation: fake.vmsnapfs.io/agent: "absent";
  fake.vmsnapfs.io/freeze: "fail" | "hang:SECONDS" (the freeze call fails
  after 1 s, but the guest's freeze lands SECONDS later anyway and holds
  until unfreezeTimeout: upstream's frozen-guest race);
  fake.vmsnapfs.io/ready-delay: SECONDS (VolumeSnapshots ready late).

- RBAC as a namespace-limited user sees it (--team NS,...): a second token
  (context "team") bound by RoleBindings to those namespaces only: requests
  at the cluster scope or in another namespace get 403 Forbidden with
  Kubernetes' message; discovery stays open.

Usage: fake-apiserver.py --dir DIR [--port-file F] [--history N] [--team NS,...]
  DIR gets ca.crt, token, admin.crt/key and kubeconfig (contexts "fake"
  with the token, "fake-cert" with the client certificate, "team" with the
  team token if --team).
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
                 status=True, storage=None):
        self.group, self.versions, self.plural, self.kind = group, versions, plural, kind
        self.namespaced, self.short, self.status = namespaced, list(short), status
        self.singular = kind.lower()
        self.storage = storage or versions[-1]


RESOURCES = [
    Res("", ["v1"], "namespaces", "Namespace", namespaced=False, short=["ns"]),
    Res("", ["v1"], "persistentvolumeclaims", "PersistentVolumeClaim", short=["pvc"]),
    Res("kubevirt.io", ["v1"], "virtualmachines", "VirtualMachine", short=["vm", "vms"]),
    Res("kubevirt.io", ["v1"], "virtualmachineinstances", "VirtualMachineInstance",
        short=["vmi", "vmis"]),
    Res("snapshot.kubevirt.io", ["v1alpha1", "v1beta1"], "virtualmachinesnapshots",
        "VirtualMachineSnapshot", short=["vmsnapshot", "vmsnapshots"]),
    Res("snapshot.kubevirt.io", ["v1alpha1", "v1beta1"], "virtualmachinesnapshotcontents",
        "VirtualMachineSnapshotContent", short=["vmsnapshotcontent", "vmsnapshotcontents"]),
    Res("snapshot.kubevirt.io", ["v1alpha1", "v1beta1"], "virtualmachinerestores",
        "VirtualMachineRestore", short=["vmrestore", "vmrestores"]),
    Res("", ["v1"], "secrets", "Secret", status=False),
    Res("export.kubevirt.io", ["v1beta1"], "virtualmachineexports", "VirtualMachineExport",
        short=["vmexport", "vmexports"]),
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


def invalid(r, name, field, msg, webhook=None):
    text = "%s: %s" % (field, msg)
    if webhook:
        text = 'admission webhook "%s" denied the request: %s' % (webhook, msg)
    else:
        text = '%s.%s "%s" is invalid: %s' % (r.kind, r.group, name, text)
    return ApiError(422, "Invalid", text,
                    {"name": name, "group": r.group, "kind": r.kind,
                     "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": field}]})


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


def json_patch(doc, ops):
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        parent, last = doc, None
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
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
            if kind == "replace" and not present():
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


class Disks:
    """The bytes of PersistentVolumeClaims and VolumeSnapshots: sparse files
    under DIR/data (what CSI storage would hold). The tests write into a
    VM's disk as its guest would (/fake/disk) and compare exports with
    these files."""

    def __init__(self, d):
        self.d = d
        self.lock = threading.Lock()

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

    def drop(self, ns, pvc):
        try:
            os.unlink(self.path(ns, pvc))
        except OSError:
            pass


class KubeVirt:
    def __init__(self, store, tick, data=None):
        self.s, self.tick = store, tick
        self.disks = Disks(data) if data else None
        self.export_base = None     # https://HOST:PORT of the export proxy (the fake)
        self.ca_pem = ""
        self.guests = {}            # (ns, vmi name) -> Guest
        self.glock = threading.Lock()
        self.snapshot_started = {}  # snapshot uid -> monotonic start

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
                vmi = self.s.get(R["virtualmachineinstances"], ns, name)
            elif not run and vmi is not None:
                self.s.delete(R["virtualmachineinstances"], ns, name)
                with self.glock:
                    self.guests.pop((ns, name), None)
                vmi = None
            if vmi is not None:
                self.reconcile_vmi(vm, vmi)
            self.vm_status(vm, vmi)

    def reconcile_vmi(self, vm, vmi):
        ns, name = vmi["metadata"]["namespace"], vmi["metadata"]["name"]
        agent = annotation(vm, "agent") != "absent"
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
            vols = []
            for v in o.get("spec", {}).get("volumes", []):
                claim = (v.get("persistentVolumeClaim") or {}).get("claimName") or \
                        (v.get("dataVolume") or {}).get("name")
                pvc = self.s.get(R["persistentvolumeclaims"], ns, claim) if claim else None
                entry = {"name": v["name"], "target": ""}
                if pvc:
                    cap = pvc.get("status", {}).get("capacity", {}).get("storage")
                    entry["persistentVolumeClaimInfo"] = {"claimName": claim,
                                                          "capacity": {"storage": cap}}
                vols.append(entry)
            st["volumeStatus"] = vols
        self.s.update(R["virtualmachineinstances"], ns, name, fix)

    def vm_status(self, vm, vmi):
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
        self.s.update(R["virtualmachines"], ns, name, fix, status_only=True)

    def reconcile_pvcs(self):
        pvcs, _ = self.s.list(R["persistentvolumeclaims"], None)
        for p in pvcs:
            if p.get("status", {}).get("phase") != "Bound":
                req = p.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")

                def fix(o, req=req):
                    o["status"] = {"phase": "Bound", "capacity": {"storage": req}}
                ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
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
                                "metadata": {k: pvc["metadata"][k] for k in ("name", "namespace")},
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
                    claim = (v.get("persistentVolumeClaim") or {}).get("claimName") or \
                            (v.get("dataVolume") or {}).get("name")
                    if claim:
                        served.append((claim, claim))
                vmi = self.s.get(R["virtualmachineinstances"], ns, sname)
                if not served:
                    phase, reason = "Skipped", "VMNoVolumes"
                elif vmi is not None:
                    reason, message = "InUse", "Virtual Machine %s/%s is running" % (ns, sname)
                else:
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
            for which, base in (("internal", "https://%s.%s.svc" % (svc, ns)), ("external", ext)):
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

    def run(self):
        while not self.s.closed:
            for step in (self.reconcile_pvcs, self.reconcile_vms, self.reconcile_snapshots,
                         self.reconcile_exports):
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
        if r.group in ("kubevirt.io", "snapshot.kubevirt.io"):
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
        vm = re.fullmatch(r"volumes/([^/]+)/disk\.img", rest)
        path, err = kv.export_volume(ns, name, vm.group(1) if vm else "")
        if err and err[0] in (404, 503) and (err[0] == 503 or
                                            self.server.store.get(R["virtualmachineexports"], ns,
                                                                  name) is None):
            return self.send_raw(err[0], err[1], "text/plain; charset=utf-8")
        want = kv.export_token(ns, name)
        got = self.headers.get("x-kubevirt-export-token")
        if got is None:
            got = q.get("x-kubevirt-export-token")
        if want is None or got is None or not secrets.compare_digest(got.encode(), want):
            return self.send_raw(401, b"", None)
        if err:
            return self.send_raw(err[0], err[1], "text/plain; charset=utf-8")
        return self.serve_content(path)

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
        if parts == ["outage"] and self.command == "POST":
            # the API server goes away for a while (a restart): connections
            # are cut, watches end mid-stream, new requests get no answer
            srv.down_until = time.monotonic() + float((self.body() or {}).get("seconds", 3))
            return self.send_empty(200)
        if parts == ["fail"] and self.command == "POST":
            srv.fail_next.extend((self.body() or {}).get("codes", []))
            return self.send_empty(200)
        if parts == ["disk"] and self.command == "POST":
            # a guest writes into its disk: {"namespace", "pvc", "offset", "data" (base64)}
            b = self.body() or {}
            disks = srv.kubevirt.disks
            path = disks.path(b.get("namespace", ""), b.get("pvc", ""))
            if not os.path.exists(path):
                raise ApiError(404, "NotFound", "no disk %s" % path)
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
                return self.send_json(200, {"apiVersion": api_version(r.group, version),
                                            "kind": r.kind + "List", "metadata": meta, "items": items})
            if m == "POST":
                obj = self.body()
                if not isinstance(obj, dict):
                    raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
                self.admit(r, ns, obj, None)
                if r.status:
                    obj.pop("status", None)
                if q.get("dryRun") == "All":
                    return self.send_json(201, self.served(r, version, obj))
                return self.send_json(201, self.served(r, version, s.create(r, ns, obj)))
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if m == "GET":
            o = s.get(r, ns, name)
            if o is None:
                raise not_found(r, name)
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
            self.admit(r, ns, obj, cur)

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
            self.admit(r, ns, new, cur)

            def apply(o):
                o.clear()
                o.update(new)
            return self.send_json(200, self.served(r, version, s.update(
                r, ns, name, apply, status_only=sub == "status", main_only=sub is None)))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def admit(self, r, ns, obj, old):
        """KubeVirt's validating webhooks (kubevirt-api.md §1.5)."""
        if r.plural in ("virtualmachinesnapshots", "virtualmachinerestores"):
            hook = ("virtualmachinesnapshot-validator.snapshot.kubevirt.io"
                    if r.plural == "virtualmachinesnapshots"
                    else "virtualmachinerestore-validator.snapshot.kubevirt.io")
            field = "spec.source" if r.plural == "virtualmachinesnapshots" else "spec.target"
            ref = obj.get("spec", {}).get(field.split(".")[1]) or {}
            name = obj.get("metadata", {}).get("name", "")
            if old is not None:
                if obj.get("spec") != old.get("spec"):
                    raise invalid(r, name, "spec", "spec in immutable after creation", hook)
                return
            if not ref.get("apiGroup"):
                raise invalid(r, name, field + ".apiGroup", "missing apiGroup", hook)
            if ref.get("apiGroup") != "kubevirt.io":
                raise invalid(r, name, field + ".apiGroup", "invalid apiGroup", hook)
            if ref.get("kind") != "VirtualMachine":
                raise invalid(r, name, field + ".kind", "invalid kind", hook)
            if r.plural == "virtualmachinesnapshots" and "failureDeadline" in obj.get("spec", {}):
                try:
                    parse_duration(obj["spec"]["failureDeadline"])
                except ValueError:
                    raise invalid(r, name, "spec.failureDeadline", "invalid duration")
        if r.plural == "virtualmachines" and old is not None:
            snap = (old.get("status") or {}).get("snapshotInProgress")
            hook = "virtualmachine-validator.kubevirt.io"
            os_, ns_ = old.get("spec", {}), obj.get("spec", {})
            if snap and os_.get("template", {}).get("spec", {}).get("volumes") != \
                    ns_.get("template", {}).get("spec", {}).get("volumes"):
                raise invalid(r, old["metadata"]["name"], "spec.template.spec.volumes",
                              'Cannot update vm disks or volumes until snapshot "%s" completes' % snap, hook)
            if snap and (os_.get("runStrategy") != ns_.get("runStrategy") or
                         os_.get("running") != ns_.get("running")):
                raise invalid(r, old["metadata"]["name"], "spec.runStrategy",
                              'Cannot update vm running state until snapshot "%s" completes' % snap, hook)

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

        def send(type_, obj):
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
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()

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
    srv.down_until = 0.0
    srv.kubevirt = KubeVirt(store, a.tick, os.path.join(a.dir, "data"))
    srv.kubevirt.ca_pem = open(a.dir + "/ca.crt").read()
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
                         "resources": {"requests": {"storage": "1Gi"}}}})
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
