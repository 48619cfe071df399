#!/usr/bin/env bash
# The manual JWT-bearer recipe, automated as a shell loop — what teams run instead of rotator.
#
# For each token: base64url the header and the claims (exp = now + 180 s), sign
# "header.claims" with `openssl dgst -sha256 -sign` (RS256 = PKCS#1 v1.5 + SHA-256), POST the
# assertion with curl, keep the reply (0600). Prints "ok=N failed=M".
#
# usage: alt_openssl_curl.sh TOKEN_URL CLIENT_ID USERNAME AUDIENCE KEY_FILE COUNT OUT_DIR
set -euo pipefail

if [[ $# -ne 7 ]]; then
  echo "usage: $0 TOKEN_URL CLIENT_ID USERNAME AUDIENCE KEY_FILE COUNT OUT_DIR" >&2
  exit 2
fi
token_url=$1 client_id=$2 username=$3 audience=$4 key=$5 count=$6 out=$7

b64url() { openssl base64 -e -A | tr '+/' '-_' | tr -d '='; }

umask 077
header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
ok=0
failed=0
for ((i = 0; i < count; i++)); do
  exp=$(($(date +%s) + 180))
  claims=$(printf '{"iss":"%s","sub":"%s","aud":"%s","exp":%d}' \
    "$client_id" "$username" "$audience" "$exp" | b64url)
  signature=$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha256 -sign "$key" -binary | b64url)
  status=$(curl -sS -o "$out/token.json" -w '%{http_code}' -X POST "$token_url" \
    --data-urlencode 'grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer' \
    --data-urlencode "assertion=$header.$claims.$signature") || status=000
  if [[ $status == 200 ]]; then
    ok=$((ok + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "ok=$ok failed=$failed"
