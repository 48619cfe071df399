# The signer policy (transit-signer-policy.hcl) plus key rollover for the Transit key "sf-prod":
# give this to the token that runs `rotator keys rotate` (or the daemon, if it rolls keys on
# its own). Replace sf-prod and transit/ as in the signer policy.
#
#   bao policy write sf-prod-rollover deploy/vault/transit-rollover-policy.hcl

path "transit/sign/sf-prod" {
  capabilities = ["update"]
}

path "transit/keys/sf-prod" {
  capabilities = ["read"]
}

# Make a new key version: the pending key of a staged rollover. Old versions stay usable
# (the current certificate keeps signing until promotion); nothing here can delete a key,
# export it, lower min_decryption_version or change its configuration.
path "transit/keys/sf-prod/rotate" {
  capabilities = ["update"]
}
