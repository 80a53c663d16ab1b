"""``orchestrator dev``: the whole system on one machine with nothing to install — SQLite for the
database, kombu's SQLAlchemy transport on a SQLite file for the broker, and the production
commands (``orchestrator api``, ``orchestrator worker``) as supervised child processes."""
