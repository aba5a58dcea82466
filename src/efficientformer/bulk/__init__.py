"""Bulk prediction over many files: input lists (`sources`), decoding in worker processes (`loader`),
resumable results files (`records`), the run itself on one process or under torchrun (`runner`) and a quiet
progress report (`progress`)."""
