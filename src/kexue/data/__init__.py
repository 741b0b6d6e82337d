"""kexue.data (work in progress)."""
