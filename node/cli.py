"""The ``ainode`` command: builds the settings once and starts the role asked for."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from node.settings import Settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from node.serve import serve

    serve(settings)
    return 0


def _worker(settings: Settings, _args: argparse.Namespace) -> int:
    from workers.context import WorkerContext
    from workers.tasks import register_tasks

    if not settings.broker_url:
        print("ainode worker: AINODE_BROKER_URL must name the node's Redis", file=sys.stderr)
        return 2
    context, app = WorkerContext.build(settings, settings.broker_url)
    register_tasks(app, context)
    app.worker_main(
        [
            "worker",
            "--pool=solo",  # one task at a time, no fork: CUDA stays in this process
            "--queues=gpu,io",
            f"--loglevel={settings.log_level}",
            f"--hostname=ainode-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from node.db.migrate import upgrade_to_head
    from node.db.session import make_engine

    upgrade_to_head(make_engine(settings))
    print("database is at the newest schema")
    return 0


def _models_list(settings: Settings, _args: argparse.Namespace) -> int:
    from models.registry import discover_packages

    registry = discover_packages(settings.models_dir)
    for package in registry.packages:
        m = package.manifest
        print(f"{m.name}\t{m.version}\t{m.task.value}\t{m.title}")
    for path, reason in registry.refused:
        print(f"REFUSED\t{path}\t{reason}")
    return 0 if not registry.refused else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ainode", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML or JSON settings file (AINODE_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run every role on this machine").set_defaults(run=_serve)
    commands.add_parser("worker", help="run one Celery worker").set_defaults(run=_worker)
    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        run=_migrate
    )
    models = commands.add_parser("models", help="model packages").add_subparsers(
        dest="models_command", required=True
    )
    models.add_parser("list", help="list installed and refused packages").set_defaults(
        run=_models_list
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.load(args.config)
    _configure_logging(settings.log_level)
    return int(args.run(settings, args))


if __name__ == "__main__":
    sys.exit(main())
