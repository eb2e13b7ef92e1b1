"""``python -m medcnn deidentify IN OUT``: DICOM PS3.15 Basic Profile de-identification.

IN is a DICOM file or a folder (walked recursively; relative paths are kept under OUT). One run
maps UIDs consistently across all its files. The summary gives counts per action, never values.
Each output is complete or absent: a file that cannot be processed is reported on stderr, nothing
is written for it, and the exit status is 1. Pixel data are not cleaned (the Basic Profile does not
do that): images that declare or show burned-in text are listed as warnings, as are comment
segments removed from compressed pixel data; a compressed image whose comments cannot be checked
is refused. ``--clean-descriptors`` applies the Clean Descriptors Option (descriptions kept with
unknown words and the file's own identifiers replaced by ``*``, Code Meanings cleaned);
``--remove-unlisted`` also removes every attribute the profile does not list unless a viewer needs
it to display the image. See :mod:`medcnn.privacy.deidentify`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's arguments on ``parser``."""
    parser.add_argument("input", help="DICOM file, or a folder of DICOM files (recursive)")
    parser.add_argument("output", help="output file, or folder (created; relative paths are kept)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-pixel-check", action="store_true",
                        help="skip decoding the images to look for burned-in text in their margins (faster)")
    parser.add_argument("--clean-descriptors", action="store_true",
                        help="Clean Descriptors Option: keep descriptions and comments with every word not "
                             "known to be safe replaced by '*', and clean Code Meanings (PS3.15 E.3.5)")
    parser.add_argument("--remove-unlisted", action="store_true",
                        help="also remove attributes the profile does not list that can hold text or dates, "
                             "keeping what is needed to display the image")


def run(args: argparse.Namespace) -> int:
    """De-identify; returns 0 when every file was written, 1 when any failed."""
    from medcnn.privacy import BASIC_PROFILE_EDITION, Deidentifier, DeidSummary, deidentify_path

    source, target = Path(args.input), Path(args.output)
    deid = Deidentifier(clean_descriptors=args.clean_descriptors, remove_unlisted=args.remove_unlisted)
    outcomes = deidentify_path(source, target, overwrite=args.overwrite,
                               check_pixels=not args.no_pixel_check, deidentifier=deid)
    if not outcomes:
        print(f"error: no files found in {source}", file=sys.stderr)
        return 1
    total = DeidSummary()
    failed, flagged = [], []
    for outcome in outcomes:
        shown = outcome.source.relative_to(source) if source.is_dir() else outcome.source.name
        if outcome.ok:
            total.add(outcome.summary)
            if outcome.summary.warnings:
                flagged.append((shown, outcome.summary.warnings))
        else:
            failed.append((shown, outcome.error))

    options = "".join([" with the Clean Descriptors Option" if args.clean_descriptors else "",
                       ", unlisted attributes removed" if args.remove_unlisted else ""])
    print(f"de-identified {total.files} of {len(outcomes)} file(s) into {target} "
          f"(DICOM PS3.15 {BASIC_PROFILE_EDITION} Basic Application Level Confidentiality Profile{options})")
    print(f"  {total.describe()}; {deid.uids_mapped} distinct UIDs mapped")
    if flagged:
        print(f"warning: {len(flagged)} file(s) with notes (text burned into the pixels is not cleaned "
              "by the Basic Profile: look at those images before sharing):", file=sys.stderr)
        for shown, messages in flagged:
            for message in messages:
                print(f"  {shown}: {message}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} file(s) could not be de-identified (nothing was written for them):",
              file=sys.stderr)
        for shown, message in failed:
            print(f"  {shown}: {message}", file=sys.stderr)
    if total.files:
        print("note: file and folder names were kept as they were; rename them if they carry identifiers")
    return 1 if failed else 0
