"""Keyless signing: RS256 assertions and certificates signed by a key service.

The private key stays in Vault Transit (:mod:`rotator.signers.transit`) or AWS KMS
(:mod:`rotator.signers.kms`); rotator holds a key reference, the public key and the
certificate. :mod:`rotator.signers.certificate` makes the self-signed certificate for such a key
without any private key object in this process, and :class:`~rotator.signers.assertion.RemoteSigner`
mints JWT assertions with the same interface as :class:`rotator.crypto.Signer`.

A temporary package: these modules move into ``rotator.keys`` once the layout work lands.
"""

from rotator.signers.assertion import RemoteSigner
from rotator.signers.base import RemoteKey
from rotator.signers.certificate import check_remote_pair, remote_self_signed_certificate

__all__ = ["RemoteKey", "RemoteSigner", "check_remote_pair", "remote_self_signed_certificate"]
