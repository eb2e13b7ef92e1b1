"""Command line: ``python -m medcnn <command> [options]``.

Each command lives in ``medcnn/cli/<name>.py`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Commands are imported lazily so
``--help`` and light commands (``info``) do not pay for torch/captum imports.
Library errors (:class:`ValueError` subclasses with a user-facing message) are printed
as one ``error:`` line with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("medcnn.cli.info", "print an image's non-identifying metadata"),
    "preview": ("medcnn.cli.preview", "write one PNG per preprocessing step"),
    "train": ("medcnn.cli.train", "train a model from labels.csv files or class folders"),
    "evaluate": ("medcnn.cli.evaluate", "evaluate a model on a labelled set (metrics with CIs)"),
    "predict": ("medcnn.cli.predict", "predict labels for image files"),
    "explain": ("medcnn.cli.explain", "saliency map (Grad-CAM, IG, ...) for an image"),
    "audit": ("medcnn.cli.audit", "shortcut audit of a labelled dataset"),
    "fit-ood": ("medcnn.cli.fit_ood", "fit and measure a model's out-of-distribution gate"),
    "deidentify": ("medcnn.cli.deidentify", "de-identify DICOM files (PS3.15 Basic Profile)"),
    "hash-password": ("medcnn.cli.hash_password", "hash a password for the app's sign-in"),
    "audit-log": ("medcnn.cli.audit_log", "print or export the app's audit database (CSV, --since DATE)"),
    "recalibrate": ("medcnn.cli.recalibrate", "refit a model's temperature and threshold on one site's labelled images"),
    "dicomweb": ("medcnn.cli.dicomweb", "analyse a PACS study over DICOMweb; send confirmed results back"),
    "export-dicom": ("medcnn.cli.export_dicom", "write the PACS result objects (SR, overlay, PDF) of a local DICOM"),
    "import-model": ("medcnn.cli.import_model", "check and import your own 2-D CNN classifier (weights + card)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m medcnn`` parser: one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="python -m medcnn",
        description="medcnn: chest X-ray and CT classification with saliency maps (research use only).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for a usage or library error, 130 on Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
