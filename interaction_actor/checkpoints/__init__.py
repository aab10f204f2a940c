"""The shipped interaction-model checkpoint(s) and their JSON cards (a package so wheels include them)."""
