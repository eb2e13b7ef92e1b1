"""``python -m medcnn dicomweb --url URL [auth] {analyze,search}``: analyse a PACS study, send confirmed results.

``analyze --study UID`` retrieves every image instance of the study (WADO-RS, stored transfer
syntax) and analyses each like the predict command does a file (:mod:`medcnn.pacs.analysis`: the
modality and the model's gate decide). It prints one result per instance, or with ``--json``
``{"results": [{"sop_instance_uid", "decision", "probabilities", "ood", "sent": [...]}]}``.
Instances that hold no image (reports) and medcnn's own results are listed as ``skipped``.

With ``--send --confirmed-by NAME`` (both, or nothing is sent) each analysed instance gets a new
series in the same study with a structured report, a secondary capture of the overlay and the PDF
report; an image the gate withholds (or no model reads) gets the report saying so. Objects go by
STOW-RS to ``--url``, or by C-STORE with ``--cstore AE@HOST:PORT``.

Credentials are never given on the command line: ``--password-env VAR`` / ``--token-env VAR`` name
the environment variable that holds them. Without ``--url`` the ``MEDCNN_PACS_*`` variables are
read (:mod:`medcnn.pacs.config`). Exit status: 0, 1 if an instance failed, 2 for a usage or PACS error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m medcnn dicomweb`` (imports no torch)."""
    from medcnn.explain.methods import METHODS

    parser.add_argument("--url", default=None, help="DICOMweb base URL (default: $MEDCNN_PACS_URL)")
    parser.add_argument("--user", default=None, help="HTTP basic user (with --password-env)")
    parser.add_argument("--password-env", default=None, metavar="VAR",
                        help="environment variable holding the password (never the password itself)")
    parser.add_argument("--token-env", default=None, metavar="VAR", help="environment variable holding a bearer token")
    parser.add_argument("--ca-bundle", default=None, metavar="PEM", help="CA bundle that signed the server's certificate")
    parser.add_argument("--insecure-skip-tls-verify", action="store_true",
                        help="accept an unverified TLS certificate (explicit; prefer --ca-bundle)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds per request (default 30)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("analyze", help="analyse every image instance of a study",
                           description="analyse every image instance of a study")
    a.add_argument("--study", required=True, metavar="STUDY_UID", help="Study Instance UID")
    a.add_argument("--series", default=None, metavar="SERIES_UID", help="only this series")
    a.add_argument("--model", default=None, metavar="CARD", help="card name or path (default: by modality)")
    a.add_argument("--weights-dir", default=None, metavar="DIR",
                   help="folder with <name>.json + <name>.pt (default: $MEDCNN_WEIGHTS_DIR, else weights)")
    a.add_argument("--method", default="gradcam", choices=list(METHODS), help="explanation method (default gradcam)")
    a.add_argument("--device", default=None, help="cpu / cuda (default: MEDCNN_DEVICE, else auto)")
    a.add_argument("--send", action="store_true", help="store the results into the study (needs --confirmed-by)")
    a.add_argument("--confirmed-by", default=None, metavar="NAME", help="the reviewer who confirmed the results")
    a.add_argument("--cstore", default=None, metavar="AE@HOST:PORT", help="send by DIMSE C-STORE instead of STOW-RS")
    a.add_argument("--json", action="store_true", help='print one JSON object {"results": [...]}')
    s = actions.add_parser("search", help="find studies (prints no patient data)", description="find studies")
    s.add_argument("--patient-id", default=None)
    s.add_argument("--accession", default=None)
    s.add_argument("--from", dest="date_from", default=None, metavar="YYYY-MM-DD")
    s.add_argument("--to", dest="date_to", default=None, metavar="YYYY-MM-DD")
    s.add_argument("--modality", default=None, choices=("CR", "DX", "CT"))
    s.add_argument("--json", action="store_true")


def _secret(var: str | None, what: str) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise ValueError(f"the environment variable {var} (given with --{what}-env) is not set")
    return value


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~medcnn.pacs.config.PacsConfig` of the options (``MEDCNN_PACS_*`` without ``--url``)."""
    from medcnn.pacs.config import PacsConfig

    if args.url is None:
        if args.user or args.password_env or args.token_env or args.ca_bundle or args.insecure_skip_tls_verify:
            raise ValueError("--user, --password-env, --token-env and the TLS options go with --url")
        return PacsConfig.from_env()
    if args.password_env and not args.user:
        raise ValueError("--password-env goes with --user")
    return PacsConfig.from_mapping({
        "url": args.url, "user": args.user, "password": _secret(args.password_env, "password"),
        "token": _secret(args.token_env, "token"), "ca_bundle": args.ca_bundle,
        "verify_tls": "false" if args.insecure_skip_tls_verify else "true",
        "allow_insecure_tls": "yes" if args.insecure_skip_tls_verify else None, "timeout_s": args.timeout})


def _search(client: Any, args: argparse.Namespace) -> int:
    studies = client.search_studies(patient_id=args.patient_id, accession=args.accession,
                                    date_from=args.date_from, date_to=args.date_to, modality=args.modality)
    rows = [{"study_uid": s.study_uid, "date": s.date, "modalities": list(s.modalities),
             "description": s.description, "series": s.n_series, "instances": s.n_instances} for s in studies]
    if args.json:
        print(json.dumps({"studies": rows}))
    else:
        for r in rows:
            print(f"{r['study_uid']}  {r['date']}  {'/'.join(r['modalities'])}  {r['description']}  "
                  f"({r['series']} series, {r['instances']} instances)")
        if not rows:
            print("no study matches", file=sys.stderr)
    return 0


def _line(entry: dict[str, Any]) -> str:
    from medcnn.models.head import NOT_ANALYSED

    sent = f"; sent {len(entry['sent'])} object(s)" if entry["sent"] else ""
    if entry["decision"] in ("skipped", "error", NOT_ANALYSED):
        return f"{entry['sop_instance_uid']}: {entry['decision'].upper()} - {entry.get('reason')}{sent}"
    rows = "; ".join(f"{f['name']} {f['probability']:.3f} {'>=' if f['above'] else '<'} {f['threshold']:.3f}"
                     for f in entry.get("findings") or [])
    caution = f" (caution: {'; '.join(entry['ood']['reasons'])})" if (entry.get("ood") or {}).get("flagged") else ""
    return f"{entry['sop_instance_uid']}: {entry['decision']} ({rows}) model {entry['model']}{caution}{sent}"


def _analyze(client: Any, args: argparse.Namespace) -> int:
    from medcnn.pacs.analysis import PredictorCache, analyze_instance, is_medcnn_result
    from medcnn.pacs.errors import NotAnImageError, PacsNotFoundError
    from medcnn.pacs.send import Sender

    sender = None
    if args.send:
        from medcnn.pacs.config import DimseConfig

        sender = Sender(client, DimseConfig.parse(args.cstore) if args.cstore else None, timeout_s=args.timeout)
    instances = client.instances(args.study, args.series)
    if not instances:
        raise PacsNotFoundError("the study has no instances on this PACS (check the Study Instance UID)")
    predictors = PredictorCache(args.device)
    results = []
    for inst in instances:
        entry: dict[str, Any] = {"sop_instance_uid": inst.sop_uid, "decision": "skipped", "probabilities": None,
                                 "ood": None, "sent": [], "reason": None}
        if not inst.has_pixels:
            entry["reason"] = f"not an image (SOP class {inst.sop_class_uid})"
        else:
            data = client.retrieve(inst.study_uid, inst.series_uid, inst.sop_uid)
            try:
                analysis = analyze_instance(data, predictors, model=args.model, weights_dir=args.weights_dir,
                                            method=args.method, explain_result=sender is not None)
            except NotAnImageError as e:
                entry["reason"] = str(e)
            except ValueError as e:  # undecodable pixels, a broken card: this instance fails, the others run
                entry.update(decision="error", reason=f"{type(e).__name__}: {e}")
            else:
                if is_medcnn_result(analysis.source):
                    entry["reason"] = analysis.reason
                else:
                    entry.update(analysis.to_dict(), sent=[])
                    if sender is not None:
                        entry["sent"] = list(sender.send(analysis, args.confirmed_by).objects)
        results.append(entry)
        if not args.json:
            print(_line(entry), file=sys.stderr if entry["decision"] == "error" else sys.stdout)
    if args.json:
        print(json.dumps({"results": results}))
    return 1 if any(e["decision"] == "error" for e in results) else 0


def run(args: argparse.Namespace) -> int:
    """Run ``dicomweb analyze`` or ``dicomweb search``.

    Raises:
        ValueError: a usage error, or a :class:`~medcnn.pacs.errors.PacsError` (printed as one line).
    """
    if args.action == "analyze" and bool(args.send) != bool(args.confirmed_by and args.confirmed_by.strip()):
        raise ValueError("results are sent only with both --send and --confirmed-by NAME (the reviewer who "
                         "confirmed them)")
    if args.action == "analyze" and args.cstore and not args.send:
        raise ValueError("--cstore chooses how --send stores the results; give --send --confirmed-by too")
    from medcnn.pacs.client import DicomWebClient

    client = DicomWebClient(config_from_args(args))
    try:
        return _search(client, args) if args.action == "search" else _analyze(client, args)
    finally:
        client.close()
