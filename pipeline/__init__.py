"""The stream-processing side of trainguard: decode and validate, check, alert, store."""
