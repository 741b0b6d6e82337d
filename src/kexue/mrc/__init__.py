"""kexue.mrc (work in progress)."""
