"""The ``ainode`` command: builds the settings once and starts the role asked for."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from node.auth.cli_commands import add_commands as add_auth_commands
from node.settings import Settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("pynetdicom", "highdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from node.serve import serve

    serve(settings)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from node.jobs.contracts import GPU_QUEUE, IO_QUEUE
    from workers.context import WorkerContext
    from workers.tasks import register_tasks

    if not settings.broker_url:
        print("ainode worker: AINODE_BROKER_URL must name the node's Redis", file=sys.stderr)
        return 2
    queues = [q for q in (part.strip() for part in args.queues.split(",")) if q]
    unknown = sorted(set(queues) - {GPU_QUEUE, IO_QUEUE})
    if unknown or not queues:
        print(f"ainode worker: --queues takes {GPU_QUEUE} and/or {IO_QUEUE}", file=sys.stderr)
        return 2
    context, app = WorkerContext.build(settings, settings.broker_url)
    analysis = None
    if GPU_QUEUE in queues:  # only then torch: a delivery worker loads no model
        from workers.analysis_context import AnalysisContext

        analysis = AnalysisContext.build(settings)  # every model loaded and warmed first
        # One job at a time and no fork, so CUDA stays in this process. Concurrency 1
        # too: Celery reserves concurrency x prefetch multiplier messages, and a solo
        # pool's concurrency defaults to the CPU count, so a worker would otherwise hold
        # back waiting jobs (a STAT one among them) that another worker could run.
        pool = ["--pool=solo", "--concurrency=1"]
    else:
        # A delivery waits on the network: several at once, so that an archive that does
        # not answer holds up its own deliveries only.
        pool = ["--pool=threads", f"--concurrency={settings.delivery_concurrency}"]
    register_tasks(app, context, analysis)
    context.trail.application_started("ainode worker")
    try:
        app.worker_main(
            [
                "worker",
                *pool,
                f"--queues={','.join(queues)}",
                f"--loglevel={settings.log_level}",
                f"--hostname=ainode-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:  # Celery's warm shutdown (SIGTERM) returns here
        context.trail.application_stopped("ainode worker")
        context.trail.close(timeout=5.0)
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


def _models_validate(_settings: Settings, args: argparse.Namespace) -> int:
    import torch

    from models.contract_errors import ManifestError, ModelUnavailable
    from models.loader import load_network, trial_run
    from models.registry import open_package

    cpu = torch.device("cpu")
    try:
        package = open_package(args.path)
        network = load_network(package, cpu)
        trial = trial_run(package, network, cpu)
    except (ManifestError, ModelUnavailable) as exc:
        print(f"INVALID\t{args.path}\t{exc}")
        return 1
    m = package.manifest
    shape_in = "x".join(map(str, trial.input_shape))
    shape_out = "x".join(map(str, trial.output_shape))
    print(
        f"OK\t{m.name} {m.version}\t{m.network.format}\t{m.task.value}\t"
        f"sha256 verified, input {shape_in} -> output {shape_out}"
    )
    return 0


def _analyze(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from models.registry import discover_packages
    from workers.infer import select_device
    from workers.load.limits import DecodeLimits
    from workers.local import analyze_directory

    registry = discover_packages(settings.models_dir)
    try:
        package = registry.get(args.model)
    except KeyError:
        known = ", ".join(registry.names) or "none"
        print(f"ainode analyze: no model {args.model!r} (installed: {known})", file=sys.stderr)
        return 2
    if not args.dicom_dir.is_dir():
        print(f"ainode analyze: {args.dicom_dir} is not a folder", file=sys.stderr)
        return 2
    limits = DecodeLimits(settings.max_frame_bytes, settings.max_decoded_bytes)
    device = select_device(settings.device)
    outcomes = analyze_directory(args.dicom_dir, package, args.out, device, limits)
    if not outcomes:
        print(f"ainode analyze: no DICOM series under {args.dicom_dir}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        if outcome.error:
            print(f"{outcome.series_instance_uid}: not analysed: {outcome.error}")
        else:
            print(f"{outcome.series_instance_uid}: {json.dumps(outcome.findings)}")
            for path in outcome.files:
                print(f"  wrote {path}")
    return 0 if all(not o.error for o in outcomes) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ainode", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML or JSON settings file (AINODE_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run every role on this machine").set_defaults(run=_serve)
    worker = commands.add_parser("worker", help="run one Celery worker")
    worker.add_argument(
        "--queues",
        default="gpu,io",
        help="queues to take: gpu (analysis: loads the models), io (delivery: no model); "
        "default both",
    )
    worker.set_defaults(run=_worker)
    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        run=_migrate
    )
    models = commands.add_parser("models", help="model packages").add_subparsers(
        dest="models_command", required=True
    )
    models.add_parser("list", help="list installed and refused packages").set_defaults(
        run=_models_list
    )
    validate = models.add_parser(
        "validate", help="check a package folder: manifest, sha256, one forward pass on the CPU"
    )
    validate.add_argument("path", type=Path, help="the package folder (holding model.yaml)")
    validate.set_defaults(run=_models_validate)
    analyze = commands.add_parser(
        "analyze", help="run a model on local DICOM files, write SEG and SR to a folder"
    )
    analyze.add_argument("dicom_dir", type=Path)
    analyze.add_argument("--model", required=True, help="model name (see `ainode models list`)")
    analyze.add_argument("--out", type=Path, required=True, help="folder for the SEG and SR")
    analyze.set_defaults(run=_analyze)
    add_auth_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.load(args.config)
    _configure_logging(settings.log_level)
    return int(args.run(settings, args))


if __name__ == "__main__":
    sys.exit(main())
