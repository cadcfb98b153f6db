"""Alembic migrations of the payout DB; run them with :func:`payouts.db.upgrade_database`.

There is no ``alembic.ini``: :func:`payouts.db.upgrade_database` builds the configuration in
code. To write a new migration, change the table models in :mod:`payouts.db`, then::

    python -c "from payouts.db import _alembic_config; from alembic import command; \\
        c = _alembic_config(); c.set_main_option('sqlalchemy.url', 'sqlite:///scratch.db'); \\
        command.upgrade(c, 'head'); command.revision(c, 'what changed', autogenerate=True)"

and review the generated file in ``versions/`` (name it ``NNNN_what.py``).
"""
