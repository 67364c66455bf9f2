"""On-device replay buffers as pure functions over a pytree state."""
