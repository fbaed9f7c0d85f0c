"""The twin itself: config, identity, logins, the service that composes the parts.

Core decides policy (routing, ACL, retention); protocol adapters translate wire
formats to core calls. Core imports phonebook and storage, never a protocol.
"""
