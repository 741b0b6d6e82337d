"""kexue.analysis (work in progress)."""
