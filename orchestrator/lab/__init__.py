"""Labs of real servers on loopback for tests, ``make lab`` and benchmarks (``sshd``: OpenSSH)."""
