"""kexue.optim (work in progress)."""
