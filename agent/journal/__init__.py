"""The journal: SQLite state of every instance and series, the delivery queues, the
technologist actions applied to series, retention, and the state directory's lock (one
agent per ``storage.path``). Sits on the ground (``domain``,
``errors``, ``config``) and imports no other room."""
