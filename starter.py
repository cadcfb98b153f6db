"""``python starter.py pay|status|submit-signed|sign …``: start and follow payouts."""

from payouts.cli import main

if __name__ == "__main__":
    main()
