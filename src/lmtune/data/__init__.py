"""Data: local files (or hub datasets) through `datasets`, label sets, validation splits."""
