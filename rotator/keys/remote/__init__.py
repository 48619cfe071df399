"""Keyless signing: RS256 assertions and certificates signed by a key service.

The private key stays in Vault Transit (:mod:`rotator.keys.remote.transit`) or AWS KMS
(:mod:`rotator.keys.remote.kms`); rotator holds a key reference, the public key and the
certificate. :mod:`rotator.keys.remote.certificate` makes the self-signed certificate for such a
key without any private key object in this process; :class:`~rotator.keys.remote.assertion.RemoteSigner`
implements :class:`rotator.keys.signer.Signer` as :class:`~rotator.keys.signer.PemSigner` does.
:mod:`rotator.keys.remote.service` connects a credential's ``signer``/``signer_key`` settings
to these (through the configured store's client and credentials), loads keys for the
lifecycle, and makes the keys of ``keys init`` and of rollovers.
"""

from rotator.keys.remote.assertion import RemoteSigner
from rotator.keys.remote.base import RemoteKey
from rotator.keys.remote.certificate import check_remote_pair, remote_self_signed_certificate

__all__ = ["RemoteKey", "RemoteSigner", "check_remote_pair", "remote_self_signed_certificate"]
