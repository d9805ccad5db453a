"""The parser snapshot of each `ldifs-hf` command, shipped as package data (`<command>.json`, read by
`cli_snapshot`; `scripts/refresh_cli_snapshots.py` writes them). A package so that every install has them."""
