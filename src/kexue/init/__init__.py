"""kexue.init (work in progress)."""
