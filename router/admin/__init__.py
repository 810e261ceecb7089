"""The admin API, the status snapshot it serves, the dry-run plan and the status page,
behind :class:`router.admin.control.RouterControl` (never ``router.server``)."""
