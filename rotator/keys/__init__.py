"""Signing keys and their certificates: parsing and checking (`crypto`), the `Signer`
interface every signer implements (`signer`), creating and importing key records
(`generate`), the key lifecycle the engine consults (`lifecycle`: stage, promote, discard,
renewal and expiry warnings) and handing a pending certificate to the operator (`publish`).

May import rotator.stores, rotator.audit and the shared bottom modules (config, records,
errors, clock, policy...). Never rotator.engine, rotator.daemon, rotator.cli or
rotator.providers: the engine asks this package which signers to try and tells it what
happened; this package never calls back into the engine.
"""
