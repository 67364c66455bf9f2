"""Robot-side loop (Sawyer, KUKA) that runs an exported policy.

Empty until the export format exists; it will import only that format, never
flax or optax.
"""
