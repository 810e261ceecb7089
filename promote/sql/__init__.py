"""The ``sql`` step: ending the old active's database sessions (PostgreSQL; SQL Server)."""
