#!/usr/bin/env bash
# End-to-end test of the driver in a kind cluster, against fake-cloud.
#
#   deploy/kind/e2e.sh              # run it
#   deploy/kind/e2e.sh --dry-run    # print every command it would run, in order
#
# It builds both images, creates a kind cluster (deploy/kind/cluster.yaml),
# installs the snapshot CRDs and snapshot-controller, then
# deploy/kubernetes/overlays/fake-cloud, and checks what a user relies on:
#   1. data written by a pod on one worker is there for a pod on the other;
#   2. a snapshot restored into a new PVC holds the same data;
#   3. a PVC grown while in use shows the new size inside the pod;
#   4. csi-sanity passes against the deployed node plugin (see run_sanity).
# The cluster is deleted at the end, pass or fail (KEEP_CLUSTER=1 keeps it, for
# example for Kubernetes' external storage suite, see .github/workflows/e2e.yaml).
# KIND_CLUSTER names the cluster, KIND_NODE_IMAGE picks the node image, and with
# ARTIFACTS set, csi-sanity's JUnit report is copied to $ARTIFACTS/csi-sanity.xml.
#
# Needs docker (with an engine), kind, kubectl and network access to pull the
# sidecar images and the external-snapshotter manifests. A dry run needs none of
# them: it runs nothing but prints each command, as `+ command`, and assumes
# every check passes.
#
# Exit status: 0 passed, 1 failed, 2 bad usage, 3 docker, kind or kubectl is
# missing (or no Docker engine answers), so a CI job can tell "not run" from
# "failed".
set -euo pipefail

readonly EXIT_NOT_RUN=3
dry_run=0
case "$*" in
  "") ;;
  --dry-run) dry_run=1 ;;
  *)
    echo "usage: $0 [--dry-run]" >&2
    exit 2
    ;;
esac
readonly dry_run
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly repo
readonly cluster=${KIND_CLUSTER:-dobs-e2e}
# Must match the extraMounts hostPath in cluster.yaml.
readonly data_dir=/tmp/dobs-csi-fake-cloud
# Must match the images in deploy/kubernetes.
readonly driver_image=rustcsi/dobs-csi-driver:0.1.0
readonly sanity_image=rustcsi/csi-sanity:0.1.0
readonly snapshotter_version=v8.7.0
readonly ns=dobs-e2e
readonly timeout=180

log() { printf '\n== %s\n' "$*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Commands print on fd 3, the script's stdout, even from inside $(...).
exec 3>&1

# Prints a command as `+ word word ...`, quoting words that need it.
show() {
  local words=() word q="'"
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      words+=("$word")
    else
      words+=("$q${word//$q/$q\\$q$q}$q")
    fi
  done
  printf '+ %s\n' "${words[*]}" >&3
}

# Runs a command; a dry run prints it instead.
run() {
  if [ "$dry_run" = 1 ]; then
    show "$@"
  else
    "$@"
  fi
}

# Runs a command that reads a manifest on stdin; a dry run prints the command
# and the kind and name of the object it would have been given.
feed() {
  if [ "$dry_run" = 1 ]; then
    local object
    object=$(awk '/^kind:/ { kind = $2 } /^  name:/ && !name { name = $2 } END { print kind "/" name }')
    show "$@"
    printf '    < %s\n' "$object" >&3
  else
    "$@"
  fi
}

# Runs a command for its output; a dry run prints it and answers $1 instead,
# the answer of a cluster where everything goes right.
query() {
  local answer=$1
  shift
  if [ "$dry_run" = 1 ]; then
    show "$@"
    printf '%s\n' "$answer"
  else
    "$@"
  fi
}

if [ "$dry_run" = 0 ]; then
  for tool in docker kind kubectl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "e2e.sh: $tool is not installed; the kind end-to-end test was not run" >&2
      exit "$EXIT_NOT_RUN"
    fi
  done
  if ! docker info >/dev/null 2>&1; then
    echo "e2e.sh: no Docker engine answers; the kind end-to-end test was not run" >&2
    exit "$EXIT_NOT_RUN"
  fi
fi
if query "" kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  fail "a kind cluster named $cluster exists; delete it or set KIND_CLUSTER"
fi

created=0
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$created" = 1 ]; then
    log "diagnostics"
    run kubectl get pods -A -o wide || true
    run kubectl -n "$ns" describe pvc,volumesnapshot,pods 2>/dev/null | tail -n 80 || true
    run kubectl -n kube-system logs statefulset/dobs-csi-controller --all-containers --tail=60 || true
    run kubectl -n kube-system logs daemonset/dobs-csi-node -c csi-driver --tail=60 || true
    run kubectl -n kube-system logs deployment/fake-cloud --tail=60 || true
  fi
  if [ "$created" = 1 ]; then
    if [ "${KEEP_CLUSTER:-}" = 1 ]; then
      echo "keeping cluster $cluster (kind delete cluster --name $cluster)"
    else
      # The volume images belong to root inside the nodes: remove them there.
      run docker exec "$cluster-control-plane" sh -c 'rm -rf /var/lib/fake-cloud/*' || true
      run kind delete cluster --name "$cluster" || true
      run rmdir "$data_dir" 2>/dev/null || true
    fi
  fi
  exit "$rc"
}
# Registered before the cluster exists, so no exit path leaves a cluster behind.
trap cleanup EXIT
if [ "$dry_run" = 1 ]; then
  show trap cleanup EXIT
fi

# Waits until a pod has run to completion; fails if it failed or took too long.
wait_for_pod_success() {
  local pod=$1 phase deadline=$((SECONDS + timeout))
  while :; do
    phase=$(query Succeeded kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status.phase}')
    case "$phase" in
      Succeeded) return 0 ;;
      Failed)
        run kubectl -n "$ns" logs "$pod" || true
        fail "pod $pod failed"
        ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || fail "pod $pod still $phase after ${timeout}s"
    sleep 2
  done
}

# Runs a shell script in a pod on a given node with a PVC at /data, and waits
# for it to succeed. The driver image doubles as a small Debian with a shell,
# and it is already loaded into the nodes.
run_on_node() {
  local pod=$1 node=$2 pvc=$3 script=$4
  feed kubectl -n "$ns" apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
spec:
  restartPolicy: Never
  nodeSelector:
    kubernetes.io/hostname: $node
  containers:
    - name: main
      image: $driver_image
      imagePullPolicy: IfNotPresent
      command:
        - sh
        - -c
        - |
          $script
      env:
        - name: TOKEN
          value: "$token"
      volumeMounts:
        - name: data
          mountPath: /data
  volumes:
    - name: data
      persistentVolumeClaim:
        claimName: $pvc
EOF
  wait_for_pod_success "$pod"
  run kubectl -n "$ns" delete pod "$pod" --wait=true
}

create_pvc() {
  local name=$1 size=$2 source=${3:-}
  {
    cat <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: $name
spec:
  storageClassName: dobs-xfs
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: $size
EOF
    if [ -n "$source" ]; then
      cat <<EOF
  dataSource:
    apiGroup: snapshot.storage.k8s.io
    kind: VolumeSnapshot
    name: $source
EOF
    fi
  } | feed kubectl -n "$ns" apply -f -
}

# csi-sanity needs both a Controller and a Node endpoint, but the deployed
# controller's socket lives in its pod's emptyDir, out of reach. So the Job
# runs its own controller, `csi-driver --mode=controller` against the same
# fake-cloud, as a native sidecar sharing an emptyDir with csi-sanity, and
# reaches the real node plugin of its node through the plugin's host folder.
# The staging and target paths lie in that folder too, so the node plugin
# (which sees /var/lib/kubelet) and csi-sanity (HostToContainer) see the same
# mounts. The JUnit report lands in that folder too, on the node, where
# `docker cp` finds it after the Job's pod is gone.
run_sanity() {
  local node=$1 plugin_dir=/var/lib/kubelet/plugins/dobs.csi.rustcsi.dev
  feed kubectl -n kube-system apply -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: csi-sanity
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      nodeName: $node
      initContainers:
        - name: controller
          image: $driver_image
          imagePullPolicy: IfNotPresent
          restartPolicy: Always
          args:
            - --endpoint=unix:///controller/csi.sock
            - --mode=controller
            - --cloud=http
            - --cloud-url=http://fake-cloud.kube-system.svc:8080
            - --token-file=/etc/csi-token/token
          # csi-sanity starts once the controller's socket exists.
          startupProbe:
            exec:
              command: ["test", "-S", "/controller/csi.sock"]
            periodSeconds: 1
            failureThreshold: 120
          volumeMounts:
            - name: controller-socket
              mountPath: /controller
            - name: cloud-token
              mountPath: /etc/csi-token
              readOnly: true
      containers:
        - name: csi-sanity
          image: $sanity_image
          imagePullPolicy: IfNotPresent
          args:
            - --csi.endpoint=unix://$plugin_dir/csi.sock
            - --csi.controllerendpoint=unix:///controller/csi.sock
            - --csi.stagingdir=$plugin_dir/sanity/staging
            - --csi.mountdir=$plugin_dir/sanity/target
            - --csi.junitfile=$plugin_dir/sanity/junit.xml
          volumeMounts:
            - name: controller-socket
              mountPath: /controller
            - name: plugin-dir
              mountPath: $plugin_dir
              mountPropagation: HostToContainer
      volumes:
        - name: controller-socket
          emptyDir: {}
        - name: cloud-token
          secret:
            secretName: fake-cloud-token
        - name: plugin-dir
          hostPath:
            path: $plugin_dir
            type: Directory
EOF
  local succeeded failed deadline=$((SECONDS + 900))
  while :; do
    succeeded=$(query 1 kubectl -n kube-system get job csi-sanity -o jsonpath='{.status.succeeded}')
    failed=$(query "" kubectl -n kube-system get job csi-sanity -o jsonpath='{.status.failed}')
    if [ "${succeeded:-0}" -ge 1 ] || [ "${failed:-0}" -ge 1 ]; then
      break
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "csi-sanity did not finish in 900s"
    sleep 5
  done
  run kubectl -n kube-system logs job/csi-sanity -c csi-sanity || true
  if [ -n "${ARTIFACTS:-}" ]; then
    run mkdir -p "$ARTIFACTS"
    run docker cp "$node:$plugin_dir/sanity/junit.xml" "$ARTIFACTS/csi-sanity.xml" || true
  fi
  [ "${succeeded:-0}" -ge 1 ] || fail "csi-sanity failed"
}

log "building images"
run docker build -f "$repo/deploy/Dockerfile" --target driver -t "$driver_image" "$repo"
run docker build -f "$repo/deploy/Dockerfile" --target sanity -t "$sanity_image" "$repo"

log "creating kind cluster $cluster"
run mkdir -p "$data_dir"
kind_args=(--name "$cluster" --config "$repo/deploy/kind/cluster.yaml" --wait 180s)
if [ -n "${KIND_NODE_IMAGE:-}" ]; then
  kind_args+=(--image "$KIND_NODE_IMAGE")
fi
created=1
run kind create cluster "${kind_args[@]}"
run kind load docker-image --name "$cluster" "$driver_image" "$sanity_image"

log "installing the snapshot CRDs and snapshot-controller $snapshotter_version"
run kubectl apply -k "https://github.com/kubernetes-csi/external-snapshotter/client/config/crd?ref=$snapshotter_version"
run kubectl -n kube-system apply -k "https://github.com/kubernetes-csi/external-snapshotter/deploy/kubernetes/snapshot-controller?ref=$snapshotter_version"
run kubectl -n kube-system rollout status deployment/snapshot-controller --timeout="${timeout}s"

log "installing the driver (overlays/fake-cloud)"
run kubectl apply -k "$repo/deploy/kubernetes/overlays/fake-cloud"
run kubectl -n kube-system rollout status deployment/fake-cloud --timeout="${timeout}s"
run kubectl -n kube-system rollout status statefulset/dobs-csi-controller --timeout="${timeout}s"
run kubectl -n kube-system rollout status daemonset/dobs-csi-node --timeout="${timeout}s"

mapfile -t workers < <(query "$cluster-worker"$'\n'"$cluster-worker2" \
  kubectl get nodes -l '!node-role.kubernetes.io/control-plane' \
  -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
[ "${#workers[@]}" -ge 2 ] || fail "expected two worker nodes, found ${#workers[@]}"
run kubectl create namespace "$ns"
token="e2e-$(date +%s)-$RANDOM"

log "1. data follows the volume from ${workers[0]} to ${workers[1]}"
create_pvc data 1Gi
# The scripts run in the pod, so $TOKEN must reach it unexpanded.
# shellcheck disable=SC2016
run_on_node writer "${workers[0]}" data 'echo "$TOKEN" > /data/token && sync'
# shellcheck disable=SC2016
run_on_node reader "${workers[1]}" data 'test "$(cat /data/token)" = "$TOKEN"'

log "2. a snapshot restores into a new volume with the same data"
feed kubectl -n "$ns" apply -f - <<EOF
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: snap
spec:
  volumeSnapshotClassName: dobs-snapshots
  source:
    persistentVolumeClaimName: data
EOF
run kubectl -n "$ns" wait volumesnapshot/snap --for=jsonpath='{.status.readyToUse}'=true --timeout="${timeout}s"
create_pvc restored 1Gi snap
# shellcheck disable=SC2016
run_on_node restored-reader "${workers[0]}" restored 'test "$(cat /data/token)" = "$TOKEN"'

log "3. a volume grown while in use shows its new size in the pod"
feed kubectl -n "$ns" apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: grower
spec:
  nodeSelector:
    kubernetes.io/hostname: ${workers[1]}
  containers:
    - name: main
      image: $driver_image
      imagePullPolicy: IfNotPresent
      command: ["sleep", "3600"]
      volumeMounts:
        - name: data
          mountPath: /data
  volumes:
    - name: data
      persistentVolumeClaim:
        claimName: data
EOF
run kubectl -n "$ns" wait pod/grower --for=condition=Ready --timeout="${timeout}s"
run kubectl -n "$ns" patch pvc data --type=merge -p '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}'
run kubectl -n "$ns" wait pvc/data --for=jsonpath='{.status.capacity.storage}'=2Gi --timeout="${timeout}s"
# More than 1.5 GiB: clearly the grown volume, whatever the filesystem keeps.
min_bytes=$((3 * 512 * 1024 * 1024))
deadline=$((SECONDS + 60))
while :; do
  size=$(query $((2 * 1024 * 1024 * 1024)) kubectl -n "$ns" exec grower -- df -B1 --output=size /data |
    tail -n 1 | tr -d ' ')
  [ "$size" -gt "$min_bytes" ] && break
  [ "$SECONDS" -lt "$deadline" ] || fail "filesystem is $size bytes after growing the PVC to 2Gi"
  sleep 2
done
echo "filesystem size in the pod: $size bytes"
run kubectl -n "$ns" delete pod grower --wait=true

log "4. csi-sanity against the node plugin on ${workers[0]}"
run_sanity "${workers[0]}"

log "PASS"
