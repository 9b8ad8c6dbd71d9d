"""The `factsync` command line: the daemons, the operators' commands and the sandbox."""
