"""Exit statuses of pyhost's commands (`run-raw`, `boot`), one set for all of them."""

EXIT_OK = 0  # the guest halted, powered off or reset cleanly
EXIT_ERROR = 1  # pyhost or the device failed, or the guest did what pyhost cannot serve
EXIT_USAGE = 2  # argparse's status for a bad command line
EXIT_GUEST_FAULT = 3  # an exception with no handler of the guest's own, a triple fault
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGINT, as a shell reports it (128 + 2)
