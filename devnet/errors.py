"""Errors devnet raises while it reads requests."""


class NotSupported(ValueError):
    """A well-formed request for something devnet deliberately does not implement."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not supported by devnet")
