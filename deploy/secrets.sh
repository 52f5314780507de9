#!/usr/bin/env bash
# Makes the Secrets the manifests use, in namespace NAMESPACE (default: the current one), so
# no secret is ever in git:
#   reprise-tokens  replayer-token, admin-token: 32 random bytes each, hex
#   reprise-tls     tls.crt, tls.key: the dispatcher's certificate for its Service's names,
#                   signed by a CA made here (ca.crt), which replayers check it against
#   reprise-redact  redact-key: 32 random bytes, hex: the key of the capture sidecar's
#                   redaction (components/capture); the same for every pod that captures
# Existing Secrets are kept (rotate: delete them and run this again, then restart the pods).
# The recording's store, when it needs credentials, is a Secret of your own:
#   kubectl create secret generic reprise-s3 --from-literal=access-key-id=… \
#     --from-literal=secret-access-key=… [--from-literal=endpoint=https://minio.example:9000]
# Usage: deploy/secrets.sh [NAMESPACE]    (needs kubectl and openssl)
set -euo pipefail
ns=${1:-$(kubectl config view --minify -o jsonpath='{..namespace}')}
ns=${ns:-default}
k() { kubectl -n "$ns" "$@"; }

if k get secret reprise-tokens > /dev/null 2>&1; then
  echo "secret/reprise-tokens exists in $ns; kept"
else
  k create secret generic reprise-tokens \
    --from-literal=replayer-token="$(openssl rand -hex 32)" \
    --from-literal=admin-token="$(openssl rand -hex 32)"
fi

if k get secret reprise-redact > /dev/null 2>&1; then
  echo "secret/reprise-redact exists in $ns; kept"
else
  k create secret generic reprise-redact --from-literal=redact-key="$(openssl rand -hex 32)"
fi

if k get secret reprise-tls > /dev/null 2>&1; then
  echo "secret/reprise-tls exists in $ns; kept"
else
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 825 \
    -subj "/CN=reprise-ca-$ns" 2> /dev/null
  openssl req "${ec[@]}" -keyout "$dir/tls.key" -out "$dir/tls.csr" -subj /CN=reprise-dispatcher 2> /dev/null
  names="DNS:reprise-dispatcher,DNS:reprise-dispatcher.$ns,DNS:reprise-dispatcher.$ns.svc"
  names+=",DNS:reprise-dispatcher.$ns.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
  # The shards of overlays/sharded: reprise-dispatcher-I.reprise-shards.
  names+=",DNS:*.reprise-shards,DNS:*.reprise-shards.$ns.svc,DNS:*.reprise-shards.$ns.svc.cluster.local"
  openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -out "$dir/tls.crt" -days 825 \
    -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$names") 2> /dev/null
  k create secret generic reprise-tls --from-file="$dir/tls.crt" --from-file="$dir/tls.key" \
    --from-file="$dir/ca.crt"
fi
