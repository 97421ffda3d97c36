"""``python -m synth ROOT [--n-seeds N ...]``: write a planted set (see :mod:`synth.planted`)."""

from synth.planted import main

if __name__ == "__main__":
    main()
