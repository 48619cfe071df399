"""Emulators and fakes for tests, public: use them in your own test suites.

Import the submodule you need, e.g. ``from rotator.testing.salesforce import SalesforceEndpoint``;
nothing is imported here so that ``import rotator`` stays light.
"""
