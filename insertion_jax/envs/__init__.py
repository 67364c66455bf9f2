"""The vectorized MJX connector-insertion simulator."""
