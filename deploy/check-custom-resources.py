#!/usr/bin/env python3
"""Split a rendered manifest into what kubernetes-validate can check and what it cannot.

kubernetes-validate bundles the schemas of Kubernetes' own kinds only. For a
custom resource it prints a warning and passes, so a VolumeSnapshotClass would
never be checked at all. This script takes the custom resources we ship out of
the stream, checks them against the rules of their CRD (written out below, from
external-snapshotter's snapshot.storage.k8s.io/v1 schema), and writes every
other document to a file for kubernetes-validate.

    check-custom-resources.py RENDERED.yaml CORE_OUT.yaml
    check-custom-resources.py --self-test

Exit status: 0 when every custom resource is valid, 1 otherwise, 2 on bad usage.
"""

import re
import sys

import yaml  # PyYAML, a dependency of kubernetes-validate

# A CSI driver name: at most 63 characters, alphanumerics, '-', '.' inside.
DRIVER_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?$")


def check_volume_snapshot_class(doc, csi_driver_names):
    """The rules of the VolumeSnapshotClass CRD, plus agreement with our CSIDriver."""
    errors = []
    if doc.get("apiVersion") != "snapshot.storage.k8s.io/v1":
        errors.append("apiVersion must be snapshot.storage.k8s.io/v1 (v1beta1 is no longer served)")
    unknown = set(doc) - {"apiVersion", "kind", "metadata", "driver", "deletionPolicy", "parameters"}
    if unknown:
        errors.append(f"unknown fields: {sorted(unknown)}")
    metadata = doc.get("metadata") or {}
    if not metadata.get("name"):
        errors.append("metadata.name is required")
    if "namespace" in metadata:
        errors.append("metadata.namespace must be absent: VolumeSnapshotClass is cluster-scoped")
    for key in ("labels", "annotations"):
        values = metadata.get(key) or {}
        if not all(isinstance(v, str) for v in values.values()):
            errors.append(f"metadata.{key} values must be strings")
    driver = doc.get("driver")
    if not isinstance(driver, str) or not DRIVER_NAME.match(driver):
        errors.append(f"driver {driver!r} is not a CSI driver name")
    elif csi_driver_names and driver not in csi_driver_names:
        errors.append(f"driver {driver!r} names no CSIDriver in this manifest {sorted(csi_driver_names)}")
    if doc.get("deletionPolicy") not in ("Delete", "Retain"):
        errors.append(f"deletionPolicy must be Delete or Retain, not {doc.get('deletionPolicy')!r}")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in parameters.items()
    ):
        errors.append("parameters must map strings to strings")
    return errors


# Custom resources we ship, by (apiVersion group, kind).
CHECKS = {
    ("snapshot.storage.k8s.io", "VolumeSnapshotClass"): check_volume_snapshot_class,
}


def group_of(doc):
    api_version = doc.get("apiVersion") or ""
    return api_version.split("/")[0] if "/" in api_version else ""


def split_and_check(docs):
    """Returns (core documents, list of error strings)."""
    csi_driver_names = {
        d["metadata"]["name"] for d in docs if d.get("kind") == "CSIDriver" and d.get("metadata")
    }
    core, errors = [], []
    for doc in docs:
        check = CHECKS.get((group_of(doc), doc.get("kind")))
        if check is None:
            core.append(doc)
            continue
        name = (doc.get("metadata") or {}).get("name")
        errors += [f"{doc['kind']}/{name}: {e}" for e in check(doc, csi_driver_names)]
    return core, errors


def self_test():
    """The checks must reject what the CRD rejects; a check that passes everything is no check."""
    good = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": "s"},
        "driver": "dobs.csi.rustcsi.dev",
        "deletionPolicy": "Delete",
    }
    csidriver = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": "dobs.csi.rustcsi.dev"}}
    bad = [
        dict(good, apiVersion="snapshot.storage.k8s.io/v1beta1"),
        dict(good, deletionPolicy="Keep"),
        dict(good, driver="other.example.com"),
        dict(good, metadata={"name": "s", "namespace": "kube-system"}),
        dict(good, parameter={"a": "b"}),
        {k: v for k, v in good.items() if k != "driver"},
    ]
    core, errors = split_and_check([csidriver, good])
    assert core == [csidriver] and errors == [], errors
    for doc in bad:
        _, errors = split_and_check([csidriver, doc])
        assert errors, f"accepted an invalid VolumeSnapshotClass: {doc}"
    print("check-custom-resources.py: self-test passed")


def main(argv):
    if argv[1:] == ["--self-test"]:
        self_test()
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    core, errors = split_and_check(docs)
    with open(argv[2], "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    checked = len(docs) - len(core)
    for e in errors:
        print(f"ERROR {argv[1]}: {e}")
    print(f"checked {checked} custom resource(s) in {argv[1]}: {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
