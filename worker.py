"""``python worker.py``: run a payout worker configured from the environment."""

from payouts.worker import main

if __name__ == "__main__":
    main()
