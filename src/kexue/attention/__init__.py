"""kexue.attention (work in progress)."""
