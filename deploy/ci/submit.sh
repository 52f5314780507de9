#!/usr/bin/env bash
# One replay as a CI gate on a standing fleet (deploy/overlays/fleet): submits JOB_FILE to
# the dispatcher (POST /jobs), waits for that job's end, copies its JSON and HTML reports to
# OUT_DIR and exits with what the job came to: 0 passed, 2 a bad job file (every problem
# printed), 3 it could not run, 4 it was stopped, 99 a threshold failed. Nothing is applied
# or restarted: the fleet takes the next job as it is.
# Usage: deploy/ci/submit.sh JOB_FILE [OUT_DIR]      (default OUT_DIR: reprise-reports)
# Environment: REPRISE_ADMIN_URL (default: a port-forward to svc/reprise-dispatcher in
# REPRISE_NAMESPACE, default the current namespace), REPRISE_CA (the CA of the admin port;
# default: the Secret reprise-tls), REPRISE_ADMIN_TOKEN (default: the Secret
# reprise-tokens), REPRISE_TIMEOUT (seconds to wait for the end; default 3600).
# Needs curl and python3; kubectl unless REPRISE_ADMIN_URL, REPRISE_CA and
# REPRISE_ADMIN_TOKEN are all given.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
job=$1
out=${2:-reprise-reports}
[ -r "$job" ] || { echo "submit.sh: cannot read the job file $job" >&2; exit 2; }
timeout=${REPRISE_TIMEOUT:-3600}
work=$(mktemp -d)
forward=""
cleanup() {
  [ -n "$forward" ] && kill "$forward" 2> /dev/null
  rm -rf "$work"
}
trap cleanup EXIT

k() {
  local ns=${REPRISE_NAMESPACE:-$(kubectl config view --minify -o jsonpath='{..namespace}')}
  kubectl -n "${ns:-default}" "$@"
}
secret() { k get secret "$1" -o "jsonpath={.data.$2}" | base64 -d; }
ca=${REPRISE_CA:-}
if [ -z "$ca" ]; then ca=$work/ca.crt; secret reprise-tls 'ca\.crt' > "$ca"; fi
token=${REPRISE_ADMIN_TOKEN:-}
[ -n "$token" ] || token=$(secret reprise-tokens admin-token)
url=${REPRISE_ADMIN_URL:-}
if [ -z "$url" ]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  k port-forward svc/reprise-dispatcher "$port:8080" > /dev/null &
  forward=$!
  url=https://localhost:$port
fi
admin() { # admin PATH [curl args…]: the body on stdout, the status code last
  local path=$1
  shift
  curl -sS --max-time 30 --cacert "$ca" -H "Authorization: Bearer $token" -w '\n%{http_code}' "$url$path" "$@"
}
for _ in $(seq 1 50); do curl -sS --max-time 2 --cacert "$ca" "$url/healthz" > /dev/null 2>&1 && break; sleep 0.2; done

answer=$(admin /jobs --data-binary "@$job") || { echo "submit.sh: the dispatcher at $url did not answer" >&2; exit 3; }
code=${answer##*$'\n'}
body=${answer%$'\n'*}
case $code in
  201) id=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "$body") ;;
  422)
    echo "submit.sh: $job was not taken:" >&2
    python3 -c 'import json, sys; [print("  -", p["key"] or "file", p["value"], p["rule"], file=sys.stderr) for p in json.loads(sys.argv[1])["problems"]]' "$body"
    exit 2 ;;
  *) echo "submit.sh: POST /jobs answered $code: $body" >&2; exit 3 ;;
esac
echo "submit.sh: $job is job $id at $url; waiting for its end"

# The job's entry in GET /jobs, as "state thresholds_passed".
entry() {
  admin /jobs | sed '$d' | python3 -c '
import json, sys
for j in json.load(sys.stdin)["jobs"]:
    if j["id"] == sys.argv[1]:
        print(j["state"], j.get("thresholds_passed"), j.get("error") or "")' "$id"
}
deadline=$((SECONDS + timeout))
while :; do
  read -r state passed error < <(entry || true) || true
  case ${state:-} in finished | stopped | failed) break ;; esac
  if [ $SECONDS -ge $deadline ]; then
    echo "submit.sh: no end within ${timeout}s; stopping the job" >&2
    admin /job/stop -X POST > /dev/null || true
    deadline=$((SECONDS + 120))
  fi
  sleep 1
done
mkdir -p "$out"
for file in report.json report.html; do
  if [ "$state" != failed ]; then
    answer=$(admin "/jobs/$id/$file" -o "$out/$file")
    [ "${answer##*$'\n'}" = 200 ] || echo "submit.sh: $file was not kept (HTTP ${answer##*$'\n'})" >&2
  fi
done
echo "submit.sh: job $id $state; reports in $out/"
[ "$state" = failed ] && { echo "submit.sh: it could not run: $error" >&2; exit 3; }
# As `reprise dispatcher --config` exits: a failed threshold (one that stopped the job too)
# before a stop.
[ "$passed" = True ] || { echo "submit.sh: a threshold failed (see $out/report.html)" >&2; exit 99; }
[ "$state" = stopped ] && { echo "submit.sh: the job was stopped before its end" >&2; exit 4; }
exit 0
