"""The runtime façade: ``open_runtime`` and :class:`Runtime` (API skeleton; implementation landing).

The full public API contract is in /work/RUNTIME_API.md until this module lands.
"""
