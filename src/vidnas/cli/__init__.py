"""The `vidnas` command line (typer). Only this package prints; the library logs."""
