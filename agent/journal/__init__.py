"""The journal: SQLite state of every instance and series, the delivery queues, the
technologist actions applied to series, and retention. Sits on the ground (``domain``,
``errors``, ``config``) and imports no other room."""
