"""kexue.train (work in progress)."""
