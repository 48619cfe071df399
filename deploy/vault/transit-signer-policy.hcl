# Least privilege for a keyless credential that signs with the Vault Transit key "sf-prod"
# (signer = "vault-transit", signer_key = "vault:sf-prod"), Transit mounted at "transit".
# Replace sf-prod with your key name and transit/ with your mount; one pair of blocks per key.
#
#   bao policy write sf-prod-signer deploy/vault/transit-signer-policy.hcl
#
# Together with the credential's KV policy (deploy/vault/rotator-policy.hcl: the key record,
# which then holds only the certificate and the key reference, and the token record).

# Sign assertions (and, at `keys init`, the certificate). rotator always names the key
# version it signs with (key_version), sends the SHA-256 digest (prehashed) and asks for
# pkcs1v15 / sha2-256 in the request body, so only this exact path is needed: no
# "transit/sign/sf-prod/*" hash-in-the-URL variant.
path "transit/sign/sf-prod" {
  capabilities = ["update"]
}

# Read the key's type and its versions' public keys (never private material: the key is
# created non-exportable, and rotator refuses exportable keys).
path "transit/keys/sf-prod" {
  capabilities = ["read"]
}
