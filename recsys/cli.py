"""The `recsys` command: thin Typer commands over the library.

Exit codes: 0 success (also when the reader of the output stops reading), 1 an unexpected
failure, 2 a usage error (options, missing files or runs), 3 a data error (input that breaks a
rule of the input format), 4 a run that could not complete (for example too little data), 143 a
run, evaluation or sweep ended by SIGTERM (after the same cleanup as a failure).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from recsys.errors import RecsysError, Terminated, UsageError
from recsys.store import DEFAULT_STORE, ENV_STORE, check_store


class _Commands(TyperGroup):
    """The app's commands, listed with their help whole."""

    def format_commands(self, ctx, formatter) -> None:
        """List each command with the first paragraph of its help, whole: click would cut it
        at the terminal's width."""
        rows = [(name, " ".join(command.help.split("\n\n")[0].split()))
                for name, command in self.commands.items() if not command.hidden]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    cls=_Commands,
    help="A music recommender: batch runs into DuckDB, and the data they start from.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: docstrings rewrapped to the terminal, and flags shown without a type.
    rich_markup_mode=None,
)


class _Output(Console):
    """Standard output. A reader that stops reading (`recsys runs | head -1`) ends the command
    quietly with exit code 0: rich points stdout at devnull, as the Python docs advise ("Note
    on SIGPIPE"), but exits with 1, which our exit codes keep for a bug."""

    def on_broken_pipe(self) -> None:
        try:
            super().on_broken_pipe()
        except SystemExit:
            raise SystemExit(0) from None


console = _Output()
err_console = Console(stderr=True)


def _store_folder(store: Path) -> Path:
    """The --store value, refused before any work if it names a file."""
    try:
        check_store(store)
    except RecsysError as exc:
        _fail(exc)
    return store


StoreOption = Annotated[
    Path,
    typer.Option("--store", envvar=ENV_STORE, callback=_store_folder,
                 help="The store folder (runs/, current.duckdb, registry.json)."),
]
# The app's default too (see `recsys.store.resolve_store`).
STORE = Path(DEFAULT_STORE)
ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", help="A TOML config file; defaults otherwise.")
]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details (DEBUG).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings only.")] = False,
) -> None:
    """Set up logging for every command."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )


def _fail(exc: RecsysError | Terminated) -> None:
    # The message names files, keys and values: printed as text, never read as rich markup
    # (a config key such as "[batch.partition_size]" would vanish as a style tag).
    text = str(exc)
    if isinstance(exc, Terminated):
        text += "; nothing was published, and the current run is unchanged"
    message = Text.assemble(("error:", "bold red"), " ", text)
    err_console.print(message, highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


@contextlib.contextmanager
def _sigterm_unwinds():
    """Within it, SIGTERM raises Terminated: the work under way unwinds through the same cleanup
    as a failure (its run marked failed, its temporary files removed)."""

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def validate(
    data: Annotated[
        Path, typer.Argument(help="A dataset folder (events, tracks, users, follows).")
    ],
) -> None:
    """Check a dataset folder and print what it holds, or every rule it breaks."""
    from recsys.io.dataset import read_dataset

    try:
        dataset = read_dataset(data)
    except RecsysError as exc:
        _fail(exc)
    summary = dataset.summary()
    table = Table(title=escape(str(data)), show_header=False)
    for key, value in summary.items():
        if key == "events_per_kind":
            value = ", ".join(f"{k} {n:,}" for k, n in value.items())
        elif isinstance(value, int):
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)


@app.command("import")
def import_(
    fmt: Annotated[str, typer.Argument(help="lastfm-hetrec, movielens or lastfm-1k.")],
    src: Annotated[Path, typer.Argument(help="The folder of the public dataset's files.")],
    dest: Annotated[Path, typer.Argument(help="The dataset folder to write (Parquet).")],
) -> None:
    """Convert a public dataset into the input format, reporting what was read and skipped."""
    from recsys.io.importers import import_dataset

    try:
        report = import_dataset(fmt, src, dest)
    except RecsysError as exc:
        _fail(exc)
    for line in report.lines():
        console.print(line, highlight=False, markup=False)


@app.command()
def generate(
    dest: Annotated[Path, typer.Argument(help="The dataset folder to write (Parquet).")],
    users: Annotated[int, typer.Option(help="Number of users.", min=1)] = 1000,
    tracks: Annotated[int, typer.Option(help="Number of tracks.", min=1)] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 0,
    config: ConfigOption = None,
) -> None:
    """Generate a synthetic dataset with super nodes, genres, creators and follows."""
    from recsys.config import load_config
    from recsys.io.generate import generate as run_generator

    try:
        cfg = load_config(config)
        summary = run_generator(dest, users=users, tracks=tracks, seed=seed, config=cfg.generator)
    except RecsysError as exc:
        _fail(exc)
    for key, value in summary.items():
        console.print(f"{key}: {value}", highlight=False, markup=False)




@app.command()
def run(
    data: Annotated[Path, typer.Argument(help="A dataset folder (see `recsys validate`).")],
    store: StoreOption = STORE,
    as_of: Annotated[
        Optional[str],
        typer.Option("--as-of", help="Run as of this UTC time (ISO 8601); "
                                     "default: after the last event."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the batch (feedback, similarity, candidates, ranker, explanations) and publish it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from recsys.config import load_config
    from recsys.pipeline import parse_as_of, run_batch

    try:
        cfg = load_config(config)
        moment = parse_as_of(as_of)
        with _sigterm_unwinds(), Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
            console=err_console, transient=True,
        ) as bar:
            task = bar.add_task("batch", total=8)

            def advance(stage: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=stage)

            result = run_batch(data, store, cfg=cfg, as_of=moment, progress=advance)
    except (RecsysError, Terminated) as exc:
        _fail(exc)
    summary = result.summary
    console.print(f"run {result.run_id} published to {result.path}", highlight=False,
                  markup=False, soft_wrap=True)  # one line, whatever the width: for grep
    for key in ("as_of", "users", "tracks", "events", "recommendations", "ranker_status",
                "ndcg_ranker", "ndcg_candidate_order", "ndcg_users", "seconds", "peak_memory_mb"):
        value = summary[key]
        shown = f"{value:.4f}" if isinstance(value, float) and key.startswith("ndcg") else value
        console.print(f"  {key}: {shown}", highlight=False, markup=False)


@app.command()
def runs(store: StoreOption = STORE) -> None:
    """List the store's runs, newest first: id, as-of time, status, input fingerprint, code
    version, seconds, recommendations, and which one is current."""
    from recsys.store import REGISTRY, list_runs

    if not (store / REGISTRY).exists():
        _fail(UsageError(f"{store}: no {REGISTRY}; run `recsys run DATA --store {store}` first"))
    try:
        listed = list_runs(store)
    except RecsysError as exc:
        _fail(exc)
    header = ("run", "as of (UTC)", "status", "fingerprint", "code", "seconds", "recommendations",
              "")
    rows = [header]
    for row in listed:
        seconds, recs = row["seconds"], row["recommendations"]
        rows.append((
            row["id"], _minute(row["as_of"]), row["status"], row["fingerprint"],
            row["code_version"] or "", "" if seconds is None else f"{seconds:,.1f}",
            "" if recs is None else f"{recs:,}", "current" if row["current"] else "",
        ))
    # One line per run (a terminal may wrap it), so that the listing greps and diffs well.
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        console.print(Text(line), soft_wrap=True)


def _minute(iso: str | None) -> str:
    """An ISO time as "YYYY-MM-DD HH:MM"."""
    return "" if not iso else iso.replace("T", " ")[:16]


@app.command()
def diff(
    run_a: Annotated[str, typer.Argument(help="The earlier run's id (see `recsys runs`).")],
    run_b: Annotated[str, typer.Argument(help="The later run's id.")],
    store: StoreOption = STORE,
    top: Annotated[int, typer.Option(help="Rises and falls listed per entity kind.", min=1)] = 10,
) -> None:
    """Compare two runs: per-user churn of the lists (Jaccard of the top-N sets), the tracks and
    creators whose exposure rose or fell most, and the changes in bias and evaluation."""
    from recsys.diff import diff_runs
    from recsys.store import run_path

    for run_id in (run_a, run_b):
        if not run_path(store, run_id).exists():
            _fail(UsageError(f"{store}: run {run_id} is not kept (see `recsys runs --store "
                             f"{store}`)"))
    result = diff_runs(run_path(store, run_a), run_path(store, run_b))
    for line in _churn_lines(result):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    for entity in ("track", "creator"):
        moves = (("rose", result.rises(entity, top)), ("fell", result.falls(entity, top)))
        for title, rows in moves:
            table = Table(title=f"{entity}s whose share of the slots {title} most")
            for column in (entity, "slots A", "slots B", "share A", "share B", "change"):
                table.add_column(column)
            for row in rows.iter_rows(named=True):
                name = f"{row['name']} ({row['entity_id']})" if row["name"] else row["entity_id"]
                table.add_row(Text(name), f"{row['slots_a']:,}", f"{row['slots_b']:,}",
                              f"{row['share_a']:.3%}", f"{row['share_b']:.3%}",
                              f"{row['change']:+.3%}")
            console.print(table)
    _print_changes("popularity bias", result.bias, ("entity", "metric"))
    _print_changes("ranker evaluation", result.evaluation, ("order", "metric"))


def _churn_lines(result) -> list[str]:
    a, b = result.run_a, result.run_b
    lines = [f"A: run {a['run_id']} as of {a['as_of']:%Y-%m-%d %H:%M}, "
             f"{a['recommendations']:,} recommendations",
             f"B: run {b['run_id']} as of {b['as_of']:%Y-%m-%d %H:%M}, "
             f"{b['recommendations']:,} recommendations"]
    users = result.churn.height
    if users:
        lines.append(f"top {result.n} lists of {users:,} users in both runs: mean Jaccard "
                     f"{result.mean_jaccard:.3f}, median {result.median_jaccard:.3f}, "
                     f"unchanged {result.unchanged_share:.1%}")
    lines.append(f"users with a list in A only: {result.only_a.height:,}; "
                 f"in B only: {result.only_b.height:,}")
    buckets = [f"{_bucket(row)} {row['users']:,}"
               for row in result.distribution.iter_rows(named=True)]
    lines.append("Jaccard distribution (users): " + ", ".join(buckets))
    return lines


def _bucket(row: dict) -> str:
    """"[0.3, 0.4)", or "1.0" for the users whose tracks did not change."""
    return "1.0" if row["low"] == 1.0 else f"[{row['low']:.1f}, {row['high']:.1f})"


def _print_changes(title: str, frame, keys: tuple[str, str]) -> None:
    table = Table(title=title)
    for column in (*keys, "A", "B", "change"):
        table.add_column(column)
    for row in frame.iter_rows(named=True):
        table.add_row(*(row[k] for k in keys), _number(row["value_a"]),
                      _number(row["value_b"]), _number(row["change"], "+"))
    console.print(table)


def _number(value: float | None, sign: str = "") -> str:
    return "" if value is None else f"{value:{sign}.4f}"


@app.command()
def recommend(
    user: Annotated[str, typer.Argument(help="A user id as it is in the data.")],
    store: StoreOption = STORE,
    run_id: Annotated[
        Optional[str], typer.Option("--run", help="A run id from `recsys runs`; default: current.")
    ] = None,
    shap: Annotated[
        int, typer.Option(min=0, help="SHAP contributions shown per recommendation.")
    ] = 3,
) -> None:
    """Print one user's recommendations with their reasons and top SHAP contributions."""
    from recsys import queries, shap_on_demand
    from recsys.errors import UsageError
    from recsys.store import open_run

    try:
        con = open_run(store, run_id)
        if queries.user(con, user).height == 0:
            run_name = queries.current_run(con)["run_id"][0]
            raise UsageError(f"user {user!r} is not in run {run_name}; "
                             "check the id (ids are matched exactly, as strings)")
        recs = queries.user_recommendations(con, user)
        base = queries.expected_value(con)
        table = Table(title=f"recommendations for {escape(user)}")
        for column in ("rank", "title", "score", "reason", "because you liked", "top SHAP"):
            table.add_column(column)
        computed = None  # the user's SHAP computed now, where the batch did not store it
        for row in recs.iter_rows(named=True):
            contributions = queries.shap_for(con, user, row["track_id"])
            if contributions.is_empty() and base is not None:
                if computed is None:
                    computed = shap_on_demand.user_shap(con, user,
                                                        shap_on_demand.load_explainer(con))
                contributions = computed.filter(computed["track_id"] == row["track_id"])
            contributions = contributions.head(shap)
            top = ", ".join(f"{r['feature']} {r['value']:+.3f}"
                            for r in contributions.iter_rows(named=True))
            # Titles come from the data: Text keeps rich from reading them as markup.
            title = Text(row["title"] or row["track_id"])
            because = Text(row["because"] or _fallback_text(row["reason_kind"]))
            table.add_row(str(row["rank"]), title, f"{row['score']:.4f}", row["reason_kind"],
                          because, top)
        console.print(table)
        if base is not None:
            console.print(f"expected value (SHAP base): {base:.4f}", highlight=False)
    except RecsysError as exc:
        _fail(exc)


def _fallback_text(kind: str) -> str:
    return {"popular_in_genre": "no history track led here: popular in your genres",
            "popular": "no history track led here: popular overall"}.get(kind, "")


@app.command()
def follow(
    user: Annotated[str, typer.Argument(help="A user id as it is in the data.")],
    store: StoreOption = STORE,
    run_id: Annotated[
        Optional[str], typer.Option("--run", help="A run id from the registry; default: current.")
    ] = None,
) -> None:
    """Print the accounts suggested for one user to follow, with the reason and the sources."""
    from recsys import queries
    from recsys.errors import UsageError
    from recsys.store import open_run

    try:
        con = open_run(store, run_id)
        if queries.user(con, user).height == 0:
            run = queries.current_run(con)["run_id"][0]
            raise UsageError(f"user {user!r} is not in run {run}; check the id (ids are matched "
                             "exactly, as strings)")
        suggestions = queries.follow_recommendations(con, user)
        follows = queries.user_follows(con, user).height
    except RecsysError as exc:
        _fail(exc)
    if suggestions.height == 0:
        console.print(f"no accounts to suggest to {user} in this run (a dataset without follows "
                      "has none)", highlight=False, markup=False)
        return
    table = Table(title=f"who {escape(user)} might follow (they follow {follows:,})")
    for column in ("rank", "account", "score", "reason", "sources"):
        table.add_column(column)
    for row in suggestions.iter_rows(named=True):
        # Names and ids come from the data: Text keeps rich from reading them as markup.
        account = row["followee_id"]
        account = Text(f"{row['name']} ({account})" if row["name"] else account)
        table.add_row(str(row["rank"]), account, f"{row['score']:.4f}", Text(row["reason"]),
                      ", ".join(row["sources"]))
    console.print(table)


@app.command()
def supernodes(
    store: StoreOption = STORE,
    run_id: Annotated[
        Optional[str], typer.Option("--run", help="A run id from the registry; default: current.")
    ] = None,
    top: Annotated[int, typer.Option(help="Rows per leaderboard.", min=1)] = 15,
    min_users: Annotated[
        Optional[int],
        typer.Option(help="Leave out entities reaching fewer users; default: 1% of the lists."),
    ] = None,
) -> None:
    """Print the most amplified tracks and creators: recommendation share over listening share."""
    from recsys.store import open_run

    try:
        con = open_run(store, run_id)
    except RecsysError as exc:
        _fail(exc)
    with con:
        lists = con.execute("SELECT count(DISTINCT user_id) FROM recommendations").fetchone()[0]
        floor = min_users if min_users is not None else max(1, lists // 100)
        for entity in ("track", "creator"):
            board = con.execute(
                """
                SELECT e.entity_id, t.title, e.users_reached, e.listening_share,
                       e.recommendation_share, e.amplification, e.in_degree
                FROM exposure e
                LEFT JOIN tracks t ON e.entity = 'track' AND t.track_id = e.entity_id
                WHERE e.entity = ? AND e.users_reached >= ? AND e.amplification IS NOT NULL
                ORDER BY e.amplification DESC, e.entity_id
                LIMIT ?
                """,
                [entity, floor, top],
            ).fetchall()
            table = Table(title=f"most amplified {entity}s (reaching at least {floor:,} users)")
            columns = (entity, "users", "listening", "recommended", "amplification", "in-degree")
            for column in columns:
                table.add_column(column)
            for entity_id, title, users, listening, share, amp, degree in board:
                name = Text(f"{title} ({entity_id})" if title else entity_id)
                table.add_row(name, f"{users:,}", f"{listening:.2%}", f"{share:.2%}",
                              f"{amp:.1f}x", f"{degree:,}")
            console.print(table)
        bias_rows = con.execute("SELECT entity, metric, value FROM popularity_bias").fetchall()
    summary = Table(title="popularity bias")
    for column in ("entity", "metric", "value"):
        summary.add_column(column)
    for entity, metric, value in bias_rows:
        summary.add_row(entity, metric, f"{value:.4f}")
    console.print(summary)


# Evaluation and the popularity trade-off: work that writes its own file into the store.

AsOfOption = Annotated[
    Optional[str],
    typer.Option("--as-of", help="The latest cut (UTC, ISO 8601); default: one label window "
                                 "before the last event."),
]
# The columns of the printed metrics tables.
ACCURACY_SHOWN = ("ndcg", "precision", "recall", "map", "hit_rate")
BEYOND_SHOWN = ("novelty", "gini", "tail_share", "coverage", "mean_popularity")


def _progress_bar():
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True)


@app.command()
def evaluate(
    data: Annotated[Path, typer.Argument(help="A dataset folder (see `recsys validate`).")],
    store: StoreOption = STORE,
    as_of: AsOfOption = None,
    config: ConfigOption = None,
) -> None:
    """Compare the hybrid with each single source, EASE and most popular on later windows."""
    import polars as pl

    from recsys.offline import run_evaluation

    cfg, result = _with_progress("evaluation", run_evaluation, data, store, config, as_of)
    for row in result.cuts.iter_rows(named=True):
        console.print(
            f"cut {row['cut']}: trained before {row['as_of']:%Y-%m-%d %H:%M:%S}, scored to "
            f"{row['window_end']:%Y-%m-%d %H:%M:%S}: {row['users_scored']:,} users scored "
            f"({row['users_without_positive']:,} with history but no new positive, "
            f"{row['cold_users']:,} new users with one, none of them scored)", highlight=False)
    for table in _metrics_tables(result.metrics, cfg.evaluation.ks,
                                 int(result.cuts["users_scored"].sum())):
        _print_whole(table)
    if result.comparisons.height:
        _print_whole(_comparisons_table(result.comparisons))
    ceiling = result.metrics.filter(pl.col("metric") == "candidate_recall")
    if ceiling.height:
        console.print(f"hybrid: {ceiling['value'][0]:.1%} of the scored users' new positives "
                      "were among its candidates (the ceiling of its recall)", highlight=False)
    for model, status in result.status.items():
        if status.startswith("skipped"):
            console.print(Text(f"{model}: {status}"))
    if result.faithfulness is not None and result.faithfulness.height:
        dropped = int(result.faithfulness["dropped"].sum())
        tested = result.faithfulness.height
        console.print(f"because you liked: without its named seed the score dropped for "
                      f"{dropped} of {tested} recommendations ({dropped / tested:.0%})",
                      highlight=False)
    console.print(f"evaluation {result.evaluation_id} written to {result.path}",
                  highlight=False, markup=False)


def _with_progress(name: str, job, data: Path, store: Path, config: Path | None,
                   as_of: str | None):
    """(config, result) of `job(data, store, cfg=, as_of=, progress=)` under a progress bar
    named `name`; a RecsysError ends the command with its message."""
    from recsys.config import load_config
    from recsys.pipeline import parse_as_of

    try:
        cfg = load_config(config)
        moment = parse_as_of(as_of)
        with _sigterm_unwinds(), _progress_bar() as bar:
            task = bar.add_task(name, total=None)

            def advance(step: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=step)

            return cfg, job(data, store, cfg=cfg, as_of=moment, progress=advance)
    except (RecsysError, Terminated) as exc:
        _fail(exc)


def _metrics_tables(metrics, ks: tuple[int, ...], users: int) -> list[Table]:
    """One row per model in two tables: accuracy (NDCG at every k, the others at the middle k)
    and beyond accuracy (at the middle k)."""
    import polars as pl

    k = sorted(ks)[len(ks) // 2]
    accuracy = [f"ndcg@{n}" for n in sorted(ks)] + [f"{m}@{k}" for m in ACCURACY_SHOWN[1:]]
    beyond = [f"{m}@{k}" for m in BEYOND_SHOWN]
    overall = metrics.filter(pl.col("slice_kind") == "all")
    tables = []
    for title, columns in ((f"accuracy over {users:,} (cut, user) pairs", accuracy),
                           ("beyond accuracy (novelty in bits)", beyond)):
        table = Table(title=title)
        table.add_column("model", no_wrap=True)
        for column in columns:
            table.add_column(column, justify="right")
        for model in overall["model"].unique(maintain_order=True):
            values = dict(overall.filter(pl.col("model") == model).select("metric", "value")
                          .rows())
            table.add_row(model, *[_number(values.get(c)) for c in columns])
        tables.append(table)
    return tables


def _comparisons_table(compared) -> Table:
    """The hybrid against each model: the paired difference and its 95% interval."""
    metric = compared["metric"][0]
    table = Table(title=f"hybrid minus each model, {metric} over the same (cut, user) pairs")
    for column in ("model", "difference", "95% interval", "hybrid ahead"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in compared.iter_rows(named=True):
        ahead = ("yes" if row["ci_low"] > 0 else "no" if row["ci_high"] < 0
                 else "not clear")
        table.add_row(row["model"], f"{row['hybrid_minus_model']:+.4f}",
                      f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]", ahead)
    return table


def _print_whole(table: Table) -> None:
    """Print a table at its natural width even where the terminal (or a pipe's 80 columns) is
    narrower, so that no figure is cut."""
    natural = console.measure(table, options=console.options.update_width(1_000)).maximum
    if natural <= console.width:
        console.print(table)
        return
    _Output(file=console.file, width=natural, force_terminal=console.is_terminal).print(table)


@app.command()
def sweep(
    data: Annotated[Path, typer.Argument(help="A dataset folder (see `recsys validate`).")],
    store: StoreOption = STORE,
    as_of: AsOfOption = None,
    config: ConfigOption = None,
) -> None:
    """Try similarity damping settings on a sample of users: NDCG@10 against tail share, Gini."""
    from recsys.sweep import run_sweep

    _, result = _with_progress("sweep", run_sweep, data, store, config, as_of)
    summary = result.summary
    table = Table(title=f"damping settings on {summary['sample_users']:,} users over "
                        f"{summary['cuts']} cut(s) up to {summary['as_of']:%Y-%m-%d} "
                        f"({summary['users_scored']:,} with a new positive)")
    for column in ("setting", "ndcg@10", "tail share", "gini", "coverage", "in use"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for row in result.points.iter_rows(named=True):
        table.add_row(row["setting"], _number(row["ndcg"]), _number(row["tail_share"]),
                      _number(row["gini"]), _number(row["coverage"]),
                      "yes" if row["setting"] == summary["in_use"] else "")
    _print_whole(table)
    console.print(f"sweep {result.sweep_id} written to {result.path}", highlight=False,
                  markup=False)
