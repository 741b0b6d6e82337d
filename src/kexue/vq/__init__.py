"""kexue.vq (work in progress)."""
