#!/usr/bin/env bash
# One replay as a CI gate, in the cluster kubectl points at: applies deploy/overlays/ci with
# the candidate's URL as the target, waits for the job's end, copies the JSON and HTML
# reports to OUT_DIR, lets the dispatcher exit, cleans up and exits with the dispatcher's
# code (0 passed, 2 bad job file, 3 could not run, 4 stopped, 99 a threshold failed).
# Usage: deploy/ci/replay.sh TARGET_URL [OUT_DIR]     (default OUT_DIR: reprise-reports)
# Environment: REPRISE_NAMESPACE (default: the current namespace), REPRISE_IMAGE (default:
# the overlay's), REPRISE_TIMEOUT (seconds to wait for the end; default 3600).
# Needs kubectl, curl and python3; the Secrets of deploy/secrets.sh in the namespace.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
target=$1
out=${2:-reprise-reports}
here=$(cd "$(dirname "$0")" && pwd)
ns=${REPRISE_NAMESPACE:-$(kubectl config view --minify -o jsonpath='{..namespace}')}
ns=${ns:-default}
timeout=${REPRISE_TIMEOUT:-3600}
k() { kubectl -n "$ns" "$@"; }

# host[:port] of the target, for the replayers' allowlist.
allow=$(python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).netloc.rsplit("@", 1)[-1])' "$target")
[ -n "$allow" ] || { echo "replay.sh: $target is not a URL (e.g. http://candidate.staging:8080)" >&2; exit 2; }

work=$(mktemp -d)
forward=""
cleanup() {
  [ -n "$forward" ] && kill "$forward" 2> /dev/null
  [ -s "$work/rendered.yaml" ] && k delete --ignore-not-found --wait=false -f "$work/rendered.yaml" > /dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# An overlay of the CI overlay that only sets the target.
mkdir -p "$work/overlay"
cat > "$work/overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$work/overlay" "$here/../overlays/ci")
configMapGenerator:
  - name: reprise-target
    behavior: replace
    literals:
      - target=$target
      - allow-targets=$allow
YAML
if [ -n "${REPRISE_IMAGE:-}" ]; then # NAME:TAG
  printf 'images:\n  - name: reprise\n    newName: %s\n    newTag: %s\n' "${REPRISE_IMAGE%:*}" "${REPRISE_IMAGE##*:}" \
    >> "$work/overlay/kustomization.yaml"
fi
kubectl kustomize "$work/overlay" > "$work/rendered.yaml"
# Jobs from an earlier run would keep their pods: start clean.
k delete --ignore-not-found job/reprise-dispatcher job/reprise-replayer > /dev/null
k apply -f "$work/rendered.yaml"

secret() { k get secret "$1" -o "jsonpath={.data.$2}" | base64 -d; }
secret reprise-tls 'ca\.crt' > "$work/ca.crt"
token=$(secret reprise-tokens admin-token)
curl_admin() { # curl_admin METHOD PATH [curl args…]
  local method=$1 path=$2
  shift 2
  curl -sS --fail --max-time 30 --cacert "$work/ca.crt" -X "$method" \
    -H "Authorization: Bearer $token" "https://localhost:$port$path" "$@"
}
# The dispatcher's pod, once it exists; its exit code once it has ended ("" while it runs).
pod() { k get pods -l job-name=reprise-dispatcher -o jsonpath='{.items[0].metadata.name}' 2> /dev/null; }
exit_code() { k get pods -l job-name=reprise-dispatcher -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.exitCode}' 2> /dev/null; }

deadline=$((SECONDS + timeout))
until [ -n "$(pod)" ] && k wait --for=condition=Ready "pod/$(pod)" --timeout=5s > /dev/null 2>&1; do
  code=$(exit_code)
  [ -n "$code" ] && { echo "replay.sh: the dispatcher exited $code before serving:" >&2; k logs "job/reprise-dispatcher" >&2 || true; exit "$code"; }
  [ $SECONDS -lt $deadline ] || { echo "replay.sh: the dispatcher did not start in ${timeout}s" >&2; exit 3; }
  sleep 2
done
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
k port-forward "pod/$(pod)" "$port:8080" > /dev/null &
forward=$!
for _ in $(seq 1 50); do curl_admin GET /healthz > /dev/null 2>&1 && break; sleep 0.2; done

echo "replay.sh: replaying against $target (namespace $ns); waiting for the job's end"
while :; do
  state=$(curl_admin GET /status 2> /dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])' || true)
  case $state in finished | stopped) break ;; esac
  code=$(exit_code)
  [ -n "$code" ] && { echo "replay.sh: the dispatcher exited $code during the job:" >&2; k logs "job/reprise-dispatcher" >&2 || true; exit "$code"; }
  [ $SECONDS -lt $deadline ] || { echo "replay.sh: no end within ${timeout}s; stopping the job" >&2; curl_admin POST /job/stop > /dev/null || true; }
  sleep 5
done

mkdir -p "$out"
curl_admin GET /report -o "$out/report.json"
curl_admin GET /report.html -o "$out/report.html"
echo "replay.sh: reports in $out/"
curl_admin POST /shutdown > /dev/null
k wait --for=jsonpath='{.status.active}'=0 job/reprise-dispatcher --timeout=120s > /dev/null 2>&1 || true
for _ in $(seq 1 60); do code=$(exit_code); [ -n "$code" ] && break; sleep 2; done
k logs job/reprise-dispatcher --tail=60 || true
echo "replay.sh: the dispatcher exited ${code:-unknown}"
exit "${code:-3}"
