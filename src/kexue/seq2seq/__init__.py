"""kexue.seq2seq (work in progress)."""
