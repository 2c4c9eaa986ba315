"""Entry point of the `vidnas` command. Sub-commands live one module each in this package."""

from __future__ import annotations

import typer

from vidnas import __version__
from vidnas.cli import bench as bench_cmd
from vidnas.cli import data as data_cmd
from vidnas.cli import demo as demo_cmd
from vidnas.cli import deploy as deploy_cmd
from vidnas.cli import search as search_cmd
from vidnas.cli import search_cells as search_cells_cmd
from vidnas.cli import train as train_cmd

app = typer.Typer(
    name="vidnas",
    help="Search, train, evaluate, benchmark and deploy fast spatial-temporal models for semantic video segmentation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmd.app, name="data")
app.command("train")(train_cmd.train_cmd)
app.command("eval")(train_cmd.eval_cmd)
app.command("bench")(bench_cmd.bench_cmd)
app.command("latency")(bench_cmd.latency_cmd)
app.command("export")(deploy_cmd.export_cmd)
app.command("predict")(deploy_cmd.predict_cmd)
search_cmd.app.command("cells")(search_cells_cmd.cells_cmd)
app.add_typer(search_cmd.app, name="search")
app.command("demo")(demo_cmd.demo_cmd)


@app.command()
def version() -> None:
    """Print the vidnas version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
