"""``lmdistill push``: publish a run's student, model card and report to the Hugging Face Hub."""

from __future__ import annotations

import argparse

from lmdistill.commands.registry import command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the output_dir of a finished run (it holds student/)")
    parser.add_argument("--repo-id", required=True, help="the Hub model repo: NAME or OWNER/NAME (created if new)")
    parser.add_argument("--private", action="store_true", help="create the repo private")


@command("push", "upload a run's student dir, model card and report to the Hugging Face Hub", _arguments)
def _push(args: argparse.Namespace) -> int:
    from lmdistill.report.publish import push_run

    print(f"pushed to {push_run(args.run_dir, args.repo_id, private=args.private)}")
    return 0
