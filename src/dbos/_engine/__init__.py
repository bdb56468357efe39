"""The engine: workflows, steps, waits, recovery. It talks to the system database only through
`dbos._store.base.SystemStore` and never writes SQL."""
