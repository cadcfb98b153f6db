"""``python starter.py pay|status|submit-signed|sign|channels …``: start and follow payouts, manage channels."""

from payouts.cli import console

if __name__ == "__main__":
    console()
