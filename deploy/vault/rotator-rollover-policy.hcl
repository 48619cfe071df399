# rotator's Vault policy for automatic key rollover, attached to the daemon's role together with
# rotator-policy.hcl (every deploy/vault/rotator*.hcl file is meant for the daemon):
#
#   vault policy write rotator deploy/vault/rotator-policy.hcl
#   vault policy write rotator-rollover deploy/vault/rotator-rollover-policy.hcl
#   vault write auth/approle/role/rotator token_policies=rotator,rotator-rollover ...
#
# Same layout as rotator-policy.hcl: key = "vault:sf/key" in the KV v2 mount "secret", and the
# optional publish_certificate = "vault:sf/pending-certificate". Replace the paths with yours.
#
# In normal daemon runs rotator writes the key record (a new KV version, check-and-set):
#   - staging: a pending key is generated inside the renewal window (renew_before/max_key_age)
#     and stored beside the current one;
#   - promotion: once the endpoint accepts the pending key it becomes the current key;
#   - expiry warnings: each certificate.expiry_warning threshold is remembered in the record so
#     that it fires once (without this policy the warning still fires, every run, with a
#     lifecycle.failed event).
# Without this policy automatic rollover never happens and each run logs lifecycle.failed.
# Leave it out only if you roll keys by hand (`rotator keys rotate/promote` with an operator's
# token) and accept repeated expiry warnings.

# The key record: "read" (also in rotator-policy.hcl) and "update" for every later version.
# No "create": the record exists before the daemon starts (keys init/import, or vault kv put).
path "secret/data/sf/key" {
  capabilities = ["read", "update"]
}

# custom_metadata on the key path (credential, key_sha256, written_by, version), POSTed after
# each key write; optional like the token's (without it: store.metadata.failed warnings).
path "secret/metadata/sf/key" {
  capabilities = ["update"]
}

# publish_certificate (optional): the pending certificate for upload pipelines, written when a
# key is staged and withdrawn when it is discarded. "create" for the first publication.
path "secret/data/sf/pending-certificate" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/sf/pending-certificate" {
  capabilities = ["update"]
}
