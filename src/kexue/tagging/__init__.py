"""kexue.tagging (work in progress)."""
