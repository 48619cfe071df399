# rotator's least-privilege Vault policy, for one credential whose records live at
#   key   = "vault:sf/key"     (the signing key an operator put with `vault kv put`)
#   token = "vault:sf/token"   (the token record rotator writes)
# in a KV version 2 mount called "secret". Replace sf/key and sf/token with your paths, and
# "secret/" with your mount; add one pair of blocks per credential (or use a `+` segment,
# e.g. "secret/data/salesforce/+/access-token", for many credentials laid out alike).
#
#   vault policy write rotator deploy/vault/rotator-policy.hcl
#
# KV v2 checks policies on <mount>/data/<path> for the secret's versions and on
# <mount>/metadata/<path> for its metadata, never on <mount>/<path>.

# Every file under deploy/vault/ whose name starts with "rotator" is meant for the daemon's
# role: this one (tokens, key reads) and rotator-rollover-policy.hcl (automatic key rollover
# and expiry-warning bookkeeping, which write the key record in normal daemon runs).
#
# The signing key: read. Writes to it (staging, promotion, expiry warnings) are granted by
# rotator-rollover-policy.hcl; `rotator keys init/import` need "create" too: run those with an
# operator's token. Reading a version by number (?version=N) needs the same "read".
path "secret/data/sf/key" {
  capabilities = ["read"]
}

# The token record. "read" to learn the current version (the check-and-set base) and the
# current token; "create" for the very first write (cas=0, the secret does not exist yet);
# "update" for every later version (cas=N). Without "update" the first rotation works and
# every later one fails with "permission denied ... lacks \"update\"".
# No "delete", "patch" or "list": rotator never deletes, patches or lists.
path "secret/data/sf/token" {
  capabilities = ["create", "read", "update"]
}

# custom_metadata on the token path (credential, key_sha256, rotation_id, written_by, version),
# written with a POST right after each data write. The data write has already created the
# secret's metadata, so "update" is the capability checked; "create" is not needed.
# No "read": rotator learns the version and custom_metadata from the data read above.
# This block is optional: without it tokens are still written (custom_metadata is then
# missing, and each write logs a store.metadata.failed warning).
path "secret/metadata/sf/token" {
  capabilities = ["update"]
}

# Before its first read or write rotator asks which KV version the mount is: on a KV version 1
# mount a write would land as a secret named "data/<path>". Vault's "default" policy grants
# this already (a token may read the entry of any mount it has access to); repeated here for
# tokens created with -no-default-policy.
path "sys/internal/ui/mounts/secret" {
  capabilities = ["read"]
}

# Token lifecycle: rotator looks its token up after login (TTL) and in `rotator check`, and
# renews it at about 2/3 of its TTL, like Vault Agent. Vault's built-in "default" policy
# grants both already; they are repeated here so the policy also works for tokens created
# with -no-default-policy.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

# On exit, a token that rotator got by logging in (approle, kubernetes) is revoked, so short
# runs (`rotator rotate` from cron) do not pile up live tokens. Also in "default".
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
