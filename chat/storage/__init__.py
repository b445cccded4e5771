"""The database: engine and sessions (`db`), tables (`models`), queries (`store`),
the group-commit writer of messages (`writer`), migrations at start (`migrate`), and
a shared-load cache for hot reads (`ttl_cache`)."""
